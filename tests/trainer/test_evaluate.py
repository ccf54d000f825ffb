"""trainer.evaluate: same items for both models, honest numbers, the report files."""

from __future__ import annotations

import json
import math

import pytest

from core.records import Record
from trainer.evaluate import main, recompute, render_markdown, sample_mcq, score_mcq, score_open, select_items

from .conftest import make_records


def _bank(n_per_source: int) -> list[Record]:
    recs = []
    for source in ("medqa", "medmcqa", "mmlu"):
        for i in range(n_per_source):
            recs.append(Record(id=f"{source}:{i:03d}", source=source, license="MIT", question=f"Q{i}?", kind="mcq",
                               options={"A": "a", "B": "b", "C": "c", "D": "d"}, correct="ABCD"[i % 4], answer="x"))
    return recs


def test_mcq_sample_is_fixed_by_seed_and_independent_of_file_order():
    bank = _bank(50)
    first = sample_mcq(bank, ["medqa", "medmcqa"], 10, seed=0)
    again = sample_mcq(list(reversed(bank)), ["medqa", "medmcqa"], 10, seed=0)
    assert [r.id for r in first["medqa"]] == [r.id for r in again["medqa"]]
    assert len(first["medqa"]) == 10 and {r.source for r in first["medmcqa"]} == {"medmcqa"}
    other = sample_mcq(bank, ["medqa"], 10, seed=1)
    assert [r.id for r in other["medqa"]] != [r.id for r in first["medqa"]]
    assert len(sample_mcq(bank, ["medqa"], 500, seed=0)["medqa"]) == 50


def test_select_items_applies_limit_to_every_part():
    test = make_records("test", 6, 2)
    items = select_items(test, _bank(20), limit=3, mcq_sources=["medqa", "medmcqa"], mcq_per_source=200, seed=0)
    assert len(items.loss) == 3 and len(items.open) == 3
    assert all(r.kind == "open" for r in items.open)
    assert {s: len(r) for s, r in items.mcq.items()} == {"medqa": 3, "medmcqa": 3}


def test_scoring_open_and_mcq_outputs():
    recs = make_records("test", 2, 0)
    outputs = [f"Because.\n\nFinal answer: {recs[0].answer}", "no marker here at all"]
    summary, rows = score_open(recs, outputs)
    assert summary["n"] == 2 and summary["format_adherence"]["correct"] == 1
    assert rows[0]["rouge_l"] == pytest.approx(1.0) and rows[1]["rouge_l"] < 0.2
    mcq = make_records("bank", 0, 2)
    summary, rows = score_mcq(mcq, ["Heparin is acidic.\n\nFinal answer: B. Protamine sulfate", "I don't know"])
    assert (summary["correct"], summary["n"], summary["unparsed"]) == (1, 2, 1)
    assert summary["ci95"][0] < 0.5 < summary["ci95"][1]
    assert rows[0]["choice"] == "B" and rows[0]["is_correct"] and rows[1]["choice"] is None


def test_evaluate_base_vs_adapter_on_the_same_items(trained_run, tiny_model_dir, data_dir, tmp_path):
    result, _ = trained_run
    out = tmp_path / "eval"
    rc = main(["--adapter", str(result.adapter_dir), "--base", str(tiny_model_dir), "--work_dir", str(data_dir.parent),
               "--limit", "3", "--max_new_tokens", "12", "--output", str(out)])
    assert rc == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["items"]["test_loss"] == 3 and report["items"]["open"] == 3
    assert report["items"]["mcq"] == {"medqa": 2, "medmcqa": 2}
    base, adapter = report["results"]["base"], report["results"]["adapter"]
    for res in (base, adapter):
        loss = res["test_loss"]
        assert loss["n_items"] == 3 and loss["n_tokens"] > 0
        assert loss["perplexity"] == pytest.approx(math.exp(loss["loss"]))
        assert 0 <= loss["mean_token_accuracy"] <= 1
        assert res["open"]["n"] == 3 and 0 <= res["open"]["rouge_l"] <= 1
        assert res["mcq"]["all"]["n"] == 4
    # The adapter was trained on these very texts (fixture), so it must fit them better than the base.
    assert adapter["test_loss"]["loss"] < base["test_loss"]["loss"]
    samples = [json.loads(line) for line in (out / "eval_samples.jsonl").read_text().splitlines()]
    ids = {m: [s["id"] for s in samples if s["row"] == m] for m in ("base", "adapter")}
    assert ids["base"] == ids["adapter"] and len(ids["base"]) == 3 + 4
    # Every row states its decoding, and each item says whether its answer was forced.
    for res in (base, adapter):
        row = res_name(res, report)
        assert res["decoding"] == {"decoding": "greedy", "max_new_tokens": 12, "answer_allowance": 64,
                                   "references_k": None, "references_in_prompt": None}
        assert res["generation"]["forced"] == sum(bool(s["forced"]) for s in samples if s["row"] == row)
        assert res["open"]["final_answer"]["correct"] >= res["open"]["format_adherence"]["correct"]
    assert all(s["forced"] in (None, "budget") and s["context_ids"] is None for s in samples)
    md = (out / "eval.md").read_text()
    assert "| Metric | Base model | Fine-tuned (adapter) | Change |" in md
    assert "Mean token accuracy (training diagnostic, not exam accuracy)" in md
    assert "MCQ accuracy, MedQA (n=2, 95% CI)" in md and "ROUGE-L" in md
    assert "Format adherence, natural marker" in md and "Final answer %, natural or forced" in md
    assert "- Base model: greedy, max 12 new tokens, answer allowance 64 tokens (a final answer is forced when none " \
           "was written in the first 6 tokens); plain prompt" in md
    assert f"{base['test_loss']['loss']:.3f}" in md and f"{adapter['test_loss']['loss']:.3f}" in md
    assert md == render_markdown(report)
    assert recompute(out) == []  # every table number follows from the samples written beside it


def res_name(res, report):
    return next(name for name, value in report["results"].items() if value is res)


def test_evaluation_can_be_split_over_runs(trained_run, tiny_model_dir, data_dir, tmp_path, capsys):
    result, _ = trained_run
    common = ["--adapter", str(result.adapter_dir), "--base", str(tiny_model_dir), "--work_dir",
              str(data_dir.parent), "--limit", "2", "--max_new_tokens", "5"]
    assert main([*common, "--models", "base", "--output", str(tmp_path / "a")]) == 0
    assert "results for adapter are still missing" in capsys.readouterr().out
    assert not (tmp_path / "a" / "eval.json").exists()  # no half report
    assert main([*common, "--models", "adapter", "--output", str(tmp_path / "a")]) == 0
    first = json.loads((tmp_path / "a" / "eval.json").read_text())
    assert first["from_cache"] == ["base"]
    # Same items and settings again: nothing is recomputed, the numbers are identical.
    assert main([*common, "--output", str(tmp_path / "b")]) == 0
    second = json.loads((tmp_path / "b" / "eval.json").read_text())
    assert second["from_cache"] == ["base", "adapter"] and second["results"] == first["results"]


def test_evaluate_rejects_bad_arguments(tmp_path, capsys):
    assert main(["--adapter", str(tmp_path), "--limit", "0", "--max_new_tokens", "0", "--models", "gpt"]) == 2
    err = capsys.readouterr().err
    assert "not an adapter folder" in err and "--limit" in err and "--max_new_tokens" in err and "--models" in err
