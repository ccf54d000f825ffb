"""Find resumable checkpoints in a run directory (no torch).

transformers' Trainer writes ``checkpoint-N/`` in this order: adapter weights, optimizer,
scheduler, RNG state, and ``trainer_state.json`` last. A checkpoint is complete only when all of
them are there and the trainer state parses, so a process killed mid-save leaves a folder that
:func:`last_complete_checkpoint` skips.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
REQUIRED_FILES = ("adapter_config.json", "optimizer.pt", "scheduler.pt", "trainer_state.json")
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def checkpoint_step(folder: Path) -> int | None:
    """The global step a ``checkpoint-N`` folder was saved at (from its trainer state), or None."""
    try:
        state = json.loads((Path(folder) / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    step = state.get("global_step") if isinstance(state, dict) else None
    return int(step) if isinstance(step, int) else None


def is_complete(folder: Path) -> bool:
    folder = Path(folder)
    if not all((folder / name).is_file() for name in REQUIRED_FILES):
        return False
    if not any((folder / name).is_file() for name in ADAPTER_WEIGHTS):
        return False
    return checkpoint_step(folder) is not None


def checkpoints(run_dir: Path) -> list[Path]:
    """All ``checkpoint-N`` folders, oldest step first (complete or not)."""
    found = []
    for child in Path(run_dir).glob("checkpoint-*"):
        m = CHECKPOINT_RE.match(child.name)
        if m and child.is_dir():
            found.append((int(m.group(1)), child))
    return [p for _, p in sorted(found)]


def last_complete_checkpoint(run_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    for folder in reversed(checkpoints(run_dir)):
        if is_complete(folder):
            return folder
    return None
