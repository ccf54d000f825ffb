"""Real browser, real server, real trainer: the admin fine-tunes a tiny model from the admin page.

A throwaway work dir gets a few prepared records and a tiny Llama (built from a config in code,
with the trainer tests' tokenizer); the app serves that tiny model (``MEDSTUDY_BASE_MODEL``). In
Debian's chromium the admin

1. fills the training form and starts a run, watches the loss chart gain points, stops it
   (Stop & save), resumes it to completion, activates its adapter, and the case-study page
   reports that adapter;
2. starts another run, the trainer is killed with SIGKILL mid-run, the live view shows
   "interrupted" at its next refresh, and Resume completes the run;
3. loads the "CPU demo (minutes)" preset, sees the warnings of a Check, saves a preset of their own,
   trains a short run from it, and compares the base model with the new adapter on one case (both
   answers side by side, saved to history).

The form's fields are found by their plain labels (``trainer.config.field_label``).

Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from core.records import write_jsonl
from tests.e2e.server import ARTIFACTS, CHROMIUM, chromium_page, create_first_admin, field, streamlit_server, wait_for_app
from tests.trainer.conftest import build_tiny_llama, make_records
from trainer.checkpoint import last_complete_checkpoint
from trainer.config import field_label

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# A tiny-model step takes 0.05 to 1 s here, depending on what else runs on the two shared cores: 60 steps
# leave room to stop it (the live view refreshes every 2 s) on an idle machine and to finish it on a busy one.
FORM = {"batch_size": "2", "gradient_accumulation_steps": "1", "logging_steps": "1", "save_steps": "5",
        "eval_steps": "20", "max_seq_len": "256", "learning_rate": "0.005"}
STEPS = 60


def _environment(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    work = tmp_path / "work"
    write_jsonl(work / "data" / "train.jsonl", make_records("train"))
    write_jsonl(work / "data" / "validation.jsonl", make_records("validation", 3, 1))
    model = build_tiny_llama(tmp_path / "tiny-base")
    env = {"MEDSTUDY_WORK_DIR": str(work), "MEDSTUDY_BASE_MODEL": str(model), "MEDSTUDY_ADAPTER": "none",
           "MEDSTUDY_DEVICE": "cpu"}
    return work, env


def _nav(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNavLink"]', has_text=title).click()
    page.get_by_role("heading", name=title).first.wait_for()
    wait_for_app(page)


def _status(page, state: str):
    return page.locator('[data-testid="stMarkdownContainer"]', has_text=f"Status: {state}")


def _fill(page, values: dict[str, str]) -> None:
    for name, value in values.items():
        field(page, field_label(name)).fill(value)


def _start_run(page, model: str, expect, *, steps: int, form: dict[str, str] | None = None) -> str:
    """Fill the form and start; returns the run's name from the confirmation."""
    _fill(page, {"model_name": model, **(FORM if form is None else form), "max_steps": str(steps)})
    page.get_by_role("button", name="Start training").click()
    started = page.get_by_text(re.compile(r"Started training run \S+"))
    expect(started).to_be_visible()
    name = re.search(r"Started training run (\S+?)\.?$", started.inner_text().strip()).group(1)
    expect(_status(page, "running")).to_be_visible()
    return name


def _loss_points(page, trace: int | None = None) -> int:
    """Markers on the live view's loss chart (the first chart of the page); ``trace`` 0 is the training loss."""
    chart = page.locator('[data-testid="stPlotlyChart"]').first
    scope = chart if trace is None else chart.locator("g.trace.scatter").nth(trace)
    return scope.locator("path.point").count()


def _wait_points(page, more_than: int, timeout_s: float = 90) -> int:
    """Markers of the first trace (the training loss once a step is logged; before that, the step-0 baseline
    validation point, which every run with validation data starts with)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        count = _loss_points(page, trace=0)
        if count > more_than:
            return count
        page.wait_for_timeout(250)
    raise AssertionError(f"the loss chart did not get more than {more_than} points in {timeout_s} s")


def _points_settle_at(page, expected: int, timeout_s: float = 30) -> int:
    """The training-loss marker count once it equals ``expected`` (or the last count after ``timeout_s``).

    When a run stops or completes, the live view's fragment reruns the whole page and the chart is drawn
    anew: for a moment after the status line changes the chart can hold no markers yet.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        count = _loss_points(page, trace=0)
        if count == expected or time.monotonic() > deadline:
            return count
        page.wait_for_timeout(250)


