"""The original medical-o1 schema (local JSON/JSONL/Parquet and the hub) and the seed's instruction/input/output schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.datasets import medical_o1, seed
from core.datasets.base import DataError
from core.prompts import FINAL_ANSWER_MARKER
from core.records import Record

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
ORIGINAL_JSON = FIXTURES / "original" / "medical_o1_sft.json"
ORIGINAL_JSONL = FIXTURES / "original" / "medical_o1_sft.jsonl"
SEED_FILE = FIXTURES / "seed" / "seed_train.json"


def original_rows() -> list[dict]:
    return json.loads(ORIGINAL_JSON.read_text(encoding="utf-8"))


def assert_matches_rows(records: list[Record], rows: list[dict]) -> None:
    assert len(records) == len(rows)
    for rec, row in zip(records, rows):
        assert rec.question == row["Question"].strip()
        assert rec.reasoning == row["Complex_CoT"].strip()
        assert rec.answer == row["Response"].strip()
        assert (rec.source, rec.kind, rec.license) == ("medical-o1", "open", "Apache-2.0")


# -- original schema, local files ----------------------------------------------------------------------


def test_original_json_and_jsonl_give_the_same_records():
    from_json = medical_o1.load_original(ORIGINAL_JSON)
    from_jsonl = medical_o1.load_original(str(ORIGINAL_JSONL))
    assert_matches_rows(from_json, original_rows())
    assert [r.id for r in from_json] == [r.id for r in from_jsonl]
    starts = [n for n, line in enumerate(ORIGINAL_JSON.read_text(encoding="utf-8").splitlines(), start=1) if line == "  {"]
    assert [r.origin for r in from_json] == [f"medical_o1_sft.json:{n}" for n in starts]
    assert from_jsonl[2].origin == "medical_o1_sft.jsonl:3"


def test_original_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(original_rows()), path)
    records = medical_o1.load_original(path)
    assert_matches_rows(records, original_rows())
    assert records[0].origin == "train.parquet row 0"


def test_original_folder_reads_every_supported_file(tmp_path):
    (tmp_path / "a.json").write_bytes(ORIGINAL_JSON.read_bytes())
    (tmp_path / "notes.txt").write_text("ignored")
    records = medical_o1.load_original(tmp_path, base=tmp_path.parent)
    assert_matches_rows(records, original_rows())
    assert records[0].origin.startswith(f"{tmp_path.name}/a.json:")


def test_original_ids_match_the_subset_ids():
    # The same question read from the lower-case sample and from the original schema is one record.
    subset_folder = FIXTURES / "data" / medical_o1.SUBSET_FOLDER
    subset = medical_o1.read_subset(subset_folder)
    row = json.loads((subset_folder / "train_data.jsonl").read_text(encoding="utf-8").splitlines()[0])
    original = {"Question": row["question"], "Complex_CoT": row["complex_cot"], "Response": row["response"]}
    [rec] = medical_o1.records_from_rows([(1, original)], "x.jsonl", "x.jsonl")
    assert rec.id == subset[0].id


def test_original_missing_field_names_file_line_and_field(tmp_path):
    rows = original_rows()
    del rows[1]["Complex_CoT"]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(DataError) as err:
        medical_o1.load_original(path)
    assert (err.value.path, err.value.line, err.value.field) == (str(path), 2, "Complex_CoT")


def test_original_missing_local_file_is_an_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        medical_o1.load_original(tmp_path / "nope.parquet")


# -- original schema, the hub (load_dataset replaced by the local fixture) ------------------------------


def test_hub_loader_calls_load_dataset_with_the_release_id(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, *, split=None, **kwargs):
        calls.append((path, name, split))
        return datasets.Dataset.from_json(str(ORIGINAL_JSONL))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    records = medical_o1.load_original("hub")
    assert calls == [("FreedomIntelligence/medical-o1-reasoning-SFT", "en", "train")]
    assert_matches_rows(records, original_rows())
    assert records[0].origin == "hub:FreedomIntelligence/medical-o1-reasoning-SFT/en/train row 0"

    calls.clear()
    medical_o1.load_original("someone/medical-o1-copy")
    assert calls == [("someone/medical-o1-copy", "en", "train")]


def test_hub_failure_becomes_a_data_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"hub:FreedomIntelligence/medical-o1-reasoning-SFT.*no network"):
        medical_o1.load_original("hub")


def test_hub_dataset_without_the_columns_is_an_error(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_list([{"question": "q"}]))
    with pytest.raises(DataError, match="field 'Question'"):
        medical_o1.load_original("hub")


# -- seed schema ---------------------------------------------------------------------------------------


def test_seed_loader_maps_instruction_input_output():
    rows = json.loads(SEED_FILE.read_text(encoding="utf-8"))
    open_rec, mcq_rec, huatuo_rec = seed.load_seed(SEED_FILE)

    assert open_rec.kind == "open" and open_rec.options is None
    assert open_rec.question == rows[0]["instruction"].strip()
    reasoning, answer = rows[0]["output"].rsplit(f"\n\n{FINAL_ANSWER_MARKER} ", 1)
    assert (open_rec.reasoning, open_rec.answer) == (reasoning.strip(), answer.strip())

    assert mcq_rec.kind == "mcq"
    assert list(mcq_rec.options) == list("ABCDE")
    assert mcq_rec.correct == "D" and mcq_rec.answer == f"D. {mcq_rec.options['D']}"
    assert mcq_rec.context == ""

    assert not huatuo_rec.reasoning.startswith("## Thinking")
    assert huatuo_rec.reasoning and huatuo_rec.answer and "## Final Response" not in huatuo_rec.reasoning + huatuo_rec.answer
    assert all(r.source == "seed" and r.origin.startswith("seed_train.json:") for r in (open_rec, mcq_rec, huatuo_rec))


def test_seed_export_round_trips(tmp_path):
    records = seed.load_seed(SEED_FILE)
    out = tmp_path / "export.json"
    assert seed.export_seed(records, out) == 3
    rows = json.loads(out.read_text(encoding="utf-8"))
    assert all(set(r) == {"instruction", "input", "output"} for r in rows)
    assert rows[1]["input"].splitlines()[0].startswith("A. ")
    again = seed.load_seed(out)
    key = lambda r: (r.question, r.options, r.correct, r.reasoning, r.answer, r.kind)  # noqa: E731
    assert [key(r) for r in again] == [key(r) for r in records]


@pytest.mark.parametrize(
    ("output", "reasoning", "answer", "flags"),
    [
        ("Step one.\n\nFinal answer: B", "Step one.", "B", []),
        ("## Thinking\n\nWhy.\n\n## Final Response\n\nBecause.", "Why.", "Because.", []),
        ("Because of this.\n\nThat.", "Because of this.", "That.", []),
        ("Only an answer.", "", "Only an answer.", ["no-reasoning"]),
    ],
)
def test_seed_output_split(tmp_path, output, reasoning, answer, flags):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"instruction": "Q?", "input": "", "output": output}) + "\n", encoding="utf-8")
    [rec] = seed.load_seed(path)
    assert (rec.reasoning, rec.answer, rec.flags) == (reasoning, answer, flags)


def test_seed_answer_by_option_text_and_unmatched_answers(tmp_path):
    rows = [
        {"instruction": "Q1", "input": "A. red\nB. blue", "output": "Think.\n\nFinal answer: blue"},
        {"instruction": "Q2", "input": "A. red\nB. blue", "output": "Think.\n\nFinal answer: green"},
    ]
    path = tmp_path / "s.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    by_text, unmatched = seed.load_seed(path)
    assert (by_text.kind, by_text.correct, by_text.answer) == ("mcq", "B", "B. blue")
    # an answer that names no option keeps the item open-ended; nothing is lost
    assert (unmatched.kind, unmatched.options, unmatched.context, unmatched.answer) == ("open", None, "A. red\nB. blue", "green")


@pytest.mark.parametrize(("row", "field"), [({"instruction": "Q", "input": ""}, "output"), ({"input": "", "output": "x"}, "instruction"), ({"instruction": "Q", "output": 3}, "output")])
def test_seed_malformed_row_names_line_and_field(tmp_path, row, field):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"instruction": "ok", "output": "fine"}) + "\n" + json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        seed.load_seed(path)
    assert (err.value.line, err.value.field) == (2, field)
