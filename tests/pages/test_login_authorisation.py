"""Every page checks the role itself: running a page file directly is refused like navigation is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from app import auth
from tests.pages.auth_harness import PROJECT_ROOT, add_user, allows_html, app_as, app_environment

ROLES = ("student", "instructor", "admin")


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Engine]:
    yield from app_environment(monkeypatch, tmp_path)


def test_every_page_file_is_in_the_navigation_spec() -> None:
    files = {p.name for p in (PROJECT_ROOT / "pages").glob("*.py") if p.name != "__init__.py"}
    assert files == {Path(spec.path).name for spec in auth.PAGES} | {"login.py"}


@pytest.mark.parametrize("spec", auth.PAGES, ids=lambda spec: spec.title)
def test_page_guard_matches_the_navigation(engine: Engine, spec: auth.PageSpec) -> None:
    add_user(engine, "root", "admin")
    for role in ROLES:
        user = add_user(engine, f"{role}-user", role) if role != "admin" else add_user(engine, "admin-user", "admin")
        at = app_as(user, spec.path).run()
        assert not at.exception, (role, at.exception)
        refused = [e.value for e in at.error] == ["You do not have access to this page."]
        assert refused == (role not in spec.roles), f"{spec.path} as {role}"
        if refused:  # nothing of the page itself was shown, and nothing can be clicked
            assert not at.title and not at.button and not at.text_input
        assert not allows_html(at)


@pytest.mark.parametrize("spec", auth.PAGES, ids=lambda spec: spec.title)
def test_pages_ask_visitors_to_sign_in(engine: Engine, spec: auth.PageSpec) -> None:
    at = app_as(None, spec.path).run()
    assert [w.value for w in at.warning] == ["Please sign in to use this page."]
    assert not at.title and not at.button


def test_a_forged_session_for_a_missing_account_is_signed_out(engine: Engine) -> None:
    at = app_as(None, "pages/users.py")
    at.session_state[auth.SESSION_KEY] = 424242
    at.run()
    assert [w.value for w in at.warning] == ["Please sign in to use this page."]
    assert auth.SESSION_KEY not in at.session_state