def _click_enabled(page, name: str) -> None:
    """Click the one enabled button of that name (a rerun may briefly keep the previous, disabled copy)."""
    wait_for_app(page)
    page.get_by_role("button", name=name).and_(page.locator(":enabled")).click()


def _check(page, failure_png: str, flow) -> None:
    try:
        flow()
    except Exception:
        page.screenshot(path=str(ARTIFACTS / failure_png), full_page=True)
        raise
    assert page.locator('[data-testid="stException"]').count() == 0


def _prologue(expect) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/bootstrap.sh test does)")
    expect.set_options(timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)


def test_admin_trains_stops_resumes_and_serves_the_new_adapter(tmp_path: Path) -> None:
    from playwright.sync_api import expect

    _prologue(expect)
    work, env = _environment(tmp_path)
    with streamlit_server(env) as (url, _proc), chromium_page() as page:
        page.set_default_timeout(60_000)

        def flow() -> None:
            create_first_admin(page, url)
            _nav(page, "Admin")
            name = _start_run(page, env["MEDSTUDY_BASE_MODEL"], expect, steps=STEPS)
            first = _wait_points(page, 0)
            page.screenshot(path=str(ARTIFACTS / "admin-live-view.png"), full_page=True)
            _click_enabled(page, "Stop & save")  # at once: on an idle machine the steps are fast
            expect(page.get_by_text("Stop requested")).to_be_visible()
            expect(_status(page, "stopped")).to_be_visible(timeout=90_000)
            stopped_step = json.loads((work / "runs" / name / "status.json").read_text())["step"]
            assert first <= stopped_step < STEPS
            at_stop = _points_settle_at(page, stopped_step)
            assert at_stop == stopped_step
            _click_enabled(page, "Resume")
            expect(page.get_by_text(f"Resumed run {name}")).to_be_visible()
            assert _wait_points(page, at_stop, timeout_s=150) > at_stop  # the chart gains points again
            expect(_status(page, "completed")).to_be_visible(timeout=150_000)
            assert _points_settle_at(page, STEPS) == STEPS  # every step once, none twice after the resume
            page.screenshot(path=str(ARTIFACTS / "admin-completed.png"), full_page=True)

            page.get_by_role("tab", name="Adapters").click()
            expect(page.get_by_role("heading", name=name)).to_be_visible()
            _click_enabled(page, "Activate")  # the shipped adapter's is disabled: it belongs to another base
            expect(page.get_by_text(f"Now serving adapter {name}")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "admin-adapters.png"), full_page=True)

            _nav(page, "Case study")
            page.get_by_role("button", name="I understand").click()  # the page's one-time notice
            main = page.locator('[data-testid="stMain"]')
            expect(main).to_contain_text(name, timeout=90_000)  # the served adapter's name on the page
            page.screenshot(path=str(ARTIFACTS / "admin-case-study.png"), full_page=True)

        _check(page, "admin-failure.png", flow)
    runs = list((work / "runs").iterdir())
    [run_dir] = [r for r in runs if r.is_dir()]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "completed"
    assert (work / "adapters" / run_dir.name / "adapter_model.safetensors").is_file()


