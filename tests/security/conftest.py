"""Security tests reuse the storage fixtures: every repository test runs on in-memory SQLite and PostgreSQL."""

from tests.storage.conftest import _postgres_engine, engine, fast_password_hasher, make_user, session  # noqa: F401
