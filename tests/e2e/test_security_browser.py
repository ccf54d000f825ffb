"""Real browser, real server: role bypass by URL, stored XSS rendered inert, and no password in any log or file.

Each test starts ``python -m streamlit run app/main.py`` with a throwaway work dir and drives Debian's
chromium with Playwright (tests/e2e/server.py). Screenshots go to ``test-artifacts/``.

- A signed-in student types the admin, users and curation URLs (a full load, then signing in again
  there) and moves to them inside the running session (history API): no admin or instructor
  heading, widget or navigation link ever appears.
- An item override, an imported quiz file and a saved case study that carry ``<script>``, an
  ``<img onerror>`` and a ``javascript:`` Markdown link are viewed on the quiz, curation and history
  pages: ``window.__xss`` stays undefined, no such element or link exists, and the text is shown.
- Creating the admin, a failed and a successful sign-in, a password reset, an account created by the
  admin and a self-registration leave none of those passwords in the server's output (debug
  logging on) or in any file of the work dir, the SQLite database included (which holds argon2 hashes).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from sqlmodel import Session

from core.quiz_bank import Bank
from core.quiz_import import parse_import
from services import curation, quiz
from storage import accounts, history, quizzes
from storage.engine import open_database
from tests.e2e.server import (
    ARTIFACTS, CHROMIUM, chromium_page, create_first_admin, field, nav_titles, sign_in, streamlit_server,
    wait_for_app, work_dir_with_model_cache,
)
from tests.pages.quiz_harness import BANK, write_prepared_bank

pytestmark = [pytest.mark.browser, pytest.mark.slow]

STUDENT_PAGES = ["Case study", "Quiz", "History"]
STAFF_HEADINGS = ["Admin", "Users", "Curation", "Create an account", "Change an account", "Train an adapter"]
SCRIPT = "<script>window.__xss=1</script>"
IMG = '<img src=x onerror="window.__xss=2">'
LINK = "[link](javascript:window.__xss=3)"
PAYLOADS = (SCRIPT, IMG, LINK)
TEACHER, STUDENT = ("prof-zebulon", "teacher pass phrase"), ("alice", "alice pass phrase")


@pytest.fixture
def work(tmp_path: Path) -> Path:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/bootstrap.sh test does)")
    ARTIFACTS.mkdir(exist_ok=True)
    work = work_dir_with_model_cache(tmp_path)
    write_prepared_bank(work)
    return work


def _expect():
    from playwright.sync_api import expect

    expect.set_options(timeout=60_000)
    return expect


def _db(work: Path):
    return open_database(f"sqlite:///{work / 'medstudy.db'}")


def _nav(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNavLink"]', has_text=title).click()
    page.get_by_role("heading", name=title).first.wait_for()
    wait_for_app(page)


def _sign_out(page) -> None:
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("heading", name="Sign in").wait_for()
    wait_for_app(page)  # the previous page's elements stay until the run has finished


def _pick(page, label: str, option_text: str) -> None:
    """Choose the option containing ``option_text`` in the selectbox labelled ``label``."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    wait_for_app(page)  # a selectbox redrawn by a rerun in progress closes its list and drops the typed text
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text=label).locator("input")
    option = page.get_by_role("option").filter(has_text=option_text).first
    for attempt in range(3):
        box.click()
        box.fill(option_text)  # the selectbox filters its options as one types; Enter takes the first match
        try:
            option.wait_for(timeout=15_000)
            break
        except PlaywrightTimeout:
            if attempt == 2:
                raise
            page.keyboard.press("Escape")
            wait_for_app(page)
    page.keyboard.press("Enter")
    wait_for_app(page)


def _assert_no_staff_content(page, expect) -> None:
    assert nav_titles(page) == STUDENT_PAGES
    for heading in STAFF_HEADINGS:
        expect(page.get_by_role("heading", name=heading, exact=True)).to_have_count(0)
    expect(page.locator('[data-testid="stFileUploader"]')).to_have_count(0)
    expect(page.get_by_role("tab")).to_have_count(0)  # curation and admin pages are tabbed; student pages here are not
    for secret in (TEACHER[0], "Secret exam set"):
        assert secret not in page.inner_text("body")


