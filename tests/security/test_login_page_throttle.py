"""The sign-in page under repeated failures (AppTest): refusal with a retry time, reset by an admin, success clears."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from app import auth
from storage import login_throttle, passwords
from storage.login_throttle import MAX_FAILURES
from tests.pages.auth_harness import add_user, app_as, app_environment, registered_titles


@pytest.fixture
def app_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Engine]:
    yield from app_environment(monkeypatch, tmp_path)


def _sign_in(username: str, password: str):
    at = app_as(None).run()
    at.text_input(key="login_username").input(username)
    at.text_input(key="login_password").input(password)
    at.button(key="FormSubmitter:sign_in-Sign in").click()
    return at.run()


def test_locked_out_after_five_failures_until_an_admin_resets(app_engine: Engine,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    admin = add_user(app_engine, "root", "admin", password="admin pass phrase")
    dana = add_user(app_engine, "dana", password="right password")
    checked: list[str] = []
    real_verify = passwords.verify_password
    monkeypatch.setattr(passwords, "verify_password", lambda h, p: checked.append(p) or real_verify(h, p))

    for attempt in range(MAX_FAILURES):
        at = _sign_in("Dana" if attempt % 2 else "dana", f"wrong guess {attempt}")
        assert [e.value for e in at.error] == [auth.LOGIN_FAILED]
    assert len(checked) == MAX_FAILURES

    at = _sign_in("dana", "right password")  # a new browser session: the lockout is in the database
    assert not at.exception
    [message] = [e.value for e in at.error]
    assert message.startswith("Too many failed sign-ins for this username. Try again in ")
    assert "UTC" in message
    assert len(checked) == MAX_FAILURES  # refused without looking at the password
    assert auth.SESSION_KEY not in at.session_state and registered_titles(at) == ["Sign in"]

    # The same refusal for a username that does not exist, after its own five failures.
    for attempt in range(MAX_FAILURES):
        _sign_in("nobody-here", f"guess {attempt}")
    assert _sign_in("nobody-here", "guess again").error[0].value.startswith("Too many failed sign-ins")

    # An admin resets dana's password on the users page: the lockout is lifted.
    users = app_as(admin, "pages/users.py").run()
    users.selectbox(key="edit_user").set_value(dana.id)
    users.run()
    [notice] = [w.value for w in users.warning]
    assert notice.startswith("dana is locked out of password sign-in after repeated failures until ")
    users.text_input(key=f"reset_password_{dana.id}").input("fresh pass phrase")
    users.button(key="reset_password").click()
    users.run()
    assert "Password of dana reset." in [s.value for s in users.success]
    assert not users.warning

    at = _sign_in("dana", "fresh pass phrase")
    assert not at.error and at.session_state[auth.SESSION_KEY] == dana.id
    with Session(app_engine) as session:
        assert login_throttle.count_failures(session=session, username="dana") == 0
        assert login_throttle.count_failures(session=session, username="nobody-here") == MAX_FAILURES


def test_a_successful_sign_in_clears_earlier_failures(app_engine: Engine) -> None:
    add_user(app_engine, "root", "admin")
    add_user(app_engine, "erin", password="right password")
    for attempt in range(MAX_FAILURES - 1):
        _sign_in("erin", f"wrong guess {attempt}")
    at = _sign_in("ERIN", "right password")
    assert not at.error and auth.SESSION_KEY in at.session_state
    for attempt in range(MAX_FAILURES - 1):  # four more mistakes are allowed again, and then the right one
        assert _sign_in("erin", f"again wrong {attempt}").error[0].value == auth.LOGIN_FAILED
    assert auth.SESSION_KEY in _sign_in("erin", "right password").session_state
