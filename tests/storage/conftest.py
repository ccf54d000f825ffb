"""Storage fixtures: every repository test runs on in-memory SQLite and on a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from argon2 import PasswordHasher
from sqlalchemy import Engine
from sqlmodel import Session, SQLModel

from storage import accounts, passwords
from storage.engine import open_database
from storage.models import User


@pytest.fixture(autouse=True)
def fast_password_hasher(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cheap argon2 parameters (the production ones are checked in test_accounts)."""
    monkeypatch.setattr(passwords, "HASHER", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture(scope="session")
def _postgres_engine(postgres_server) -> Iterator[Engine]:
    """One migrated PostgreSQL database for the session (emptied before each test that uses it)."""
    url = postgres_server.create_database()
    eng = open_database(url)
    yield eng
    eng.dispose()
    postgres_server.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A migrated, empty database: a new in-memory SQLite (StaticPool), or the PostgreSQL one emptied.

    Migrating from an empty database on both backends is tested in test_migrations.py.
    """
    if request.param == "sqlite":
        eng = open_database("sqlite://")
        yield eng
        eng.dispose()
        return
    eng = request.getfixturevalue("_postgres_engine")
    tables = ", ".join(t.name for t in SQLModel.metadata.sorted_tables)
    with eng.begin() as connection:
        connection.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    yield eng


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine) as s:
        yield s


@pytest.fixture
def make_user(session: Session) -> Callable[..., User]:
    def make(username: str, role: str = "student", password: str = "correct horse") -> User:
        return accounts.create_user(session=session, username=username, password=password, role=role)

    return make
