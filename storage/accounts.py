"""Accounts: creating users, signing in, roles, passwords, deactivation and OpenID Connect mapping.

Every function takes a keyword-only ``session`` and commits its own unit of work. Rules enforced
here (not only in the pages): usernames are unique and lower-case; passwords follow
:func:`storage.passwords.password_problems`; at least one active admin always remains; an identity
provider's claims can make someone a student or an instructor, never an admin; sign-ins are
throttled per username (:mod:`storage.login_throttle`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, delete, func, select

from storage import login_throttle, passwords, rows
from storage.login_throttle import SignInThrottled  # noqa: F401  (re-exported: authenticate raises it)
from storage.models import ROLES, LoginFailure, User, utcnow

USERNAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._@-]{2,63}")
USERNAME_RULE = "3–64 characters: letters, digits and . _ @ -, starting with a letter or digit"
OIDC_ROLE_CLAIMS = ("roles", "groups")
"""Claims that may carry an ``instructor`` role from the identity provider (read at first sign-in only)."""


class AccountError(ValueError):
    """A request about an account that cannot be done; the message is safe to show to the user."""


def normalise_username(raw: str) -> str:
    return raw.strip().lower()


def username_problems(username: str) -> list[str]:
    if not USERNAME_PATTERN.fullmatch(normalise_username(username)):
        return [f"Usernames need {USERNAME_RULE}."]
    return []


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise AccountError(f"Unknown role {role!r}; choose one of {', '.join(ROLES)}.")


def _require(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise AccountError(f"No account with id {user_id}.")
    return user


def count_users(*, session: Session) -> int:
    return session.exec(select(func.count()).select_from(User)).one()


def get_user(*, session: Session, user_id: int) -> User | None:
    return session.get(User, user_id)


def get_user_by_username(*, session: Session, username: str) -> User | None:
    if "\x00" in username:  # no stored name has one, and PostgreSQL refuses NUL in text
        return None
    return session.exec(select(User).where(User.username == normalise_username(username))).first()


def list_users(*, session: Session) -> list[User]:
    return list(session.exec(select(User).order_by(User.username)))


def usernames(*, session: Session, user_ids: Iterable[int]) -> dict[int, str]:
    """User id -> username for the given ids (unknown ids are left out)."""
    ids = sorted(set(user_ids))
    return {uid: name for uid, name in session.exec(select(User.id, User.username).where(col(User.id).in_(ids)))}


def create_user(*, session: Session, username: str, password: str | None, role: str = "student") -> User:
    """A new active account; ``password`` None makes an account that can only use single sign-on.

    Raises :class:`AccountError` listing every problem (bad username, weak password, unknown role,
    name taken).
    """
    name = normalise_username(username)
    problems = username_problems(name) + (passwords.password_problems(password) if password is not None else [])
    if role not in ROLES:
        problems.append(f"Unknown role {role!r}; choose one of {', '.join(ROLES)}.")
    if problems:
        raise AccountError(" ".join(problems))
    password_hash = passwords.hash_password(password) if password is not None else None
    if get_user_by_username(session=session, username=name) is not None:
        raise AccountError(f"The username {name!r} is already taken.")
    return rows.save(session, User(username=name, password_hash=password_hash, role=role))


def create_first_admin(*, session: Session, username: str, password: str) -> User:
    """The first account of an installation, an admin; refused once any account exists."""
    if count_users(session=session) > 0:
        raise AccountError("An administrator already exists; sign in instead.")
    return create_user(session=session, username=username, password=password, role="admin")


def authenticate(*, session: Session, username: str, password: str, now: datetime | None = None) -> User | None:
    """The active user with this username and password, or None.

    Unknown usernames, wrong passwords, disabled accounts and SSO-only accounts all return None
    after exactly one argon2 verification, so neither the answer nor its timing tells them apart.
    After :data:`~storage.login_throttle.MAX_FAILURES` failures for the username within
    :data:`~storage.login_throttle.WINDOW`, raises :class:`SignInThrottled` without checking the
    password (whether or not the account exists). A success clears the username's failures.
    A hash made with older parameters is upgraded on a successful sign-in. Ends the session's
    current transaction.
    """
    login_throttle.begin_attempt(session=session, username=username, now=now)  # raises when locked out
    user = get_user_by_username(session=session, username=username)
    found = (user.id, user.password_hash, user.active) if user is not None else None
    # End the read transaction first: a verification takes ~0.1 s and must not hold the database lock.
    session.rollback()
    if found is None or found[1] is None:
        passwords.dummy_verify(password)
        return None
    user_id, password_hash, active = found
    if not passwords.verify_password(password_hash, password) or not active:
        return None
    login_throttle.clear_failures(session=session, username=username)
    user = session.get(User, user_id)
    if user is not None and passwords.needs_rehash(password_hash):
        user.password_hash = passwords.hash_password(password)
        rows.save(session, user)
    return user


def _active_admins(session: Session) -> int:
    query = select(func.count()).select_from(User).where(User.role == "admin", User.active == True)  # noqa: E712
    return session.exec(query).one()


def set_role(*, session: Session, user_id: int, role: str) -> User:
    """Change a user's role; refused when it would leave no active admin."""
    _check_role(role)
    user = _require(session, user_id)
    if user.role == "admin" and role != "admin" and user.active and _active_admins(session) <= 1:
        raise AccountError("This is the only active administrator; make someone else an admin first.")
    user.role = role
    return rows.save(session, user)


