"""Migrations: from an empty database and from the previous revision (data kept), on SQLite and PostgreSQL."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlmodel import Session, SQLModel

from storage import accounts, history, quizzes
from storage.engine import (
    MIGRATIONS_DIR,
    alembic_config,
    create_db_engine,
    current_revision,
    head_revision,
    integrity_check,
    open_database,
    upgrade_database,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    return request.getfixturevalue("postgres_url")


def test_from_empty_database_matches_the_models(empty_url: str) -> None:
    engine = open_database(empty_url)
    assert current_revision(engine) == head_revision()
    expected = {t.name for t in SQLModel.metadata.sorted_tables} | {"alembic_version"}
    assert set(inspect(engine).get_table_names()) == expected
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), SQLModel.metadata)
    assert diff == [], f"storage/models.py and the migrations disagree: {diff}"
    engine.dispose()


def test_upgrade_from_previous_revision_keeps_data(empty_url: str) -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    previous = scripts.get_revision(head_revision()).down_revision
    assert isinstance(previous, str)
    engine = create_db_engine(empty_url)
    upgrade_database(engine, previous)
    assert current_revision(engine) == previous
    created = datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC)
    with engine.begin() as connection:  # rows written by the previous version of the app
        connection.execute(
            text("INSERT INTO users (username, password_hash, role, active, created_at) "
                 "VALUES ('olduser', '$argon2id$old', 'instructor', true, :t)"), {"t": created.replace(tzinfo=None)}
        )
        connection.execute(
            text("INSERT INTO case_runs (user_id, created_at, case_text, reasoning, answer, base_model, adapter, "
                 "settings, timings, status) VALUES (1, :t, 'Old case', 'Old reasoning', 'Old answer', 'embedded', "
                 "'a', '{\"temperature\": 0.5}', '{\"tokens\": 7}', 'completed')"), {"t": created.replace(tzinfo=None)}
        )
    engine.dispose()

    engine = open_database(empty_url)  # what the app does on start
    assert current_revision(engine) == head_revision()
    with Session(engine) as session:
        user = accounts.get_user_by_username(session=session, username="olduser")
        assert (user.role, user.password_hash, user.active) == ("instructor", "$argon2id$old", True)
        run = history.get_case_run(session=session, run_id=1)
        assert (run.case_text, run.reasoning, run.answer) == ("Old case", "Old reasoning", "Old answer")
        assert run.settings == {"temperature": 0.5} and run.timings == {"tokens": 7}
        assert run.created_at == created
        assert run.references == []  # 0004: runs saved before references existed have none
        # The new revision's tables work with the old rows.
        quiz = quizzes.create_quiz_set(session=session, owner_id=user.id, title="After upgrade")
        assert quiz.id is not None
    assert integrity_check(engine) == "ok"
    engine.dispose()
    if empty_url.startswith("sqlite"):  # a file database is backed up before it is upgraded
        db = Path(empty_url.removeprefix("sqlite:///"))
        assert db.with_name(f"{db.name}.before-{head_revision()}.bak").stat().st_size > 0


def _downgrade(engine, revision: str) -> None:
    """``alembic downgrade`` on ``engine``, with SQLite's foreign keys off as ``upgrade_database`` does."""
    from alembic import command

    cfg = alembic_config()
    with engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        if engine.dialect.name == "sqlite":
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with connection.begin():
                cfg.attributes["connection"] = connection
                command.downgrade(cfg, revision)
        finally:
            if engine.dialect.name == "sqlite":
                raw.execute("PRAGMA foreign_keys=ON")


def test_0004_case_run_references_upgrade_and_downgrade(empty_url: str) -> None:
    engine = create_db_engine(empty_url)
    upgrade_database(engine, "0003")
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO users (username, role, active, created_at) "
                                "VALUES ('ann', 'student', true, CURRENT_TIMESTAMP)"))
        connection.execute(text("INSERT INTO case_runs (user_id, created_at, case_text, reasoning, answer, base_model, "
                                "adapter, settings, timings, status) VALUES (1, CURRENT_TIMESTAMP, 'Before', '', '', "
                                "'b', '', '{}', '{}', 'completed')"))
    upgrade_database(engine, "0004")
    columns = {c["name"]: c for c in inspect(engine).get_columns("case_runs")}
    assert "references" in columns and columns["references"]["nullable"] is False
    passage = {"id": "medquad:1", "title": "Kidney infection", "site": "niddk.nih.gov", "url": "https://x.example/k",
               "license": "CC BY 4.0", "text": "A kidney infection.", "score": 2.0}
    with Session(engine) as session:
        assert history.get_case_run(session=session, run_id=1).references == []
        after = history.save_case_run(session=session, user_id=1, case_text="After", reasoning="", answer="",
                                      base_model="b", adapter="", references=[passage])
        after_id = after.id
    with engine.connect() as connection:  # the column is written as JSON, readable outside the ORM
        stored = connection.execute(text('SELECT "references" FROM case_runs WHERE id = :i'), {"i": after_id}).scalar()
    assert (json.loads(stored) if isinstance(stored, str) else stored) == [passage]

    _downgrade(engine, "0003")
    assert current_revision(engine) == "0003"
    assert "references" not in {c["name"] for c in inspect(engine).get_columns("case_runs")}
    with engine.connect() as connection:  # the runs themselves are kept
        assert [r[0] for r in connection.execute(text("SELECT case_text FROM case_runs ORDER BY id"))] == ["Before", "After"]
    upgrade_database(engine)
    with Session(engine) as session:
        assert [r.references for r in history.list_case_runs(session=session, user_id=1)] == [[], []]
    if engine.dialect.name == "sqlite":
        assert integrity_check(engine) == "ok"
    engine.dispose()


