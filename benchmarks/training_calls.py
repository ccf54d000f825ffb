"""Median over device calls of bench_training results (issue 21): the headline table, recomputable from the raw files.

Each device call of ``scripts/gpu/unsloth.sh bench`` leaves a ``callN.tar.gz`` holding ``bench-out/results.json``
(one object per recipe run). This reads several of them and prints, per architecture and recipe, the median steady
rate with its range and the number of calls, the peak memory and the validation loss, and the same-call ratios of
each ``ours-*`` recipe to the Unsloth recipe of its mode (nf4 / bf16)::

    python -m benchmarks.training_calls docs/bench-runs/2026-12-06-h100-varlen/call{1,2,3}.tar.gz
"""

from __future__ import annotations

import argparse
import json
import statistics
import tarfile
from pathlib import Path
from typing import Any

PAIRS = {"ours-nf4-pf": "unsloth-nf4", "ours-bf16-pf": "unsloth-bf16", "ours-nf4-fast": "unsloth-nf4",
         "ours-bf16-compile": "unsloth-bf16"}
"""Our recipe -> the Unsloth recipe it is compared with call by call: same mode, same examples per step (packed
recipes take bigger steps, so they have no pair)."""


def read_results(path: Path) -> list[dict[str, Any]]:
    """The recipe results of one call: a results.json, or a call archive holding bench-out/results.json."""
    if path.suffix == ".json":
        return json.loads(path.read_text())
    with tarfile.open(path) as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith("results.json"))
        return json.loads(archive.extractfile(member).read())


def spread(values: list[float], spec: str) -> str:
    """'median (min–max)' or the single value; empty for no values."""
    if not values:
        return "n/a"
    if len(values) == 1:
        return format(values[0], spec)
    return f"{format(statistics.median(values), spec)} ({format(min(values), spec)}–{format(max(values), spec)})"


def summarize(calls: list[list[dict[str, Any]]]) -> str:
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for results in calls:
        for r in results:
            if r.get("ok") and r.get("steady_tokens_per_s"):
                rows.setdefault((r["arch"], r["recipe"]), []).append(r)
    ratios: dict[tuple[str, str], list[float]] = {}
    for results in calls:
        by_recipe = {(r["arch"], r["recipe"]): r for r in results if r.get("ok") and r.get("steady_tokens_per_s")}
        for (arch, recipe), r in by_recipe.items():
            peer = by_recipe.get((arch, PAIRS.get(recipe, "")))
            if peer:
                ratios.setdefault((arch, recipe), []).append(r["steady_tokens_per_s"] / peer["steady_tokens_per_s"])
    lines = ["| architecture | recipe | calls | steady tok/s, median (range) | whole run tok/s (load, compile, eval, "
             "save in) | peak GiB | validation loss | steps | steady vs Unsloth, same call: median (range) |",
             "|" + " --- |" * 9]
    for (arch, recipe), runs in rows.items():
        ratio = ratios.get((arch, recipe), [])
        lines.append(
            f"| {arch} | {recipe} | {len(runs)} | {spread([r['steady_tokens_per_s'] for r in runs], ',.0f')} | "
            f"{spread([r['total_tokens'] / r['wall_s'] for r in runs if r.get('total_tokens') and r.get('wall_s')], ',.0f')} | "
            f"{spread([r['peak_gib'] for r in runs if r.get('peak_gib')], '.1f')} | "
            f"{spread([r['eval_loss'] for r in runs if r.get('eval_loss') is not None], '.3f')} | "
            f"{spread([float(r['steps']) for r in runs], '.0f')} | "
            f"{spread(ratio, '.2f') + ' × ' + PAIRS[recipe] if ratio else ''} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("calls", nargs="+", type=Path, help="results.json files or callN.tar.gz archives, one per call")
    args = parser.parse_args(argv)
    print(f"calls: {', '.join(str(p) for p in args.calls)}\n")
    print(summarize([read_results(p) for p in args.calls]))


if __name__ == "__main__":
    main()
