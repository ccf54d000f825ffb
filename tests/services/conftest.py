"""Service tests use the storage fixtures: every workflow runs on in-memory SQLite and on PostgreSQL."""

from tests.storage.conftest import _postgres_engine, engine, fast_password_hasher, make_user, session  # noqa: F401
