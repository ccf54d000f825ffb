"""Database engine: one SQLAlchemy engine per URL, configured for safety, and migrated with Alembic.

- SQLite (the default): WAL journal, ``synchronous=FULL``, foreign keys on, a busy timeout, and
  every transaction opened with ``BEGIN IMMEDIATE`` so that a read-then-write unit of work waits for
  the write lock instead of failing with "database is locked" under concurrent sessions.
- Any other SQLAlchemy URL (PostgreSQL is tested) is used as given, with pre-ping.
- A full disk, a read-only file, a lock held past the busy timeout or a disk error becomes a
  :class:`storage.errors.StorageError` the moment the driver reports it (see ``_on_error``); the
  transaction is rolled back, so pages can say "nothing was changed".
- Statement parameters are never logged or put in exception messages (``hide_parameters``), so a
  password hash cannot leak through SQL logging.

:func:`open_database` is what the app calls on start: it creates the engine and upgrades the schema
to the newest revision, backing up a SQLite file first when there is something to upgrade.
From the command line: ``python -m storage.migrate upgrade`` (see ``storage/migrate.py``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.pool import StaticPool

from storage.errors import storage_error_from

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BUSY_TIMEOUT_MS = 15_000
"""How long a SQLite writer waits (SQLite retries all along) for another writer before giving up."""


class MigrationError(RuntimeError):
    """The database could not be brought to the schema this code needs (nothing was changed)."""


def _on_error(context: ExceptionContext) -> None:
    """Raise a :class:`StorageError` instead of the driver's error for disk full, read-only, busy, I/O."""
    if context.is_disconnect:
        return
    mapped = storage_error_from(context.original_exception)
    if mapped is not None:
        raise mapped from context.sqlalchemy_exception or context.original_exception


def create_db_engine(url: str, *, busy_timeout_ms: int | None = None) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys, a busy timeout and immediate transactions.

    ``sqlite://`` (in memory) uses a single shared connection (``StaticPool``), for tests.
    ``busy_timeout_ms`` defaults to :data:`BUSY_TIMEOUT_MS` (read when the engine is created).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(parsed, hide_parameters=True, pool_pre_ping=True)
        event.listen(engine, "handle_error", _on_error)
        return engine
    busy_ms = BUSY_TIMEOUT_MS if busy_timeout_ms is None else busy_timeout_ms
    in_memory = parsed.database in (None, "", ":memory:")
    kwargs: dict[str, Any] = {
        "connect_args": {"check_same_thread": False, "timeout": busy_ms / 1000},
        "hide_parameters": True,
    }
    if in_memory:
        kwargs["poolclass"] = StaticPool
    elif not parsed.query.get("uri"):  # a file: URI (e.g. ``?mode=ro&uri=true``) names an existing file
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # Autocommit at the driver level: pysqlite's own implicit BEGIN is replaced by ours below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine, "handle_error", _on_error)
    return engine


def alembic_config(url: str | None = None) -> Config:
    """The Alembic configuration, built in code (there is no alembic.ini)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "storage/migrations has no revisions"
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for an empty (never migrated) database."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade_database(engine: Engine, revision: str = "head") -> None:
    """Apply every pending migration up to ``revision`` in one transaction; never drops data.

    On SQLite, foreign-key enforcement is off while the migrations run (a table rebuild in batch
    mode would otherwise cascade deletes into child tables) and the result is checked with
    ``PRAGMA foreign_key_check`` before committing.
    """
    cfg = alembic_config()
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        if sqlite:
            assert raw is not None
            raw.execute("PRAGMA foreign_keys=OFF")  # only takes effect outside a transaction
        try:
            with connection.begin():
                cfg.attributes["connection"] = connection
                command.upgrade(cfg, revision)
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise MigrationError(f"migration left {len(broken)} rows with broken references: {broken[:5]}")
        finally:
            if sqlite:
                raw.execute("PRAGMA foreign_keys=ON")


def backup_sqlite(engine: Engine, suffix: str) -> Path | None:
    """Copy a file SQLite database to ``<db>.<suffix>.bak`` with SQLite's online backup; None if not a file DB."""
    path = sqlite_path(engine)
    if path is None or not path.exists():
        return None
    target = path.with_name(f"{path.name}.{suffix}.bak")
    with engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        assert raw is not None
        destination = sqlite3.connect(target)
        try:
            raw.backup(destination)
        finally:
            destination.close()
    return target


def sqlite_path(engine: Engine) -> Path | None:
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return None
    return Path(engine.url.database).expanduser()


def _known_revision(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def open_database(url: str, *, busy_timeout_ms: int | None = None) -> Engine:
    """Create the engine and bring the schema to the newest revision (the app calls this on start).

    Raises :class:`MigrationError` with a readable message when the database cannot be upgraded,
    e.g. when it was created by a newer version of the app.
    """
    engine = create_db_engine(url, busy_timeout_ms=busy_timeout_ms)
    try:
        current = current_revision(engine)
        head = head_revision()
        if current != head:
            if current is not None and not _known_revision(current):
                raise MigrationError(
                    f"the database is at schema revision {current!r}, which this version of the app does not "
                    "know (was it created by a newer version?). Nothing was changed."
                )
            if current is not None:
                backup_sqlite(engine, f"before-{head}")
            upgrade_database(engine)
    except MigrationError:
        engine.dispose()
        raise
    except Exception as exc:  # the driver's own errors, e.g. an unreachable server
        engine.dispose()
        raise MigrationError(f"could not open or upgrade the database: {type(exc).__name__}: {exc}") from exc
    return engine


def integrity_check(engine: Engine) -> str:
    """``PRAGMA integrity_check`` on SQLite (``"ok"`` when healthy); ``"ok"`` on other backends."""
    if engine.dialect.name != "sqlite":
        return "ok"
    with engine.connect() as connection:
        rows = connection.execute(text("PRAGMA integrity_check")).fetchall()
    return "; ".join(str(row[0]) for row in rows)
