"""One simulated user of the browser load test: a Playwright browser context (async API) that times its actions.

An action is a click (or a few) that makes the server rerun the page. It is timed from the click
until the app is idle again: the server has sent ``script_finished`` (FINISHED_SUCCESSFULLY) for a
run that started after the click, the app root reports ``notRunning`` (the browser has drawn the
result, as in :func:`tests.e2e.server.wait_for_app`, without its fixed 200 ms pause), and the action's
expected result is visible.
The first condition is read off the websocket (``ForwardMsg`` protobufs, decoded with Streamlit's
own classes), so an action whose visible result looked the same before (changing an answer)
still waits for its own rerun. After each action the page must show no exception and no error box.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from tests.e2e.load_figures import ActionTimes

IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
PROBLEMS = '[data-testid="stException"], [data-testid="stAlertContentError"]'
"""What must never show in any session: a Streamlit exception or an ``st.error`` box."""
NAV_LINK = '[data-testid="stSidebarNavLink"]'


class ActionFailed(AssertionError):
    """An action did not finish, or finished with an error on the page."""


class Visitor:
    """A signed-in (or signing-in) user in their own browser context; actions are timed into ``times``."""

    def __init__(self, name: str, page: Any, times: ActionTimes, *, server_times: ActionTimes | None = None,
                 timeout_s: float = 90.0) -> None:
        self.name = name
        self.page = page
        self.times = times
        self.server_times = server_times
        """If given, each action also until the server reported its run finished (before the browser drew it)."""
        self.timeout_s = timeout_s
        self.runs_finished = 0
        """Successful script runs the server has reported to this browser session."""
        self.seen: set[bytes] = set()
        """Byte strings of :attr:`watch_for` that appeared in any message from the server."""
        self.watch_for: tuple[bytes, ...] = ()
        self.log: list[str] = []
        """What happened, for the failure report: actions and the server's run messages."""
        self.born = time.monotonic()
        self.allowed_errors: re.Pattern[str] | None = None
        """Error boxes that are part of the page's normal output (a wrong quiz answer is shown with st.error)."""
        page.on("websocket", self._on_websocket)

    # -- the websocket ------------------------------------------------------------------------------------------

    def _on_websocket(self, ws: Any) -> None:
        ws.on("framereceived", self._on_frame)

    def _on_frame(self, payload: Any) -> None:
        if not isinstance(payload, bytes):
            return
        for needle in self.watch_for:
            if needle in payload:
                self.seen.add(needle)
        try:
            msg = ForwardMsg.FromString(payload)
        except Exception:  # noqa: BLE001 - not a ForwardMsg (never expected, but not ours to judge here)
            return
        kind = msg.WhichOneof("type")
        if kind == "script_finished":
            status = ForwardMsg.ScriptFinishedStatus.Name(msg.script_finished)
            self.log.append(f"{time.monotonic() - self.born:.1f} s: script finished: {status}")
            if msg.script_finished == ForwardMsg.FINISHED_SUCCESSFULLY:
                self.runs_finished += 1
        elif kind == "new_session":
            self.log.append(f"{time.monotonic() - self.born:.1f} s: run started")

    # -- actions ------------------------------------------------------------------------------------------------

    async def _runs_after(self, before: int, deadline: float) -> None:
        while self.runs_finished <= before:
            if time.monotonic() > deadline:
                raise ActionFailed(f"{self.name}: the server did not finish the page's run in time")
            await asyncio.sleep(0.02)

    async def act(self, kind: str, do: Callable[[], Awaitable[Any]], until: Any | None = None, *,
                  timeout_s: float | None = None) -> float:
        """Run ``do`` (the click), wait for its rerun, the idle app and ``until`` (a locator); time it as ``kind``.

        ``timeout_s`` (default: the visitor's) bounds the whole action.
        """
        before = self.runs_finished
        started = time.perf_counter()
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        self.log.append(f"{time.monotonic() - self.born:.1f} s: {kind}")
        await do()
        await self._runs_after(before, deadline)
        if self.server_times is not None:
            self.server_times.add(kind, time.perf_counter() - started)
        timeout_ms = max(1.0, deadline - time.monotonic()) * 1000
        if until is not None:
            await until.first.wait_for(state="visible", timeout=timeout_ms)
        await self.page.wait_for_selector(IDLE, timeout=timeout_ms)
        elapsed = time.perf_counter() - started
        self.times.add(kind, elapsed)
        self.log.append(f"{time.monotonic() - self.born:.1f} s: {kind} done in {elapsed:.2f} s")
        await self.check()
        return elapsed

    async def open(self, url: str, until: Any) -> float:
        """Load the app (a new browser session), timed as ``open app``."""
        return await self.act("open app", lambda: self.page.goto(url), until)

    async def check(self) -> None:
        """Fail when the page shows an exception or an error box."""
        # textContent, not innerText: an error inside a collapsed expander counts too.
        found = await self.page.locator(PROBLEMS).evaluate_all("els => els.map(e => e.textContent)")
        texts = [t.strip() for t in found]
        shown = [t for t in texts if self.allowed_errors is None or not self.allowed_errors.match(t)]
        if shown:
            raise ActionFailed(f"{self.name}: the page shows an error: {' | '.join(shown)[:2000]}")

    # -- common steps -------------------------------------------------------------------------------------------

    def field(self, label: str) -> Any:
        return self.page.locator(f'input[aria-label="{label}"]')

    def nav_link(self, title: str) -> Any:
        return self.page.locator(NAV_LINK, has_text=title)

    async def sign_in(self, url: str, username: str, password: str, *, last_nav: str, until: Any | None = None,
                      kind: str = "sign in", timeout_s: float | None = None) -> None:
        await self.open(url, self.page.get_by_role("button", name="Sign in"))
        await self.field("Username").fill(username)
        await self.field("Password").fill(password)
        await self.act(kind, self.page.get_by_role("button", name="Sign in").click,
                       until if until is not None else self.nav_link(last_nav), timeout_s=timeout_s)

    async def navigate(self, title: str, until: Any | None = None) -> None:
        await self.act("navigate", self.nav_link(title).click,
                       until if until is not None else self.page.get_by_role("heading", name=title))

    async def choose(self, kind: str, label: str, option: str | None, until: Any | None = None, *,
                     exact: bool = True) -> bool:
        """Pick ``option`` (None: the first one not chosen now) in the selectbox labelled ``label``.

        Choosing what is already chosen makes no rerun: that closes the list untimed and returns False.
        """
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        box = self.page.locator(f'[data-testid="stSelectbox"]:has(input[aria-label="{label}"])')
        options = self.page.get_by_role("option")
        if option is None:
            target = options.and_(self.page.locator('[aria-selected="false"]')).first
        else:
            pattern = f"^{re.escape(option)}$" if exact else re.escape(option)
            target = options.filter(has_text=re.compile(pattern)).first
        # A rerun still drawing the page (e.g. the one after a save) closes an open list: wait for the idle
        # app, and open the list again if it closed anyway.
        for attempt in range(3):
            await self.page.wait_for_selector(IDLE, timeout=self.timeout_s * 1000)
            await box.get_by_role("button", name="Open").click()
            try:
                await options.first.wait_for(timeout=20_000)
                break
            except PlaywrightTimeout:
                if attempt == 2:
                    raise
                self.log.append(f"{time.monotonic() - self.born:.1f} s: the {label!r} list closed; opening it again")
                await self.page.keyboard.press("Escape")
        if not await target.count() or await target.get_attribute("aria-selected") == "true":
            await self.page.keyboard.press("Escape")
            return False
        await self.act(kind, target.click, until)
        return True

    async def screenshot(self, directory: Path, suffix: str) -> None:
        try:
            await self.page.screenshot(path=str(directory / f"load-{self.name}-{suffix}.png"), full_page=True)
        except Exception:  # noqa: BLE001 - a screenshot of a broken page must not hide the real failure
            pass
