"""Training throughput benchmark (issue 8): the seed's recipe against our trainer, same card, same run.

Run from the project root on the GPU machine::

    python3 -m benchmarks.bench_training --tokenizer TOKENIZER_DIR
    python3 -m benchmarks.bench_training --archs llama-1b --recipes seed,ours-nf4,ours-bf16
    .venv/bin/python -m benchmarks.bench_training --device cpu --archs tiny --steps 3   # checks the script

Every recipe is a real run of our trainer (:func:`trainer.train.train`: TRL's SFTTrainer, the
trainer's callbacks, its metrics.jsonl, adapter and card), on a model built from an architecture
config in code with random weights (speed does not depend on the values; see
``benchmarks/archs.py``) and saved once to a scratch folder with the embedded model's chat
tokenizer. The data are real: ``--examples`` records drawn at random (fixed seed) from the
prepared training split, chat-formatted and tokenised by the trainer, so batches have the true
length distribution and padding. Each recipe trains exactly one epoch over the same examples
(``--steps`` optimiser steps of 16 examples), so every recipe sees the same tokens.

- **Throughput** is non-padding tokens (prompt + completion: every real token the model
  processes; TRL's ``num_tokens``) per second between the first and the last logged step, i.e.
  the first step (CUDA start-up, kernel autotuning) is left out of every recipe alike.
- **Steady-state throughput** is the median of the per-step rates ((num_tokens delta) / (elapsed_s
  delta) between consecutive metrics.jsonl lines) over steps 3..N: the first steps still include
  autotuning and compiling, and the median ignores a partial last batch. The ratio against the
  seed and the seed-size job projection use it. Every run's per-step rates are printed too.
- **Predictions**: every recipe carries the prediction written before it was measured
  (``RECIPES[name][2]``), printed as a table beside the results.
- Packed recipes (``packing``) train exactly one epoch (a packed step holds a varying number of
  examples), so they see the same examples as the others in fewer, larger steps.
- **Peak memory** is ``torch.cuda.max_memory_allocated`` (reset before each recipe).
- ``--profile [RECIPES]``: torch.profiler over two steady step cycles of those recipes, summed by kernel
  family with the GPU's idle share (``benchmarks/step_profile.py``); those steps leave the steady rate.
- **Loss**: the first step's training loss and the validation loss after the last step on the
  same held-out examples, so a recipe that is fast but learns differently shows it.

The seed's recipe runs first: Liger kernels patch transformers' Llama module for the whole
process, so every recipe without them must run before any recipe with them.

**Unsloth** (issue 21): the ``unsloth-*`` recipes (``benchmarks/unsloth_recipe.py``) run Unsloth's own QLoRA and
bf16 LoRA paths in a child process each (Unsloth patches transformers, peft and TRL on import), with
``--unsloth-site`` (its bundle: unsloth, its pinned TRL 1.15 and datasets 4.x) first on the child's path, on the
same model folder, examples, steps and LoRA shape, in the same call as the seed's and our recipes::

    python3 -m benchmarks.bench_training --archs llama-1b --recipes seed,unsloth-nf4,unsloth-bf16,ours-nf4-fast,ours-bf16-compile


Prints the machine, versions and command, then markdown tables (paste them into docs/BENCHMARKS.md);
``--out DIR`` also writes them (and each run's metrics) there as they finish.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.unsloth_recipe import UNSLOTH_RECIPES

SEED_JOB = (8000, 3, 245)
"""The seed's job: examples x epochs x mean tokens (issue 8), for the projected wall time."""

# The seed's recipe (its train.py): NF4 + double quantisation, fp16 compute, batch 4 x accumulation 4,
# gradient checkpointing, paged 8-bit AdamW, LoRA dropout 0.05, random batches padded to the longest.
SEED = {"quantization": "nf4", "precision": "fp16", "batch_size": 4, "gradient_accumulation_steps": 4,
        "gradient_checkpointing": "true", "optim": "paged_adamw_8bit", "liger": "off", "group_by_length": "false",
        "fp32_upcast": "true", "lora_dropout": 0.05, "padding_free": "false"}
