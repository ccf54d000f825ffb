"""``python -m trainer`` as a real process: SIGTERM finishes the step, saves, and exits 0 with status "stopped"."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.metrics import read_metrics
from trainer.checkpoint import last_complete_checkpoint
from trainer.status import read_status

from .conftest import tiny_overrides

PROJECT = Path(__file__).resolve().parents[2]


def test_sigterm_stops_gracefully_with_a_saved_adapter(tiny_model_dir, data_dir, tmp_path):
    run = tmp_path / "run"
    values = tiny_overrides(tiny_model_dir, data_dir, run, max_steps=10_000, save_steps=10_000, eval_steps=0)
    argv = [sys.executable, "-m", "trainer"]
    for key, value in values.items():
        argv += [f"--{key}", str(value)]
    log = (tmp_path / "train.log").open("w")
    proc = subprocess.Popen(argv, cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if any(r.get("event") == "train" for r in read_metrics(run / "metrics.jsonl")):
                break
            assert proc.poll() is None, (tmp_path / "train.log").read_text()
            time.sleep(0.2)
        else:
            raise AssertionError("no training step within 120 s:\n" + (tmp_path / "train.log").read_text())
        os.kill(proc.pid, signal.SIGTERM)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    output = (tmp_path / "train.log").read_text()
    assert rc == 0, output
    status = read_status(run)
    assert status["state"] == "stopped" and status["reason"] == "SIGTERM received", status
    assert status["pid"] == proc.pid and 1 <= status["step"] < 10_000
    ckpt = last_complete_checkpoint(run)
    assert ckpt is not None and ckpt.name == f"checkpoint-{status['step']}"
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert (run / "adapter" / "adapter_card.json").is_file()
    assert "trainable params: 32,768" in output
    assert read_metrics(run / "metrics.jsonl")[-1]["event"] == "stopped"


def test_every_run_with_validation_starts_its_curve_with_the_base_models_loss(tiny_model_dir, data_dir, tmp_path):
    """``python -m trainer`` evaluates once before the first step (the base model: LoRA starts as the identity)."""
    from trainer.cli import baseline_callbacks
    from trainer.config import TrainConfig

    assert baseline_callbacks(TrainConfig(eval_file="none")) == []
    run = tmp_path / "run"
    values = tiny_overrides(tiny_model_dir, data_dir, run, max_steps=2, save_steps=2, eval_steps=0)
    argv = [sys.executable, "-m", "trainer"] + [x for k, v in values.items() for x in (f"--{k}", str(v))]
    done = subprocess.run(argv, cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    evals = [r for r in read_metrics(run / "metrics.jsonl") if r.get("event") == "eval"]
    assert [r["step"] for r in evals] == [0, 2]  # the baseline, then the final evaluation
    assert evals[0]["eval_loss"] > 0 and evals[0]["eval_loss"] != evals[1]["eval_loss"]
    train_lines = [r for r in read_metrics(run / "metrics.jsonl") if r.get("event") == "train"]
    assert [r["step"] for r in train_lines][-1] == 2