def test_kill_9_mid_run_shows_interrupted_and_resume_completes(tmp_path: Path) -> None:
    from playwright.sync_api import expect

    _prologue(expect)
    work, env = _environment(tmp_path)
    with streamlit_server(env) as (url, _proc), chromium_page() as page:
        page.set_default_timeout(60_000)

        def flow() -> None:
            create_first_admin(page, url)
            _nav(page, "Admin")
            name = _start_run(page, env["MEDSTUDY_BASE_MODEL"], expect, steps=40)
            run_dir = work / "runs" / name
            deadline = time.monotonic() + 90
            while last_complete_checkpoint(run_dir) is None:
                assert time.monotonic() < deadline, "no checkpoint in 90 s"
                time.sleep(0.2)
            pid = json.loads((run_dir / "job.json").read_text())["pid"]
            os.kill(pid, signal.SIGKILL)
            expect(_status(page, "interrupted")).to_be_visible(timeout=30_000)  # the next refresh
            expect(page.get_by_text("Resume continues from checkpoint-")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "admin-interrupted.png"), full_page=True)
            _click_enabled(page, "Resume")
            expect(page.get_by_text(f"Resumed run {name}")).to_be_visible()
            expect(_status(page, "completed")).to_be_visible(timeout=150_000)
            assert _points_settle_at(page, 40) == 40
            page.screenshot(path=str(ARTIFACTS / "admin-kill-resumed.png"), full_page=True)

        _check(page, "admin-kill-failure.png", flow)


def _pick(page, label: str, option_text: str) -> None:
    """Choose the option containing ``option_text`` in the selectbox labelled ``label``."""
    wait_for_app(page)
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text=label).locator("input")
    box.click()
    box.fill(option_text)  # the selectbox filters its options as one types
    page.get_by_role("option").filter(has_text=option_text).first.click()
    wait_for_app(page)


def test_presets_warnings_and_comparing_the_base_with_a_new_adapter(tmp_path: Path) -> None:
    from playwright.sync_api import expect

    _prologue(expect)
    work, env = _environment(tmp_path)
    with streamlit_server(env) as (url, _proc), chromium_page() as page:
        page.set_default_timeout(60_000)

        def flow() -> None:
            create_first_admin(page, url)
            _nav(page, "Admin")
            _pick(page, "Start from", "CPU demo (minutes)")
            page.get_by_role("button", name="Load", exact=True).click()
            expect(page.get_by_text('Loaded preset "CPU demo (minutes)"')).to_be_visible()
            expect(field(page, field_label("max_steps"))).to_have_value("10")
            expect(field(page, field_label("batch_size"))).to_have_value("1")
            # A Check of the demo on the tiny model, with a learning rate far too high: the warnings say what to change.
            _fill(page, {"model_name": env["MEDSTUDY_BASE_MODEL"], "learning_rate": "0.05", "max_seq_len": "256"})
            page.get_by_role("button", name="Check settings").click()
            expect(page.get_by_text("far outside the usual LoRA range")).to_be_visible()
            expect(page.get_by_text("overrides the 3 epochs")).to_be_visible()
            expect(page.get_by_text("Tokens per epoch")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "admin-preset-warnings.png"), full_page=True)
            # Saved as the admin's own preset, then trained from it (a few steps on the tiny model).
            _fill(page, {"learning_rate": "0.005"})
            field(page, "Save these settings as preset").fill("Tiny demo")
            page.get_by_role("button", name="Save preset").click()
            expect(page.get_by_text('Saved preset "Tiny demo"')).to_be_visible()
            assert json.loads((work / "presets" / "tiny-demo.json").read_text())["values"]["learning_rate"] == 0.005
            name = _start_run(page, env["MEDSTUDY_BASE_MODEL"], expect, steps=4,
                              form={"save_steps": "2", "logging_steps": "1"})
            expect(_status(page, "completed")).to_be_visible(timeout=150_000)
            assert json.loads((work / "runs" / name / "preset.json").read_text())["title"] == "Tiny demo"

            page.get_by_role("tab", name="Compare").click()
            _pick(page, "Right", f"Adapter {name}")
            page.locator('textarea[aria-label="Case"]').fill("A 23-year-old woman has fever, neck stiffness and a rash.")
            page.get_by_role("button", name="Compare", exact=True).click()
            expect(page.get_by_text("saved to history as runs")).to_be_visible(timeout=150_000)
            main = page.locator('[data-testid="stMain"]')
            expect(main.get_by_role("heading", name=f"Adapter {name}")).to_be_visible()
            expect(main.get_by_role("heading", name="Base model alone")).to_be_visible()
            expect(main.get_by_text("tokens/s").first).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "admin-compare.png"), full_page=True)

        _check(page, "admin-lab-failure.png", flow)
