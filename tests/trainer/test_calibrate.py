"""trainer.launch.calibrate: a few steps in a throwaway process whose processes and folder never outlive the call."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from core.records import write_jsonl
from tests.trainer.conftest import make_records
from trainer import launch
from trainer.config import build_config

STUB = [sys.executable, "-m", "tests.trainer.stub_trainer"]


@pytest.fixture
def cfg(tmp_path: Path):
    work = tmp_path / "work"
    write_jsonl(work / "data" / "train.jsonl", make_records("train"))
    (tmp_path / "tiny-base").mkdir()
    config, problems = build_config({"model_name": str(tmp_path / "tiny-base"), "work_dir": str(work), "device": "cpu",
                                     "max_steps": 500, "gradient_accumulation_steps": 4, "eval_steps": 25})
    assert not problems
    return config


def run_calibration(cfg, tmp_path: Path, monkeypatch, **kwargs):
    roots = tmp_path / "calibration"
    monkeypatch.setattr(launch, "train_command", lambda run_dir, resume=False: STUB + ["--config", str(run_dir / "config.yaml")])
    return launch.calibrate(cfg, jobs_dir=tmp_path / "jobs", folder_root=roots, **kwargs), roots


def test_calibration_measures_and_cleans_up(cfg, tmp_path, monkeypatch):
    result, roots = run_calibration(cfg, tmp_path, monkeypatch, steps=3)
    # The stub logs tokens_per_s 100 + step: the first line (start-up) is left out, the median of 102 and 103 stays.
    assert result.tokens_per_s == pytest.approx(102.5) and result.steps == 3
    assert result.startup_s is not None and 0 < result.startup_s < result.wall_s
    assert not launch.pid_alive(result.pid)
    assert not Path(result.folder).exists() and list(roots.iterdir()) == []


def test_calibration_config_keeps_the_shapes_and_drops_the_rest(cfg, tmp_path):
    c = launch.calibration_config(cfg, tmp_path, steps=3)
    assert (c.max_steps, c.gradient_accumulation_steps, c.eval_file, c.logging_steps) == (3, 1, "none", 1)
    assert (c.model_name, c.batch_size, c.max_seq_len, c.lora_r) == (cfg.model_name, cfg.batch_size, cfg.max_seq_len,
                                                                     cfg.lora_r)
    assert c.output_dir == str(tmp_path / "run")


def test_a_calibration_past_its_time_is_killed_with_its_children(cfg, tmp_path, monkeypatch):
    child_file = tmp_path / "child.pid"
    monkeypatch.setenv("STUB_STEP_S", "5")
    monkeypatch.setenv("STUB_IGNORE_TERM", "1")  # SIGTERM is not enough: SIGKILL must follow
    monkeypatch.setenv("STUB_CHILD_PID_FILE", str(child_file))
    t0 = time.monotonic()
    with pytest.raises(launch.CalibrationError, match="did not finish") as err:
        run_calibration(cfg, tmp_path, monkeypatch, steps=3, timeout_s=3)
    assert time.monotonic() - t0 < 30
    assert err.value.pid is not None and not launch.pid_alive(err.value.pid)
    child = int(child_file.read_text())
    deadline = time.monotonic() + 5
    while launch.pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not launch.pid_alive(child)
    assert list((tmp_path / "calibration").iterdir()) == []


def test_a_failing_calibration_says_why_and_leaves_nothing(cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("STUB_FAIL_EARLY", "1")
    with pytest.raises(launch.CalibrationError, match="exited with code 2.*failing early on purpose") as err:
        run_calibration(cfg, tmp_path, monkeypatch)
    assert not launch.pid_alive(err.value.pid)
    assert list((tmp_path / "calibration").iterdir()) == []


def test_calibration_is_refused_while_a_job_runs(cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("STUB_STEP_S", "0.5")
    run_dir = launch.create_run_dir(launch.calibration_config(cfg, tmp_path / "busy", steps=50))
    job = launch.start_training(Path(run_dir.output_dir), jobs_dir=tmp_path / "jobs",
                                command=STUB + ["--config", str(Path(run_dir.output_dir) / "config.yaml")])
    try:
        with pytest.raises(launch.JobBusyError, match="calibrate when it has finished"):
            run_calibration(cfg, tmp_path, monkeypatch)
        assert not (tmp_path / "calibration").exists()
    finally:
        launch.terminate(job, grace_s=1)