# -- role bypass -----------------------------------------------------------------------------------------------


def _go_within_session(page, path: str) -> None:
    """Change the URL without a reload (the browser's history API) and let Streamlit follow it."""
    page.evaluate("p => { history.pushState({}, '', '/' + p); dispatchEvent(new PopStateEvent('popstate')); }", path)
    page.wait_for_timeout(500)
    wait_for_app(page)


def test_student_typing_staff_urls_sees_no_staff_content(work: Path) -> None:
    expect = _expect()
    engine = _db(work)
    try:
        with Session(engine) as session:
            accounts.create_user(session=session, username="root", password="root pass phrase", role="admin")
            teacher = accounts.create_user(session=session, username=TEACHER[0], password=TEACHER[1],
                                           role="instructor")
            accounts.create_user(session=session, username=STUDENT[0], password=STUDENT[1])
            quizzes.create_quiz_set(session=session, owner_id=teacher.id, title="Secret exam set")
    finally:
        engine.dispose()

    with streamlit_server({"MEDSTUDY_WORK_DIR": str(work)}) as (url, _proc), chromium_page() as page:
        page.set_default_timeout(60_000)
        try:
            # Control: the same in-session move does reach a staff page for the admin.
            sign_in(page, url, "root", "root pass phrase", last_nav="Users")
            _go_within_session(page, "users")
            expect(page.get_by_role("heading", name="Create an account")).to_be_visible()
            _sign_out(page)

            sign_in(page, url, *STUDENT)
            assert nav_titles(page) == STUDENT_PAGES
            # Inside the running (signed-in) session, as a link or the back button would move.
            for path in ("admin", "users", "curation"):
                _go_within_session(page, path)
                _assert_no_staff_content(page, expect)
            # Typing the URL: a full load, so the student signs in again right there.
            for path in ("admin", "users", "curation"):
                page.goto(f"{url}/{path}")
                expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
                page.keyboard.press("Escape")  # the "Page not found" notice
                field(page, "Username").fill(STUDENT[0])
                field(page, "Password").fill(STUDENT[1])
                page.get_by_role("button", name="Sign in").click()
                page.locator('[data-testid="stSidebarNavLink"]', has_text="History").wait_for()
                wait_for_app(page)
                _assert_no_staff_content(page, expect)
                expect(page.get_by_role("heading", name="Case study")).to_be_visible()  # the default page instead
            page.screenshot(path=str(ARTIFACTS / "security-student-staff-urls.png"), full_page=True)
            assert page.locator('[data-testid="stException"]').count() == 0
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "security-role-bypass-failure.png"), full_page=True)
            raise


# -- stored XSS ------------------------------------------------------------------------------------------------


def _hostile_content(work: Path) -> tuple[str, str]:
    """An edited bank item, an imported item and a case run, all carrying the payloads; returns the ids."""
    text = " ".join(PAYLOADS)
    engine = _db(work)
    try:
        with Session(engine) as session:
            teacher = accounts.create_user(session=session, username=TEACHER[0], password=TEACHER[1],
                                           role="instructor")
            student = accounts.create_user(session=session, username=STUDENT[0], password=STUDENT[1])
            catalog = quiz.load_catalog(session=session, bank=Bank.from_records(BANK))
            curation.save_edit(
                session=session, catalog=catalog, item_id="medqa:q1", editor_id=teacher.id,
                question=f"Edited question {text}",
                options={"A": f"Edited {SCRIPT}", "B": IMG, "C": LINK, "D": "Hemolysis"},
                explanation=f"Edited explanation {text}",
            )
            buffer = io.StringIO()
            csv.writer(buffer).writerows([
                ["question", "A", "B", "C", "correct", "explanation", "license", "attribution"],
                [f"Imported question {text}", SCRIPT, IMG, LINK, "A", f"Imported explanation {LINK}", "CC0",
                 f"Hostile {IMG}"],
            ])
            csv_text = buffer.getvalue()
            parsed = parse_import(csv_text.encode(), "hostile.csv", existing_ids=[r.id for r in BANK])
            assert not parsed.errors and len(parsed.valid) == 1, parsed.errors
            curation.import_items(session=session, importer_id=teacher.id, records=parsed.valid)
            imported_id = parsed.valid[0].id
            quiz_set = quizzes.create_quiz_set(session=session, owner_id=teacher.id, title=f"Hostile set {SCRIPT}")
            quizzes.set_quiz_set_items(session=session, quiz_set_id=quiz_set.id, item_ids=["medqa:q1", imported_id])
            quizzes.set_published(session=session, quiz_set_id=quiz_set.id, published=True)
            history.save_case_run(session=session, user_id=student.id, case_text=f"Case text {text}",
                                  reasoning=f"Reasoning {text}", answer=f"Answer {text}", base_model="embedded",
                                  adapter="", timings={"tokens": 3})
    finally:
        engine.dispose()
    return "medqa:q1", imported_id


