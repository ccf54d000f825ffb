"""Engine settings: SQLite pragmas, immediate transactions under concurrency, UTC times, clear errors."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from storage import accounts, attempts
from storage.engine import (
    MigrationError,
    create_db_engine,
    current_revision,
    head_revision,
    integrity_check,
    open_database,
)
from storage.models import User


def test_sqlite_file_pragmas(tmp_path: Path) -> None:
    engine = open_database(f"sqlite:///{tmp_path / 'sub' / 'app.db'}")
    with engine.connect() as connection:
        pragma = lambda name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
        assert pragma("journal_mode") == "wal"
        assert pragma("foreign_keys") == 1
        assert pragma("busy_timeout") == 15_000
        assert pragma("synchronous") == 2  # FULL
    assert (tmp_path / "sub" / "app.db").exists()
    assert integrity_check(engine) == "ok"
    engine.dispose()


def test_parameters_never_appear_in_errors(engine: Engine) -> None:
    with Session(engine) as session:
        accounts.create_user(session=session, username="nora", password="correct horse")
        session.add(User(username="nora", password_hash="$argon2id$SECRET-HASH"))
        with pytest.raises(IntegrityError) as excinfo:
            session.commit()
    assert "SECRET-HASH" not in str(excinfo.value)
    assert "hidden" in str(excinfo.value)


def test_times_come_back_aware_and_in_utc(session: Session, make_user) -> None:
    user = make_user("tim")
    naive = datetime(2025, 1, 2, 3, 4, 5)
    plus_two = datetime(2025, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    user.acknowledged_disclaimer_at = naive
    user.created_at = plus_two
    session.add(user)
    session.commit()
    session.expire_all()
    again = session.get(User, user.id)
    assert again.acknowledged_disclaimer_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert again.created_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert again.created_at.utcoffset() == timedelta(0)


def test_concurrent_read_then_write_units_do_not_fail(tmp_path: Path) -> None:
    """Two threads each read an attempt and then update it, 40 times; BEGIN IMMEDIATE serialises them."""
    engine = open_database(f"sqlite:///{tmp_path / 'app.db'}")
    with Session(engine) as session:
        users = [accounts.create_user(session=session, username=f"user{i}", password="correct horse") for i in (1, 2)]
        tries = [attempts.start_attempt(session=session, user_id=u.id, item_ids=[f"q{j}" for j in range(40)]) for u in users]
        pairs = [(u.id, a.id) for u, a in zip(users, tries)]
    errors: list[BaseException] = []

    def answer_all(user_id: int, attempt_id: int) -> None:
        try:
            for position in range(40):
                with Session(engine) as session:
                    attempts.record_answer(session=session, attempt_id=attempt_id, user_id=user_id, position=position,
                                           chosen="A", correct=True)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=answer_all, args=pair) for pair in pairs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    with Session(engine) as session:
        for user_id, attempt_id in pairs:
            assert all(i.chosen == "A" for i in attempts.attempt_items(session=session, attempt_id=attempt_id))
    engine.dispose()


def test_unknown_revision_is_refused_without_changes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    open_database(url).dispose()
    engine = create_db_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(MigrationError, match="revision '9999'.*newer version"):
        open_database(url)
    engine = create_db_engine(url)
    assert current_revision(engine) == "9999"
    engine.dispose()


def test_unreachable_server_gives_a_readable_error(postgres_server) -> None:
    url = f"postgresql+psycopg://nobody@127.0.0.1:{postgres_server.port + 1}/none"
    with pytest.raises(MigrationError, match="could not open or upgrade the database: OperationalError"):
        open_database(url)


def test_in_memory_engine_is_migrated_to_head() -> None:
    engine = open_database("sqlite://")
    assert current_revision(engine) == head_revision()
    assert integrity_check(engine) == "ok"
    engine.dispose()
