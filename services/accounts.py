"""Accounts and what each user may see: sign-in, registration, user management, and the study history.

Passwords are hashed in ``storage.passwords``; a sign-in is throttled per username
(``storage.login_throttle``). The history lists a viewer's own case runs and quiz attempts (an
instructor also sees attempts at their own quiz sets, an admin everything); every read and delete
goes through the viewer check of ``storage.history``. Functions take a keyword-only ``session``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from sqlmodel import Session

from storage import accounts, attempts, history, login_throttle
from storage.accounts import USERNAME_RULE, AccountError, SignInThrottled
from storage.history import SEARCH_MAX_CHARS, EntryKind, HistoryEntry, HistoryError, Viewer
from storage.models import ROLES, User
from storage.passwords import MIN_PASSWORD_LENGTH

__all__ = [
    "MIN_PASSWORD_LENGTH", "ROLES", "SEARCH_MAX_CHARS", "USERNAME_RULE", "AccountError", "HistoryEntry",
    "HistoryError", "SignInThrottled", "acknowledge_disclaimer", "authenticate", "can_delete", "count_users", "create_first_admin",
    "create_user", "delete_history_entry", "entry_detail", "export_history", "get_user", "history_adapters",
    "list_history", "list_users", "locked_until", "set_active", "set_password", "set_role", "user_for_oidc",
]


# -- accounts ------------------------------------------------------------------------------------------------------


def count_users(*, session: Session) -> int:
    return accounts.count_users(session=session)


def get_user(*, session: Session, user_id: int) -> User | None:
    return accounts.get_user(session=session, user_id=user_id)


def user_for_oidc(*, session: Session, claims: Mapping[str, Any]) -> User | None:
    """The account of a single sign-on identity (created on first sign-in)."""
    return accounts.user_for_oidc(session=session, claims=claims)


def authenticate(*, session: Session, username: str, password: str) -> User | None:
    """The active user these credentials belong to; raises :class:`SignInThrottled` after repeated failures."""
    return accounts.authenticate(session=session, username=username, password=password)


def create_first_admin(*, session: Session, username: str, password: str) -> User:
    return accounts.create_first_admin(session=session, username=username, password=password)


def create_user(*, session: Session, username: str, password: str | None, role: str = "student") -> User:
    return accounts.create_user(session=session, username=username, password=password, role=role)


def list_users(*, session: Session) -> list[User]:
    return accounts.list_users(session=session)


def set_role(*, session: Session, user_id: int, role: str) -> User:
    return accounts.set_role(session=session, user_id=user_id, role=role)


def set_password(*, session: Session, user_id: int, password: str) -> User:
    """A new password; it also lifts a sign-in lockout."""
    return accounts.set_password(session=session, user_id=user_id, password=password)


def set_active(*, session: Session, user_id: int, active: bool) -> User:
    return accounts.set_active(session=session, user_id=user_id, active=active)


def locked_until(*, session: Session, username: str) -> datetime | None:
    """When password sign-in opens again for ``username``; None when it is not locked out."""
    return login_throttle.retry_at(session=session, username=username)


# -- the study history -----------------------------------------------------------------------------------------


def history_adapters(*, session: Session, viewer: Viewer) -> list[str]:
    return history.history_adapters(session=session, viewer=viewer)


def list_history(*, session: Session, viewer: Viewer, kind: EntryKind | None = None, search: str = "",
                 since: datetime | None = None, until: datetime | None = None,
                 adapter: str | None = None) -> list[HistoryEntry]:
    """What ``viewer`` may see, newest first, filtered (see ``storage.history.list_history``)."""
    return history.list_history(session=session, viewer=viewer, kind=kind, search=search, since=since, until=until,
                                adapter=adapter)


def export_history(*, session: Session, viewer: Viewer, entries: Sequence[HistoryEntry],
                   fmt: Literal["csv", "json"]) -> str:
    """The entries ``viewer`` may see, with their details, as CSV or JSON text."""
    records = history.export_records(session=session, viewer=viewer, entries=entries)
    return history.to_csv(records) if fmt == "csv" else history.to_json(records)


def entry_detail(*, session: Session, viewer: Viewer,
                 entry: HistoryEntry) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """An entry's stored fields and, for a quiz attempt, its answers; ``(None, [])`` when ``viewer`` may not see it."""
    if entry.kind == "case":
        run = history.visible_case_run(session=session, viewer=viewer, run_id=entry.id)
        return (None if run is None else run.model_dump()), []
    attempt = history.visible_attempt(session=session, viewer=viewer, attempt_id=entry.id)
    if attempt is None:
        return None, []
    return attempt.model_dump(), [i.model_dump() for i in attempts.attempt_items(session=session, attempt_id=entry.id)]


def can_delete(viewer: Viewer, owner_id: int) -> bool:
    return history.can_delete(viewer, owner_id)


def delete_history_entry(*, session: Session, viewer: Viewer, kind: EntryKind, entry_id: int) -> None:
    """Delete an entry the viewer owns (admins: any); :class:`HistoryError` otherwise."""
    history.delete_history_entry(session=session, viewer=viewer, kind=kind, entry_id=entry_id)


def acknowledge_disclaimer(*, session: Session, user_id: int) -> User:
    """Record that the user acknowledged the case study's educational-use notice (the first time only)."""
    return accounts.acknowledge_disclaimer(session=session, user_id=user_id)
