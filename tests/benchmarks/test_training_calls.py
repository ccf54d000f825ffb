"""benchmarks.training_calls: the median-over-calls table and the same-call ratios against Unsloth."""

from __future__ import annotations

import io
import json
import tarfile

from benchmarks.training_calls import read_results, summarize


def _run(recipe: str, steady: float, *, peak: float = 3.0, loss: float = 9.0, ok: bool = True) -> dict:
    return {"arch": "llama-1b", "recipe": recipe, "ok": ok, "steady_tokens_per_s": steady, "peak_gib": peak,
            "eval_loss": loss, "steps": 48, "total_tokens": 1000.0, "wall_s": 10.0}


def test_median_range_and_same_call_ratios():
    calls = [
        [_run("unsloth-nf4", 20_000), _run("ours-nf4-pf", 30_000, loss=8.96)],
        [_run("unsloth-nf4", 30_000), _run("ours-nf4-pf", 36_000, loss=8.97)],
        # The fastest Unsloth call has no ours: a ratio is only taken within one call.
        [_run("unsloth-nf4", 40_000), _run("ours-nf4-pf", 1, ok=False)],
    ]
    table = summarize(calls)
    unsloth = next(line for line in table.splitlines() if "| unsloth-nf4 |" in line)
    ours = next(line for line in table.splitlines() if "| ours-nf4-pf |" in line)
    assert "| 3 | 30,000 (20,000–40,000) |" in unsloth
    # The failed run is left out: two calls, median of 30,000 and 36,000; ratios 1.50 and 1.20.
    assert "| 2 | 33,000 (30,000–36,000) |" in ours
    assert "1.35 (1.20–1.50) × unsloth-nf4" in ours
    assert "8.965 (8.960–8.970)" in ours and "| 100 (100–100) |" in ours  # whole run: 1000 tokens / 10 s


def test_reads_results_from_a_call_archive(tmp_path):
    payload = json.dumps([_run("seed", 4_800)]).encode()
    archive = tmp_path / "call1.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("bench-out/results.json")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    assert read_results(archive)[0]["steady_tokens_per_s"] == 4_800
