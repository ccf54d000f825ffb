"""``python -m trainer.evaluate --recompute``: eval.json's tables are what its samples say.

A report is only as good as its numbers; these tests make a shipped ``eval.json`` checkable: every
table value is recomputed from ``eval_samples.jsonl`` (each generation rescored), and a tampered
sample, per-item value or table number is caught.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from trainer import evaluate
from trainer.evaluate import SAMPLES_FILE, Generation, main, recompute

from .conftest import make_records

ADAPTERS = Path(__file__).resolve().parents[2] / "adapters"


def _report(tmp_path: Path) -> Path:
    """An evaluation folder written by write_report from scored samples (no model needed)."""
    open_recs = make_records("test", 3, 0)
    mcq = make_records("bank", 0, 2, source="medqa")
    sources = ["medqa"]
    results, samples = {}, {}
    for row, texts, forced in (
        ("base", ["No idea.", "Because.\n\nFinal answer: Meningitis", "Thinking", "Final answer: B",
                  "Hmm.\n\nFinal answer: A"], [None, "budget", None, None, "budget"]),
        ("adapter", [f"Because.\n\nFinal answer: {open_recs[0].answer}", "Hmm.\n\nFinal answer: meningococcal",
                     "So.\n\nFinal answer: pancreas", "Heparin.\n\nFinal answer: B. Protamine",
                     "Vitamin.\n\nFinal answer: C"], [None, None, "budget", None, None]),
    ):
        rows = [evaluate.sample_row(rec, Generation(text, f, 10), row=row)
                for rec, text, f in zip([*open_recs, *mcq], texts, forced)]
        samples[row] = rows
        results[row] = {"decoding": evaluate.Decoding(768, 64).to_dict(), **evaluate.summarize(rows, sources)}
    report = {
        "base_model": "tiny", "adapter": "a", "adapter_name": "a", "rows": ["base", "adapter"],
        "settings": {"mcq_sources": sources, "max_new_tokens": 768, "answer_allowance": 64, "seed": 0,
                     "batch_size": 4, "dtype": "float32"},
        "items": {"ids": {"open": [r.id for r in open_recs], "mcq_medqa": [r.id for r in mcq]}},
        "results": results, "samples": samples,
        "hardware": {"device": "cpu", "device_name": "test CPU"}, "wall_time_s": 1.0, "command": "test",
    }
    folder = tmp_path / "eval"
    evaluate.write_report(report, folder)
    return folder


def _edit_sample(folder: Path, number: int, **changes) -> None:
    path = folder / SAMPLES_FILE
    lines = path.read_text().splitlines()
    sample = json.loads(lines[number])
    sample.update(changes)
    lines[number] = json.dumps(sample)
    path.write_text("\n".join(lines) + "\n")


def test_an_intact_report_recomputes_to_the_same_tables(tmp_path, capsys):
    folder = _report(tmp_path)
    assert recompute(folder) == []
    assert main(["--recompute", str(folder)]) == 0
    assert "matches its samples" in capsys.readouterr().out
    report = json.loads((folder / "eval.json").read_text())
    # the numbers really are there to compare (natural and forced counted apart)
    results = report["results"]
    assert results["base"]["open"]["forced"] == 1 and results["adapter"]["mcq"]["all"]["correct"] == 2


def test_a_tampered_generation_is_caught(tmp_path, capsys):
    folder = _report(tmp_path)
    _edit_sample(folder, 9, output="Vitamin.\n\nFinal answer: B")  # adapter, an MCQ item: now another letter
    problems = recompute(folder)
    assert any("adapter medqa:bank-mcq-1 choice" in p for p in problems)  # the stored per-item value disagrees
    assert any(p.startswith("adapter.mcq.medqa.correct") for p in problems)  # and so does the table
    assert main(["--recompute", str(folder)]) == 1
    assert "does not match its samples" in capsys.readouterr().err


def test_a_tampered_item_value_or_table_number_is_caught(tmp_path):
    folder = _report(tmp_path)
    _edit_sample(folder, 0, rouge_l=0.99)
    assert [p for p in recompute(folder) if "rouge_l" in p]
    folder = _report(tmp_path / "again")
    report = json.loads((folder / "eval.json").read_text())
    report["results"]["adapter"]["open"]["final_answer"]["correct"] += 1
    (folder / "eval.json").write_text(json.dumps(report))
    assert recompute(folder) == ["adapter.open.final_answer.correct: eval.json has 4, the samples give 3"]


def test_a_forced_flag_changed_after_the_fact_is_caught(tmp_path):
    folder = _report(tmp_path)
    _edit_sample(folder, 1, forced=None)  # base open item 1 claimed natural: the natural-marker count changes
    assert any(p.startswith("base.open.format_adherence") for p in recompute(folder))


def test_gzipped_samples_are_read_too(tmp_path):
    folder = _report(tmp_path)
    plain = folder / SAMPLES_FILE
    with plain.open("rb") as src, gzip.open(folder / f"{SAMPLES_FILE}.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    plain.unlink()
    assert recompute(folder) == []
    lines = gzip.open(folder / f"{SAMPLES_FILE}.gz", "rt").read().splitlines()
    with gzip.open(folder / f"{SAMPLES_FILE}.gz", "wt") as fh:
        fh.write("\n".join(lines[:-1]) + "\n")  # one item lost
    assert any("differ from eval.json's item ids" in p for p in recompute(folder))


def test_a_folder_without_samples_is_an_error(tmp_path, capsys):
    folder = _report(tmp_path)
    (folder / SAMPLES_FILE).unlink()
    assert main(["--recompute", str(folder)]) == 2
    assert "no eval_samples.jsonl" in capsys.readouterr().err


# -- the shipped adapters -----------------------------------------------------------------------------


def _adapter_folders() -> list[Path]:
    return sorted(d for d in ADAPTERS.iterdir() if (d / "adapter_config.json").is_file()) if ADAPTERS.is_dir() else []


def _ships_samples(folder: Path) -> bool:
    return (folder / SAMPLES_FILE).is_file() or (folder / f"{SAMPLES_FILE}.gz").is_file()


@pytest.mark.parametrize("folder", [d for d in _adapter_folders() if (d / "eval.json").is_file() and _ships_samples(d)],
                         ids=lambda d: d.name)
def test_shipped_evaluation_matches_its_samples(folder):
    assert recompute(folder) == []


def test_every_shipped_adapter_ships_its_evaluation_samples():
    folders = _adapter_folders()
    assert folders
    missing = [d.name for d in folders if not ((d / "eval.json").is_file() and _ships_samples(d))]
    assert missing == []
