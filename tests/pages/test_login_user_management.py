"""The admin's Users page: create accounts, change roles, reset passwords, deactivate (AppTest)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from storage import accounts
from tests.pages.auth_harness import add_user, app_as, app_environment


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Engine]:
    yield from app_environment(monkeypatch, tmp_path)


def _user(engine: Engine, username: str):
    with Session(engine) as session:
        return accounts.get_user_by_username(session=session, username=username)


def test_create_user_with_role_and_errors(engine: Engine) -> None:
    admin = add_user(engine, "root", "admin")
    at = app_as(admin, "pages/users.py").run()
    assert [row for row in at.dataframe[0].value["Username"]] == ["root"]
    at.text_input(key="new_username").input("Teacher.One")
    at.text_input(key="new_password").input("teacher pass")
    at.selectbox(key="new_role").set_value("instructor")
    at.button(key="FormSubmitter:create_user-Create account").click()
    at.run()
    assert [s.value for s in at.success] == ["Created teacher.one (instructor)."]
    assert list(at.dataframe[0].value["Username"]) == ["root", "teacher.one"]
    assert _user(engine, "teacher.one").role == "instructor"

    at.text_input(key="new_username").input("teacher.one")
    at.text_input(key="new_password").input("x")
    at.button(key="FormSubmitter:create_user-Create account").click()
    at.run()
    assert "at least 8 characters" in at.error[0].value
    assert len(at.dataframe[0].value) == 2


def test_change_role_reset_password_deactivate_reactivate(engine: Engine) -> None:
    admin = add_user(engine, "root", "admin")
    student = add_user(engine, "stu", password="old password")
    at = app_as(admin, "pages/users.py").run()
    at.selectbox(key="edit_user").set_value(student.id)
    at.run()
    at.selectbox(key=f"role_{student.id}").set_value("instructor")
    at.run()
    at.button(key="change_role").click()
    at.run()
    assert [s.value for s in at.success] == ["stu is now instructor."]
    assert _user(engine, "stu").role == "instructor"

    at.text_input(key=f"reset_password_{student.id}").input("brand new password")
    at.button(key="reset_password").click()
    at.run()
    assert [s.value for s in at.success] == ["Password of stu reset."]
    with Session(engine) as session:
        assert accounts.authenticate(session=session, username="stu", password="brand new password") is not None
        assert accounts.authenticate(session=session, username="stu", password="old password") is None

    at.button(key="deactivate").click()
    at.run()
    assert "stu is deactivated" in at.success[0].value
    assert not _user(engine, "stu").active
    at.button(key="reactivate").click()
    at.run()
    assert _user(engine, "stu").active


def test_the_last_admin_cannot_be_demoted_or_deactivate_themselves(engine: Engine) -> None:
    admin = add_user(engine, "root", "admin")
    at = app_as(admin, "pages/users.py").run()
    assert at.selectbox(key="edit_user").value == admin.id
    assert at.button(key="deactivate").disabled
    at.selectbox(key=f"role_{admin.id}").set_value("student")
    at.run()
    at.button(key="change_role").click()
    at.run()
    assert "only active administrator" in at.error[0].value
    assert _user(engine, "root").role == "admin"


def test_short_reset_password_is_refused(engine: Engine) -> None:
    admin = add_user(engine, "root", "admin")
    student = add_user(engine, "stu", password="old password")
    at = app_as(admin, "pages/users.py").run()
    at.selectbox(key="edit_user").set_value(student.id)
    at.run()
    at.text_input(key=f"reset_password_{student.id}").input("short")
    at.button(key="reset_password").click()
    at.run()
    assert "at least 8 characters" in at.error[0].value
    with Session(engine) as session:
        assert accounts.authenticate(session=session, username="stu", password="old password") is not None