def _assert_inert(page, expect, *, shown: list[str]) -> None:
    assert page.evaluate("() => typeof window.__xss") == "undefined"
    assert page.locator('img[src="x"], img[onerror]').count() == 0
    assert page.locator("script", has_text="__xss").count() == 0
    hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))")
    assert not [h for h in hrefs if h.strip().lower().startswith("javascript:")], hrefs
    for text in shown:
        expect(page.get_by_text(text, exact=False).filter(visible=True).first).to_be_visible()


def test_hostile_quiz_and_history_text_is_shown_inert(work: Path) -> None:
    expect = _expect()
    edited_id, imported_id = _hostile_content(work)
    with streamlit_server({"MEDSTUDY_WORK_DIR": str(work)}) as (url, _proc), chromium_page() as page:
        page.set_default_timeout(60_000)
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        try:
            # The student takes the quiz made of the edited and the imported item.
            sign_in(page, url, *STUDENT)
            _nav(page, "Quiz")
            expect(page.get_by_text(f"Hostile set {SCRIPT}")).to_be_visible()
            page.get_by_role("button", name="Start", exact=True).first.click()
            wait_for_app(page)
            _assert_inert(page, expect, shown=[f"Edited question {' '.join(PAYLOADS)}", f"A. Edited {SCRIPT}",
                                                f"B. {IMG}", f"C. {LINK}"])
            page.locator('[data-testid="stRadio"] label').filter(has_text="A. Edited").click()
            wait_for_app(page)
            page.get_by_role("button", name="Submit answer", exact=True).click()
            wait_for_app(page)
            _assert_inert(page, expect, shown=[f"Edited explanation {' '.join(PAYLOADS)}"])
            page.get_by_role("button", name="Next", exact=True).click()
            wait_for_app(page)
            _assert_inert(page, expect, shown=[f"Imported question {' '.join(PAYLOADS)}", f"A. {SCRIPT}",
                                                f"B. {IMG}", f"C. {LINK}"])
            page.locator('[data-testid="stRadio"] label').filter(has_text=f"A. {SCRIPT}").click()
            wait_for_app(page)
            page.get_by_role("button", name="Submit answer", exact=True).click()
            wait_for_app(page)
            _assert_inert(page, expect, shown=[f"Imported explanation {LINK}"])
            page.screenshot(path=str(ARTIFACTS / "security-xss-quiz.png"), full_page=True)

            # The student's history entry.
            _nav(page, "History")
            _pick(page, "Open an entry", "Case study")
            # The case text is shown verbatim. Reasoning and answer are Markdown: Streamlit shows raw HTML as text
            # and keeps only the text of a javascript: link (its target becomes "#").
            _assert_inert(page, expect, shown=[f"Case text {' '.join(PAYLOADS)}", f"Reasoning {SCRIPT} {IMG} link",
                                                f"Answer {SCRIPT} {IMG} link"])
            links = page.locator('[data-testid="stMarkdownContainer"] a', has_text="link")
            assert links.count() == 2
            assert {links.nth(i).get_attribute("href") for i in range(2)} == {"#"}
            page.screenshot(path=str(ARTIFACTS / "security-xss-history.png"), full_page=True)
            _sign_out(page)

            # The instructor previews both items on the curation page.
            sign_in(page, url, *TEACHER, last_nav="Curation")
            _nav(page, "Curation")
            for item_id, shown in [(edited_id, f"Edited question {' '.join(PAYLOADS)}"),
                                   (imported_id, f"Imported question {' '.join(PAYLOADS)}")]:
                _pick(page, "Preview an item", item_id)
                _assert_inert(page, expect, shown=[shown])
            page.screenshot(path=str(ARTIFACTS / "security-xss-curation.png"), full_page=True)
            assert page.locator('[data-testid="stException"]').count() == 0
            assert dialogs == []
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "security-xss-failure.png"), full_page=True)
            raise


