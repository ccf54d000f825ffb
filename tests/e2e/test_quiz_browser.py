"""Real browser, real server: an instructor publishes a 5-question exam, a student takes it, both see the result.

A throwaway work dir gets a small prepared bank (the page-test bank) and two accounts written
straight into its database; the rest goes through Debian's chromium: the instructor builds the
quiz set on the curation page and publishes it, the student answers in exam mode (4 of 5 right)
and submits, the student sees 80%, and the instructor's analytics show the attempt. Screenshots go
to ``test-artifacts/``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlmodel import Session

from storage import accounts, attempts
from storage.engine import open_database
from tests.e2e.server import (
    ARTIFACTS, CHROMIUM, chromium_page, field, sign_in, streamlit_server, wait_for_app, work_dir_with_model_cache,
)
from tests.pages.quiz_harness import BANK, write_prepared_bank

pytestmark = [pytest.mark.browser, pytest.mark.slow]

QUIZ_ITEMS = ["medqa:q1", "medqa:q2", "medqa:q3", "medmcqa:q4", "casimedicos:q6"]
RECORDS = {r.id: r for r in BANK}
TEACHER, STUDENT = ("teach", "teacher pass phrase"), ("alice", "alice pass phrase")


def _accounts(work_dir: Path) -> None:
    engine = open_database(f"sqlite:///{work_dir / 'medstudy.db'}")
    try:
        with Session(engine) as session:
            accounts.create_user(session=session, username=TEACHER[0], password=TEACHER[1], role="instructor")
            accounts.create_user(session=session, username=STUDENT[0], password=STUDENT[1], role="student")
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


def _flow(page, url: str, expect) -> None:
    errors = page.locator('[data-testid="stException"]')

    # The instructor builds and publishes a 5-question exam.
    sign_in(page, url, *TEACHER, last_nav="Curation")
    _nav(page, "Curation")
    _click(page, "tab", "Quiz sets")
    field(page, "Title").fill("Cardiology <b>week 1</b>")
    page.get_by_text("Exam (timed)").click()
    field(page, "Time limit, minutes (exam; 0 = untimed)").fill("10")
    field(page, "Passing score, % (0 = none)").fill("60")
    _click(page, "button", "Create quiz set")
    expect(page.get_by_text("Quiz set created.")).to_be_visible()
    page.locator('textarea[aria-label="Item ids, one per line"]').fill("\n".join(QUIZ_ITEMS))
    _click(page, "button", "Add these items")
    expect(page.get_by_text("Added 5 questions.")).to_be_visible()
    _click(page, "button", "Publish")
    expect(page.get_by_text("Published: students can take it now.")).to_be_visible()
    expect(page.get_by_text("5 questions · published")).to_be_visible()
    assert errors.count() == 0
    page.screenshot(path=str(ARTIFACTS / "quiz-instructor-publishes.png"), full_page=True)
    _sign_out(page)

    # The student takes it in exam mode: four right, the second one wrong.
    sign_in(page, url, *STUDENT)
    _nav(page, "Quiz")
    expect(page.get_by_text("Cardiology <b>week 1</b>")).to_be_visible()  # a title shows as text
    _click(page, "button", "Start")
    clock = page.locator('[data-testid="stMarkdownContainer"]', has_text=re.compile(r"\d+:\d\d left"))
    expect(clock).to_be_visible()  # the exam clock
    for number, item_id in enumerate(QUIZ_ITEMS, start=1):
        record = RECORDS[item_id]
        expect(page.get_by_text(record.question)).to_be_visible()
        letter = record.correct if number != 2 else "A"
        option = f"{letter}. {record.options[letter]}"
        page.locator('[data-testid="stRadio"] label').filter(has_text=option).click()
        wait_for_app(page)
        expect(page.get_by_text("Correct")).to_have_count(0)  # no feedback before submission
        if number < len(QUIZ_ITEMS):
            _click(page, "button", "Next")
    page.screenshot(path=str(ARTIFACTS / "quiz-student-exam.png"), full_page=True)
    _click(page, "button", "Submit exam")
    expect(page.get_by_text("Results: Cardiology <b>week 1</b>")).to_be_visible()
    score = page.locator('[data-testid="stMetric"]').filter(has_text="Score")
    expect(score).to_contain_text("80%")
    expect(page.locator('[data-testid="stMetric"]').filter(has_text="Result")).to_contain_text("Passed")
    assert errors.count() == 0
    page.screenshot(path=str(ARTIFACTS / "quiz-student-results.png"), full_page=True)
    _sign_out(page)

    # The instructor's analytics show the attempt.
    sign_in(page, url, *TEACHER, last_nav="Curation")
    _nav(page, "Curation")
    _click(page, "tab", "Analytics")
    metrics = page.locator('[data-testid="stMetric"]')
    expect(metrics.filter(has_text="Attempts")).to_contain_text("1")
    expect(metrics.filter(has_text="Mean score")).to_contain_text("80%")
    expect(metrics.filter(has_text="Pass rate")).to_contain_text("100%")
    assert errors.count() == 0
    page.screenshot(path=str(ARTIFACTS / "quiz-instructor-analytics.png"), full_page=True)


def test_instructor_publishes_student_takes_exam_both_see_the_score(tmp_path: Path) -> None:
    from playwright.sync_api import expect

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/bootstrap.sh test does)")
    expect.set_options(timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)
    work = work_dir_with_model_cache(tmp_path)
    write_prepared_bank(work)
    _accounts(work)
    with streamlit_server({"MEDSTUDY_WORK_DIR": str(work)}) as (url, _proc), chromium_page() as page:
        page.set_default_timeout(60_000)
        try:
            _flow(page, url, expect)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "quiz-failure.png"), full_page=True)
            raise

    engine = open_database(f"sqlite:///{work / 'medstudy.db'}")
    try:
        with Session(engine) as session:
            student = accounts.get_user_by_username(session=session, username=STUDENT[0])
            [attempt] = attempts.list_attempts(session=session, user_id=student.id)
            items = attempts.attempt_items(session=session, attempt_id=attempt.id)
        assert (attempt.status, attempt.mode, attempt.score) == ("submitted", "exam", pytest.approx(0.8))
        assert [(i.item_id, i.correct) for i in items] == [(item_id, item_id != "medqa:q2") for item_id in QUIZ_ITEMS]
    finally:
        engine.dispose()
