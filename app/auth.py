"""Who is signed in, which pages each role gets, and the server-side role check every page starts with.

Pages use exactly this API::

    from app import auth
    user = auth.require_role("student", "instructor", "admin")   # first line of the page; stops it otherwise
    user.id, user.username, user.role                              # a frozen CurrentUser

The signed-in user's id is the only thing kept in ``st.session_state`` (key :data:`SESSION_KEY`);
the account is re-read from the database on every run, so deactivating someone or changing their
role takes effect on their next click. Passwords are never stored in session state or logged.
Single sign-on through ``st.login`` is offered when an ``[auth]`` section exists in the secrets;
its users are mapped to accounts in our table by :func:`services.accounts.user_for_oidc`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import streamlit as st
from sqlmodel import Session

from app import resources
from services import accounts

if TYPE_CHECKING:
    from storage.models import User

log = logging.getLogger(__name__)

SESSION_KEY = "auth_user_id"
LOGIN_FAILED = "Wrong username or password."
"""The one message for every failed sign-in: it never says whether the account exists."""
SignInThrottled = accounts.SignInThrottled
"""Raised by :func:`sign_in` after too many failures for the username; its message says when to retry."""

STUDENT, INSTRUCTOR, ADMIN = "student", "instructor", "admin"
EVERYONE = (STUDENT, INSTRUCTOR, ADMIN)
STAFF = (INSTRUCTOR, ADMIN)


@dataclass(frozen=True)
class CurrentUser:
    """The signed-in account as pages see it (no password hash)."""

    id: int
    username: str
    role: str
    acknowledged_disclaimer_at: datetime | None
    single_sign_on: bool

    @classmethod
    def from_user(cls, user: User) -> CurrentUser:
        assert user.id is not None
        return cls(user.id, user.username, user.role, user.acknowledged_disclaimer_at, user.oidc_subject is not None)


@dataclass(frozen=True)
class PageSpec:
    """One page of the navigation and the roles that see it."""

    path: str
    """Relative to the project root."""
    title: str
    icon: str
    section: str
    roles: tuple[str, ...]
    default: bool = False


PAGES: tuple[PageSpec, ...] = (
    PageSpec("pages/case_study.py", "Case study", ":material/stethoscope:", "Study", EVERYONE, default=True),
    PageSpec("pages/quiz.py", "Quiz", ":material/quiz:", "Study", EVERYONE),
    PageSpec("pages/history.py", "History", ":material/history:", "Study", EVERYONE),
    PageSpec("pages/curation.py", "Curation", ":material/edit_note:", "Teach", STAFF),
    PageSpec("pages/classes.py", "Classes", ":material/school:", "Teach", STAFF),
    PageSpec("pages/admin.py", "Admin", ":material/admin_panel_settings:", "Manage", (ADMIN,)),
    PageSpec("pages/users.py", "Users", ":material/group:", "Manage", (ADMIN,)),
)
LOGIN_PAGE = PageSpec("pages/login.py", "Sign in", ":material/login:", "", EVERYONE, default=True)


def pages_for(role: str) -> list[PageSpec]:
    """The pages a role sees in the navigation (each page checks the role again itself)."""
    return [page for page in PAGES if role in page.roles]


# -- single sign-on ----------------------------------------------------------------------------------------------


def oidc_configured() -> bool:
    """Whether ``[auth]`` secrets for ``st.login`` exist."""
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file at all: Streamlit raises its own not-found error
        return False


def _oidc_claims() -> Mapping[str, Any] | None:
    if not oidc_configured():
        return None
    try:
        if not st.user.is_logged_in:
            return None
        return st.user.to_dict()
    except (AttributeError, KeyError):
        return None


# -- the signed-in user ------------------------------------------------------------------------------------------


def _remember(user: User) -> CurrentUser:
    current = CurrentUser.from_user(user)
    st.session_state[SESSION_KEY] = current.id
    return current


def current_user() -> CurrentUser | None:
    """The signed-in, active user, freshly read from the database; None when nobody is signed in."""
    user_id = st.session_state.get(SESSION_KEY)
    with Session(resources.get_engine()) as session:
        if user_id is None:
            claims = _oidc_claims()
            if claims is None:
                return None
            user = accounts.user_for_oidc(session=session, claims=claims)
            if user is None:
                return None
            log.info("signed in through single sign-on: user id %s", user.id)
            return _remember(user)
        user = accounts.get_user(session=session, user_id=user_id)
        if user is None or not user.active:
            st.session_state.pop(SESSION_KEY, None)
            return None
        return CurrentUser.from_user(user)


def require_role(*roles: str) -> CurrentUser:
    """The signed-in user if their role is one of ``roles``; otherwise show why and stop the page.

    Every page calls this first, so running a page file directly is checked like navigation is.
    """
    user = current_user()
    if user is None:
        st.warning("Please sign in to use this page.")
        st.stop()
    if user.role not in roles:
        log.warning("refused: user id %s (%s) opened a page for %s", user.id, user.role, "/".join(roles))
        st.error("You do not have access to this page.")
        st.stop()
    return user


def sign_in(username: str, password: str) -> CurrentUser | None:
    """Check the credentials and remember the user in this browser session; None (and no detail) on failure.

    Raises :class:`SignInThrottled` (password not checked) after too many failures for the username.
    """
    with Session(resources.get_engine()) as session:
        try:
            user = accounts.authenticate(session=session, username=username, password=password)
        except SignInThrottled:
            log.warning("sign-in refused: too many failures for one username")  # never the name or password
            raise
        if user is None:
            log.info("failed sign-in")
            return None
        _reset_session_state()
        log.info("signed in: user id %s", user.id)
        return _remember(user)


def create_first_admin(username: str, password: str, confirm: str) -> str | None:
    """Create the installation's first account (an admin) and sign it in; an error message, or None on success."""
    if password != confirm:
        return "The two passwords differ."
    with Session(resources.get_engine()) as session:
        try:
            user = accounts.create_first_admin(session=session, username=username, password=password)
        except accounts.AccountError as exc:
            return str(exc)
        _reset_session_state()
        _remember(user)
    return None


def register_student(username: str, password: str, confirm: str) -> str | None:
    """Self-registration as a student when the setting allows it; an error message, or None on success."""
    if not resources.get_settings().allow_self_registration:
        return "Self-registration is turned off; ask an administrator for an account."
    if password != confirm:
        return "The two passwords differ."
    with Session(resources.get_engine()) as session:
        try:
            user = accounts.create_user(session=session, username=username, password=password, role=STUDENT)
        except accounts.AccountError as exc:
            return str(exc)
        _reset_session_state()
        _remember(user)
    return None


def _reset_session_state() -> None:
    """Forget everything the previous user of this browser session left behind."""
    for key in list(st.session_state.keys()):
        del st.session_state[key]


def sign_out() -> None:
    """Forget the signed-in user (and end the single sign-on session if there is one)."""
    signed_in_with_sso = _oidc_claims() is not None
    _reset_session_state()
    if signed_in_with_sso:
        st.logout()
