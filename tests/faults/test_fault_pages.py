"""The writing pages under storage faults (AppTest, real SQLite file): a clear message, the input kept, nothing saved.

- Quiz answer on a read-only database (read-only SQLite URI): "the working folder is read-only".
- Quiz answer while another connection holds the write lock past the busy timeout: "the database is busy".
- Case study run on a full disk (``PRAGMA max_page_count``): the result stays on the page with
  "Could not save this run to your history: the disk is full".
- History delete on a read-only database: the entry stays.
Then the fault is lifted and the same action saves, exactly once; ``PRAGMA integrity_check`` is ok.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, event
from sqlmodel import Session, select

from app import resources
from core import inference
from storage import attempts
from storage import engine as engine_mod
from storage.engine import create_db_engine, integrity_check, sqlite_path
from storage.models import CaseRun
from tests.pages.auth_harness import add_user, app_as
from tests.pages.quiz_harness import quiz_environment
from tests.pages.test_case_study import FakeServed, FakeStream
from tests.pages.test_quiz_page import by_prefix, publish, shown

QUIZ = "pages/quiz.py"
CASE_STUDY = "pages/case_study.py"
HISTORY = "pages/history.py"


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Engine]:
    monkeypatch.setattr(engine_mod, "BUSY_TIMEOUT_MS", 300)  # the app's engine gives up after 0.3 s
    yield from quiz_environment(monkeypatch, tmp_path)


def errors(at) -> str:
    return " ".join(e.value for e in at.error).replace("\\", "")  # flashes are Markdown-escaped


def started_quiz(engine: Engine):
    student = add_user(engine, "stu")
    set_id = publish(engine, ["medqa:q1", "medqa:q2"])
    at = app_as(student, QUIZ).run()
    at.button(key=f"quiz_start_set_{set_id}").click().run()
    return at, at.session_state["quiz_attempt"]


def chosen(engine: Engine, attempt_id: int) -> list[str | None]:
    with Session(engine) as session:
        return [i.chosen for i in attempts.attempt_items(session=session, attempt_id=attempt_id)]


def read_only_engine(engine: Engine) -> Engine:
    return create_db_engine(f"sqlite:///file:{sqlite_path(engine)}?mode=ro&uri=true")


def test_quiz_answer_on_a_read_only_database(engine, monkeypatch):
    at, attempt_id = started_quiz(engine)
    first = shown(at)
    read_only = read_only_engine(engine)
    app_engine = resources.get_engine
    monkeypatch.setattr(resources, "get_engine", lambda: read_only)
    by_prefix(at.radio, "quiz_choice_").set_value(first.correct)
    at.run()
    by_prefix(at.button, "quiz_submit_answer_").click().run()
    assert not at.exception
    assert "Could not save your answer: the working folder is read-only. Nothing was changed." in errors(at)
    assert by_prefix(at.radio, "quiz_choice_").value == first.correct  # the choice is still in the form
    assert chosen(engine, attempt_id) == [None, None]

    monkeypatch.setattr(resources, "get_engine", app_engine)  # writable again: the same click saves
    at.run()
    by_prefix(at.button, "quiz_submit_answer_").click().run()
    assert "Could not save" not in errors(at)
    assert chosen(engine, attempt_id) == [first.correct, None]
    assert integrity_check(engine) == "ok"
    read_only.dispose()


def test_quiz_answer_while_another_writer_holds_the_lock(engine, monkeypatch):
    from services import quiz as quiz_service

    at, attempt_id = started_quiz(engine)
    first = shown(at)
    holder = sqlite3.connect(sqlite_path(engine), isolation_level=None, check_same_thread=False)
    real_choose = quiz_service.choose

    def choose_under_a_held_lock(**kwargs):
        holder.execute("BEGIN IMMEDIATE")  # another program starts writing just before our save
        try:
            return real_choose(**kwargs)
        finally:
            holder.execute("ROLLBACK")

    monkeypatch.setattr(quiz_service, "choose", choose_under_a_held_lock)
    by_prefix(at.radio, "quiz_choice_").set_value(first.correct)
    at.run()
    by_prefix(at.button, "quiz_submit_answer_").click().run()
    assert not at.exception
    assert "Could not save your answer: the database is busy" in errors(at) and "try again" in errors(at)
    assert by_prefix(at.radio, "quiz_choice_").value == first.correct
    assert chosen(engine, attempt_id) == [None, None]

    monkeypatch.setattr(quiz_service, "choose", real_choose)  # the other writer is done: try again
    by_prefix(at.button, "quiz_submit_answer_").click().run()
    assert chosen(engine, attempt_id) == [first.correct, None]
    holder.close()
    assert integrity_check(engine) == "ok"


def test_case_study_run_on_a_full_disk_stays_on_the_page(engine, monkeypatch):
    student = add_user(engine, "sam")
    monkeypatch.setattr(resources, "get_served_model", lambda *a, **k: FakeServed())
    long_answer = "Step. " * 20_000 + "\n\nFinal answer: pyelonephritis"  # needs new database pages
    monkeypatch.setattr(inference, "stream_case", FakeStream(long_answer, chunks=3))

    @event.listens_for(engine, "connect")
    def _disk_full(dbapi_connection, _record) -> None:
        pages = dbapi_connection.execute("PRAGMA page_count").fetchone()[0]
        dbapi_connection.execute(f"PRAGMA max_page_count={pages}")

    engine.dispose()  # new connections get the limit
    case = "A 54-year-old woman has fever and flank pain. Diagnosis?"
    at = app_as(student, CASE_STUDY, cs_ack=True).run()
    at.text_area(key="cs_case").set_value(case)
    at.button(key="cs_generate").click().run()
    assert not at.exception
    assert "Could not save this run to your history: the disk is full. Nothing was changed." in errors(at)
    assert any("pyelonephritis" in s.value for s in at.success)  # the result is still shown
    assert at.text_area(key="cs_case").value == case
    event.remove(engine, "connect", _disk_full)
    engine.dispose()
    with Session(engine) as session:
        assert session.exec(select(CaseRun)).all() == []
    assert integrity_check(engine) == "ok"


def test_history_delete_on_a_read_only_database_keeps_the_entry(engine, monkeypatch):
    from storage import history

    student = add_user(engine, "sam")
    with Session(engine) as session:
        run = history.save_case_run(session=session, user_id=student.id, case_text="kept case", reasoning="r",
                                    answer="a", base_model="b", adapter="none (base model)")
        key = f"case:{run.id}"
    at = app_as(student, HISTORY).run()
    at.selectbox(key="history_open").set_value(key).run()
    at.button(key="history_delete").click().run()
    read_only = read_only_engine(engine)
    monkeypatch.setattr(resources, "get_engine", lambda: read_only)
    at.button(key="history_delete_yes").click().run()
    assert not at.exception
    assert "Could not save the deletion: the working folder is read-only. Nothing was changed." in errors(at)
    assert at.selectbox(key="history_open").value == key  # still open
    with Session(engine) as session:
        assert [r.case_text for r in session.exec(select(CaseRun)).all()] == ["kept case"]
    read_only.dispose()


def test_curation_add_items_on_a_read_only_database_keeps_the_typed_ids(engine, monkeypatch):
    from tests.pages.test_curation_page import create_set, set_items

    teacher = add_user(engine, "teach", "instructor")
    at = app_as(teacher, "pages/curation.py").run()
    set_id = create_set(at, "Read-only week")
    typed = "medqa:q1\nmedqa:q2"
    at.text_area(key="cur_add_ids").input(typed)
    read_only = read_only_engine(engine)
    app_engine = resources.get_engine
    monkeypatch.setattr(resources, "get_engine", lambda: read_only)
    at.run()  # the page (and its callbacks) now use the read-only database
    at.button(key="cur_add_ids_button").click().run()
    assert not at.exception
    assert "Could not save the change: the working folder is read-only. Nothing was changed." in errors(at)
    assert at.text_area(key="cur_add_ids").value == typed  # still in the form
    assert set_items(engine, set_id) == []

    monkeypatch.setattr(resources, "get_engine", app_engine)
    at.run()
    at.button(key="cur_add_ids_button").click().run()
    assert set_items(engine, set_id) == ["medqa:q1", "medqa:q2"]
    read_only.dispose()


def test_app_start_while_another_writer_holds_the_lock_says_busy_then_recovers(engine):
    from tests.pages.auth_harness import MAIN

    student = add_user(engine, "stu")
    holder = sqlite3.connect(sqlite_path(engine), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        at = app_as(student, MAIN).run()
        assert not at.exception
        assert "The app could not use its database: the database is busy" in errors(at)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    at.run()
    assert not at.exception and not at.error
    assert any("Signed in as `stu`" in c.value for c in at.sidebar.caption)
