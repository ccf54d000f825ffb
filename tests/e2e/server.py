"""A real ``streamlit run`` server and a headless Debian chromium for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]
ARTIFACTS = ROOT / "test-artifacts"
MODEL_CACHE = ROOT / ".work" / "models"
"""The project's converted-model cache, shared by servers started with a temporary work dir."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, *, timeout: float = 90.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.read().decode().strip() == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not become healthy in {timeout} s")


@contextmanager
def streamlit_server(env: dict[str, str] | None = None, *, log_path: Path | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start ``python -m streamlit run app/main.py`` on a free port; yields (url, process)."""
    port = free_port()
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MEDSTUDY_")}
    full_env = {**inherited, **(env or {}), "PYTHONUNBUFFERED": "1"}
    log_path = log_path or (ARTIFACTS / f"streamlit-{port}.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port),
             "--server.headless", "true", "--server.address", "127.0.0.1"],
            cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, proc=proc)
            yield url, proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


@contextmanager
def chromium_page(width: int = 1400, height: int = 900) -> Iterator["object"]:
    """A Playwright page in Debian's headless chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": width, "height": height})
            yield context.new_page()
        finally:
            browser.close()


def wait_for_app(page, *, timeout_ms: int = 90_000) -> None:
    """Wait until the current Streamlit script run has finished (the app root reports notRunning)."""
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout_ms)
    page.wait_for_timeout(200)


def work_dir_with_model_cache(tmp_path: Path) -> Path:
    """A fresh work dir whose model cache links to the project's (the embedded model is converted once)."""
    from core.model import resolve_base
    from core.settings import load_settings

    default = load_settings(env={})
    resolve_base(default)
    work = tmp_path / "work"
    work.mkdir()
    (work / "models").symlink_to(default.model_cache_dir, target_is_directory=True)
    return work


def field(page, label: str):
    """A text input by its label."""
    return page.locator(f'input[aria-label="{label}"]')


def nav_titles(page) -> list[str]:
    """Titles of the sidebar navigation links (each link's text is the icon ligature, then the title)."""
    texts = page.locator('[data-testid="stSidebarNavLink"]').all_inner_texts()
    return [t.strip().splitlines()[-1].strip() for t in texts]


def create_first_admin(page, url: str, username: str = "admin", password: str = "admin pass phrase") -> None:
    """Open a fresh app and create the first administrator through the form."""
    page.goto(url)
    page.get_by_text("No accounts exist yet.").wait_for(timeout=90_000)
    field(page, "Username").fill(username)
    field(page, "Password").fill(password)
    field(page, "Confirm password").fill(password)
    page.get_by_role("button", name="Create administrator").click()
    page.locator('[data-testid="stSidebarNavLink"]', has_text="Users").wait_for(timeout=90_000)


def sign_in(page, url: str, username: str, password: str, *, last_nav: str = "History") -> None:
    page.goto(url)
    field(page, "Username").fill(username)
    field(page, "Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.locator('[data-testid="stSidebarNavLink"]', has_text=last_nav).wait_for(timeout=90_000)
