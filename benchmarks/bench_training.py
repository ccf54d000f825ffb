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
- **Peak memory** is ``torch.cuda.max_memory_allocated`` (reset before each recipe).
- **Loss**: the first step's training loss and the validation loss after the last step on the
  same held-out examples, so a recipe that is fast but learns differently shows it.

The seed's recipe runs first: Liger kernels patch transformers' Llama module for the whole
process, so every recipe without them must run before any recipe with them.

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

SEED_JOB = (8000, 3, 245)
"""The seed's job: examples x epochs x mean tokens (issue 8), for the projected wall time."""

# The seed's recipe (its train.py): NF4 + double quantisation, fp16 compute, batch 4 x accumulation 4,
# gradient checkpointing, paged 8-bit AdamW, LoRA dropout 0.05, random batches padded to the longest.
SEED = {"quantization": "nf4", "precision": "fp16", "batch_size": 4, "gradient_accumulation_steps": 4,
        "gradient_checkpointing": "true", "optim": "paged_adamw_8bit", "liger": "off", "group_by_length": "false"}
# Ours: the trainer's own defaults on CUDA ("auto" everywhere) with micro-batches of 16.
OURS = {"batch_size": 16, "gradient_accumulation_steps": 1}
RECIPES: dict[str, tuple[str, dict[str, Any]]] = {
    "seed": ("the seed's recipe (baseline)", SEED),
    "ours-nf4": ("ours: NF4 QLoRA, trainer defaults on CUDA", {**OURS, "quantization": "nf4"}),
    "ours-nf4-nogc": ("ours: NF4 QLoRA without gradient checkpointing", {**OURS, "quantization": "nf4",
                                                                       "gradient_checkpointing": "false"}),
    "ours-bf16": ("ours: bf16 LoRA fast mode, trainer defaults on CUDA", {**OURS, "quantization": "none"}),
    "ours-bf16-dropout0": ("ours: bf16 fast mode, LoRA dropout 0", {**OURS, "quantization": "none",
                                                                     "lora_dropout": 0.0}),
    "ours-bf16-noliger": ("lever check: bf16 fast mode without Liger kernels", {**OURS, "quantization": "none",
                                                                               "liger": "off"}),
    "ours-bf16-random": ("lever check: bf16 fast mode with random (not length-grouped) batches",
                         {**OURS, "quantization": "none", "group_by_length": "false"}),
}
DEFAULT_RECIPES = "seed,ours-nf4,ours-bf16,ours-nf4-nogc,ours-bf16-random"


@dataclass
class Result:
    arch: str
    recipe: str
    ok: bool
    tokens_per_s: float | None = None
    peak_gib: float | None = None
    first_loss: float | None = None
    eval_loss: float | None = None
    wall_s: float | None = None
    steps: int = 0
    runtime: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def cpu_variant(overrides: dict[str, Any]) -> dict[str, Any]:
    """The same recipe as far as a CPU allows (only for checking the script: fp16 and paged AdamW need CUDA)."""
    out = dict(overrides)
    if out.get("precision") == "fp16":
        out["precision"] = "bf16"
    if out.get("optim") == "paged_adamw_8bit":
        out["optim"] = "adamw_torch"
    return out


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


def read_run(run_dir: Path) -> dict[str, Any]:
    from core.metrics import read_metrics

    records = read_metrics(run_dir / "metrics.jsonl")
    train = [r for r in records if r.get("event") == "train" and r.get("num_tokens") is not None]
    evals = [r for r in records if r.get("event") == "eval" and r.get("eval_loss") is not None]
    out: dict[str, Any] = {"steps": train[-1]["step"] if train else 0}
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


def run_recipe(arch: str, recipe: str, model_dir: Path, data_dir: Path, out_root: Path, args: argparse.Namespace) -> Result:
    import torch

    from trainer.config import load_config
    from trainer.train import train

    overrides = dict(RECIPES[recipe][1])
    if args.device == "cpu":
        overrides = cpu_variant(overrides)
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
    shutil.rmtree(values["output_dir"], ignore_errors=True)  # a rerun in the same scratch folder starts afresh
    gc.collect()
    if args.device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    if args.processes:
        return _run_in_processes(arch, recipe, values, args.processes, t0)
    try:
        result = train(load_config(None, values))
    except Exception as exc:  # one failing recipe must not cost the others their numbers
        traceback.print_exc()
        return Result(arch, recipe, ok=False, error=f"{type(exc).__name__}: {exc}"[:300])
    wall = time.perf_counter() - t0
    measured = read_run(result.run_dir)
    runtime = result.card.get("runtime", {})
    del result
    gc.collect()
    return Result(arch, recipe, ok=True, wall_s=wall, runtime=runtime, **measured)


def _run_in_processes(arch: str, recipe: str, values: dict[str, Any], processes: int, t0: float) -> Result:
    """``python -m trainer`` (1) or ``torchrun --nproc_per_node N -m trainer`` as child processes (DDP scaling)."""
    import subprocess

    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
                if processes > 1 else [sys.executable])
    argv = [*launcher, "-m", "trainer"]
    for key, value in values.items():
        argv += [f"--{key}", ",".join(value) if isinstance(value, list) else str(value)]
    run_dir = Path(values["output_dir"])
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log = run_dir.parent / f"{run_dir.name}.log"
    with log.open("w") as fh:
        rc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode
    if rc != 0:
        return Result(arch, recipe, ok=False, error=f"exit {rc}: " + log.read_text()[-300:].replace("\n", " "))
    card = json.loads((run_dir / "adapter" / "adapter_card.json").read_text())
    return Result(arch, f"{recipe} ×{processes} proc", ok=True, wall_s=time.perf_counter() - t0,
                  runtime=card.get("runtime", {}), **read_run(run_dir))


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


