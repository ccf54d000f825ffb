"""Where a training step's time goes: torch.profiler over a few steady steps, summed by kernel family.

Used by ``benchmarks.bench_training --profile``: :class:`StepProfiler` is a trainer callback that
profiles whole optimiser-step cycles (data fetch, forward, backward, optimiser, logging) from the end
of step ``first - 1`` to the end of step ``first + count - 1`` and keeps, per kernel name, the
device time and the number of calls. :func:`summarize` turns that into two markdown tables: time
per step by family (matrix products, attention, bitsandbytes' 4-bit dequantisation, Triton kernels,
eager element-wise ops, ...) and the host's share -- the part of the wall time in which the GPU ran
no kernel at all, i.e. it waited on Python, kernel launches or a synchronisation -- and the
slowest kernels. Those two tables say why a recipe is as fast as it is.

Profiled steps run slower (the profiler's own cost), so the benchmark leaves them out of its
steady-state rate (:attr:`StepProfiler.touched_steps`).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainerCallback

TRITON = "Triton kernels (Liger, TRL's loss head, torch.compile fusions)"
FAMILIES: list[tuple[str, re.Pattern[str]]] = [
    ("communication (NCCL)", re.compile(r"nccl")),
    ("bitsandbytes 4-bit (dequantise, 4-bit products)", re.compile(r"kdequantize|dequantize|kgemm_4bit|bnb|quantize")),
    ("attention kernels (SDPA flash / memory-efficient, FlexAttention)",
     re.compile(r"flash|fmha|attention|attn|flex")),
    ("matrix products (cuBLAS / CUTLASS)",
     re.compile(r"gemm|cutlass|xmma|nvjet|cublas|sm\d\d_|wgmma|matmul|splitk|aten::(mm|addmm|bmm|linear)$")),
    ("optimiser (fused AdamW, 8-bit AdamW)", re.compile(r"adam|multi_tensor|foreach|optimizer")),
    # Triton kernels are named by their Python function (Liger's ``_rms_norm_forward_kernel``, inductor's
    # ``triton_poi_fused_...``); PyTorch's own CUDA kernels are C++ templates (``void at::native::...``).
    (TRITON, re.compile(r"^triton_|^_?[a-z0-9_]+_kernel$")),
    ("dtype casts and copies (aten copy kernels, memcpy, fills, indexing)",
     re.compile(r"memcpy|memset|copy|fill|cat_|index|scatter|gather")),
    ("eager element-wise ops and reductions",
     re.compile(r"elementwise|reduce|vectorized|unrolled|softmax|norm|dropout|^aten::(mul|add|sub|div|exp|neg|eq|lt|gt|where)")),
]
OTHER = "other kernels"


def family(kernel: str) -> str:
    """The family of a kernel name (the first pattern that matches, in :data:`FAMILIES` order)."""
    lowered = kernel.lower()
    for name, pattern in FAMILIES:
        if pattern.search(lowered):
            return name
    return OTHER


@dataclass
class Profile:
    """Device time per kernel name over ``steps`` profiled step cycles that took ``wall_s``."""

    steps: int
    wall_s: float
    kernels: dict[str, tuple[float, int]] = field(default_factory=dict)
    """Kernel name -> (device seconds, calls), summed over the profiled steps."""
    device: str = "cuda"


def summarize(profile: Profile, *, top: int = 12) -> str:
    """Markdown: time per step by kernel family, the host's share, and the ``top`` slowest kernels."""
    steps = max(profile.steps, 1)
    per_step_wall = profile.wall_s / steps
    busy = sum(seconds for seconds, _ in profile.kernels.values())
    by_family: dict[str, list[float]] = {}
    for name, (seconds, calls) in profile.kernels.items():
        acc = by_family.setdefault(family(name), [0.0, 0.0])
        acc[0] += seconds
        acc[1] += calls
    unit = "GPU" if profile.device == "cuda" else "CPU op"
    rows = [f"profiled {profile.steps} step cycles: {per_step_wall * 1e3:,.1f} ms of wall time per step, "
            f"{busy / steps * 1e3:,.1f} ms of {unit} time in kernels per step",
            "", f"| kernel family | {unit} ms per step | calls per step | share of wall time |", "| --- | --- | --- | --- |"]
    for name, (seconds, calls) in sorted(by_family.items(), key=lambda kv: -kv[1][0]):
        rows.append(f"| {name} | {seconds / steps * 1e3:,.1f} | {calls / steps:,.0f} | "
                    f"{seconds / profile.wall_s:.1%} |" if profile.wall_s > 0 else f"| {name} | | | |")
    if profile.device == "cuda" and profile.wall_s > 0:
        idle = max(profile.wall_s - busy, 0.0)
        rows.append(f"| **GPU idle** (no kernel running: Python, launches, synchronisation) | "
                    f"{idle / steps * 1e3:,.1f} | | **{idle / profile.wall_s:.1%}** |")
    rows += ["", f"| slowest kernels (top {top}) | family | {unit} ms per step | calls per step |", "| --- | --- | --- | --- |"]
    for name, (seconds, calls) in sorted(profile.kernels.items(), key=lambda kv: -kv[1][0])[:top]:
        short = name if len(name) <= 90 else name[:87] + "..."
        rows.append(f"| `{short.replace('|', '/')}` | {family(name)} | {seconds / steps * 1e3:,.2f} | {calls / steps:,.1f} |")
    return "\n".join(rows)


