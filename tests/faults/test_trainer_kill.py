"""kill -9 of a real ``python -m trainer`` on the tiny model, then ``--resume auto``: one continuous loss curve.

tests/trainer/test_launch.py proves the launcher's side of a kill -9 with a stub trainer (the run
becomes "interrupted", resume is offered) and tests/trainer/test_train.py a simulated in-process
crash. This test kills the real trainer process with SIGKILL after a checkpoint and after it has
logged steps beyond that checkpoint, resumes it as a new process, and checks the curve the admin
page draws (``core.runs.curves`` over ``core.metrics.read_metrics``): every step from 1 to
``max_steps`` exactly once, in order, while the append-only file really holds the re-trained steps
twice (so the reader's de-duplication was needed).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.metrics import read_metrics
from core.runs import curves
from trainer.checkpoint import last_complete_checkpoint
from trainer.status import read_status
from tests.trainer.conftest import tiny_overrides

pytestmark = pytest.mark.slow  # two trainer processes (about 1 min on 2 busy cores)

PROJECT = Path(__file__).resolve().parents[2]
MAX_STEPS = 12


def _train_steps(run: Path, *, raw: bool = False) -> list[int]:
    return [r["step"] for r in read_metrics(run / "metrics.jsonl", raw=raw) if r.get("event") == "train"]


def test_sigkill_after_a_checkpoint_then_resume_gives_every_step_once(tiny_model_dir, data_dir, tmp_path):
    run = tmp_path / "run"
    values = tiny_overrides(tiny_model_dir, data_dir, run, max_steps=MAX_STEPS, save_steps=3, eval_steps=0)
    argv = [sys.executable, "-m", "trainer"]
    for key, value in values.items():
        argv += [f"--{key}", str(value)]
    log_path = tmp_path / "train.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            killed_at = None
            while time.monotonic() < deadline and proc.poll() is None:
                checkpoint = last_complete_checkpoint(run)
                steps = _train_steps(run)
                if checkpoint is not None and steps and steps[-1] > int(checkpoint.name.split("-")[1]):
                    os.kill(proc.pid, signal.SIGKILL)  # mid-run, with logged steps the checkpoint does not hold
                    killed_at = (int(checkpoint.name.split("-")[1]), steps[-1])
                    break
                time.sleep(0.02)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert killed_at is not None, "the run finished or stalled before it could be killed:\n" + log_path.read_text()
    assert proc.returncode == -signal.SIGKILL
    checkpoint_step, last_logged = killed_at
    assert read_status(run)["state"] == "running"  # the trainer never got to record anything else
    assert _train_steps(run)[-1] < MAX_STEPS

    resumed = subprocess.run([sys.executable, "-m", "trainer", "--config", str(run / "config.yaml"),
                              "--resume", "auto"], cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert read_status(run)["state"] == "completed"

    curve = curves(read_metrics(run / "metrics.jsonl")).train_loss
    assert curve.steps == list(range(1, MAX_STEPS + 1))  # continuous, no gap, no duplicate
    assert all(isinstance(v, float) and v > 0 for v in curve.values)
    raw = _train_steps(run, raw=True)
    redone = [s for s in range(1, MAX_STEPS + 1) if raw.count(s) == 2]
    # Exactly the steps logged after the checkpoint and before the kill were trained again; no step thrice.
    assert redone == list(range(checkpoint_step + 1, checkpoint_step + 1 + len(redone))), raw
    assert redone[-1] >= last_logged and all(1 <= raw.count(s) <= 2 for s in range(1, MAX_STEPS + 1))
    print(f"\nkilled after checkpoint-{checkpoint_step} with step {last_logged} logged; "
          f"{len(redone)} step(s) re-trained after the resume; curve has {len(curve.steps)} steps")
