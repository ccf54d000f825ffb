"""Login throttling in the repository: 5 failures per username in 15 minutes lock it, without a password check."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, select

from storage import accounts, login_throttle, passwords
from storage.login_throttle import MAX_FAILURES, WINDOW, SignInThrottled
from storage.models import LoginFailure

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _fail(session: Session, username: str, times: int, start: datetime = T0, step: timedelta = timedelta(seconds=10)):
    for i in range(times):
        assert accounts.authenticate(session=session, username=username, password="wrong password",
                                     now=start + i * step) is None


def _count_verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real_verify = passwords.verify_password
    monkeypatch.setattr(passwords, "verify_password", lambda h, p: calls.append(p) or real_verify(h, p))
    return calls


def test_limits_are_named_constants() -> None:
    assert (MAX_FAILURES, WINDOW) == (5, timedelta(minutes=15))


def test_sixth_attempt_is_refused_without_checking_the_password(session: Session, make_user,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    make_user("dana", password="right password")
    calls = _count_verifications(monkeypatch)
    _fail(session, "dana", MAX_FAILURES)
    assert len(calls) == MAX_FAILURES
    with pytest.raises(SignInThrottled) as refused:  # even the right password is not looked at
        accounts.authenticate(session=session, username="dana", password="right password",
                              now=T0 + timedelta(minutes=1))
    assert len(calls) == MAX_FAILURES
    # Freed when the first failure (at T0) is 15 minutes old.
    assert refused.value.retry_at == T0 + WINDOW
    assert "Too many failed sign-ins" in str(refused.value)
    assert "Try again in 14 minutes (at 09:15 UTC)" in str(refused.value)
    assert "right password" not in str(refused.value)


def test_case_insensitive_and_unknown_usernames_count_the_same(session: Session, make_user,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    make_user("erin", password="right password")
    for i, spelling in enumerate(["erin", "ERIN", " Erin ", "eRiN", "erin"]):
        assert accounts.authenticate(session=session, username=spelling, password="nope nope",
                                     now=T0 + timedelta(seconds=i)) is None
    with pytest.raises(SignInThrottled):
        accounts.authenticate(session=session, username="Erin", password="right password",
                              now=T0 + timedelta(minutes=2))

    calls = _count_verifications(monkeypatch)
    _fail(session, "ghost-user", MAX_FAILURES)  # no such account: still one (dummy) verification each
    assert len(calls) == MAX_FAILURES
    with pytest.raises(SignInThrottled) as unknown:
        accounts.authenticate(session=session, username="GHOST-user", password="x" * 10, now=T0 + timedelta(minutes=2))
    assert len(calls) == MAX_FAILURES
    # An unknown name is refused with the same words as a real one: the throttle tells nothing about accounts.
    with pytest.raises(SignInThrottled) as known:
        accounts.authenticate(session=session, username="erin", password="x" * 10, now=T0 + timedelta(minutes=2))
    assert str(unknown.value) == str(known.value)
    # Other usernames are not affected.
    make_user("fred", password="right password")
    assert accounts.authenticate(session=session, username="fred", password="right password",
                                 now=T0 + timedelta(minutes=2)) is not None


def test_failures_outside_the_window_do_not_count(session: Session, make_user) -> None:
    make_user("gail", password="right password")
    _fail(session, "gail", MAX_FAILURES - 1, step=timedelta(minutes=4))  # T0, +4, +8, +12 min
    _fail(session, "gail", 1, start=T0 + timedelta(minutes=16))  # T0 has aged out: 4 within 15 minutes
    assert login_throttle.count_failures(session=session, username="gail", now=T0 + timedelta(minutes=16)) == 4
    _fail(session, "gail", 1, start=T0 + timedelta(minutes=17))  # the 5th within the window
    with pytest.raises(SignInThrottled) as refused:
        accounts.authenticate(session=session, username="gail", password="right password",
                              now=T0 + timedelta(minutes=18))
    assert refused.value.retry_at == T0 + timedelta(minutes=4) + WINDOW
    # At retry_at exactly, the oldest counted failure has aged out and the right password works.
    assert accounts.authenticate(session=session, username="gail", password="right password",
                                 now=refused.value.retry_at) is not None


def test_success_clears_the_counter(session: Session, make_user) -> None:
    make_user("hank", password="right password")
    _fail(session, "hank", MAX_FAILURES - 1)
    user = accounts.authenticate(session=session, username="Hank", password="right password",
                                 now=T0 + timedelta(minutes=1))
    assert user is not None and user.username == "hank"
    assert login_throttle.count_failures(session=session, username="hank", now=T0 + timedelta(minutes=1)) == 0
    _fail(session, "hank", MAX_FAILURES - 1, start=T0 + timedelta(minutes=2))  # four more are allowed again
    assert accounts.authenticate(session=session, username="hank", password="right password",
                                 now=T0 + timedelta(minutes=3)) is not None


def test_password_reset_lifts_the_lockout(session: Session, make_user) -> None:
    user = make_user("ivan", password="right password")
    other = make_user("judy", password="right password")
    _fail(session, "ivan", MAX_FAILURES)
    _fail(session, "judy", MAX_FAILURES)
    accounts.set_password(session=session, user_id=user.id, password="brand new password")
    later = T0 + timedelta(minutes=2)
    signed_in = accounts.authenticate(session=session, username="ivan", password="brand new password", now=later)
    assert signed_in.id == user.id
    with pytest.raises(SignInThrottled):  # only the reset account is unlocked
        accounts.authenticate(session=session, username="judy", password="right password", now=later)
    assert other.id is not None


def test_lockout_is_stored_in_the_database(engine, session: Session, make_user) -> None:
    make_user("kate", password="right password")
    session.close()  # in-memory SQLite has one shared connection: end this session's transaction first
    with Session(engine) as first:
        _fail(first, "kate", MAX_FAILURES)
    with Session(engine) as second:  # a new session (or a restarted app) sees the same lockout
        assert login_throttle.retry_at(session=second, username="KATE", now=T0 + timedelta(minutes=1)) == T0 + WINDOW
        rows = second.exec(select(LoginFailure)).all()
    assert {r.username for r in rows} == {"kate"} and len(rows) == MAX_FAILURES
    # Only the username and the time are stored, never the password that was tried.
    assert all(set(r.model_dump()) == {"id", "username", "created_at"} for r in rows)


def test_old_failures_are_pruned_and_long_input_is_cut(session: Session) -> None:
    login_throttle.record_failure(session=session, username="old-name", at=T0 - timedelta(days=1))
    very_long = "x" * 100_000
    assert accounts.authenticate(session=session, username=very_long, password="whatever pass", now=T0) is None
    rows = session.exec(select(LoginFailure)).all()
    assert [r.username for r in rows] == ["x" * login_throttle.KEY_CHARS]  # the day-old row is gone