def kernels_from(events: Any, device: str) -> dict[str, tuple[float, int]]:
    """Kernel name -> (seconds, calls) from ``profiler.key_averages()``.

    On CUDA the device-side events (kernels, memcpy, memset) carry their own device time; user annotations
    are left out (their span repeats the kernels inside them). On CPU (only to check this code without a
    GPU) the operators' self CPU time stands in for it.
    """
    out: dict[str, tuple[float, int]] = {}
    for evt in events:
        if getattr(evt, "is_user_annotation", False):
            continue  # a record_function label (``Optimizer.step#AdamW.step``) spans kernels counted on their own
        if device == "cuda":
            micros = float(getattr(evt, "self_device_time_total", 0.0) or 0.0)
            if micros <= 0 or getattr(evt, "device_type", None) is None or "CUDA" not in str(evt.device_type):
                continue
        else:
            micros = float(getattr(evt, "self_cpu_time_total", 0.0) or 0.0)
            if micros <= 0:
                continue
        seconds, calls = out.get(evt.key, (0.0, 0))
        out[evt.key] = (seconds + micros / 1e6, calls + int(evt.count))
    return out


class StepProfiler(TrainerCallback):
    """Profiles optimiser steps ``first .. first + count - 1`` as whole cycles; :attr:`profile` holds the result."""

    def __init__(self, first: int, count: int = 2, device: str = "cuda"):
        if first < 2 or count < 1:
            raise ValueError("StepProfiler: first must be >= 2 (the cycle starts at the end of step first - 1), count >= 1")
        self.first, self.count, self.device = first, count, device
        self.profile: Profile | None = None
        self.error = ""
        """Why there is no profile, when the profiler itself failed (the run goes on without it)."""
        self._prof: Any = None
        self._t0 = 0.0

    @property
    def touched_steps(self) -> set[int]:
        """Steps whose logged time includes the profiler (starting it, running under it, stopping it)."""
        return set(range(self.first - 1, self.first + self.count))

    def _sync(self) -> None:
        import torch

        if self.device == "cuda" and torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_step_end(self, args, state, control, **kwargs):
        try:
            self._step_end(state.global_step)
        except Exception as exc:  # a profiler failure must not cost the benchmark its run
            self.error = f"{type(exc).__name__}: {exc}"[:300]
            self._prof = None
        return control

    def _step_end(self, step: int) -> None:
        from torch.profiler import ProfilerActivity, profile

        if step == self.first - 1 and self._prof is None and self.profile is None:
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device == "cuda" else [])
            prof = profile(activities=activities)
            self._sync()
            prof.__enter__()
            self._prof = prof
            self._t0 = time.perf_counter()
        elif step == self.first + self.count - 1 and self._prof is not None:
            self._sync()
            wall = time.perf_counter() - self._t0
            prof, self._prof = self._prof, None
            prof.__exit__(None, None, None)
            self.profile = Profile(self.count, wall, kernels_from(prof.key_averages(), self.device), self.device)

    def on_train_end(self, args, state, control, **kwargs):
        if self._prof is not None:  # training ended inside the window: stop the profiler, keep nothing
            prof, self._prof = self._prof, None
            try:
                prof.__exit__(None, None, None)
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"[:300]
        return control
