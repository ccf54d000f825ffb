"""Real browser, real server (issue 19): an instructor creates a class, enrols two students and assigns a
quiz due tomorrow; one student submits on time, the other does not start; the instructor sees one
submitted with its score and one not started; a third student outside the class sees no assignment
and cannot open the progress view by any route (navigation, an in-session URL change, a typed URL).

A throwaway work dir gets the page-test bank, four accounts and one published quiz set written
straight into its database; the rest goes through Debian's chromium. Screenshots go to
``test-artifacts/``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session

from storage import accounts, attempts, classes, quizzes
from storage.engine import open_database
from tests.e2e.server import (
    ARTIFACTS, CHROMIUM, chromium_page, field, nav_titles, sign_in, streamlit_server, wait_for_app,
    work_dir_with_model_cache,
)
from tests.pages.quiz_harness import BANK, write_prepared_bank

pytestmark = [pytest.mark.browser, pytest.mark.slow]

QUIZ_ITEMS = ["medqa:q1", "medqa:q2"]
RECORDS = {r.id: r for r in BANK}
TEACHER = ("teach", "teacher pass phrase")
ANN, BOB, EVE = ("ann", "ann pass phrase"), ("bob", "bob pass phrase"), ("eve", "eve pass phrase")
CLASS_NAME, QUIZ_TITLE = "Cardiology group A", "Week 1 anaemia"


def _setup(work_dir: Path) -> None:
    engine = open_database(f"sqlite:///{work_dir / 'medstudy.db'}")
    try:
        with Session(engine) as session:
            teacher = accounts.create_user(session=session, username=TEACHER[0], password=TEACHER[1],
                                           role="instructor")
            for name, password in (ANN, BOB, EVE):
                accounts.create_user(session=session, username=name, password=password, role="student")
            qs = quizzes.create_quiz_set(session=session, owner_id=teacher.id, title=QUIZ_TITLE)
            quizzes.set_quiz_set_items(session=session, quiz_set_id=qs.id, item_ids=QUIZ_ITEMS)
            quizzes.set_published(session=session, quiz_set_id=qs.id, published=True)
    finally:
        engine.dispose()


def _nav(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNavLink"]', has_text=title).click()
    page.get_by_role("heading", name=title).first.wait_for()
    wait_for_app(page)


def _click(page, role: str, name: str) -> None:
    page.get_by_role(role, name=name, exact=True).click()
    wait_for_app(page)


def _sign_out(page) -> None:
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("heading", name="Sign in").wait_for()
    wait_for_app(page)


def _choose(page, testid: str, label: str, option_text: str) -> None:
    """Pick the option containing ``option_text`` in the selectbox or multiselect labelled ``label``."""
    wait_for_app(page)
    box = page.locator(f'[data-testid="{testid}"]').filter(has_text=label).locator("input")
    box.click()
    box.fill(option_text)
    page.get_by_role("option").filter(has_text=option_text).first.wait_for()
    page.keyboard.press("Enter")
    wait_for_app(page)
    if testid == "stMultiSelect":
        page.keyboard.press("Escape")  # close the list, which stays open for more choices
        wait_for_app(page)


def _go_within_session(page, path: str) -> None:
    page.evaluate("p => { history.pushState({}, '', '/' + p); dispatchEvent(new PopStateEvent('popstate')); }", path)
    page.wait_for_timeout(500)
    wait_for_app(page)


def _assert_no_class_content(page, expect, join_code: str) -> None:
    assert "Classes" not in nav_titles(page)
    expect(page.get_by_role("heading", name="Classes", exact=True)).to_have_count(0)
    expect(page.get_by_role("heading", name="Assigned to you")).to_have_count(0)
    body = page.inner_text("body")
    for secret in (CLASS_NAME, join_code, "Download progress"):
        assert secret not in body


def _flow(page, url: str, expect) -> str:
    errors = page.locator('[data-testid="stException"]')

    # The instructor creates a class, enrols ann and bob, and assigns the quiz (due tomorrow by default).
    sign_in(page, url, *TEACHER, last_nav="Classes")
    _nav(page, "Classes")
    field(page, "New class name").fill(CLASS_NAME)
    _click(page, "button", "Create class")
    expect(page.get_by_text("Class created. Its join code is")).to_be_visible()
    join_code = page.locator('[data-testid="stMarkdownContainer"]').filter(has_text="Join code:").locator(
        "code").inner_text().strip()
    assert len(join_code) == classes.JOIN_CODE_LENGTH
    for name in (ANN[0], BOB[0]):
        _choose(page, "stMultiSelect", "Enrol students", name)
    _click(page, "button", "Enrol")
    expect(page.get_by_text("Enrolled ann, bob.")).to_be_visible()
    _click(page, "tab", "Assign")
    _choose(page, "stSelectbox", "Quiz set", QUIZ_TITLE)
    _click(page, "button", "Assign")
    expect(page.get_by_text("Assigned. Students see it at the top of their Quiz page.")).to_be_visible()
    assert errors.count() == 0
    page.screenshot(path=str(ARTIFACTS / "classes-instructor-assigns.png"), full_page=True)
    _sign_out(page)

    # ann sees it first on the Quiz page and submits on time (both right).
    sign_in(page, url, *ANN)
    _nav(page, "Quiz")
    expect(page.get_by_role("heading", name="Assigned to you")).to_be_visible()
    card = page.locator('[class*="st-key-quiz_assigned_"]')
    expect(card).to_contain_text(QUIZ_TITLE)
    expect(card).to_contain_text("status: not started")
    card.get_by_role("button", name="Start").click()
    wait_for_app(page)
    for number, item_id in enumerate(QUIZ_ITEMS, start=1):
        record = RECORDS[item_id]
        expect(page.get_by_text(record.question)).to_be_visible()
        option = f"{record.correct}. {record.options[record.correct]}"
        page.locator('[data-testid="stRadio"] label').filter(has_text=option).click()
        wait_for_app(page)
        _click(page, "button", "Submit answer")
        if number < len(QUIZ_ITEMS):
            _click(page, "button", "Next")
    _click(page, "button", "Finish quiz")
    expect(page.get_by_text(f"Results: {QUIZ_TITLE}")).to_be_visible()
    expect(page.locator('[data-testid="stMetric"]').filter(has_text="Score")).to_contain_text("100%")
    _click(page, "button", "Back to quizzes")
    expect(card).to_contain_text("status: submitted")
    expect(card).to_contain_text("score 100%")
    assert errors.count() == 0
    page.screenshot(path=str(ARTIFACTS / "classes-student-submitted.png"), full_page=True)
    _sign_out(page)

    # bob does not start. The instructor sees ann submitted with 100% and bob not started.
    sign_in(page, url, *TEACHER, last_nav="Classes")
    _nav(page, "Classes")
    _click(page, "tab", "Progress")
    table = page.locator('[data-testid="stTable"]')
    ann_row = table.locator("tr").filter(has_text="ann")
    bob_row = table.locator("tr").filter(has_text="bob")
    expect(ann_row).to_contain_text("submitted")
    expect(ann_row).to_contain_text("100%")
    expect(bob_row).to_contain_text("not started")
    expect(table.locator("tr").filter(has_text="eve")).to_have_count(0)
    metrics = page.locator('[data-testid="stMetric"]')
    expect(metrics.filter(has_text="Submitted")).to_contain_text("1")
    expect(metrics.filter(has_text="Not started")).to_contain_text("1")
    expect(page.get_by_role("button", name="Download progress (CSV)")).to_be_visible()
    assert errors.count() == 0
    page.screenshot(path=str(ARTIFACTS / "classes-instructor-progress.png"), full_page=True)
    _sign_out(page)

    # eve, outside the class: no assignment, and no route to the progress view.
    sign_in(page, url, *EVE)
    _nav(page, "Quiz")
    _assert_no_class_content(page, expect, join_code)
    _go_within_session(page, "classes")
    _assert_no_class_content(page, expect, join_code)
    page.goto(f"{url}/classes")  # typed: a full load, so she signs in again right there
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.keyboard.press("Escape")
    field(page, "Username").fill(EVE[0])
    field(page, "Password").fill(EVE[1])
    page.get_by_role("button", name="Sign in").click()
    page.locator('[data-testid="stSidebarNavLink"]', has_text="History").wait_for()
    wait_for_app(page)
    _assert_no_class_content(page, expect, join_code)
    assert errors.count() == 0
    page.screenshot(path=str(ARTIFACTS / "classes-outsider.png"), full_page=True)
    return join_code


def test_instructor_assigns_one_submits_one_does_not_start_outsider_sees_nothing(tmp_path: Path) -> None:
    from playwright.sync_api import expect

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/bootstrap.sh test does)")
    expect.set_options(timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)
    work = work_dir_with_model_cache(tmp_path)
    write_prepared_bank(work)
    _setup(work)
    with streamlit_server({"MEDSTUDY_WORK_DIR": str(work)}) as (url, _proc), chromium_page() as page:
        page.set_default_timeout(60_000)
        try:
            join_code = _flow(page, url, expect)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "classes-failure.png"), full_page=True)
            raise

    engine = open_database(f"sqlite:///{work / 'medstudy.db'}")
    try:
        with Session(engine) as session:
            [study_class] = classes.list_classes(session=session)
            assert (study_class.name, study_class.join_code) == (CLASS_NAME, join_code)
            assert [u.username for u in classes.members(session=session, class_id=study_class.id)] == ["ann", "bob"]
            [assignment] = classes.class_assignments(session=session, class_id=study_class.id)
            assert (assignment.due_at - assignment.opens_at).total_seconds() > 0
            ann = accounts.get_user_by_username(session=session, username="ann")
            [attempt] = classes.assignment_attempts(session=session, assignment_id=assignment.id)
            assert (attempt.user_id, attempt.status, attempt.score) == (ann.id, "submitted", 1.0)
            assert attempt.config["submission"] == "on_time"
            for name in ("bob", "eve"):
                user = accounts.get_user_by_username(session=session, username=name)
                assert attempts.list_attempts(session=session, user_id=user.id) == []
    finally:
        engine.dispose()
