"""Login throttling: after :data:`MAX_FAILURES` failed sign-ins for one username within :data:`WINDOW`,
further attempts for that username are refused before any password is checked.

The key is the username as typed, normalised like account names (so ``Dana`` and ``dana`` count
together) and whether or not such an account exists, so the throttle never tells which accounts
exist. :func:`storage.accounts.authenticate` calls :func:`begin_attempt` first: it checks the count
and records the attempt in the same transaction (on SQLite that transaction holds the write lock,
so parallel attempts cannot all slip under the limit); a successful sign-in then calls
:func:`clear_failures`, as does a password reset. The window slides: the username is free again
once its oldest counted failure is :data:`WINDOW` old.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlmodel import Session, col, delete, func, select

from storage import rows
from storage.models import LoginFailure, utcnow

MAX_FAILURES = 5
"""Failed sign-ins per username that are allowed within :data:`WINDOW`."""
WINDOW = timedelta(minutes=15)
KEY_CHARS = 128
"""Longer input is cut to this (no account name is longer than 64 characters)."""


class SignInThrottled(ValueError):
    """Too many failed sign-ins for this username; the message says when to try again and is safe to show."""

    def __init__(self, retry_at: datetime, now: datetime) -> None:
        self.retry_at = retry_at
        minutes = max(1, math.ceil((retry_at - now).total_seconds() / 60))
        super().__init__(
            f"Too many failed sign-ins for this username. Try again in {minutes} minute{'s' if minutes != 1 else ''} "
            f"(at {retry_at:%H:%M} UTC)."
        )


def throttle_key(username: str) -> str:
    """The stored key: the username as accounts compares it, cut to KEY_CHARS, NUL removed (PostgreSQL refuses it)."""
    return username.replace("\x00", "").strip().lower()[:KEY_CHARS]


def _in_window(session: Session, key: str, now: datetime) -> list[datetime]:
    query = select(LoginFailure.created_at).where(
        LoginFailure.username == key, col(LoginFailure.created_at) > now - WINDOW
    )
    return sorted(session.exec(query))


def retry_at(*, session: Session, username: str, now: datetime | None = None) -> datetime | None:
    """When ``username`` may try again if it is locked out now; None when it may try now."""
    now = now or utcnow()
    times = _in_window(session, throttle_key(username), now)
    if len(times) < MAX_FAILURES:
        return None
    # Free again when enough of the counted failures have aged out of the window.
    return times[len(times) - MAX_FAILURES] + WINDOW


def begin_attempt(*, session: Session, username: str, now: datetime | None = None) -> None:
    """Refuse a locked-out username (:class:`SignInThrottled`), else count this attempt as a failure.

    The attempt is counted before the password is checked; :func:`clear_failures` undoes it on
    success. Prunes failures older than the window (of every username). Commits.
    """
    now = now or utcnow()
    key = throttle_key(username)
    try:
        blocked_until = retry_at(session=session, username=key, now=now)
        if blocked_until is not None:
            raise SignInThrottled(blocked_until, now)
        session.exec(delete(LoginFailure).where(col(LoginFailure.created_at) <= now - WINDOW))
        session.add(LoginFailure(username=key, created_at=now))
        session.commit()
    finally:
        session.rollback()  # no-op after the commit; ends the read transaction when refused


def record_failure(*, session: Session, username: str, at: datetime | None = None) -> LoginFailure:
    """Count one failed sign-in for ``username`` (for tests and imports of old failures)."""
    failure = LoginFailure(username=throttle_key(username), created_at=at or utcnow())
    return rows.save(session, failure)


def count_failures(*, session: Session, username: str, now: datetime | None = None) -> int:
    """Failed sign-ins for ``username`` that still count (within the window before ``now``)."""
    now = now or utcnow()
    query = select(func.count()).select_from(LoginFailure).where(
        LoginFailure.username == throttle_key(username), col(LoginFailure.created_at) > now - WINDOW
    )
    return session.exec(query).one()


def clear_failures(*, session: Session, username: str) -> None:
    """Forget the username's failures (after a successful sign-in or a password reset). Commits."""
    session.exec(delete(LoginFailure).where(LoginFailure.username == throttle_key(username)))
    session.commit()