def table(results: list[Result], *, seed_job: tuple[int, int, int] = SEED_JOB) -> str:
    rows = ["| architecture | recipe | runtime | non-padding tokens/s | vs seed | peak GiB | first-step loss | "
            "validation loss after | seed-size job, projected |",
            "|" + " --- |" * 9]
    baseline = {r.arch: r.tokens_per_s for r in results if r.recipe.split(" ")[0] == "seed" and r.ok and r.tokens_per_s}
    job_tokens = seed_job[0] * seed_job[1] * seed_job[2]
    for r in results:
        if not r.ok:
            rows.append(f"| {r.arch} | {r.recipe} | failed: {r.error} | | | | | | |")
            continue
        rt = r.runtime
        desc = (f"{rt.get('base_dtype')}, {rt.get('precision')}, {rt.get('optim')}, "
                f"checkpointing {'on' if rt.get('gradient_checkpointing') else 'off'}, "
                f"liger {'on' if rt.get('liger') else 'off'}, {'grouped' if rt.get('group_by_length') else 'random'} batches")
        tps = r.tokens_per_s
        ratio = f"{tps / baseline[r.arch]:.2f}×" if tps and baseline.get(r.arch) else "n/a"
        proj = f"{job_tokens / tps / 60:.1f} min" if tps else "n/a"
        fmt = lambda x, spec: format(x, spec) if x is not None else "n/a"  # noqa: E731
        rows.append(f"| {r.arch} | {r.recipe} | {desc} | {fmt(tps, ',.0f')} | {ratio} | {fmt(r.peak_gib, '.1f')} | "
                    f"{fmt(r.first_loss, '.3f')} | {fmt(r.eval_loss, '.3f')} | {proj} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--archs", default="llama-1b,smollm2-135m", help="comma-separated: llama-1b, smollm2-135m, tiny")
    parser.add_argument("--recipes", default=DEFAULT_RECIPES, help=f"comma-separated, run in this order: {', '.join(RECIPES)}")
    parser.add_argument("--steps", type=int, default=16,
                        help="optimiser steps of 16 examples per recipe (default 16; 6 proved too few for a steady state)")
    parser.add_argument("--max-seq-len", type=int, default=1024)
    parser.add_argument("--data-dir", default=".work/data", help="prepared splits (train.jsonl, validation.jsonl)")
    parser.add_argument("--validation-examples", type=int, default=32)
    parser.add_argument("--tokenizer", default="", help="folder with the chat tokenizer files (default: the embedded model's)")
    parser.add_argument("--scratch", default="", help="where the random-weight models go (default: /dev/shm or a temp dir)")
    parser.add_argument("--budget-s", type=float, default=0, help="start no new recipe after this many seconds (0: no limit)")
    parser.add_argument("--out", default="", help="also write the tables and each run's metrics here")
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

    unknown = [a for a in archs if a not in ARCHS] + [r for r in recipes if r not in RECIPES]
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
    order = [(a, r) for r in recipes if RECIPES[r][1].get("liger") == "off" for a in archs]
    order += [(a, r) for r in recipes if RECIPES[r][1].get("liger") != "off" for a in archs]
    results: list[Result] = []
    runs_root = scratch / "runs"
    for arch, recipe in order:
        if args.budget_s and time.monotonic() - started > args.budget_s:
            results.append(Result(arch, recipe, ok=False, error="not run: over --budget-s"))
            continue
        model_dir = build_model_folder(arch, tokenizer_dir, scratch / "models", args.device)
        print(f"# {arch} / {recipe}: {RECIPES[recipe][0]}", file=sys.stderr, flush=True)
        res = run_recipe(arch, recipe, model_dir, data_dir, runs_root, args)
        results.append(res)
        print(f"# {arch} / {recipe}: {res.tokens_per_s or 0:,.0f} tok/s, peak {res.peak_gib or 0:.1f} GiB, "
              f"eval loss {res.eval_loss}, wall {res.wall_s or 0:.1f} s {res.error}", file=sys.stderr, flush=True)
        text = "\n".join(info + [header, "", table(results)]) + "\n"
        (out / "bench_training.md").write_text(text)
        (out / "results.json").write_text(json.dumps([r.__dict__ for r in results], indent=2, default=str))
        metrics = runs_root / f"{arch}-{recipe}" / "metrics.jsonl"
        if metrics.is_file():
            shutil.copy2(metrics, out / f"{arch}-{recipe}.metrics.jsonl")
    print("\n" + table(results))
    print(f"\nseed-size job: {SEED_JOB[0]} examples x {SEED_JOB[1]} epochs x {SEED_JOB[2]} tokens; "
          f"total {time.monotonic() - started:.0f} s", flush=True)


def _embedded_tokenizer_dir() -> Path:
    from core import model as model_lib
    from core.settings import load_settings

    return Path(model_lib.resolve_base(load_settings()).location)


if __name__ == "__main__":
    main()
