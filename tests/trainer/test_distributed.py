"""Two training processes (DDP on CPU through ``torchrun``, gloo backend): the trainer runs unchanged.

Proves what matters for multi-GPU runs without a GPU: each optimiser step covers both processes'
shares of the batch, the run directory is written once (no duplicated metrics lines, one status, one
adapter), and a STOP request stops both processes after the same step instead of leaving one
waiting forever in the next gradient all-reduce.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.metrics import read_metrics
from core.model import BaseModel, load_model
from trainer.checkpoint import last_complete_checkpoint
from trainer.status import read_status, request_stop

from .conftest import tiny_overrides

PROJECT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _torchrun(values: dict, log_path: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "trainer"]
    for key, value in values.items():
        argv += [f"--{key}", str(value)]
    return subprocess.Popen(argv, cwd=PROJECT, stdout=log_path.open("w"), stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_two_processes_write_each_step_once_and_split_the_batch(tiny_model_dir, data_dir, tmp_path):
    run = tmp_path / "run"
    values = tiny_overrides(tiny_model_dir, data_dir, run, max_steps=4, eval_steps=2, save_steps=2)
    log = tmp_path / "ddp.log"
    rc = _finish(_torchrun(values, log), timeout=300)
    output = log.read_text()
    assert rc == 0, output
    records = read_metrics(run / "metrics.jsonl")
    train = [r for r in records if r["event"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]  # once each, not once per process
    # 8 training records, 2 processes x batch 2 per step: an epoch is 2 steps (1 process: 4 steps).
    assert [r["epoch"] for r in train] == [0.5, 1.0, 1.5, 2.0]
    assert [r["step"] for r in records if r["event"] == "eval"] == [0, 2, 4]  # the step-0 baseline, then every 2 steps
    assert [r["event"] for r in records].count("start") == 1 and records[-1]["event"] == "completed"
    assert read_status(run)["state"] == "completed"
    assert output.count("[trainer] completed at step 4/4") == 1  # rank 1 trains silently
    model, _ = load_model(BaseModel(identity=tiny_model_dir.name, location=str(tiny_model_dir)),
                          adapter_dir=run / "adapter", device="cpu", merge=True)
    assert model is not None


def test_a_stop_request_stops_both_processes_after_the_same_step(tiny_model_dir, data_dir, tmp_path):
    run = tmp_path / "run"
    values = tiny_overrides(tiny_model_dir, data_dir, run, max_steps=5_000, eval_steps=0, save_steps=5_000)
    log = tmp_path / "ddp.log"
    proc = _torchrun(values, log)
    try:
        deadline = time.monotonic() + 180
        while not any(r.get("event") == "train" for r in read_metrics(run / "metrics.jsonl")):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no training step in 180 s:\n" + log.read_text()
            time.sleep(0.2)
        request_stop(run)  # only rank 0 reads the STOP file; the decision reaches rank 1 by all-reduce
    finally:
        rc = _finish(proc, timeout=180)  # a rank left waiting in an all-reduce would hang here
    output = log.read_text()
    assert rc == 0, output
    status = read_status(run)
    assert status["state"] == "stopped" and status["reason"] == "stop file found", status
    assert 1 <= status["step"] < 5_000
    ckpt = last_complete_checkpoint(run)
    assert ckpt is not None and ckpt.name == f"checkpoint-{status['step']}"
    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl") if r["event"] == "train"]
    assert steps == sorted(set(steps))  # one line per step, in order
