"""Trainer callbacks: the metrics.jsonl writer, the status file and the graceful stop.

- :class:`MetricsCallback` appends one JSON object per log event to ``metrics.jsonl`` (event
  ``train``, ``eval``, ``train_end``; the training code adds ``start``, ``resume``, ``stopped``,
  ``completed``, ``failed``). Fields: step, epoch, loss, eval_loss, learning_rate, grad_norm,
  mean_token_accuracy (a training diagnostic: how often the next token is the argmax, on
  completion tokens), tokens_per_s (non-padding tokens per second since the previous line),
  elapsed_s (continues across resumes), eta_s, peak_mem_gb (CUDA: peak allocated; CPU: peak RSS).
- :class:`StatusCallback` keeps ``status.json`` current (step, total_steps).
- :class:`StopController` + :class:`StopCallback`: SIGTERM, SIGINT or a ``STOP`` file in the run
  directory let the current optimiser step finish, then force a checkpoint save and end training;
  the training code then saves the adapter and marks the run ``stopped``. A second SIGINT aborts.
"""

from __future__ import annotations

import resource
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from core.metrics import MetricsWriter
from trainer.distributed import any_process
from trainer.status import RUNNING, STOPPING, stop_requested, write_status

TRAIN_KEYS = ("loss", "learning_rate", "grad_norm", "mean_token_accuracy", "entropy")
EVAL_KEYS = ("eval_loss", "eval_mean_token_accuracy", "eval_entropy", "eval_runtime")


def peak_memory_gb(device: str) -> float:
    """Peak memory so far: CUDA allocated bytes on GPU, the process's peak resident set on CPU."""
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**30
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**30 if sys.platform == "darwin" else 2**20)


class StopController:
    """Remembers a stop request from a signal or the ``STOP`` file."""

    def __init__(self, run_dir: Path, *, writes: bool = True):
        self.run_dir = Path(run_dir)
        self.writes = writes
        """Rank 0 of a multi-process run (or the only process): reads the STOP file and writes the status."""
        self.reason = ""
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Handle SIGTERM/SIGINT (only possible in the main thread; elsewhere the STOP file still works)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.reason and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now, without saving
        if not self.reason:
            self.reason = f"{name} received"
            if self.writes:
                print(f"\n[trainer] {name}: finishing the current step, then saving and stopping "
                      "(Ctrl-C again to abort without saving)", file=sys.stderr, flush=True)
                write_status(self.run_dir, STOPPING, reason=self.reason)

    @property
    def requested(self) -> bool:
        if not self.reason and self.writes and stop_requested(self.run_dir):
            self.reason = "stop file found"
            write_status(self.run_dir, STOPPING, reason=self.reason)
        return bool(self.reason)


class StopCallback(TrainerCallback):
    """After each optimiser step: if a stop was requested, save a checkpoint and end training."""

    def __init__(self, controller: StopController):
        self.controller = controller
        self.stopped_at: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        # With several processes, every one must stop after the same step (see trainer.distributed).
        requested = any_process(self.controller.requested)
        if requested and not self.controller.reason:
            self.controller.reason = "stop requested by another training process"
        if requested and state.global_step < state.max_steps:
            control.should_training_stop = True
            control.should_save = True
            control.should_log = True
            self.stopped_at = state.global_step
        return control


class StatusCallback(TrainerCallback):
    """Keeps ``status.json`` at the current step (at most once per ``every_s`` seconds)."""

    def __init__(self, run_dir: Path, controller: StopController, every_s: float = 1.0):
        self.run_dir = Path(run_dir)
        self.controller = controller
        self.every_s = every_s
        self._last = 0.0

    def _write(self, state) -> None:
        if self.controller.reason:
            return  # "stopping" stays until the run ends
        write_status(self.run_dir, RUNNING, reason="training", step=state.global_step, total_steps=state.max_steps)
        self._last = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self._write(state)

    def on_step_end(self, args, state, control, **kwargs):
        if time.monotonic() - self._last >= self.every_s:
            self._write(state)


class MetricsCallback(TrainerCallback):
    """Writes each Trainer log event to ``metrics.jsonl`` (see the module docstring for the fields)."""

    def __init__(self, writer: MetricsWriter, *, device: str, elapsed_offset_s: float = 0.0):
        self.writer = writer
        self.device = device
        self.elapsed_offset_s = elapsed_offset_s
        self._t0 = time.monotonic()
        self._start_step = 0
        self._last_tokens: float = 0.0
        self._last_time = self._t0

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = self._last_time = time.monotonic()
        self._start_step = state.global_step
        self._last_tokens = 0.0

    def _common(self, state) -> dict[str, Any]:
        now = time.monotonic()
        done = state.global_step - self._start_step
        spent = now - self._t0
        eta = (state.max_steps - state.global_step) * spent / done if done > 0 and state.max_steps else None
        return {
            "step": state.global_step,
            "epoch": round(state.epoch, 4) if state.epoch is not None else None,
            "elapsed_s": round(self.elapsed_offset_s + spent, 2),
            "eta_s": round(eta, 1) if eta is not None else None,
            "total_steps": state.max_steps,
            "peak_mem_gb": round(peak_memory_gb(self.device), 3),
            "time": time.time(),
        }

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        if "loss" in logs:
            record = {"event": "train", **self._common(state)}
            record.update({k: logs[k] for k in TRAIN_KEYS if k in logs})
            now = time.monotonic()
            tokens = logs.get("num_tokens")
            if tokens is not None and now > self._last_time:
                record["tokens_per_s"] = round((tokens - self._last_tokens) / (now - self._last_time), 1)
                record["num_tokens"] = tokens
                self._last_tokens, self._last_time = tokens, now
        elif "eval_loss" in logs:
            record = {"event": "eval", **self._common(state)}
            record.update({k: logs[k] for k in EVAL_KEYS if k in logs})
            # Evaluation time is not training time: keep it out of the next tokens/s figure.
            self._last_time += float(logs.get("eval_runtime") or 0.0)
        elif "train_runtime" in logs:
            record = {"event": "train_end", **self._common(state),
                      "train_loss": logs.get("train_loss"), "train_runtime": logs.get("train_runtime")}
        else:
            return
        self.writer.write(record)