def test_revisions_form_one_numbered_chain() -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    assert len(scripts.get_heads()) == 1
    chain = [rev.revision for rev in reversed(list(scripts.walk_revisions()))]
    assert len(chain) >= 2
    assert chain == [f"{i:04d}" for i in range(1, len(chain) + 1)]
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        source = path.read_text()
        assert "import storage" not in source and "from storage" not in source, f"{path.name} imports app code"
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None


def test_command_line_upgrade_and_current(tmp_path: Path) -> None:
    env = {"MEDSTUDY_WORK_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    run = lambda *args: subprocess.run([sys.executable, "-m", "storage.migrate", *args], cwd=PROJECT_ROOT,  # noqa: E731
                                       env=env, capture_output=True, text=True, timeout=120)
    upgraded = run("upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"empty -> {head_revision()}" in upgraded.stdout
    assert (tmp_path / "medstudy.db").exists()
    current = run("current")
    assert f"at {head_revision()}, newest is {head_revision()}" in current.stdout
    again = run("upgrade")
    assert f"{head_revision()} -> {head_revision()}" in again.stdout
    bad = run("--url", "postgresql+psycopg://x@127.0.0.1:1/none", "upgrade")
    assert bad.returncode == 1 and "error: could not open or upgrade the database" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_0005_classes_upgrade_keeps_attempts_and_downgrades(empty_url: str) -> None:
    engine = create_db_engine(empty_url)
    upgrade_database(engine, "0004")
    with engine.begin() as connection:  # an attempt written before classes existed
        connection.execute(text("INSERT INTO users (username, role, active, created_at) "
                                "VALUES ('teach', 'instructor', true, CURRENT_TIMESTAMP)"))
        connection.execute(text("INSERT INTO users (username, role, active, created_at) "
                                "VALUES ('ann', 'student', true, CURRENT_TIMESTAMP)"))
        connection.execute(text("INSERT INTO attempts (user_id, mode, config, started_at, status) "
                                "VALUES (2, 'tutor', '{}', CURRENT_TIMESTAMP, 'in_progress')"))
        connection.execute(text("INSERT INTO attempt_items (attempt_id, position, item_id, flagged) "
                                "VALUES (1, 0, 'medqa:q1', false)"))
    upgrade_database(engine, "0005")
    assert {"classes", "class_members", "assignments", "review_settings"} <= set(inspect(engine).get_table_names())
    from storage import attempts, classes

    with Session(engine) as session:
        old = attempts.get_attempt(session=session, attempt_id=1)
        assert old is not None and old.assignment_id is None and old.user_id == 2
        assert [i.item_id for i in attempts.attempt_items(session=session, attempt_id=1)] == ["medqa:q1"]
        study_class = classes.create_class(session=session, owner_id=1, name="Cardiology")
        classes.enrol(session=session, class_id=study_class.id, user_ids=[2])
        quiz = quizzes.create_quiz_set(session=session, owner_id=1, title="Week 1")
        quizzes.set_quiz_set_items(session=session, quiz_set_id=quiz.id, item_ids=["medqa:q1"])
        quizzes.set_published(session=session, quiz_set_id=quiz.id, published=True)
        now = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
        assignment = classes.create_assignment(session=session, class_id=study_class.id, quiz_set_id=quiz.id,
                                               created_by_id=1, title="Week 1", opens_at=now,
                                               due_at=now.replace(day=7))
        linked = attempts.start_attempt(session=session, user_id=2, item_ids=["medqa:q1"], quiz_set_id=quiz.id,
                                        assignment_id=assignment.id)
        assert linked.assignment_id == assignment.id
    _downgrade(engine, "0004")
    assert current_revision(engine) == "0004"
    assert "assignment_id" not in {c["name"] for c in inspect(engine).get_columns("attempts")}
    assert "classes" not in inspect(engine).get_table_names()
    with engine.connect() as connection:  # attempts (old and assignment ones) and their answers are kept
        assert connection.execute(text("SELECT count(*) FROM attempts")).scalar() == 2
        assert connection.execute(text("SELECT count(*) FROM attempt_items")).scalar() == 2
    upgrade_database(engine)
    if engine.dialect.name == "sqlite":
        assert integrity_check(engine) == "ok"
    engine.dispose()