# Ours: the trainer's own defaults on CUDA ("auto" everywhere) with micro-batches of 16, and the seed's LoRA
# dropout 0.05 (the default until the H100 runs of 2026-11-27 evening: recipes measured with it keep it; the
# dropout-0 recipes are what the trainer's defaults do now). Padded batches, as measured before padding-free batches became
# the CUDA default (issue 21): the -pf and packed recipes say so themselves.
OURS = {"batch_size": 16, "gradient_accumulation_steps": 1, "lora_dropout": 0.05, "padding_free": "false"}
BF16 = {**OURS, "quantization": "none"}
NF4 = {**OURS, "quantization": "nf4"}
# name -> (what it is, trainer overrides, the prediction written before measuring it). Predictions are against
# the recipe named in them, on the steady per-step rate (steps 3..N), same card, same run.
RECIPES: dict[str, tuple[str, dict[str, Any], str]] = {
    "seed": ("the seed's recipe (baseline)", SEED, "the baseline: ≈ 4.3 k tok/s steady on an H200 (bf16 compute)"),
    "ours-nf4": ("ours: NF4 QLoRA, CUDA defaults with the seed's LoRA dropout 0.05", NF4,
                 "≈ 13 k tok/s steady (H200 run: 11-14 k), ≈ 3× seed, peak ≈ 8 GiB"),
    "ours-nf4-nogc": ("ours: NF4 QLoRA without gradient checkpointing",
                      {**NF4, "gradient_checkpointing": "false"},
                      "+30-40% over ours-nf4, peak > 12 GiB at 600-token batches (breaks the memory target)"),
    "ours-nf4-b32": ("ours: NF4 QLoRA, checkpointing, micro-batch 32", {**NF4, "batch_size": 32},
                     "+10-20% over ours-nf4 (bigger matmuls on the dequantised weights), peak 11-13 GiB: counts only "
                     "if ≤ 12 GiB; half the optimiser steps, so a higher validation loss than ours-nf4"),
    "ours-nf4-dropout0": ("ours: NF4 QLoRA, checkpointing, LoRA dropout 0, batch 16 (the trainer's CUDA defaults for "
                          "a run under 200 steps)", {**NF4, "lora_dropout": 0.0},
                          "+3-8% over ours-nf4 (no dropout mask and copy on seven projections), peak -0.3 GiB, "
                          "validation loss within ±0.02 of ours-nf4"),
    "ours-nf4-long": ("ours: NF4 QLoRA, compiled, with the seed's dropout 0.05 (what the dropout costs once "
                      "compiled)", {**NF4, "torch_compile": "true"},
                      "between ours-nf4 (15.8 k on the H100) and ours-nf4-fast (32.6 k): compiling fuses the dropout "
                      "too, ≈ 25-30 k; peak ≈ ours-nf4"),
    "ours-nf4-upcast": ("lever check: ours-nf4-dropout0 with peft's fp32 upcast of embeddings, head and norms "
                        "(peft's default for k-bit training)", {**NF4, "lora_dropout": 0.0, "fp32_upcast": "true"},
                        "ours-nf4-dropout0 (bf16 kept) +20-40% over this: the H100 profile of this setting showed "
                        "≈ 80 ms per step of dtype copies and fp32 adds; same validation loss ±0.02"),
    "ours-nf4-fast": ("ours: NF4 QLoRA, checkpointing, LoRA dropout 0, training step compiled, batch 16 (the "
                      "trainer's CUDA defaults for a run of 200 steps or more)",
                      {**NF4, "lora_dropout": 0.0, "torch_compile": "true"},
                      "+10-20% steady over ours-nf4-dropout0 (H200 sweep: compile took bf16 from 21 k to 47 k "
                      "steady, but bitsandbytes' 4-bit matmul is an opaque op, so less here); first steps compile"),
    "ours-nf4-fast-packed": ("ours: NF4 QLoRA, checkpointing, LoRA dropout 0, padding-free packing, flex_attention",
                             {**NF4, "lora_dropout": 0.0, "packing": True, "padding_free": "true", "attn_implementation": "flex_attention",
                              "group_by_length": "false"},
                             "+10-25% steady over ours-nf4-dropout0 (no padding); first steps compile the kernel"),
    "ours-bf16": ("ours: bf16 LoRA fast mode, CUDA defaults with the seed's LoRA dropout 0.05", BF16,
                  "≈ 36 k tok/s steady (H200 run: 35-36 k), peak ≈ 31 GiB"),
    "ours-bf16-b32": ("ours: bf16 fast mode, micro-batch 32 × 1, no checkpointing", {**BF16, "batch_size": 32},
                      "+10-15% over ours-bf16 (GPU.md: 39 k → 46 k from batch 16 to 64), peak ≈ 2× ours-bf16 "
                      "(55-60 GiB); half the optimiser steps, so compare its validation loss with ours-bf16-fast"),
    "ours-bf16-fast": ("ours: bf16, LoRA dropout 0, micro-batch 32 (changes the seed's method: dropout 0)",
                       {**BF16, "batch_size": 32, "lora_dropout": 0.0},
                       "+5-10% over ours-bf16-b32 (peft skips the dropout copy of each projection input), peak "
                       "-10-15%; validation loss within ±0.02 of ours-bf16-b32 (same batches, same steps)"),
    "ours-bf16-dropout0": ("ours: bf16 fast mode, LoRA dropout 0", {**BF16, "lora_dropout": 0.0},
                           "+3-8% over ours-bf16, validation loss within ±0.02"),
    "ours-bf16-compile": ("ours: bf16 fast mode, training step compiled (torch_compile true)",
                          {**BF16, "torch_compile": "true"},
                          "+10-20% steady over ours-bf16, but the first 2-3 steps pay for compiling and recompiling "
                          "(variable lengths), so the whole-window rate may be lower; graph breaks at peft/Liger "
                          "may eat the gain"),
    "ours-bf16-packed": ("ours: bf16, padding-free best-fit packing (16 rows of ≤ max_seq_len per step, one "
                         "flattened row to the kernel), flex_attention, one epoch",
                         {**BF16, "packing": True, "padding_free": "true", "attn_implementation": "flex_attention",
                          "group_by_length": "false"},
                         "+15-30% steady over ours-bf16 (no padding, ≈ 16 k tokens per step like b32), peak ≈ "
                         "ours-bf16; first steps slow (FlexAttention kernel compile); fewer steps (one epoch ≈ 10), "
                         "so a higher validation loss"),
    "ours-bf16-max": ("ours: every bf16 lever at once: dropout 0, packing with flex_attention, compiled step",
                      {**BF16, "lora_dropout": 0.0, "packing": True, "padding_free": "true", "attn_implementation": "flex_attention",
                       "group_by_length": "false", "torch_compile": "true"},
                      "each lever alone reached 37-47 k steady (second session); together ≥ 55 k steady if their "
                      "gains add, less if packing's varying row length makes the compiled step recompile"),
    "ours-bf16-max-b32": ("ours: every bf16 lever at once, 32 packed rows per step (≈ 30 k tokens)",
                          {**BF16, "batch_size": 32, "lora_dropout": 0.0, "packing": True, "padding_free": "true",
                           "attn_implementation": "flex_attention", "group_by_length": "false", "torch_compile": "true"},
                          "+5-15% over ours-bf16-max (bigger products; per-step host work, the optimiser and the "
                          "logging sync are paid half as often), peak ≈ 2× ours-bf16-max; half the steps"),
    "ours-nf4-pf": ("ours: NF4 QLoRA, checkpointing, LoRA dropout 0, compiled, padding-free batches (16 examples "
                    "flattened into one row, random order) with torch's FlashAttention varlen kernel: Unsloth's "
                    "batching, so the same examples per step as unsloth-nf4",
                    {**NF4, "lora_dropout": 0.0, "torch_compile": "true", "padding_free": "true",
                     "group_by_length": "false"},
                    "+15-30% steady over ours-nf4-fast (no padding tokens, no mask; the 2026-11-27 packed NF4 run "
                    "reached 30.7 k eager); ≥ unsloth-nf4 over 48 steps; validation loss within ±0.01 of unsloth-nf4"),
    "ours-nf4-ref": ("reference: NF4 QLoRA, checkpointing, LoRA dropout 0, eager, padded batches in random order (the "
                     "batches of ours-nf4-pf, with padding, no compile): the validation-loss check for padding-free",
                     {**NF4, "lora_dropout": 0.0, "torch_compile": "false", "padding_free": "false",
                      "group_by_length": "false"},
                     "validation loss within ±0.01 of ours-nf4-pf (the same examples per step); ≈ 15-20 k steady"),
    "ours-bf16-pf": ("ours: bf16 LoRA, LoRA dropout 0, compiled, padding-free batches with the varlen kernel (the same "
                     "examples per step as unsloth-bf16)",
                     {**BF16, "lora_dropout": 0.0, "torch_compile": "true", "padding_free": "true",
                      "group_by_length": "false"},
                     "45-55 k steady (ours-bf16-compile 40 k with padding and the seed's dropout), peak ≤ 34 GiB"),
    "ours-bf16-varlen-b32": ("ours: bf16, dropout 0, compiled, packing (32 best-fit rows of ≤ 1024 tokens per step, "
                             "≈ 30 k tokens) with the varlen kernel, one epoch",
                             {**BF16, "batch_size": 32, "lora_dropout": 0.0, "packing": True, "padding_free": "true", "group_by_length": "false",
                              "torch_compile": "true"},
                             "≥ 60 k steady (ours-bf16-max-b32 with FlexAttention: 53 k, whose profile gave FlexAttention "
                             "12% and host gaps 28%); no FlexAttention compile; fewer optimiser steps"),
    "ours-bf16-noliger": ("lever check: bf16 fast mode without Liger kernels", {**BF16, "liger": "off"},
                          "-15% against ours-bf16 (GPU.md: Liger +17%)"),
    "ours-bf16-random": ("lever check: bf16 fast mode with random (not length-grouped) batches",
                         {**BF16, "group_by_length": "false"}, "-15-25% against ours-bf16 (more padding)"),
}
DEFAULT_RECIPES = "seed,ours-nf4,ours-bf16,ours-nf4-nogc,ours-bf16-random"


