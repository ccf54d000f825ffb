"""How long a training run will take, before it starts: tokens from the data plan, speed from a measurement.

Pure arithmetic over numbers the caller measured: the token length of every training example
(``trainer.launch.dataset_plan``, the trainer's own example builder and leave-out rule), and a
:class:`Throughput` -- from a calibration (a few optimiser steps of the same config in a throwaway
process, ``trainer.launch.calibrate``) or from an earlier run on this machine. Nothing here starts
processes or reads files.

The projection is ``start-up + steps x tokens per step / tokens per second + evaluations``, where
evaluations are forward passes only, taken as :data:`EVAL_SPEEDUP` times the training throughput
(a backward pass costs about two forward passes). Checkpoint saves (LoRA weights, a few MB) are not
counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

EVAL_SPEEDUP = 3.0
"""Validation tokens per second relative to training tokens per second (forward only vs forward + backward)."""
LONG_CPU_RUN_S = 3600.0
"""A CPU run projected to take longer than this gets a warning."""


@dataclass(frozen=True)
class Throughput:
    """Measured training speed on this machine, and where the number comes from."""

    tokens_per_s: float
    """Non-padding training tokens per second (the trainer's ``tokens_per_s``, median after the first step)."""
    startup_s: float | None
    """The run's fixed cost: starting the process to steady training (imports, model load, tokenising the data,
    the first step's warm-up) plus saving the adapter and exiting."""
    basis: str
    """Where the number comes from, in words (shown with the estimate)."""
    device: str = ""


@dataclass(frozen=True)
class Estimate:
    """A projected run: its tokens, steps and wall time, with the basis of the speed used."""

    tokens_per_epoch: int
    """Sum of the token lengths of the examples the trainer keeps (within max_seq_len)."""
    examples: int
    steps: int
    tokens_per_step: float
    train_tokens: float
    """Tokens the run will train on: steps x tokens per step."""
    evaluations: int
    eval_tokens: float
    """Tokens of one pass over the validation examples (their count x the mean training example length)."""
    throughput: Throughput | None
    train_s: float | None = None
    eval_s: float | None = None
    startup_s: float | None = None

    @property
    def total_s(self) -> float | None:
        if self.train_s is None:
            return None
        return self.train_s + (self.eval_s or 0.0) + (self.startup_s or 0.0)

    @property
    def epochs(self) -> float:
        return self.train_tokens / self.tokens_per_epoch if self.tokens_per_epoch else 0.0


def evaluations(steps: int, *, eval_steps: int, has_eval: bool) -> int:
    """Validation passes ``python -m trainer`` makes: one before the first step (the base model's baseline), every
    ``eval_steps`` steps, and one at the end if the last step is not one."""
    if not has_eval or steps <= 0:
        return 0
    if eval_steps <= 0:
        return 2
    return 1 + steps // eval_steps + (0 if steps % eval_steps == 0 else 1)


def estimate(kept_lengths: Sequence[int], *, steps: int, batch_size: int, gradient_accumulation_steps: int,
             eval_examples: int | None, eval_steps: int, throughput: Throughput | None) -> Estimate:
    """Project a run from the kept examples' token lengths, its step count and a measured throughput."""
    tokens_per_epoch = int(sum(kept_lengths))
    mean = tokens_per_epoch / len(kept_lengths) if kept_lengths else 0.0
    tokens_per_step = mean * batch_size * gradient_accumulation_steps
    n_evals = evaluations(steps, eval_steps=eval_steps, has_eval=bool(eval_examples))
    eval_tokens = (eval_examples or 0) * mean
    est = Estimate(tokens_per_epoch=tokens_per_epoch, examples=len(kept_lengths), steps=steps,
                   tokens_per_step=tokens_per_step, train_tokens=steps * tokens_per_step, evaluations=n_evals,
                   eval_tokens=eval_tokens, throughput=throughput)
    if throughput is None or throughput.tokens_per_s <= 0 or not math.isfinite(throughput.tokens_per_s):
        return est
    tps = throughput.tokens_per_s
    return Estimate(**{**est.__dict__, "train_s": est.train_tokens / tps,
                       "eval_s": n_evals * eval_tokens / (EVAL_SPEEDUP * tps), "startup_s": throughput.startup_s})


def long_cpu_warning(est: Estimate, *, device: str) -> str | None:
    """A warning when a CPU run is projected past :data:`LONG_CPU_RUN_S`, saying what to do instead."""
    total = est.total_s
    if device != "cpu" or total is None or total <= LONG_CPU_RUN_S:
        return None
    hours = total / 3600
    return (f"This run would take about {hours:.1f} hours on this CPU. Load the \"CPU demo (minutes)\" preset to "
            "see the whole loop in a few minutes, or train on a GPU (trainer/README.md: `python -m trainer --config "
            "configs/smollm2_medcot_fast.yaml` on a CUDA machine, then register the adapter folder here).")
