"""Sign-in, first-run admin creation, self-registration, sign-out and role-based navigation (AppTest)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from app import auth
from storage import accounts
from tests.pages.auth_harness import add_user, app_as, app_environment, registered_titles, rendered_text

STUDENT_PAGES = ["Case study", "Quiz", "History"]
INSTRUCTOR_PAGES = STUDENT_PAGES + ["Curation", "Classes"]
ADMIN_PAGES = INSTRUCTOR_PAGES + ["Admin", "Users"]


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Engine]:
    yield from app_environment(monkeypatch, tmp_path)


def _sign_in(at, username: str, password: str):
    at.text_input(key="login_username").input(username)
    at.text_input(key="login_password").input(password)
    at.button(key="FormSubmitter:sign_in-Sign in").click()
    return at.run()


def _users(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return [u.username for u in accounts.list_users(session=session)]


def test_first_start_asks_for_the_administrator(engine: Engine) -> None:
    at = app_as(None).run()
    assert not at.exception
    assert registered_titles(at) == ["Sign in"]
    assert [t.label for t in at.text_input] == ["Username", "Password", "Confirm password"]

    at.text_input(key="admin_username").input("root")
    at.text_input(key="admin_password").input("correct horse")
    at.text_input(key="admin_confirm").input("different horse")
    at.button[0].click()
    at.run()
    assert [e.value for e in at.error] == ["The two passwords differ."]
    assert _users(engine) == []

    at.text_input(key="admin_username").input("root")
    at.text_input(key="admin_password").input("short")
    at.text_input(key="admin_confirm").input("short")
    at.button[0].click()
    at.run()
    assert "at least 8 characters" in at.error[0].value
    assert _users(engine) == []

    at.text_input(key="admin_username").input("Root")
    at.text_input(key="admin_password").input("correct horse")
    at.text_input(key="admin_confirm").input("correct horse")
    at.button[0].click()
    at.run()
    assert not at.exception and not at.error
    assert registered_titles(at) == ADMIN_PAGES
    assert at.title[0].value == "Case study"  # the default page, model faked
    with Session(engine) as session:
        admin = accounts.get_user_by_username(session=session, username="root")
    assert admin.role == "admin" and at.session_state[auth.SESSION_KEY] == admin.id


@pytest.mark.parametrize(("role", "pages"), [("student", STUDENT_PAGES), ("instructor", INSTRUCTOR_PAGES),
                                             ("admin", ADMIN_PAGES)])
def test_sign_in_shows_only_the_roles_pages(engine: Engine, role: str, pages: list[str]) -> None:
    add_user(engine, "first-admin", "admin")
    add_user(engine, "person", role, password="right password")
    at = app_as(None).run()
    assert [t.label for t in at.text_input] == ["Username", "Password"]
    _sign_in(at, "Person", "right password")
    assert not at.exception and not at.error
    assert registered_titles(at) == pages
    assert "Signed in as `person`" in at.sidebar.caption[0].value


def test_student_cannot_navigate_to_staff_pages(engine: Engine) -> None:
    student = add_user(engine, "stu")
    at = app_as(student).run()
    assert registered_titles(at) == STUDENT_PAGES
    for page in ("pages/admin.py", "pages/users.py", "pages/curation.py"):
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            at.switch_page(f"../{page}")
    at.switch_page("../pages/history.py").run()
    assert at.title[0].value == "History"


@pytest.mark.parametrize("case", ["wrong password", "unknown user", "deactivated"])
def test_failed_sign_in_never_says_whether_the_account_exists(engine: Engine, case: str) -> None:
    add_user(engine, "first-admin", "admin")
    user = add_user(engine, "dana", password="right password")
    if case == "deactivated":
        with Session(engine) as session:
            accounts.set_active(session=session, user_id=user.id, active=False)
    username, password = {"wrong password": ("dana", "wrong password"), "unknown user": ("nobody", "right password"),
                          "deactivated": ("dana", "right password")}[case]
    at = _sign_in(app_as(None).run(), username, password)
    assert [e.value for e in at.error] == [auth.LOGIN_FAILED]
    assert auth.SESSION_KEY not in at.session_state
    assert registered_titles(at) == ["Sign in"]
    # Everything shown is the same whichever way it failed (the username field is cleared too).
    assert rendered_text(at) == rendered_text(_sign_in(app_as(None).run(), "nobody-else", "whatever pass"))


def test_no_password_or_hash_in_pages_or_logs(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    admin = add_user(engine, "root", "admin", password="admin pass phrase")
    add_user(engine, "stu", password="student pass phrase")
    with Session(engine) as session:
        hashes = [u.password_hash for u in accounts.list_users(session=session)]
    at = _sign_in(app_as(None).run(), "stu", "wrong pass phrase")
    shown = rendered_text(at)
    at = _sign_in(app_as(None).run(), "root", "admin pass phrase")
    shown += rendered_text(at)
    users_page = app_as(admin, "pages/users.py").run()
    users_page.text_input(key="new_username").input("newbie")
    users_page.text_input(key="new_password").input("newbie pass phrase")
    users_page.button(key="FormSubmitter:create_user-Create account").click()
    users_page.run()
    assert "Created newbie (student)." in [s.value for s in users_page.success]
    shown += rendered_text(users_page)
    assert "stu" in shown and "root" in shown  # the pages did render accounts
    for secret in ["wrong pass phrase", "admin pass phrase", "newbie pass phrase", *hashes, "$argon2"]:
        assert secret not in shown
        assert secret not in caplog.text


def test_self_registration_only_when_enabled(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    environment = app_environment(monkeypatch, tmp_path / "off")
    engine = next(environment)
    add_user(engine, "first-admin", "admin")
    at = app_as(None).run()
    assert not at.expander and "register_username" not in [t.key for t in at.text_input]
    next(environment, None)

    environment = app_environment(monkeypatch, tmp_path / "on", allow_self_registration="true")
    engine = next(environment)
    add_user(engine, "first-admin", "admin")
    at = app_as(None).run()
    at.text_input(key="register_username").input("newcomer")
    at.text_input(key="register_password").input("my pass phrase")
    at.text_input(key="register_confirm").input("my pass phrase")
    at.button(key="FormSubmitter:register-Create my account").click()
    at.run()
    assert not at.exception and not at.error
    assert registered_titles(at) == STUDENT_PAGES
    with Session(engine) as session:
        assert accounts.get_user_by_username(session=session, username="newcomer").role == "student"
    next(environment, None)


def test_sign_out_and_deactivation_end_the_session(engine: Engine) -> None:
    admin = add_user(engine, "root", "admin")
    student = add_user(engine, "stu")
    at = app_as(student).run()
    assert registered_titles(at) == STUDENT_PAGES
    at.sidebar.button(key="sign_out").click()
    at.run()
    assert registered_titles(at) == ["Sign in"] and auth.SESSION_KEY not in at.session_state

    at = app_as(student).run()
    assert registered_titles(at) == STUDENT_PAGES
    with Session(engine) as session:
        accounts.set_active(session=session, user_id=student.id, active=False)
    at.run()
    assert registered_titles(at) == ["Sign in"]

    at = app_as(admin).run()
    with Session(engine) as session:  # a role change applies on the next click
        accounts.create_user(session=session, username="root2", password="correct horse", role="admin")
        accounts.set_role(session=session, user_id=admin.id, role="instructor")
    at.run()
    assert registered_titles(at) == INSTRUCTOR_PAGES


def test_single_sign_on_maps_to_a_student_never_an_admin(engine: Engine) -> None:
    add_user(engine, "root", "admin")
    at = app_as(None)
    at.secrets["auth"] = {"redirect_uri": "http://localhost/oauth2callback", "cookie_secret": "x"}
    at.user = {"is_logged_in": True, "iss": "https://idp.example", "sub": "u-1", "email": "sso@uni.edu",
               "roles": ["admin"]}
    at.run()
    assert not at.exception
    assert registered_titles(at) == STUDENT_PAGES
    with Session(engine) as session:
        user = accounts.get_user_by_username(session=session, username="sso@uni.edu")
    assert user.role == "student" and user.password_hash is None and user.oidc_subject == "https://idp.example|u-1"


def test_sign_in_page_offers_single_sign_on_only_when_configured(engine: Engine) -> None:
    add_user(engine, "root", "admin")
    assert "sso_login" not in [b.key for b in app_as(None).run().button]
    at = app_as(None)
    at.secrets["auth"] = {"redirect_uri": "http://localhost/oauth2callback", "cookie_secret": "x"}
    at.user = {"is_logged_in": False}
    assert "sso_login" in [b.key for b in at.run().button]
