"""The pipeline on the fixture raw folder: splits, leak control, determinism, staleness, bad input, CLI."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from core import data
from core.datasets import casimedicos, huatuo_demo, medical_o1, mmlu
from core.datasets.base import DataError
from core.records import Record, stable_id
from core.settings import PROJECT_ROOT, Settings

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RAW = FIXTURES / "data"


@pytest.fixture
def raw(tmp_path) -> Path:
    """A writable copy of the fixture raw folder."""
    target = tmp_path / "raw"
    shutil.copytree(RAW, target)
    return target


def make_settings(raw_dir: Path, work: Path) -> Settings:
    return Settings(data_dir=raw_dir, work_dir=work)


@pytest.fixture
def settings(raw, tmp_path) -> Settings:
    return make_settings(raw, tmp_path / "work")


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_prepare_writes_splits_bank_and_manifest(settings):
    result = data.prepare(settings, tokenizer=None)
    folder = settings.prepared_dir
    assert sorted(p.name for p in folder.iterdir()) == ["bank.jsonl", "manifest.json", "test.jsonl", "train.jsonl", "validation.jsonl"]
    manifest = data.read_manifest(settings)
    assert manifest == result.manifest
    splits = {name: data.load_split(settings, name) for name in ("train", "validation", "test")}
    bank = data.load_bank(settings)
    for name, records in splits.items():
        assert manifest["counts"][name]["total"] == len(records) == manifest["outputs"][f"{name}.jsonl"]["records"]
        assert all(r.split == name and r.reasoning and r.answer for r in records)
        assert records == sorted(records, key=lambda r: r.id)
    assert manifest["counts"]["bank"]["total"] == len(bank)
    assert all(r.split == "bank" for r in bank)
    # ids are unique inside every file and no id is in two reasoning splits
    ids = [r.id for records in splits.values() for r in records]
    assert len(ids) == len(set(ids)) and len({r.id for r in bank}) == len(bank)
    # the reasoning test split is part of the bank, tagged
    assert {r.id for r in splits["test"]} == {r.id for r in bank if data.REASONING_TEST_TAG in r.tags}
    # every record keeps its license and a credit line
    assert all(r.license and r.attribution for r in bank + [r for rs in splits.values() for r in rs])
    # the input hashes are those of the raw files
    for rel, info in manifest["inputs"].items():
        assert info["sha256"] == data.sha256_file(settings.data_dir / rel)
    assert manifest["pipeline"] == data.PIPELINE_VERSION and manifest["prompt_format"]
    assert manifest["token_stats"] == {"unavailable": "skipped (no tokenizer given)"}


def test_leaks_into_the_bank_are_removed_from_training(settings):
    result = data.prepare(settings, tokenizer=None)
    corpus = [r for name in ("train", "validation", "test") for r in data.load_split(settings, name)]
    bank_ids = {r.id for r in data.load_bank(settings)}
    # CasiMedicos train case 140 is test case 52: held out, so gone from the corpus
    train_cases = casimedicos.read(settings.data_dir / casimedicos.FOLDER, "train")
    test_cases = casimedicos.read(settings.data_dir / casimedicos.FOLDER, "test")
    shared = {r.id for r in train_cases} & {r.id for r in test_cases}
    assert len(shared) == 1 and shared <= bank_ids
    assert not shared & {r.id for r in corpus}
    # the demo record whose source MCQ is a MedMCQA item is gone too
    demo = huatuo_demo.read(settings.data_dir / huatuo_demo.FILE)
    leaked = [r for r in demo if r.source_mcq["question"].startswith("Possible conversion to choriocarcinoma")]
    assert len(leaked) == 1 and leaked[0].id not in {r.id for r in corpus}
    assert result.manifest["dedup"]["reasoning_removed_as_bank_leaks"] == {"casimedicos": 1, "huatuogpt-o1-demo": 1}
    removed = {p["removed"] for p in result.manifest["dedup"]["leak_pairs"]}
    assert leaked[0].origin in removed


def test_duplicates_are_collapsed_into_one_split(settings):
    result = data.prepare(settings, tokenizer=None)
    corpus = [r for name in ("train", "validation", "test") for r in data.load_split(settings, name)]
    # The demo repeats a medical-o1 record: one copy is kept, the one that keeps its source MCQ.
    subset = medical_o1.read_subset(settings.data_dir / medical_o1.SUBSET_FOLDER)
    demo = huatuo_demo.read(settings.data_dir / huatuo_demo.FILE)
    repeated = {r.question for r in subset} & {r.question for r in demo}
    assert len(repeated) == 1
    kept = [r for r in corpus if r.question in repeated]
    assert len(kept) == 1 and kept[0].source == "huatuogpt-o1-demo" and kept[0].source_mcq
    # CasiMedicos train 158 = dev 23: one survives
    dev = casimedicos.read(settings.data_dir / casimedicos.FOLDER, "dev")
    train = casimedicos.read(settings.data_dir / casimedicos.FOLDER, "train")
    same = {r.id for r in dev} & {r.id for r in train}
    assert len(same) == 1 and sum(r.id in same for r in corpus) == 1
    assert result.manifest["dedup"]["reasoning_duplicates_collapsed"] == {"casimedicos": 1, "medical-o1": 1}


def test_bank_keeps_official_counts_and_marks_repeats(settings):
    data.prepare(settings, tokenizer=None)
    bank = data.load_bank(settings)
    by_source = Counter(r.source for r in bank)
    assert by_source["mmlu"] == 4 and by_source["medmcqa"] == 6 and by_source["pubmedqa"] == 3 and by_source["medqa"] == 3
    repeats = [r for r in bank if data.DUPLICATE_FLAG in r.flags]
    assert {r.source for r in repeats} == {"mmlu", "medmcqa"}
    for rec in repeats:
        original = rec.id.rsplit("-", 1)[0]
        assert f"duplicate-of:{original}" in rec.tags and original in {r.id for r in bank}
    # the MedMCQA repeat has a different key in its second copy: both are flagged
    conflicting = [r for r in bank if data.CONFLICT_FLAG in r.flags]
    assert len(conflicting) == 2 and len({r.correct for r in conflicting}) == 2
    assert sum("official-test" in r.tags for r in bank) == 2
    assert any("ocr-suspect" in r.flags for r in bank if r.source == "medmcqa")


def test_prepare_twice_is_byte_identical(settings, tmp_path):
    data.prepare(settings, tokenizer=None)
    first = outputs(settings.prepared_dir)
    data.prepare(settings, tokenizer=None)
    assert outputs(settings.prepared_dir) == first
    # ... and does not depend on where the work dir is
    other = make_settings(settings.data_dir, tmp_path / "elsewhere")
    data.prepare(other, tokenizer=None)
    assert outputs(other.prepared_dir) == first


def test_changing_a_raw_file_changes_the_manifest_and_makes_data_stale(settings):
    data.prepare(settings, tokenizer=None)
    before = data.read_manifest(settings)
    assert not data.is_stale(settings)
    path = settings.data_dir / mmlu.FILE
    rows = path.read_text(encoding="utf-8").splitlines()
    extra = json.loads(rows[0])
    extra["problem_text"] = "Which nerve supplies the deltoid muscle of the shoulder in most adults?"
    path.write_text("\n".join(rows + [json.dumps(extra)]) + "\n", encoding="utf-8")
    assert data.is_stale(settings)
    data.prepare(settings, tokenizer=None)
    after = data.read_manifest(settings)
    assert after["inputs"][mmlu.FILE]["sha256"] != before["inputs"][mmlu.FILE]["sha256"]
    assert after["counts"]["bank"]["by_source"]["mmlu"] == before["counts"]["bank"]["by_source"]["mmlu"] + 1
    assert after["outputs"]["bank.jsonl"]["sha256"] != before["outputs"]["bank.jsonl"]["sha256"]
    assert not data.is_stale(settings)


@pytest.mark.parametrize(
    "change",
    ["delete_output", "truncate_output", "new_optional_file", "pipeline_version", "missing"],
)
def test_is_stale_detects(settings, change, monkeypatch):
    if change != "missing":
        data.prepare(settings, tokenizer=None)
        assert not data.is_stale(settings)
    if change == "delete_output":
        (settings.prepared_dir / "bank.jsonl").unlink()
    elif change == "truncate_output":
        (settings.prepared_dir / "train.jsonl").write_text("")
    elif change == "new_optional_file":
        (settings.data_dir / data.ORIGINAL_FOLDER).mkdir()
        shutil.copy(FIXTURES / "original" / "medical_o1_sft.jsonl", settings.data_dir / data.ORIGINAL_FOLDER)
    elif change == "pipeline_version":
        monkeypatch.setattr(data, "PIPELINE_VERSION", "medstudy-data-v999")
    assert data.is_stale(settings)


def test_missing_source_is_skipped_with_a_warning(settings, caplog):
    shutil.rmtree(settings.data_dir / "pubmedqa-pqal")
    (settings.data_dir / casimedicos.FOLDER / "dev.tsv").unlink()
    with caplog.at_level(logging.WARNING):
        result = data.prepare(settings, tokenizer=None)
    assert "source pubmedqa: pubmedqa-pqal/ori_pqal.json is missing; skipped" in caplog.text
    assert "source casimedicos: casimedicos-en-antidote/dev.tsv is missing; skipped" in caplog.text
    manifest = result.manifest
    # the fixture folder has no MedQuAD either: the splits are built, the reference index is not
    assert len(manifest["missing_sources"]) == 3
    assert manifest["references"] == {"unavailable": "medquad is missing"}
    assert not (settings.prepared_dir / "references").exists()
    assert "pubmedqa" not in manifest["counts"]["bank"]["by_source"]
    assert manifest["counts"]["bank"]["by_source"]["medqa"] == 3  # everything else still there
    assert "WARNING: source pubmedqa" in result.summary()
    assert not data.is_stale(settings)


def test_malformed_row_stops_with_file_line_field_and_keeps_old_outputs(settings):
    data.prepare(settings, tokenizer=None)
    before = outputs(settings.prepared_dir)
    path = settings.data_dir / medical_o1.SUBSET_FOLDER / "train_data.jsonl"
    rows = path.read_text(encoding="utf-8").splitlines()
    bad = json.loads(rows[1])
    bad["complex_cot"] = None
    rows[1] = json.dumps(bad)
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        data.prepare(settings, tokenizer=None)
    assert err.value.path == str(path) and err.value.line == 2 and err.value.field == "complex_cot"
    assert outputs(settings.prepared_dir) == before
    assert {p.name for p in settings.work_dir.iterdir()} - {"models"} == {"data"}  # no temp folder left behind (models: the embedding cache)


def test_failure_while_writing_leaves_no_partial_output(settings, monkeypatch):
    data.prepare(settings, tokenizer=None)
    before = outputs(settings.prepared_dir)
    real_write = data.write_jsonl
    calls = []

    def failing_write(path, records):
        calls.append(path.name)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_write(path, records)

    monkeypatch.setattr(data, "write_jsonl", failing_write)
    with pytest.raises(OSError, match="disk full"):
        data.prepare(settings, tokenizer=None)
    assert outputs(settings.prepared_dir) == before
    assert {p.name for p in settings.work_dir.iterdir()} - {"models"} == {"data"}  # no temp folder left behind (models: the embedding cache)


def test_first_failure_leaves_nothing_that_looks_complete(settings, monkeypatch):
    monkeypatch.setattr(data, "token_stats", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        data.prepare(settings, tokenizer=object())
    assert not settings.prepared_dir.exists()
    assert data.is_stale(settings)
    with pytest.raises(FileNotFoundError, match="python -m core.data prepare"):
        data.load_split(settings, "train")


def test_default_tokenizer_failure_is_a_warning_not_an_error(settings, monkeypatch, caplog):
    import core.model

    def broken(_settings, **_kwargs):
        raise core.model.ModelError("The embedded model package is not installed.")

    monkeypatch.setattr(core.model, "resolve_base", broken)
    with caplog.at_level(logging.WARNING):
        result = data.prepare(settings)
    assert "token-length statistics skipped: default tokenizer unavailable (The embedded model package" in caplog.text
    assert result.manifest["token_stats"] == {"unavailable": "the default tokenizer could not be loaded (see warnings)"}
    assert any("default tokenizer unavailable" in w for w in result.manifest["warnings"])
    assert data.load_split(settings, "train")  # the data itself is complete


def test_load_split_rejects_unknown_names(settings):
    data.prepare(settings, tokenizer=None)
    with pytest.raises(ValueError, match="unknown split"):
        data.load_split(settings, "dev")


# -- splitting rules ------------------------------------------------------------------------------------


def test_split_for_is_deterministic_and_80_10_10():
    keys = [f"src:{i:06d}" for i in range(20000)]
    assigned = [data.split_for(k) for k in keys]
    assert assigned == [data.split_for(k) for k in keys]
    counts = Counter(assigned)
    assert abs(counts["train"] / 20000 - 0.8) < 0.015
    assert abs(counts["validation"] / 20000 - 0.1) < 0.01
    assert abs(counts["test"] / 20000 - 0.1) < 0.01
    reseeded = [data.split_for(k, seed="another-seed") for k in keys]
    assert Counter(reseeded)["train"] / 20000 == pytest.approx(0.8, abs=0.015)
    assert sum(a != b for a, b in zip(assigned, reseeded)) > 5000  # the seed really reshuffles


def _open(source: str, question: str, n: int) -> Record:
    return Record(id=stable_id(source, question), source=source, license="MIT", question=question, reasoning=f"r{n}", answer=f"a{n}", origin=f"f:{n}")


def test_related_items_never_span_two_splits_and_bank_links_remove_them():
    reasoning = []
    for n in range(40):
        q = " ".join(f"w{n}x{i}" for i in range(30)) + " what is the diagnosis?"
        reasoning.append(_open("x", q, n))
        reasoning.append(_open("y", q.upper() + " Explain.", n))  # a near duplicate of each
    held = [Record(id="bank:1", source="z", license="MIT", question=reasoning[0].question, kind="mcq", options={"A": "TB", "B": "flu"}, correct="A")]
    result = data.split_and_dedup(reasoning, held)
    placed = {r.id: name for name, records in result.splits.items() for r in records}
    # one of each near-duplicate pair is kept; pair 0 is gone (it sits in the bank)
    assert len(placed) == 39
    assert reasoning[0].id not in placed and reasoning[1].id not in placed
    assert result.stats["reasoning_removed_as_bank_leaks"] == {"x": 1, "y": 1}
    assert sum(result.stats["reasoning_duplicates_collapsed"].values()) == 39
    assert len(set(placed.values())) > 1  # the 39 groups spread over the splits


def test_shared_vignette_keeps_items_in_one_split_without_collapsing_them():
    vignette = " ".join(f"w{i}" for i in range(30)) + " what is the next step?"
    options = [{k: f"option {k} {n} " + " ".join(f"o{n}{k}{i}" for i in range(8)) for k in "ABCD"} for n in (1, 2)]
    items = [
        Record(id=stable_id("x", vignette, opts), source="x", license="MIT", question=vignette, kind="mcq", options=opts,
               correct="A", reasoning="r", answer="A. a", origin=f"f:{n}")
        for n, opts in enumerate(options)
    ]
    solo = data.split_and_dedup(items, [])
    assert sum(len(v) for v in solo.splits.values()) == 2
    assert len({name for name, recs in solo.splits.items() if recs}) == 1
    held = [Record(id="bank:v", source="z", license="MIT", question=f"{vignette} which diagnosis?", kind="mcq", options={"A": "a", "B": "b"}, correct="A")]
    with_bank = data.split_and_dedup(items, held)
    assert sum(len(v) for v in with_bank.splits.values()) == 0
    assert {p["match"] for p in with_bank.stats["leak_pairs"]} == {"vignette"}


# -- command line ---------------------------------------------------------------------------------------


def test_cli_prepare_if_stale_and_export(settings, monkeypatch, capsys, tmp_path, caplog):
    monkeypatch.setattr(data, "default_tokenizer", lambda s: data.log.warning("token-length statistics skipped: test") or None)
    assert data.main(["prepare"], settings_loader=lambda: settings) == 0
    out = capsys.readouterr().out
    assert "total" in out and "reasoning records after dedup" in out and "token statistics: unavailable" in out
    manifest = data.read_manifest(settings)
    assert "token-length statistics skipped: test" in manifest["warnings"]
    stamp = (settings.prepared_dir / "manifest.json").stat().st_mtime_ns

    export = tmp_path / "seed.json"
    assert data.main(["prepare", "--if-stale", "--export-seed", str(export)], settings_loader=lambda: settings) == 0
    out = capsys.readouterr().out
    assert "up to date" in out
    assert (settings.prepared_dir / "manifest.json").stat().st_mtime_ns == stamp  # nothing rebuilt
    rows = json.loads(export.read_text(encoding="utf-8"))
    train = data.load_split(settings, "train")
    assert len(rows) == len(train) and all(set(r) == {"instruction", "input", "output"} for r in rows)
    assert [r["instruction"] for r in rows] == [r.question for r in train]


def test_cli_reports_bad_input_and_exits_nonzero(settings, capsys):
    path = settings.data_dir / mmlu.FILE
    path.write_text(path.read_text(encoding="utf-8") + "{broken\n", encoding="utf-8")
    assert data.main(["prepare"], settings_loader=lambda: settings) == 2
    err = capsys.readouterr().err
    assert f"ERROR: {path}, line 5: invalid JSON" in err


def test_cli_seed_file_and_original_folder_join_the_corpus(settings, capsys):
    (settings.data_dir / data.ORIGINAL_FOLDER).mkdir()
    shutil.copy(FIXTURES / "original" / "medical_o1_sft.json", settings.data_dir / data.ORIGINAL_FOLDER)
    result = data.prepare(settings, tokenizer=None, seed_file=str(FIXTURES / "seed" / "seed_train.json"))
    assert result.manifest["sources"]["seed"]["read"] == 3
    assert result.manifest["sources"]["medical-o1"]["read"] == 4 + 3
    assert f"{data.ORIGINAL_FOLDER}/medical_o1_sft.json" in result.manifest["inputs"]
    assert result.manifest["extra_sources"]["seed_file"].endswith("seed_train.json")
    assert not data.is_stale(settings)  # the recorded extras are re-checked, not forgotten
    assert data.is_stale(settings, seed_file="")


def test_importing_the_cli_stays_light():
    code = "import sys, core.data; bad = [m for m in ('torch', 'transformers', 'streamlit', 'storage') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
