"""End to end: the real server answers its health check and every page renders in a real browser."""

from __future__ import annotations

import pytest

from tests.e2e.server import ARTIFACTS, MODEL_CACHE, chromium_page, streamlit_server, wait_for_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PAGES = [("Case study", ""), ("Quiz", "quiz"), ("History", "history"), ("Admin", "admin")]


def test_every_page_renders_in_chromium(tmp_path):
    env = {"MEDSTUDY_WORK_DIR": str(tmp_path / "work"), "MEDSTUDY_MODEL_CACHE": str(MODEL_CACHE)}
    with streamlit_server(env) as (url, _proc), chromium_page() as page:
        for title, path in PAGES:
            page.goto(f"{url}/{path}")
            wait_for_app(page)
            page.wait_for_selector(f'h1:has-text("{title}")', timeout=60_000)
            assert page.locator('[data-testid="stException"]').count() == 0, title
            page.screenshot(path=str(ARTIFACTS / f"page-{path or 'home'}.png"), full_page=True)
