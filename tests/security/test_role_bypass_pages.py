"""Role bypass through the page files (AppTest): a student or instructor who runs a staff page script directly.

``st.navigation`` only offers a role its own pages, but a page file can still be run by URL or by a
crafted script run. Every page checks the role itself: the run must show exactly one refusal, no
widget, no table, no sidebar content, and must not even read the page's data from the database.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, func, select

from services import accounts as accounts_service
from services import classes as classes_service
from services import curation, quiz
from services import training as training_service
from storage import accounts, attempts, classes, history, quizzes, training
from storage.models import QuizSet, StudyClass, TrainingRun, User
from tests.pages.auth_harness import add_user, app_as, app_environment, rendered_text

WATCHED = (accounts, attempts, history, quizzes, training, quiz, curation, training_service, accounts_service, classes,
           classes_service)
AUTH_NEEDS = {(module, name) for module in ("storage.accounts", "services.accounts")
              for name in ("get_user", "user_for_oidc")}
"""What ``auth.require_role`` itself reads to find out who is signed in."""


@pytest.fixture
def app_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Engine]:
    yield from app_environment(monkeypatch, tmp_path)


def _watch_data_access(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every call to a repository or job function the pages use (apart from the sign-in check)."""
    calls: list[str] = []
    for module in WATCHED:
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ != module.__name__ or name.startswith("_") or (module.__name__, name) in AUTH_NEEDS:
                continue

            def wrapper(*args, __fn=fn, __name=f"{module.__name__}.{name}", **kwargs):
                calls.append(__name)
                return __fn(*args, **kwargs)

            monkeypatch.setattr(module, name, wrapper)
    return calls


def _counts(engine: Engine) -> tuple[int, ...]:
    with Session(engine) as session:
        return tuple(session.exec(select(func.count()).select_from(t)).one()
                     for t in (User, QuizSet, TrainingRun, StudyClass))


@pytest.mark.parametrize(("page", "role"), [
    ("pages/admin.py", "student"), ("pages/admin.py", "instructor"),
    ("pages/users.py", "student"), ("pages/users.py", "instructor"),
    ("pages/curation.py", "student"), ("pages/classes.py", "student"),
])
def test_staff_page_run_directly_shows_only_a_refusal(app_engine: Engine, monkeypatch: pytest.MonkeyPatch,
                                                      page: str, role: str) -> None:
    add_user(app_engine, "root-admin", "admin")
    teacher = add_user(app_engine, "teacher-one", "instructor")
    with Session(app_engine) as session:
        quizzes.create_quiz_set(session=session, owner_id=teacher.id, title="Secret exam set")
        secret_class = classes.create_class(session=session, owner_id=teacher.id, name="Secret class")
    intruder = add_user(app_engine, f"sneaky-{role}", role)
    before = _counts(app_engine)
    calls = _watch_data_access(monkeypatch)

    # Forged widget state for the page's forms and buttons changes nothing either.
    at = app_as(intruder, page, new_username="evil", new_password="evil pass phrase", new_role="admin",
                edit_user=intruder.id, change_role=True, reset_password=True, cls_current=secret_class.id,
                cls_tab="Progress", cls_new_name="Forged class").run()
    assert not at.exception
    main = list(at.main.children.values())
    assert [type(el).__name__ for el in main] == ["Error"]
    assert main[0].value == "You do not have access to this page."
    assert not list(at.sidebar.children.values())
    shown = rendered_text(at)
    for secret in ("root-admin", "teacher-one", "Secret exam set", "Users", "Curation", "Training", "Secret class",
                   secret_class.join_code):
        assert secret not in shown
    assert calls == []  # the page stopped before reading anything
    assert _counts(app_engine) == before
    with Session(app_engine) as session:
        assert accounts.get_user(session=session, user_id=intruder.id).role == role


@pytest.mark.parametrize("page", ["pages/admin.py", "pages/users.py", "pages/curation.py", "pages/classes.py"])
def test_the_refusal_is_logged_without_secrets(app_engine: Engine, caplog: pytest.LogCaptureFixture,
                                               page: str) -> None:
    student = add_user(app_engine, "stu-dent", password="student pass phrase")
    caplog.set_level("DEBUG", logger="app.auth")
    app_as(student, page).run()
    assert f"refused: user id {student.id} (student)" in caplog.text
    assert "student pass phrase" not in caplog.text and "$argon2" not in caplog.text


def test_the_watch_sees_an_allowed_page_read_its_data(app_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control for the test above: the same watch records the reads when the role is allowed."""
    admin = add_user(app_engine, "root-admin", "admin")
    calls = _watch_data_access(monkeypatch)
    at = app_as(admin, "pages/users.py").run()
    assert not at.exception and at.title[0].value == "Users"
    assert "storage.accounts.list_users" in calls
    assert "root-admin" in rendered_text(at)
