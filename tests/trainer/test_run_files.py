"""trainer.status and trainer.checkpoint: the run directory's control files, without torch."""

from __future__ import annotations

import json

import pytest

from trainer.checkpoint import checkpoints, is_complete, last_complete_checkpoint
from trainer.status import (
    STATUS_FILE,
    clear_stop,
    read_status,
    request_stop,
    stop_requested,
    write_status,
)


def test_status_is_replaced_atomically_and_keeps_earlier_fields(tmp_path):
    write_status(tmp_path, "running", reason="starting", step=0, total_steps=10)
    write_status(tmp_path, "stopping", reason="SIGTERM received")
    status = read_status(tmp_path)
    assert status["state"] == "stopping" and status["reason"] == "SIGTERM received"
    assert status["total_steps"] == 10 and isinstance(status["pid"], int)
    assert [p.name for p in tmp_path.iterdir()] == [STATUS_FILE]  # no temp files left behind
    with pytest.raises(ValueError):
        write_status(tmp_path, "exploded")


def test_unreadable_status_is_none(tmp_path):
    assert read_status(tmp_path) is None
    (tmp_path / STATUS_FILE).write_text("{not json")
    assert read_status(tmp_path) is None


def test_stop_file_round_trip(tmp_path):
    assert not stop_requested(tmp_path)
    request_stop(tmp_path)
    assert stop_requested(tmp_path)
    assert clear_stop(tmp_path) is True
    assert not stop_requested(tmp_path) and clear_stop(tmp_path) is False


def _checkpoint(run_dir, step, *, complete=True, state_ok=True):
    folder = run_dir / f"checkpoint-{step}"
    folder.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors", "optimizer.pt", "scheduler.pt"):
        (folder / name).write_text("x")
    if complete:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}) if state_ok else '{"global_st')
    return folder


def test_last_complete_checkpoint_skips_partial_saves(tmp_path):
    assert last_complete_checkpoint(tmp_path) is None
    _checkpoint(tmp_path, 2)
    ten = _checkpoint(tmp_path, 10)
    _checkpoint(tmp_path, 12, complete=False)  # killed before trainer_state.json
    _checkpoint(tmp_path, 14, state_ok=False)  # killed while writing it
    (tmp_path / "checkpoint-x").mkdir()
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10", "checkpoint-12", "checkpoint-14"]
    assert last_complete_checkpoint(tmp_path) == ten
    assert is_complete(ten) and not is_complete(tmp_path / "checkpoint-12")
