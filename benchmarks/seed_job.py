"""The seed-size training job end to end (issue 21): wall time from the command to the saved adapter.

The seed's job was 8,000 examples x 3 epochs at a mean 245 tokens = 5.88 M tokens. Our prepared training split is
smaller, so the job trains the same number of tokens on it: as many epochs over it as that takes (a fraction of an
epoch allowed). It runs ``python -m trainer`` as the admin page does -- a separate process, with a recipe of
``benchmarks.bench_training`` -- on a model folder of the chosen architecture (random weights; speed does not
depend on them) and times the process from start to exit, which is after the adapter and its card are written:
Python start-up, model load, compiling, every step, the validation pass and the save are all inside.

On the GPU machine (scripts/gpu/bench.sh seedjob)::

    python3 -m benchmarks.seed_job --tokenizer .gpu/bench/tok --recipe ours-bf16-pf --arch llama-1b

Prints the machine, versions, command, the job's size and a table; ``--out DIR`` also keeps metrics.jsonl, the
trainer's log and the adapter card there.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_training import (RECIPES, SEED_JOB, build_model_folder, cpu_variant, machine_info, read_run,
                                       trainer_flags)


def tokens_per_epoch(train_file: Path, tokenizer_dir: Path, max_seq_len: int) -> tuple[int, int]:
    """(examples, tokens) of one epoch as the trainer counts them: chat-formatted, overlong examples left out."""
    from transformers import AutoTokenizer

    from trainer.dataset import chat_ids, load_examples

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    lengths = [len(chat_ids(tokenizer, ex["prompt"] + ex["completion"], generation_prompt=False))
               for ex in load_examples(train_file).examples]
    kept = [n for n in lengths if n <= max_seq_len]
    return len(kept), sum(kept)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="ours-bf16-pf", choices=sorted(RECIPES))
    parser.add_argument("--arch", default="llama-1b", help="benchmarks/archs.py: llama-1b, smollm2-135m, tiny")
    parser.add_argument("--tokens", type=float, default=SEED_JOB[0] * SEED_JOB[1] * SEED_JOB[2],
                        help="tokens to train (default: the seed's 8,000 x 3 x 245)")
    parser.add_argument("--data-dir", default=".work/data")
    parser.add_argument("--tokenizer", required=True, help="folder with the chat tokenizer files")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--max-seq-len", type=int, default=1024)
    parser.add_argument("--scratch", default="")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)

    scratch = Path(args.scratch) if args.scratch else Path(tempfile.mkdtemp(prefix="seed-job-"))
    data = Path(args.data_dir)
    examples, epoch_tokens = tokens_per_epoch(data / "train.jsonl", Path(args.tokenizer), args.max_seq_len)
    epochs = round(args.tokens / epoch_tokens, 3)
    model_dir = build_model_folder(args.arch, Path(args.tokenizer), scratch / "models", args.device)
    run_dir = scratch / "runs" / f"{args.arch}-{args.recipe}-job"
    overrides, notes = cpu_variant(RECIPES[args.recipe][1]) if args.device == "cpu" else (RECIPES[args.recipe][1], [])
    shutil.rmtree(run_dir, ignore_errors=True)
    values = {
        "model_name": str(model_dir), "work_dir": str(data.parent), "train_file": str(data / "train.jsonl"),
        "eval_file": str(data / "validation.jsonl"), "output_dir": str(run_dir), "device": args.device,
        "num_epochs": epochs, "max_steps": -1, "max_seq_len": args.max_seq_len,
        # Every step logged: the table's steps and tokens come from the last logged line (the 2026-12-06 job logged
        # every 10th step and so left its last 5 steps out of them).
        "logging_steps": 1,
        "eval_steps": 0, "save_steps": 100_000, "warmup_ratio": 0.03, "lr_scheduler_type": "cosine",
        **overrides,
    }
    info = machine_info(args.device)
    print("\n".join(info), flush=True)
    print(f"job: {args.tokens:,.0f} tokens = {epochs} epochs over {examples} training examples "
          f"({epoch_tokens:,} tokens per epoch, max_seq_len {args.max_seq_len}); recipe {args.recipe} "
          f"({RECIPES[args.recipe][0]}); architecture {args.arch}, random weights"
          + (f"; CPU check: {', '.join(notes)}" if notes else ""), flush=True)
    log = scratch / "trainer.log"
    argv_trainer = [sys.executable, "-m", "trainer", *trainer_flags(values)]
    print("trainer command: " + " ".join(argv_trainer), flush=True)
    started = time.perf_counter()
    with log.open("w") as fh:
        rc = subprocess.run(argv_trainer, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode
    wall = time.perf_counter() - started
    card_path = run_dir / "adapter" / "adapter_card.json"
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for item in (log, run_dir / "metrics.jsonl", card_path):
            if item.is_file():
                shutil.copy2(item, out / item.name)
    if rc != 0 or not card_path.is_file():
        print(f"the trainer failed (exit {rc}); its log ends:\n" + log.read_text(errors="replace")[-3000:])
        return 1
    measured = read_run(run_dir)
    card = json.loads(card_path.read_text())
    rows = ["| architecture | recipe | tokens trained | optimiser steps | command → adapter saved (wall) | "
            "tokens / wall | steady tok/s (median of logged intervals) | peak GiB | validation loss |",
            "|" + " --- |" * 9]
    steady = measured.get("steady_tokens_per_s")
    fmt = lambda x, spec: format(x, spec) if x is not None else "n/a"  # noqa: E731
    rows.append(f"| {args.arch} | {args.recipe} | {measured['total_tokens']:,.0f} | {measured['steps']} | "
                f"{wall:.1f} s ({wall / 60:.2f} min) | {measured['total_tokens'] / wall:,.0f} | {fmt(steady, ',.0f')} | "
                f"{fmt(measured.get('peak_gib'), '.1f')} | {fmt(measured.get('eval_loss'), '.3f')} |")
    print("\n" + "\n".join(rows))
    print(f"\nruntime: {json.dumps(card.get('runtime', {}))}")
    target = 180.0
    print(f"target ≤ {target:.0f} s: {'met' if wall <= target else 'missed'} ({wall:.1f} s; "
          f"{math.ceil(wall - target) if wall > target else 0} s over)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
