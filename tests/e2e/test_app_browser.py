"""End to end: the real server answers its health check and every page renders in a real browser."""

from __future__ import annotations

import urllib.request

import pytest

from tests.e2e.server import (
    ARTIFACTS, chromium_page, create_first_admin, nav_titles, streamlit_server, wait_for_app,
    work_dir_with_model_cache,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ADMIN_PAGES = ["Case study", "Quiz", "History", "Curation", "Classes", "Admin", "Users"]


def test_every_page_renders_in_chromium(tmp_path):
    work = work_dir_with_model_cache(tmp_path)
    with streamlit_server({"MEDSTUDY_WORK_DIR": str(work)}) as (url, _proc), chromium_page() as page:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as resp:
            assert resp.read() == b"ok"
        create_first_admin(page, url)
        assert nav_titles(page) == ADMIN_PAGES
        for title in ADMIN_PAGES:
            page.locator('[data-testid="stSidebarNavLink"]', has_text=title).click()
            wait_for_app(page)
            page.get_by_role("heading", name=title).first.wait_for(timeout=90_000)
            wait_for_app(page)
            assert page.locator('[data-testid="stException"]').count() == 0, title
            page.screenshot(path=str(ARTIFACTS / f"page-{title.lower().replace(' ', '-')}.png"), full_page=True)
