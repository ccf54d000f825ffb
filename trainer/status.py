"""The run directory's small control files: ``status.json`` (what the run is doing) and ``STOP`` (please stop).

A run directory holds::

    config.yaml       the resolved config (trainer.config.save_config)
    metrics.jsonl     one JSON object per log event (core.metrics.MetricsWriter / read_metrics)
    status.json       {"state": running|stopping|stopped|completed|failed, "reason", "pid", "step", ...}
    STOP              created by anyone who wants the run to stop gracefully (request_stop)
    checkpoint-N/     resumable checkpoints (adapter, optimizer, scheduler, trainer state, RNG)
    adapter/          the final adapter with adapter_card.json and README.md
    train.log         the process output, when started by the launcher

The trainer is the only writer of ``status.json`` (atomically: temp file + rename); the app and
the launcher read it, and stop a run by creating ``STOP`` or sending SIGTERM. No torch here.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.atomic import atomic_write_text

STATUS_FILE = "status.json"
STOP_FILE = "STOP"
METRICS_FILE = "metrics.jsonl"
ADAPTER_DIR = "adapter"

RUNNING, STOPPING, STOPPED, COMPLETED, FAILED = "running", "stopping", "stopped", "completed", "failed"
STATES = (RUNNING, STOPPING, STOPPED, COMPLETED, FAILED)
FINAL_STATES = (STOPPED, COMPLETED, FAILED)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_status(run_dir: Path, state: str, *, reason: str = "", **extra: Any) -> dict[str, Any]:
    """Replace ``status.json`` atomically with ``state``, the reason, this process's pid and ``extra``."""
    if state not in STATES:
        raise ValueError(f"unknown run state {state!r}; expected one of {STATES}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    previous = read_status(run_dir) or {}
    data = {
        **{k: v for k, v in previous.items() if k not in ("state", "reason")},
        **extra,
        "state": state,
        "reason": reason,
        "pid": os.getpid(),
        "run_dir": str(run_dir),
        "updated_at": now_iso(),
    }
    atomic_write_text(run_dir / STATUS_FILE, json.dumps(data, indent=2))
    return data


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """The run's status, or None when there is none (or it cannot be read)."""
    try:
        data = json.loads((Path(run_dir) / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def request_stop(run_dir: Path) -> Path:
    """Ask a running trainer to finish its current step, save, and exit (it polls for this file)."""
    path = Path(run_dir) / STOP_FILE
    path.write_text(now_iso() + "\n", encoding="utf-8")
    return path


def stop_requested(run_dir: Path) -> bool:
    return (Path(run_dir) / STOP_FILE).exists()


def clear_stop(run_dir: Path) -> bool:
    """Remove a stale stop request (done when a run starts or resumes); True if there was one."""
    path = Path(run_dir) / STOP_FILE
    if path.exists():
        path.unlink()
        return True
    return False
