"""Real browser, real server: first-run admin creation, creating a student, the student's navigation.

Starts ``python -m streamlit run app/main.py`` on a free port with a throwaway work dir and drives
Debian's chromium with Playwright. Along the way the server is killed with SIGKILL right after the
student account is created and started again: the account must still be there and the SQLite file
must pass ``PRAGMA integrity_check``. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlmodel import Session

from storage import accounts, history
from storage.engine import integrity_check, open_database

from tests.e2e import server
from tests.e2e.server import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

STUDENT_PAGES = ["Case study", "Quiz", "History"]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@contextmanager
def streamlit_server(work_dir: Path, log: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    with server.streamlit_server({"MEDSTUDY_WORK_DIR": str(work_dir)}, log_path=log) as started:
        yield started


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    """A fresh work dir whose model cache is the project's (converted once per checkout, ~25 s)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/bootstrap.sh test does)")
    return server.work_dir_with_model_cache(tmp_path)


def _save_case_run(work_dir: Path, username: str, case_text: str) -> None:

    engine = open_database(f"sqlite:///{work_dir / 'medstudy.db'}")
    try:
        with Session(engine) as session:
            user = accounts.get_user_by_username(session=session, username=username)
            history.save_case_run(session=session, user_id=user.id, case_text=case_text, reasoning="Think.",
                                  answer="Measles", base_model="embedded", adapter="")
    finally:
        engine.dispose()


_field = server.field
_nav_titles = server.nav_titles


def _wait_for_nav(page, last: str) -> list[str]:
    page.locator('[data-testid="stSidebarNavLink"]', has_text=last).wait_for(timeout=60_000)
    return _nav_titles(page)


def test_first_admin_creates_a_student_who_sees_only_student_pages(work_dir: Path, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=60_000)  # the first case-study run loads the real model on a busy 2-core CPU
    ARTIFACTS.mkdir(exist_ok=True)
    log = tmp_path / "streamlit.log"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            with streamlit_server(work_dir, log) as (url, server):
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(60_000)
                page.goto(url)
                expect(page.get_by_text("No accounts exist yet.")).to_be_visible()
                _field(page, "Username").fill("admin")
                _field(page, "Password").fill("admin pass phrase")
                _field(page, "Confirm password").fill("admin pass phrase")
                page.get_by_role("button", name="Create administrator").click()
                assert _wait_for_nav(page, "Users") == STUDENT_PAGES + ["Curation", "Classes", "Admin", "Users"]

                page.locator('[data-testid="stSidebarNavLink"]', has_text="Users").click()
                expect(page.get_by_role("heading", name="Create an account")).to_be_visible()
                _field(page, "Username").fill("alice")
                _field(page, "Initial password").fill("alice pass phrase")
                page.get_by_role("button", name="Create account").click()
                expect(page.get_by_text("Created alice (student).")).to_be_visible()
                page.screenshot(path=str(ARTIFACTS / "accounts-admin-users.png"), full_page=True)
                assert "alice pass phrase" not in page.content()

                # Crash the real server right after the write; the account must survive the restart.
                os.kill(server.pid, signal.SIGKILL)
                server.wait(timeout=20)

            with streamlit_server(work_dir, log) as (url, _server):
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(60_000)
                page.goto(url)
                expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
                _field(page, "Username").fill("alice")
                _field(page, "Password").fill("wrong pass phrase")
                page.get_by_role("button", name="Sign in").click()
                expect(page.get_by_text("Wrong username or password.")).to_be_visible()
                _field(page, "Username").fill("alice")
                _field(page, "Password").fill("alice pass phrase")
                page.get_by_role("button", name="Sign in").click()
                assert _wait_for_nav(page, "History") == STUDENT_PAGES
                expect(page.get_by_text("Signed in as")).to_be_visible()
                expect(page.get_by_role("heading", name="Case study")).to_be_visible()
                # The sign-in page's error stays on screen until the new page's run has finished.
                expect(page.get_by_text("Wrong username or password.")).to_have_count(0)
                page.screenshot(path=str(ARTIFACTS / "accounts-student-navigation.png"), full_page=True)

                # Going straight to an admin page's URL: a new browser session must sign in first, and a
                # student then still gets only the student pages.
                page.goto(f"{url}/users")
                expect(page.get_by_text("Page not found")).to_be_visible()
                expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
                page.keyboard.press("Escape")
                expect(page.get_by_text("Page not found")).to_have_count(0)
                _field(page, "Username").fill("alice")
                _field(page, "Password").fill("alice pass phrase")
                page.get_by_role("button", name="Sign in").click()
                assert _wait_for_nav(page, "History") == STUDENT_PAGES
                expect(page.get_by_role("heading", name="Create an account")).to_have_count(0)
                page.locator('[data-testid="stSidebarNavLink"]', has_text="History").click()
                expect(page.get_by_text("Nothing here yet.")).to_be_visible()

                # A case run saved meanwhile (as the case-study page would) shows up and exports.
                _save_case_run(work_dir, "alice", "A <b>bold</b> case of fever")
                page.goto(url)  # loading the app again starts a new browser session: sign in again
                _field(page, "Username").fill("alice")
                _field(page, "Password").fill("alice pass phrase")
                page.get_by_role("button", name="Sign in").click()
                page.locator('[data-testid="stSidebarNavLink"]', has_text="History").click()
                expect(page.get_by_text("1 entry, newest first")).to_be_visible()
                with page.expect_download() as download:
                    page.get_by_role("button", name="Export CSV").click()
                exported = Path(download.value.path()).read_text()
                assert "A <b>bold</b> case of fever" in exported and "Measles" in exported
                page.screenshot(path=str(ARTIFACTS / "accounts-student-history.png"), full_page=True)
        finally:
            browser.close()

    assert "alice pass phrase" not in log.read_text() and "admin pass phrase" not in log.read_text()
    engine = open_database(f"sqlite:///{work_dir / 'medstudy.db'}")
    try:
        assert integrity_check(engine) == "ok"
        with Session(engine) as session:
            assert [(u.username, u.role) for u in accounts.list_users(session=session)] == [
                ("admin", "admin"), ("alice", "student")]
    finally:
        engine.dispose()
