"""Real server, real browser, real faults: a corrupted adapter, and kill -9 of the app in the middle of a quiz.

1. A copy of the shipped adapter with its ``adapter_model.safetensors`` cut to 1 kB is the adapter
   setting of a throwaway work dir. The case-study page shows the banner naming the adapter and the
   reason, "serving the base model without it", generates a few tokens with the embedded base
   model, and the history row records no adapter.
2. A student answers 2 of 3 questions of an exam; the server is killed with SIGKILL and started
   again on the same work dir; the student signs in again (a reload signs out: known) and the
   attempt resumes at question 3 with exactly the 2 earlier answers in the database (one attempt,
   no lost or duplicated answer), then finishes.
Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from sqlmodel import Session, select

from core.model import DEFAULT_ADAPTER_DIR
from storage import accounts, attempts, quizzes
from storage.engine import integrity_check, open_database
from storage.models import CaseRun
from tests.e2e.server import (
    ARTIFACTS, CHROMIUM, chromium_page, create_first_admin, sign_in, streamlit_server, wait_for_app,
    work_dir_with_model_cache,
)
from tests.pages.quiz_harness import BANK, write_prepared_bank

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CASE = "A 45-year-old man has crushing chest pain and ST elevation in II, III and aVF. Most likely diagnosis?"
QUIZ_ITEMS = ["medqa:q1", "medqa:q2", "medqa:q3"]
RECORDS = {r.id: r for r in BANK}
STUDENT = ("alice", "alice pass phrase")


def _need_chromium(expect) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/bootstrap.sh test does)")
    expect.set_options(timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)


def test_corrupted_adapter_serves_the_base_model_with_a_banner(tmp_path: Path) -> None:
    from playwright.sync_api import expect

    _need_chromium(expect)
    work = work_dir_with_model_cache(tmp_path)
    adapter = tmp_path / "broken-medcot"
    shutil.copytree(DEFAULT_ADAPTER_DIR, adapter)
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1024])  # a copy cut short, as by a full disk
    log = tmp_path / "streamlit.log"
    env = {"MEDSTUDY_WORK_DIR": str(work), "MEDSTUDY_ADAPTER": str(adapter), "MEDSTUDY_MAX_NEW_TOKENS": "8"}
    with streamlit_server(env, log_path=log) as (url, _proc), chromium_page(height=1400) as page:
        page.set_default_timeout(120_000)
        try:
            create_first_admin(page, url)
            page.get_by_role("button", name="I understand").click()
            banner = page.locator('[data-testid="stAlert"]').filter(has_text="cannot be used")
            expect(banner).to_be_visible(timeout=180_000)  # after loading the model
            expect(banner).to_contain_text("Adapter broken-medcot cannot be used")
            expect(banner).to_contain_text("serving the base model without it")
            expect(banner).to_contain_text("could not be loaded")
            expect(page.get_by_text("adapter: none (base model)").first).to_be_visible()
            case = page.get_by_label("Clinical case")
            case.fill(CASE)
            case.press("Control+Enter")
            wait_for_app(page)  # a click while that rerun redraws the page can be lost
            page.get_by_role("button", name="Generate").click()
            stats = page.get_by_text("tokens/s").last
            expect(stats).to_contain_text("adapter: none (base model)", timeout=180_000)
            assert page.locator('[data-testid="stException"]').count() == 0
            page.screenshot(path=str(ARTIFACTS / "faults-corrupt-adapter.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "faults-corrupt-adapter-failure.png"), full_page=True)
            raise
    assert "Traceback" not in log.read_text(), log.read_text()[-5000:]
    engine = open_database(f"sqlite:///{work / 'medstudy.db'}")
    try:
        with Session(engine) as session:
            (run,) = session.exec(select(CaseRun)).all()
        assert run.case_text == CASE and run.adapter == "none (base model)" and run.timings["tokens"] >= 1
    finally:
        engine.dispose()


def _prepare_quiz(work: Path) -> int:
    write_prepared_bank(work)
    engine = open_database(f"sqlite:///{work / 'medstudy.db'}")
    try:
        with Session(engine) as session:
            teacher = accounts.create_user(session=session, username="teach", password="teacher pass phrase",
                                           role="instructor")
            accounts.create_user(session=session, username=STUDENT[0], password=STUDENT[1], role="student")
            qs = quizzes.create_quiz_set(session=session, owner_id=teacher.id, title="Crash course", mode="exam",
                                         time_limit_s=1800)
            quizzes.set_quiz_set_items(session=session, quiz_set_id=qs.id, item_ids=QUIZ_ITEMS)
            quizzes.set_published(session=session, quiz_set_id=qs.id, published=True)
            return qs.id
    finally:
        engine.dispose()


def _answers(work: Path) -> tuple[int, list[tuple[str, str | None]]]:
    """(number of attempts, [(item id, chosen letter)]) of the student, read with a separate connection."""
    engine = open_database(f"sqlite:///{work / 'medstudy.db'}")
    try:
        with Session(engine) as session:
            student = accounts.get_user_by_username(session=session, username=STUDENT[0])
            found = attempts.list_attempts(session=session, user_id=student.id)
            items = attempts.attempt_items(session=session, attempt_id=found[0].id) if found else []
            return len(found), [(i.item_id, i.chosen) for i in items]
    finally:
        assert integrity_check(engine) == "ok"
        engine.dispose()


def _choose(page, item_id: str, letter: str) -> None:
    record = RECORDS[item_id]
    page.get_by_text(record.question).wait_for()
    page.locator('[data-testid="stRadio"] label').filter(has_text=f"{letter}. {record.options[letter]}").click()
    wait_for_app(page)


def _open_quiz(page) -> None:
    page.locator('[data-testid="stSidebarNavLink"]', has_text="Quiz").click()
    page.get_by_role("heading", name="Quiz").first.wait_for()
    wait_for_app(page)


def test_kill_9_mid_quiz_then_restart_resumes_with_the_answers_given(tmp_path: Path) -> None:
    from playwright.sync_api import expect

    _need_chromium(expect)
    work = work_dir_with_model_cache(tmp_path)
    _prepare_quiz(work)
    env = {"MEDSTUDY_WORK_DIR": str(work)}
    first, second, third = (RECORDS[i] for i in QUIZ_ITEMS)
    given = [(first.id, first.correct), (second.id, "A")]  # one right, one wrong
    with chromium_page() as page:
        page.set_default_timeout(60_000)
        try:
            with streamlit_server(env, log_path=tmp_path / "before.log") as (url, proc):
                sign_in(page, url, *STUDENT)
                _open_quiz(page)
                page.get_by_role("button", name="Start", exact=True).click()
                wait_for_app(page)
                _choose(page, *given[0])
                page.get_by_role("button", name="Next", exact=True).click()
                wait_for_app(page)
                _choose(page, *given[1])
                deadline = time.monotonic() + 30
                while _answers(work)[1][:2] != given and time.monotonic() < deadline:
                    time.sleep(0.2)
                os.killpg(proc.pid, signal.SIGKILL)  # the whole server, no chance to clean up
                proc.wait(timeout=30)
                assert proc.returncode == -signal.SIGKILL
            assert _answers(work) == (1, [*given, (third.id, None)])

            with streamlit_server(env, log_path=tmp_path / "after.log") as (url, _proc):
                sign_in(page, url, *STUDENT)  # the old websocket session is gone: sign in again
                _open_quiz(page)
                expect(page.get_by_text("Welcome back: you are continuing Crash course")).to_be_visible()
                expect(page.get_by_text(third.question)).to_be_visible()  # the next unanswered question
                expect(page.get_by_text("2 answered")).to_be_visible()
                page.screenshot(path=str(ARTIFACTS / "faults-quiz-resumed.png"), full_page=True)
                assert _answers(work) == (1, [*given, (third.id, None)])  # nothing lost, nothing doubled
                _choose(page, third.id, third.correct)
                page.get_by_role("button", name="Submit exam").click()
                expect(page.get_by_text("Results: Crash course")).to_be_visible()
                expect(page.locator('[data-testid="stMetric"]').filter(has_text="Score")).to_contain_text("67%")
                assert page.locator('[data-testid="stException"]').count() == 0
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "faults-quiz-failure.png"), full_page=True)
            raise
    assert _answers(work) == (1, [*given, (third.id, third.correct)])