STEADY_FROM = 3
"""The steady-state rate is the median of the per-step rates of steps 3..N (steps 1-2: start-up, autotuning, compiling)."""


@dataclass
class Result:
    arch: str
    recipe: str
    ok: bool
    tokens_per_s: float | None = None
    steady_tokens_per_s: float | None = None
    step_rates: list[float] = field(default_factory=list)
    """Per-step tok/s of steps 2..N (each from the step before it), as logged."""
    peak_gib: float | None = None
    first_loss: float | None = None
    eval_loss: float | None = None
    wall_s: float | None = None
    total_tokens: float | None = None
    """Non-padding tokens trained in the whole run (the last logged ``num_tokens``)."""
    steps: int = 0
    runtime: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    """The run's trainer config (from its adapter card)."""
    notes: str = ""
    """What this run changed against the recipe (a CPU check maps CUDA-only settings)."""
    profile: str = ""
    """``--profile``: where the profiled steps' time went (benchmarks.step_profile.summarize)."""


CPU_SUBSTITUTES = [
    # (setting, CUDA-only value, what the CPU check runs instead, the note it prints)
    ("precision", "fp16", "bf16", "fp16 → bf16 on CPU"),
    ("optim", "paged_adamw_8bit", "adamw_torch", "paged_adamw_8bit → adamw_torch on CPU"),
    ("liger", "on", "off", "liger off on CPU"),
    ("torch_compile", "true", "false", "torch.compile skipped on CPU"),
    ("attn_implementation", "flex_attention", "sdpa", "flex_attention → sdpa on CPU (no FlexAttention backward there)"),
    ("attn_implementation", "torch_varlen", "sdpa", "torch_varlen → sdpa on CPU (a CUDA kernel)"),
]


