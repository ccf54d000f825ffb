"""Scale-out at small scale: two app processes, one PostgreSQL, one inference server, four browser sessions.

The recipe of the README's "Serve a class" section, on loopback: llama.cpp's ``llama-server`` holds
the embedded GGUF with the shipped adapter as a GGUF LoRA (4 parallel slots), two ``streamlit run``
processes on two ports point at it (``serving_backend = "openai"``) and at one PostgreSQL database.
On each instance, at the same time, one student generates a case study (both press Generate
together) and another takes a published quiz (an exam on one, a tutor quiz on the other).

Asserted: no error on any page; neither generation was queued behind the other (the server batches
them: no "Waiting for the model"); PostgreSQL holds exactly two case runs (complete, served by the
llama.cpp server with the adapter) and exactly two submitted attempts with every answer as given,
nothing lost or duplicated; the app logs have no traceback.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlmodel import Session, func, select

from core import llamacpp
from core.model import DEFAULT_ADAPTER_DIR, find_embedded_gguf, sha256_file
from storage import accounts, attempts, quizzes
from storage.engine import open_database
from storage.models import Attempt, AttemptItem, CaseRun
from tests.e2e import server
from tests.e2e.load_figures import ActionTimes
from tests.e2e.load_visitor import Visitor
from tests.e2e.server import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.e2e.test_load_browser import (
    CASES, EXAM_TITLE, QUIZ_ITEMS, TUTOR_TITLE, WAITING, generate_case, password, planned_choices, take_quiz,
)
from tests.pages.quiz_harness import write_prepared_bank

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MAX_NEW_TOKENS = 24
INSTANCES = {  # instance -> (case-study student, quiz student, quiz kind)
    "a": ("gus", "ann", "exam"),
    "b": ("hal", "dan", "tutor"),
}


def seed(database_url: str) -> dict[str, int]:
    engine = open_database(database_url)
    try:
        with Session(engine) as session:
            teacher = accounts.create_user(session=session, username="teach", password=password("teach"),
                                           role="instructor")
            for generator, student, _ in INSTANCES.values():
                accounts.create_user(session=session, username=student, password=password(student), role="student")
                user = accounts.create_user(session=session, username=generator, password=password(generator),
                                            role="student")
                accounts.acknowledge_disclaimer(session=session, user_id=user.id)
            ids = {}
            for title, mode in ((EXAM_TITLE, "exam"), (TUTOR_TITLE, "tutor")):
                quiz_set = quizzes.create_quiz_set(session=session, owner_id=teacher.id, title=title, mode=mode)
                quizzes.set_quiz_set_items(session=session, quiz_set_id=quiz_set.id, item_ids=QUIZ_ITEMS)
                quizzes.set_published(session=session, quiz_set_id=quiz_set.id, published=True)
                ids[mode] = quiz_set.id
            return ids
    finally:
        engine.dispose()


async def drive(urls: dict[str, str], quiz_ids: dict[str, int]) -> dict[str, Visitor]:
    from playwright.async_api import async_playwright

    times = ActionTimes()
    visitors: dict[str, Visitor] = {}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            ready = asyncio.Barrier(len(INSTANCES))
            work = []
            for name, (generator, student, kind) in INSTANCES.items():
                for user in (generator, student):
                    context = await browser.new_context(viewport={"width": 1280, "height": 900})
                    page = await context.new_page()
                    page.set_default_timeout(90_000)
                    visitors[user] = Visitor(f"{user}@{name}", page, times)
                work.append(generate_case(visitors[generator], urls[name], generator, ready))
                title = EXAM_TITLE if kind == "exam" else TUTOR_TITLE
                work.append(take_quiz(visitors[student], urls[name], student, quiz_ids[kind], title))
            results = await asyncio.gather(*work, return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            for visitor in visitors.values():
                await visitor.screenshot(ARTIFACTS, "scale-out")
            if failures:
                raise AssertionError(f"{len(failures)} session(s) failed: {failures}") from failures[0]
            for visitor in visitors.values():
                await visitor.check()
        finally:
            await browser.close()
    return visitors


def test_two_app_instances_share_one_database_and_one_inference_server(tmp_path: Path, postgres_url: str) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/bootstrap.sh test does)")
    ARTIFACTS.mkdir(exist_ok=True)
    gguf = find_embedded_gguf()
    lora = llamacpp.export_for_serving(DEFAULT_ADAPTER_DIR, tmp_path, base_gguf=gguf, base_sha=sha256_file(gguf))
    quiz_ids = seed(postgres_url)
    work = server.work_dir_with_model_cache(tmp_path)
    write_prepared_bank(work)
    with llamacpp.LlamaServer(model=gguf, loras=[lora], port=0, parallel=4, threads=1,
                              log_path=tmp_path / "llama-server.log") as inference:
        env = {"MEDSTUDY_WORK_DIR": str(work), "MEDSTUDY_DATABASE_URL": postgres_url,
               "MEDSTUDY_MAX_NEW_TOKENS": str(MAX_NEW_TOKENS), "MEDSTUDY_SERVING_BACKEND": "openai",
               "MEDSTUDY_SERVING_URL": inference.openai_url}
        logs = {name: tmp_path / f"streamlit-{name}.log" for name in INSTANCES}
        with server.streamlit_server(env, log_path=logs["a"]) as (url_a, _), \
                server.streamlit_server(env, log_path=logs["b"]) as (url_b, _):
            assert url_a != url_b
            visitors = asyncio.run(drive({"a": url_a, "b": url_b}, quiz_ids))
    for name, log in logs.items():
        text = log.read_text()
        assert "Traceback" not in text, text[-4000:]
    # Both generations ran at once on the server: neither page had to wait for the other.
    for generator, _, _ in INSTANCES.values():
        assert visitors[generator].runs_finished > 0
        assert WAITING not in visitors[generator].seen, generator

    engine = open_database(postgres_url)
    try:
        with Session(engine) as session:
            assert session.exec(select(func.count()).select_from(CaseRun)).one() == 2
            for generator, student, kind in INSTANCES.values():
                user = accounts.get_user_by_username(session=session, username=generator)
                (run,) = session.exec(select(CaseRun).where(CaseRun.user_id == user.id)).all()
                assert run.status == "completed" and run.case_text == CASES[generator] and run.reasoning
                assert run.adapter == DEFAULT_ADAPTER_DIR.name
                assert run.settings["backend"] == "openai" and run.settings["engine"] == "llamacpp server"
                assert 0 < run.timings["tokens"] <= MAX_NEW_TOKENS and not run.timings["waited_s"]

                user = accounts.get_user_by_username(session=session, username=student)
                (attempt,) = attempts.list_attempts(session=session, user_id=user.id)
                assert (attempt.quiz_set_id, attempt.status) == (quiz_ids[kind], "submitted")
                rows = attempts.attempt_items(session=session, attempt_id=attempt.id)
                assert [r.chosen for r in rows] == [clicks[-1] for clicks in planned_choices(student)]
            assert session.exec(select(func.count()).select_from(Attempt)).one() == 2
            assert session.exec(select(func.count()).select_from(AttemptItem)).one() == 2 * len(QUIZ_ITEMS)
    finally:
        engine.dispose()