# -- secrets never in logs -------------------------------------------------------------------------------------


def test_passwords_never_reach_logs_or_files(work: Path, tmp_path: Path) -> None:
    expect = _expect()
    secrets = {
        "admin": "Adm1n-Secret-Phrase", "wrong": "Wr0ng-Guess-Phrase", "bob": "B0b-Initial-Phrase",
        "reset": "B0b-Reset-Phrase", "carol": "Car0l-Register-Phrase",
    }
    log = tmp_path / "server.log"
    env = {"MEDSTUDY_WORK_DIR": str(work), "MEDSTUDY_ALLOW_SELF_REGISTRATION": "true",
           "STREAMLIT_LOGGER_LEVEL": "debug"}
    with streamlit_server(env, log_path=log) as (url, _proc), chromium_page() as page:
        page.set_default_timeout(60_000)
        try:
            create_first_admin(page, url, "admin", secrets["admin"])
            _nav(page, "Users")
            field(page, "Username").fill("bob")
            field(page, "Initial password").fill(secrets["bob"])
            page.get_by_role("button", name="Create account").click()
            expect(page.get_by_text("Created bob (student).")).to_be_visible()
            _pick(page, "Account", "bob (student)")
            page.wait_for_timeout(500)  # the password field is redrawn under bob's key
            field(page, "New password").fill(secrets["reset"])
            field(page, "New password").press("Enter")  # commit the value before the button's run
            wait_for_app(page)
            page.get_by_role("button", name="Reset password").click()
            expect(page.get_by_text("Password of bob reset.")).to_be_visible()
            _sign_out(page)

            field(page, "Username").fill("admin")
            field(page, "Password").fill(secrets["wrong"])
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_text("Wrong username or password.")).to_be_visible()
            sign_in(page, url, "admin", secrets["admin"], last_nav="Users")
            _sign_out(page)

            page.get_by_text("New here? Create a student account").click()
            field(page, "Choose a username").fill("carol")
            field(page, "Choose a password").fill(secrets["carol"])
            field(page, "Confirm password").fill(secrets["carol"])
            page.get_by_role("button", name="Create my account").click()
            page.locator('[data-testid="stSidebarNavLink"]', has_text="History").wait_for()
            sign_in(page, url, "bob", secrets["reset"])
            for secret in secrets.values():
                assert secret not in page.content()
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "security-secrets-failure.png"), full_page=True)
            raise

    output = log.read_text(errors="replace")
    assert "Runtime state: RuntimeState.STOPPING" in output  # a debug message: the worst case, debug logging, was on
    engine = _db(work)
    try:
        with Session(engine) as session:
            users = {u.username: u for u in accounts.list_users(session=session)}
    finally:
        engine.dispose()
    files = [p for p in work.rglob("*")
             if p.is_file() and not p.is_symlink() and "models" not in p.relative_to(work).parts]
    database = [p for p in files if p.name.startswith("medstudy.db")]
    assert database, "the SQLite database should be in the work dir"
    assert set(users) == {"admin", "bob", "carol"}
    assert all(u.password_hash.startswith("$argon2id$") for u in users.values())
    assert any(b"$argon2id$" in p.read_bytes() for p in database)  # the scan reads where the hashes are
    for secret in secrets.values():
        needle = secret.encode()
        assert needle not in output.encode(), f"a password is in the server output: {secret}"
        for path in files:
            assert needle not in path.read_bytes(), f"a password is in {path.relative_to(work)}"
    print(f"checked {len(output.splitlines())} log lines and {len(files)} files "
          f"({sum(p.stat().st_size for p in files)} bytes) for {len(secrets)} passwords")