def cpu_variant(overrides: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The same recipe as far as a CPU allows, and a note per change (only for checking the script).

    fp16 autocast, paged AdamW, Liger kernels and FlexAttention training need CUDA; compiling is left
    off because it would cost minutes on a 2-core CPU and prove nothing about the GPU.
    """
    out = dict(overrides)
    notes = []
    for key, cuda_value, cpu_value, note in CPU_SUBSTITUTES:
        if out.get(key) == cuda_value:
            out[key] = cpu_value
            notes.append(note)
    return out, notes


def step_rates(train: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(step, tok/s) for every logged step after the first: num_tokens delta / elapsed_s delta from the line before.

    ``train`` are metrics.jsonl ``train`` lines with ``num_tokens`` (cumulative) and ``elapsed_s``; a step
    whose time did not advance is left out rather than divided by zero.
    """
    rates = []
    for before, after in zip(train, train[1:]):
        seconds = after["elapsed_s"] - before["elapsed_s"]
        if seconds > 0:
            rates.append((after["step"], (after["num_tokens"] - before["num_tokens"]) / seconds))
    return rates


def steady_tokens_per_s(train: list[dict[str, Any]], first_step: int = STEADY_FROM,
                        exclude: set[int] | frozenset[int] = frozenset()) -> float | None:
    """The median per-step tok/s over steps ``first_step``..N but ``exclude`` (profiled steps); None without any."""
    import statistics

    rates = [rate for step, rate in step_rates(train) if step >= first_step and step not in exclude]
    return statistics.median(rates) if rates else None


def sample_records(train_file: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` lines of the training split drawn at random (fixed seed), in file order."""
    lines = [line for line in train_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(lines) < n:
        raise SystemExit(f"{train_file} has {len(lines)} records; --examples asks for {n}")
    picked = sorted(random.Random(seed).sample(range(len(lines)), n))
    return [lines[i] for i in picked]


def build_model_folder(arch: str, tokenizer_dir: Path, scratch: Path, device: str) -> Path:
    """Random weights of ``arch`` in bf16 plus the chat tokenizer files: a folder the trainer loads."""
    import torch
    from transformers import LlamaForCausalLM

    from benchmarks.archs import ARCHS

    folder = scratch / arch
    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(ARCHS[arch][1]()).to(torch.bfloat16)
    model.save_pretrained(str(folder))
    del model
    for item in tokenizer_dir.iterdir():
        if item.is_file() and (item.name.startswith(("tokenizer", "special_tokens")) or item.name == "chat_template.jinja"):
            shutil.copy2(item, folder / item.name)
    return folder


def read_run(run_dir: Path, exclude: set[int] | frozenset[int] = frozenset()) -> dict[str, Any]:
    """What a run's metrics.jsonl says: rates (the steady one without the ``exclude`` steps), peak memory, losses."""
    from core.metrics import read_metrics

    records = read_metrics(run_dir / "metrics.jsonl")
    train = [r for r in records if r.get("event") == "train" and r.get("num_tokens") is not None]
    evals = [r for r in records if r.get("event") == "eval" and r.get("eval_loss") is not None]
    out: dict[str, Any] = {"steps": train[-1]["step"] if train else 0}
    out["total_tokens"] = train[-1]["num_tokens"] if train else None
    out["step_rates"] = [round(rate, 1) for _, rate in step_rates(train)]
    out["steady_tokens_per_s"] = steady_tokens_per_s(train, exclude=exclude)
    if len(train) >= 2:
        first, last = train[0], train[-1]
        seconds = last["elapsed_s"] - first["elapsed_s"]
        out["tokens_per_s"] = (last["num_tokens"] - first["num_tokens"]) / seconds if seconds > 0 else None
    losses = [r for r in records if r.get("event") == "train" and r.get("loss") is not None]
    if losses:
        out["first_loss"] = losses[0]["loss"]
    out["peak_gib"] = max((r.get("peak_mem_gb") or 0.0) for r in records if r.get("event") == "train") if train else None
    if evals:
        out["eval_loss"] = evals[-1]["eval_loss"]
    return out


def recipe_values(arch: str, recipe: str, overrides: dict[str, Any], model_dir: Path, data_dir: Path, out_root: Path,
                  args: argparse.Namespace) -> dict[str, Any]:
    """The trainer config values of one recipe run: the same data, steps and logging for every recipe (ours and Unsloth's)."""
    processes = max(args.processes, 1)
    steps_batch = overrides["batch_size"] * overrides["gradient_accumulation_steps"] * processes
    values = {
        "model_name": str(model_dir),
        "work_dir": str(data_dir.parent),
        "train_file": str(data_dir / "train.jsonl"),
        "eval_file": str(data_dir / "validation.jsonl"),
        "output_dir": str(out_root / f"{arch}-{recipe}"),
        "device": args.device,
        "num_epochs": 1,
        "max_steps": args.examples // steps_batch,
        "max_seq_len": args.max_seq_len,
        "logging_steps": 1,
        "eval_steps": 0,  # only at the end
        "save_steps": 10_000,
        "warmup_ratio": 0.0,
        "lr_scheduler_type": "constant",
        **overrides,
    }
    if overrides.get("packing"):
        # A packed batch holds a varying number of examples: train exactly one epoch over the same examples.
        values["max_steps"] = -1
    return values


def run_recipe(arch: str, recipe: str, model_dir: Path, data_dir: Path, out_root: Path, args: argparse.Namespace) -> Result:
    import torch

    from trainer.config import load_config
    from trainer.train import train

    if recipe in UNSLOTH_RECIPES:
        return run_unsloth(arch, recipe, model_dir, data_dir, out_root, args)
    overrides = dict(RECIPES[recipe][1])
    notes: list[str] = []
    if args.device == "cpu":
        overrides, notes = cpu_variant(overrides)
        for note in notes:
            print(f"# {arch} / {recipe}: {note}", file=sys.stderr, flush=True)
    values = recipe_values(arch, recipe, overrides, model_dir, data_dir, out_root, args)
    shutil.rmtree(values["output_dir"], ignore_errors=True)  # a rerun in the same scratch folder starts afresh
    gc.collect()
    # Every recipe compiles afresh, as in its own trainer process: measured on the H100, a compiled recipe after
    # another one in the same process recompiled into the recompile limit (slow steps) or failed in dynamo.
    torch._dynamo.reset()
    if args.device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    if args.processes:
        res = _run_in_processes(arch, recipe, values, args.processes, t0)
        res.notes = "; ".join(notes)
        return res
    profiler = None
    if args.profile and (args.profile == "all" or recipe in args.profile.split(",")):
        from benchmarks.step_profile import StepProfiler

        # Two steady step cycles in the middle of the run (packed runs take fewer, fuller steps).
        steps = values["max_steps"] if values["max_steps"] > 0 else args.steps * 16 // overrides["batch_size"] * 2 // 3
        profiler = StepProfiler(first=max(STEADY_FROM + 2, steps // 2), count=2, device=args.device)
    try:
        result = train(load_config(None, values), extra_callbacks=[profiler] if profiler else ())
    except Exception as exc:  # one failing recipe must not cost the others their numbers
        traceback.print_exc()
        return Result(arch, recipe, ok=False, error=f"{type(exc).__name__}: {exc}"[:300], notes="; ".join(notes))
    wall = time.perf_counter() - t0
    where_time_went = ""
    touched: set[int] = set()
    if profiler is not None:
        from benchmarks.step_profile import summarize

        touched = profiler.touched_steps
        if profiler.profile:
            where_time_went = summarize(profiler.profile)
        elif profiler.error:
            where_time_went = f"not profiled: the profiler failed ({profiler.error})"
        else:
            where_time_went = f"not profiled: the run ended before step {profiler.first + profiler.count - 1}"
    measured = read_run(result.run_dir, exclude=touched)
    runtime = result.card.get("runtime", {})
    config = result.card.get("config", {})
    del result
    gc.collect()
    return Result(arch, recipe, ok=True, wall_s=wall, runtime=runtime, config=config, notes="; ".join(notes),
                  profile=where_time_went, **measured)


def exact_error(log_text: str) -> str:
    """The exception line a child process died with (the last ``Name: message`` line of its traceback), else its tail."""
    import re

    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    raised = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*", line)]
    return raised[-1] if raised else " ".join(lines[-3:])


def run_unsloth(arch: str, recipe: str, model_dir: Path, data_dir: Path, out_root: Path, args: argparse.Namespace) -> Result:
    """One ``unsloth-*`` recipe in its own process (``benchmarks.unsloth_recipe``), on the same model, data and steps.

    The child gets ``--unsloth-site`` first on its ``PYTHONPATH`` (Unsloth's bundle with its pinned TRL and
    datasets); its metrics.jsonl is read like ours. A failure keeps the exact error for the table.
    """
    import subprocess

    import torch

    description, overrides, settings, _ = UNSLOTH_RECIPES[recipe]
    values = recipe_values(arch, recipe, dict(overrides), model_dir, data_dir, out_root, args)
    run_dir = Path(values["output_dir"])
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    spec = run_dir.parent / f"{run_dir.name}.spec.json"
    spec.write_text(json.dumps({"values": values, "unsloth": settings}, indent=2))
    log = run_dir.parent / f"{run_dir.name}.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (args.unsloth_site, env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if args.device == "cuda":
        torch.cuda.empty_cache()  # the child needs the memory this process cached for the recipes before it
    t0 = time.perf_counter()
    try:
        with log.open("w") as fh:
            rc = subprocess.run([sys.executable, "-m", "benchmarks.unsloth_recipe", "--spec", str(spec)], stdout=fh,
                                stderr=subprocess.STDOUT, check=False, env=env, timeout=args.unsloth_timeout_s).returncode
    except subprocess.TimeoutExpired:
        rc = f"timeout after {args.unsloth_timeout_s:.0f} s"
    wall = time.perf_counter() - t0
    text = log.read_text(errors="replace")
    if rc != 0:
        return Result(arch, recipe, ok=False, wall_s=wall, error=f"exit {rc}: {exact_error(text)}"[:400])
    child = json.loads((spec.parent / f"{spec.stem}.result.json").read_text())
    return Result(arch, recipe, ok=True, wall_s=child.get("wall_s", wall), runtime=child["runtime"],
                  config={**child["config"], "packing": child["runtime"].get("packing")},
                  notes=f"{description}; process wall {wall:.0f} s", **read_run(run_dir))


def trainer_flags(values: dict[str, Any]) -> list[str]:
    """``python -m trainer`` flags for config ``values`` (``--max_steps=-1``: a negative value must not look like a flag)."""
    flags = []
    for key, value in values.items():
        flags.append(f"--{key}={','.join(value) if isinstance(value, list) else value}")
    return flags


def _run_in_processes(arch: str, recipe: str, values: dict[str, Any], processes: int, t0: float) -> Result:
    """``python -m trainer`` (1) or ``torchrun --nproc_per_node N -m trainer`` as child processes (DDP scaling)."""
    import subprocess

    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
                if processes > 1 else [sys.executable])
    argv = [*launcher, "-m", "trainer", *trainer_flags(values)]
    run_dir = Path(values["output_dir"])
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log = run_dir.parent / f"{run_dir.name}.log"
    env = dict(os.environ)
    if processes == 1 and values.get("device") == "cuda" and not env.get("CUDA_VISIBLE_DEVICES"):
        env["CUDA_VISIBLE_DEVICES"] = "0"  # one process, one GPU (TRL refuses Trainer's DataParallel over several)
    with log.open("w") as fh:
        rc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, check=False, env=env).returncode
    if rc != 0:
        return Result(arch, recipe, ok=False, error=f"exit {rc}: " + log.read_text()[-300:].replace("\n", " "))
    card = json.loads((run_dir / "adapter" / "adapter_card.json").read_text())
    return Result(arch, f"{recipe} ×{processes} proc", ok=True, wall_s=time.perf_counter() - t0,
                  runtime=card.get("runtime", {}), config=card.get("config", {}), **read_run(run_dir))


def machine_info(device: str) -> list[str]:
    import importlib.metadata as md

    import torch

    versions = []
    for name in ("torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes", "liger-kernel"):
        try:
            versions.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    lines = [
        f"command: {' '.join([os.path.basename(sys.executable), '-m', 'benchmarks.bench_training', *sys.argv[1:]])}",
        f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"machine: {platform.node()} · {os.cpu_count()} logical CPUs · python {platform.python_version()}",
        " · ".join(versions),
    ]
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        lines.append(f"gpu: {props.name} · {props.total_memory / 2**30:.0f} GiB · CUDA {torch.version.cuda}")
    return lines


def _recipe_text(rt: dict[str, Any], cfg: dict[str, Any]) -> str:
    """One cell describing what a run actually used (from its adapter card's runtime and config)."""
    if rt.get("runner") == "unsloth":
        gc_text = rt.get("gradient_checkpointing")
        return ", ".join([
            f"unsloth {rt.get('unsloth')}: {rt.get('quantization')}, {rt.get('precision')}, {rt.get('optim')}",
            f"checkpointing {gc_text if gc_text else 'off'}",
            f"batch {cfg.get('batch_size')} × {cfg.get('gradient_accumulation_steps', 1)}",
            f"dropout {cfg.get('lora_dropout', 0):g}",
            "packed" if rt.get("packing") else ("padding-free" if rt.get("padding_free") else "padded"),
            f"attention {rt.get('attn_implementation') or '?'}",
            f"trl {rt.get('trl')}"])
    parts = [f"{rt.get('base_dtype')}, {rt.get('precision')}, {rt.get('optim')}",
             f"checkpointing {'on' if rt.get('gradient_checkpointing') else 'off'}",
             f"liger {'on' if rt.get('liger') else 'off'}",
             f"{'grouped' if rt.get('group_by_length') else 'random'} batches"]
    if cfg.get("batch_size") is not None:
        parts.append(f"batch {cfg['batch_size']} × {cfg.get('gradient_accumulation_steps', 1)}")
    if cfg.get("lora_dropout") is not None:
        parts.append(f"dropout {cfg['lora_dropout']:g}")
    if rt.get("attn_implementation") and rt.get("attn_implementation") != "sdpa":
        parts.append(str(rt["attn_implementation"]))
    if cfg.get("packing"):
        parts.append("packed")
    elif rt.get("padding_free"):
        parts.append("padding-free")
    if rt.get("torch_compile"):
        parts.append("compiled")
    return ", ".join(parts)


def table(results: list[Result], *, seed_job: tuple[int, int, int] = SEED_JOB) -> str:
    """The results as a markdown table: whole-window and steady-state rates, each against the seed of the same run."""
    rows = ["| architecture | recipe | runtime | steps | non-padding tok/s (steps 1→N) | steady tok/s (median, steps "
            f"{STEADY_FROM}…N) | steady vs seed | peak GiB | first-step loss | validation loss after | "
            "seed-size job at the steady rate | whole run: tokens / wall s (load, compile, eval, save in) |",
            "|" + " --- |" * 12]
    baseline = {r.arch: r.steady_tokens_per_s for r in results
                if r.recipe.split(" ")[0] == "seed" and r.ok and r.steady_tokens_per_s}
    job_tokens = seed_job[0] * seed_job[1] * seed_job[2]
    fmt = lambda x, spec: format(x, spec) if x is not None else "n/a"  # noqa: E731
    for r in results:
        if not r.ok:
            rows.append(f"| {r.arch} | {r.recipe} | failed: {r.error} | | | | | | | | | |")
            continue
        desc = _recipe_text(r.runtime, r.config)
        if r.notes:
            desc += f" ({r.notes})"
        steady = r.steady_tokens_per_s
        ratio = f"{steady / baseline[r.arch]:.2f}×" if steady and baseline.get(r.arch) else "n/a"
        proj = f"{job_tokens / steady / 60:.1f} min" if steady else "n/a"
        whole = (f"{r.total_tokens / r.wall_s:,.0f} ({r.total_tokens:,.0f} / {r.wall_s:.0f} s)"
                 if r.total_tokens and r.wall_s else "n/a")
        rows.append(f"| {r.arch} | {r.recipe} | {desc} | {r.steps} | {fmt(r.tokens_per_s, ',.0f')} | "
                    f"{fmt(steady, ',.0f')} | {ratio} | {fmt(r.peak_gib, '.1f')} | {fmt(r.first_loss, '.3f')} | "
                    f"{fmt(r.eval_loss, '.3f')} | {proj} | {whole} |")
    return "\n".join(rows)


def step_table(results: list[Result]) -> str:
    """Every run's per-step rates (steps 2..N), so a slow step or a partial last batch shows."""
    rows = ["| architecture | recipe | per-step tok/s, steps 2…N |", "| --- | --- | --- |"]
    for r in results:
        if r.ok:
            rows.append(f"| {r.arch} | {r.recipe} | {' · '.join(f'{x:,.0f}' for x in r.step_rates)} |")
    return "\n".join(rows)


def profile_text(results: list[Result]) -> str:
    """Each profiled run's summary under a heading (empty without --profile)."""
    return "\n\n".join(f"### Profile: {r.arch} / {r.recipe}\n\n{r.profile}" for r in results if r.ok and r.profile)


def prediction_table(recipes: list[str]) -> str:
    """The written prediction of each recipe (made before measuring it)."""
    rows = ["| recipe | what it is | prediction |", "| --- | --- | --- |"]
    for name in recipes:
        what, prediction = ((UNSLOTH_RECIPES[name][0], UNSLOTH_RECIPES[name][3]) if name in UNSLOTH_RECIPES
                            else (RECIPES[name][0], RECIPES[name][2]))
        rows.append(f"| {name} | {what} | {prediction} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--archs", default="llama-1b,smollm2-135m", help="comma-separated: llama-1b, smollm2-135m, tiny")
    parser.add_argument("--recipes", default=DEFAULT_RECIPES,
                        help=f"comma-separated, run in this order: {', '.join([*RECIPES, *UNSLOTH_RECIPES])}")
    parser.add_argument("--steps", type=int, default=16,
                        help="optimiser steps of 16 examples per recipe (default 16; 6 proved too few for a steady state)")
    parser.add_argument("--max-seq-len", type=int, default=1024)
    parser.add_argument("--data-dir", default=".work/data", help="prepared splits (train.jsonl, validation.jsonl)")
    parser.add_argument("--validation-examples", type=int, default=32)
    parser.add_argument("--tokenizer", default="", help="folder with the chat tokenizer files (default: the embedded model's)")
    parser.add_argument("--scratch", default="", help="where the random-weight models go (default: /dev/shm or a temp dir)")
    parser.add_argument("--budget-s", type=float, default=0, help="start no new recipe after this many seconds (0: no limit)")
    parser.add_argument("--out", default="", help="also write the tables and each run's metrics here")
    parser.add_argument("--profile", nargs="?", const="all", default="",
                        help="profile two steady steps of these recipes (comma-separated; no value: all) with "
                             "torch.profiler and print where their time went; those steps are left out of the steady rate")
    parser.add_argument("--unsloth-site", default=os.environ.get("UNSLOTH_SITE", "/tmp/site-unsloth"),
                        help="folder put first on the unsloth-* recipes' PYTHONPATH (scripts/gpu/build_unsloth_bundle.sh)")
    parser.add_argument("--unsloth-timeout-s", type=float, default=420,
                        help="an unsloth-* recipe's child process is killed after this many seconds")
    parser.add_argument("--processes", type=int, default=0,
                        help="run each recipe as child processes: 1 (python -m trainer) or N (torchrun, DDP over N "
                             "GPUs; batch_size is per process). 0 (default): in this process")
    args = parser.parse_args(argv)
    args.examples = args.steps * 16 * max(args.processes, 1)
    started = time.monotonic()

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device")
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    from benchmarks.archs import ARCHS

    unknown = [a for a in archs if a not in ARCHS] + [r for r in recipes if r not in RECIPES and r not in UNSLOTH_RECIPES]
    if unknown:
        parser.error(f"unknown architecture or recipe: {', '.join(unknown)}")
    tokenizer_dir = Path(args.tokenizer) if args.tokenizer else _embedded_tokenizer_dir()
    scratch = Path(args.scratch) if args.scratch else Path(tempfile.mkdtemp(
        prefix="bench-training-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    out = Path(args.out) if args.out else scratch / "out"
    out.mkdir(parents=True, exist_ok=True)
    data_dir = scratch / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    source = Path(args.data_dir)
    (data_dir / "train.jsonl").write_text("\n".join(sample_records(source / "train.jsonl", args.examples)) + "\n")
    (data_dir / "validation.jsonl").write_text(
        "\n".join(sample_records(source / "validation.jsonl", args.validation_examples, seed=1)) + "\n")

    info = machine_info(args.device)
    print("\n".join(info), flush=True)
    header = (f"data: {args.examples} training records drawn from {source / 'train.jsonl'} (seed 0), one epoch of "
              f"{args.steps} steps x 16 examples per recipe, max_seq_len {args.max_seq_len}; validation loss on "
              f"{args.validation_examples} validation records; random weights (same for every recipe of an architecture)")
    print(header, flush=True)

    # Seed-style recipes (no Liger) of every architecture first, then the rest.
    # Unsloth's recipes run in their own processes, so they may come anywhere; they keep their place in the list.
    seed_style = [r for r in recipes if r in RECIPES and RECIPES[r][1].get("liger") == "off"]
    order = [(a, r) for r in seed_style for a in archs]
    order += [(a, r) for r in recipes if r not in seed_style for a in archs]
    results: list[Result] = []
    runs_root = scratch / "runs"
    for arch, recipe in order:
        if args.budget_s and time.monotonic() - started > args.budget_s:
            results.append(Result(arch, recipe, ok=False, error="not run: over --budget-s"))
            continue
        model_dir = build_model_folder(arch, tokenizer_dir, scratch / "models", args.device)
        what = UNSLOTH_RECIPES[recipe][0] if recipe in UNSLOTH_RECIPES else RECIPES[recipe][0]
        print(f"# {arch} / {recipe}: {what}", file=sys.stderr, flush=True)
        res = run_recipe(arch, recipe, model_dir, data_dir, runs_root, args)
        results.append(res)
        print(f"# {arch} / {recipe}: {res.tokens_per_s or 0:,.0f} tok/s, steady {res.steady_tokens_per_s or 0:,.0f}, peak {res.peak_gib or 0:.1f} GiB, "
              f"eval loss {res.eval_loss}, wall {res.wall_s or 0:.1f} s {res.error}", file=sys.stderr, flush=True)
        text = "\n".join(info + [header, "", table(results), "", step_table(results), "",
                                 prediction_table(recipes), "", profile_text(results)]) + "\n"
        (out / "bench_training.md").write_text(text)
        (out / "results.json").write_text(json.dumps([r.__dict__ for r in results], indent=2, default=str))
        metrics = runs_root / f"{arch}-{recipe}" / "metrics.jsonl"
        if metrics.is_file():
            shutil.copy2(metrics, out / f"{arch}-{recipe}.metrics.jsonl")
        child_log = runs_root / f"{arch}-{recipe}.log"
        if recipe in UNSLOTH_RECIPES and child_log.is_file():
            shutil.copy2(child_log, out / f"{arch}-{recipe}.log")
    print("\n" + table(results) + "\n\n" + step_table(results) + "\n\n" + prediction_table(recipes))
    if args.profile:
        print("\n" + profile_text(results))
    print(f"\nseed-size job: {SEED_JOB[0]} examples x {SEED_JOB[1]} epochs x {SEED_JOB[2]} tokens; "
          f"total {time.monotonic() - started:.0f} s", flush=True)


def _embedded_tokenizer_dir() -> Path:
    from core import model as model_lib
    from core.settings import load_settings

    return Path(model_lib.resolve_base(load_settings()).location)


if __name__ == "__main__":
    main()