def set_password(*, session: Session, user_id: int, password: str) -> User:
    """Set a new password (admin reset or the user's own change); also lifts a sign-in lockout."""
    problems = passwords.password_problems(password)
    if problems:
        raise AccountError(" ".join(problems))
    password_hash = passwords.hash_password(password)  # before the transaction, which holds the lock
    user = _require(session, user_id)
    user.password_hash = password_hash
    session.add(user)
    # One commit: the new password and the cleared failures exist together.
    session.exec(delete(LoginFailure).where(LoginFailure.username == login_throttle.throttle_key(user.username)))
    session.commit()
    session.refresh(user)
    return user


def set_active(*, session: Session, user_id: int, active: bool) -> User:
    """Deactivate (nothing is deleted; the user can no longer sign in) or reactivate an account."""
    user = _require(session, user_id)
    if not active and user.active and user.role == "admin" and _active_admins(session) <= 1:
        raise AccountError("This is the only active administrator; it cannot be deactivated.")
    user.active = active
    return rows.save(session, user)


def acknowledge_disclaimer(*, session: Session, user_id: int) -> User:
    """Record that the user acknowledged the educational-use notice (first time only)."""
    user = _require(session, user_id)
    if user.acknowledged_disclaimer_at is None:
        user.acknowledged_disclaimer_at = utcnow()
        rows.save(session, user)
    return user


# -- OpenID Connect ----------------------------------------------------------------------------------------------


def oidc_subject(claims: Mapping[str, Any]) -> str | None:
    """``<issuer>|<sub>``: the stable identity of an SSO user (an e-mail address can be reassigned)."""
    sub = str(claims.get("sub") or "").strip()
    if not sub:
        return None
    return f"{str(claims.get('iss') or '').strip()}|{sub}"


def _claim_values(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        return value.replace(",", " ").split()
    if isinstance(value, (list, tuple, set)):
        return [str(v) for v in value]
    return []


def role_from_claims(claims: Mapping[str, Any]) -> str:
    """``instructor`` when a roles/groups claim says so, otherwise ``student``; never ``admin``."""
    for key in OIDC_ROLE_CLAIMS:
        if "instructor" in {v.strip().lower() for v in _claim_values(claims.get(key))}:
            return "instructor"
    return "student"


def _username_from_claims(session: Session, claims: Mapping[str, Any]) -> str:
    raw = str(claims.get("preferred_username") or claims.get("email") or claims.get("name") or "user")
    base = re.sub(r"[^a-z0-9._@-]", "", normalise_username(raw))[:56].lstrip("._@-") or "user"
    base = base if len(base) >= 3 else f"{base}-sso"
    candidate, n = base, 1
    while get_user_by_username(session=session, username=candidate) is not None:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def user_for_oidc(*, session: Session, claims: Mapping[str, Any], create_missing: bool = True) -> User | None:
    """The account linked to an identity-provider login, creating it on first sign-in if allowed.

    The role of an existing account always comes from our table (an admin may have changed it);
    a new account gets :func:`role_from_claims`. Disabled accounts and claims without a subject
    give None. A new account has no password: it can only sign in through the provider.
    """
    subject = oidc_subject(claims)
    if subject is None:
        return None
    user = session.exec(select(User).where(User.oidc_subject == subject)).first()
    if user is None:
        if not create_missing:
            return None
        user = User(
            username=_username_from_claims(session, claims),
            password_hash=None,
            role=role_from_claims(claims),
            oidc_subject=subject,
        )
        user = rows.save(session, user)
    return user if user.active else None
