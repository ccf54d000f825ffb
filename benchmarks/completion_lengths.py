"""Token lengths of the served adapter's own completions, from its shipped evaluation samples.

The app's default token budget (``core.inference.GenerationSettings.max_new_tokens``) is set from
this table: the budget must hold the natural completions (those the model ended with its own
final-answer line) of open-ended cases, plus the answer allowance for the rest::

    python -m benchmarks.completion_lengths [--adapter adapters/smollm2-135m-medcot]
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path
from typing import Sequence


def _samples(folder: Path) -> list[dict]:
    plain, packed = folder / "eval_samples.jsonl", folder / "eval_samples.jsonl.gz"
    if plain.is_file():
        text = plain.read_text(encoding="utf-8")
    elif packed.is_file():
        text = gzip.decompress(packed.read_bytes()).decode("utf-8")
    else:
        raise SystemExit(f"{folder} has no eval_samples.jsonl(.gz): evaluate it first (python -m trainer.evaluate)")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def percentile(ordered: Sequence[int], p: float) -> int:
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", type=Path, default=Path("adapters/smollm2-135m-medcot"))
    args = parser.parse_args(argv)
    from core.inference import ANSWER_ALLOWANCE, GenerationSettings
    from core.model import load_tokenizer, resolve_base
    from core.settings import load_settings

    tokenizer = load_tokenizer(resolve_base(load_settings()))
    rows = _samples(args.adapter)
    print(f"adapter: {args.adapter}; tokenizer: {tokenizer.name_or_path}")
    print("| row | kind | completions not forced | p50 | p90 | p95 | max | forced |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in sorted({r["row"] for r in rows}):
        for kind in ("open", "mcq"):
            chosen = [r for r in rows if r["row"] == row and r["kind"] == kind]
            natural = sorted(len(tokenizer(r["output"], add_special_tokens=False)["input_ids"]) for r in chosen if not r["forced"])
            if not natural:
                continue
            forced = sum(bool(r["forced"]) for r in chosen)
            print(f"| {row} | {kind} | {len(natural)} | {percentile(natural, 0.5)} | {percentile(natural, 0.9)} | "
                  f"{percentile(natural, 0.95)} | {natural[-1]} | {forced} of {len(chosen)} |")
    print(f"\ndefault budget: {GenerationSettings().max_new_tokens} new tokens, answer allowance {ANSWER_ALLOWANCE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
