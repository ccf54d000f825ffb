"""Disk full, read-only working folder and a database locked by another writer, made for real on a SQLite file.

- Disk full: ``PRAGMA max_page_count`` pinned to the current size on every new connection, so the
  next write that grows the file gets SQLite's own SQLITE_FULL ("database or disk is full").
- Read-only: the same file opened through a read-only SQLite URI (``?mode=ro``); tests run as root,
  so ``chmod`` would not stop a write.
- Locked: a second real connection holds ``BEGIN IMMEDIATE`` longer than the engine's busy timeout.

Each failing write raises :class:`storage.errors.StorageError` with the reason; afterwards
``PRAGMA integrity_check`` is ok, the earlier rows are intact and the failed write left nothing.
"""

from __future__ import annotations

import errno
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, event
from sqlmodel import Session, func, select

from app import saving
from storage import attempts, history
from storage.engine import create_db_engine, integrity_check, open_database
from storage.errors import StorageError, storage_error_from
from storage.models import AttemptItem, CaseRun
from tests.pages.auth_harness import add_user

BIG = "x" * 200_000  # needs new pages


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[str, Engine, int, int]]:
    """A migrated file database with a student, one saved case run and a 3-question attempt (1 answered)."""
    path = tmp_path / "medstudy.db"
    engine = open_database(f"sqlite:///{path}")
    user = add_user(engine, "sam")
    with Session(engine) as session:
        history.save_case_run(session=session, user_id=user.id, case_text="first case", reasoning="r", answer="a",
                              base_model="b", adapter="none (base model)")
        attempt = attempts.start_attempt(session=session, user_id=user.id, item_ids=["q1", "q2", "q3"])
        attempt_id = attempt.id
        attempts.record_answer(session=session, attempt_id=attempt_id, user_id=user.id, position=0, chosen="A")
    yield str(path), engine, user.id, attempt_id
    engine.dispose()


def full_disk(path: str) -> Engine:
    engine = create_db_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _limit(dbapi_connection, _record) -> None:
        pages = dbapi_connection.execute("PRAGMA page_count").fetchone()[0]
        dbapi_connection.execute(f"PRAGMA max_page_count={pages}")

    return engine


def intact(engine: Engine, user_id: int, attempt_id: int) -> None:
    assert integrity_check(engine) == "ok"
    with Session(engine) as session:
        runs = session.exec(select(CaseRun)).all()
        items = attempts.attempt_items(session=session, attempt_id=attempt_id)
    assert [r.case_text for r in runs] == ["first case"]
    assert [(i.position, i.chosen) for i in items] == [(0, "A"), (1, None), (2, None)]


def test_disk_full_is_a_clear_error_and_the_database_stays_intact(db):
    path, engine, user_id, attempt_id = db
    full = full_disk(path)
    with pytest.raises(StorageError) as info, Session(full) as session:
        history.save_case_run(session=session, user_id=user_id, case_text=BIG, reasoning=BIG, answer="a",
                              base_model="b", adapter="none (base model)")
    assert info.value.reason == "full" and "SQLITE_FULL" in str(info.value)
    assert info.value.user_message("this run to your history") == (
        "Could not save this run to your history: the disk is full. Nothing was changed.")
    with pytest.raises(StorageError, match="disk is full"), Session(full) as session:
        attempts.record_answer(session=session, attempt_id=attempt_id, user_id=user_id, position=1, free_text=BIG)
    full.dispose()
    intact(engine, user_id, attempt_id)
    with Session(engine) as session:  # space again: the same write goes through
        attempts.record_answer(session=session, attempt_id=attempt_id, user_id=user_id, position=1, chosen="B")


def test_read_only_database_reads_but_refuses_writes_clearly(db):
    path, engine, user_id, attempt_id = db
    read_only = create_db_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    with Session(read_only) as session:
        assert len(attempts.attempt_items(session=session, attempt_id=attempt_id)) == 3  # reading still works
    with pytest.raises(StorageError) as info, Session(read_only) as session:
        attempts.record_answer(session=session, attempt_id=attempt_id, user_id=user_id, position=1, chosen="C")
    assert info.value.reason == "read_only"
    assert "the working folder is read-only. Nothing was changed." in info.value.user_message("your answer")
    read_only.dispose()
    intact(engine, user_id, attempt_id)


def test_a_lock_held_past_the_busy_timeout_is_busy_and_a_shorter_one_is_waited_out(db):
    path, engine, user_id, attempt_id = db
    short = create_db_engine(f"sqlite:///{path}", busy_timeout_ms=300)
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another writer, holding the write lock
    try:
        with pytest.raises(StorageError) as info, Session(short) as session:
            attempts.record_answer(session=session, attempt_id=attempt_id, user_id=user_id, position=1, chosen="C")
        assert info.value.reason == "busy"
        assert "the database is busy" in info.value.user_message("your answer")
    finally:
        holder.execute("ROLLBACK")
    intact(engine, user_id, attempt_id)

    # A writer that lets go within the timeout is waited for: SQLite retries until the lock is free.
    patient = create_db_engine(f"sqlite:///{path}", busy_timeout_ms=10_000)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.5, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        with Session(patient) as session:
            attempts.record_answer(session=session, attempt_id=attempt_id, user_id=user_id, position=1, chosen="C")
    finally:
        release.join()
        holder.close()
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(AttemptItem)
                            .where(AttemptItem.chosen == "C")).one() == 1  # exactly once
    short.dispose()
    patient.dispose()


@pytest.mark.parametrize(("code", "reason", "words"), [
    (errno.ENOSPC, "full", "the disk is full"),
    (errno.EROFS, "read_only", "the working folder is read-only"),
    (errno.EIO, "io", "the disk reported an error"),
])
def test_file_write_errors_map_to_the_same_messages(code, reason, words):
    mapped = storage_error_from(OSError(code, "injected"))
    assert mapped is not None and mapped.reason == reason
    assert saving.message_for(OSError(code, "injected"), "the merged model") == (
        f"Could not save the merged model: {words}. Nothing was changed.")
    assert storage_error_from(OSError(errno.ENOENT, "missing")) is None  # a bug, not a storage condition
    assert storage_error_from(ValueError("nope")) is None


def test_atomic_folder_writes_on_a_full_disk_leave_no_half_written_folder(tmp_path, monkeypatch):
    """Adapters, the model cache and exports are written through core.atomic: ENOSPC mid-write leaves nothing."""
    from core.atomic import atomic_dir

    target = tmp_path / "exports" / "adapter-merged"
    with pytest.raises(OSError) as info, atomic_dir(target) as tmp:
        (tmp / "adapter_config.json").write_text("{}")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert storage_error_from(info.value).reason == "full"
    assert not target.exists() and list(target.parent.iterdir()) == []
