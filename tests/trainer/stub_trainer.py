"""A stand-in for ``python -m trainer`` that writes the same run-directory files without torch (launcher tests).

    python -m tests.trainer.stub_trainer --config RUN_DIR/config.yaml [--resume auto]

Reads ``max_steps`` and ``save_steps`` from the config; one "step" sleeps ``STUB_STEP_S``
seconds (default 0.05). Writes ``status.json`` and ``metrics.jsonl`` like the trainer, complete
``checkpoint-N/`` folders every ``save_steps``, and ``adapter/`` with a card at the end. Stops
gracefully on SIGTERM or a ``STOP`` file. Environment switches: ``STUB_FAIL_EARLY=1`` exits 2
before writing anything; ``STUB_IGNORE_TERM=1`` ignores SIGTERM; ``STUB_CHILD_PID_FILE=PATH``
starts a sleeping child process (to check that a cancel ends the whole process group).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from core.metrics import RESUME_EVENT, MetricsWriter
from core.prompts import PROMPT_FORMAT_VERSION
from trainer.checkpoint import checkpoint_step, last_complete_checkpoint
from trainer.status import clear_stop, stop_requested, write_status


def _save_checkpoint(run_dir: Path, step: int) -> None:
    folder = run_dir / f"checkpoint-{step}"
    folder.mkdir(exist_ok=True)
    for name in ("adapter_config.json", "adapter_model.safetensors", "optimizer.pt", "scheduler.pt"):
        (folder / name).write_text("{}")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))  # written last


def save_adapter(run_dir: Path, cfg: dict, state: str, step: int) -> None:
    folder = run_dir / "adapter"
    folder.mkdir(exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 4}))
    (folder / "adapter_model.safetensors").write_bytes(b"stub weights")
    base = Path(str(cfg.get("model_name", "stub-base"))).name
    card = {"base_model": base, "prompt_format": PROMPT_FORMAT_VERSION, "status": state,
            "training": {"global_step": step}, "trainable_params": 123, "metrics": {"train_loss": 1.0}}
    (folder / "adapter_card.json").write_text(json.dumps(card))


def main() -> int:
    if os.environ.get("STUB_FAIL_EARLY"):
        print("[trainer] Invalid training config (1 problem):\n  - stub: failing early on purpose", file=sys.stderr)
        return 2
    args = sys.argv[1:]
    config = Path(args[args.index("--config") + 1])
    resume = "--resume" in args
    cfg = yaml.safe_load(config.read_text())
    run_dir = config.parent
    total, save_steps = int(cfg["max_steps"]), int(cfg["save_steps"])
    delay = float(os.environ.get("STUB_STEP_S", "0.05"))
    stop_reason = ""

    def on_term(signum, _frame):
        nonlocal stop_reason
        stop_reason = "SIGTERM received"

    if os.environ.get("STUB_IGNORE_TERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, on_term)
    if path := os.environ.get("STUB_CHILD_PID_FILE"):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        Path(path).write_text(str(child.pid))

    clear_stop(run_dir)
    start = 0
    ckpt = last_complete_checkpoint(run_dir) if resume else None
    if ckpt is not None:
        start = checkpoint_step(ckpt) or 0
    write_status(run_dir, "running", reason="starting", step=start, total_steps=None)
    print(f"[trainer] stub {'resuming at' if resume else 'starting at'} step {start}", flush=True)
    t0 = time.time()
    with MetricsWriter(run_dir / "metrics.jsonl") as writer:
        writer.write({"event": RESUME_EVENT if resume else "start", "step": start, "time": time.time()})
        step = start
        while step < total:
            time.sleep(delay)
            step += 1
            now = time.time()
            writer.write({"event": "train", "step": step, "total_steps": total, "loss": 2.0 / step,
                          "learning_rate": 1e-3 * (1 - step / total), "tokens_per_s": 100.0 + step,
                          "elapsed_s": round(now - t0, 3), "eta_s": round((total - step) * delay, 3), "time": now})
            if step % save_steps == 0:
                _save_checkpoint(run_dir, step)
            write_status(run_dir, "running", reason="training", step=step, total_steps=total)
            if (stop_reason or stop_requested(run_dir)) and step < total:
                stop_reason = stop_reason or "stop file found"
                write_status(run_dir, "stopping", reason=stop_reason, step=step, total_steps=total)
                _save_checkpoint(run_dir, step)
                save_adapter(run_dir, cfg, "stopped", step)
                writer.write({"event": "stopped", "step": step, "reason": stop_reason, "time": time.time()})
                write_status(run_dir, "stopped", reason=stop_reason, step=step, total_steps=total)
                print(f"[trainer] stopped at step {step}", flush=True)
                return 0
        save_adapter(run_dir, cfg, "completed", step)
        writer.write({"event": "completed", "step": step, "time": time.time()})
    write_status(run_dir, "completed", reason=f"finished {step} steps", step=step, total_steps=total)
    print(f"[trainer] completed at step {step}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
