"""trainer.dataset: records -> prompt-completion examples through core.prompts, and the evaluation tokenisation."""

from __future__ import annotations

import json
import re

import pytest

from core.prompts import FINAL_ANSWER_MARKER, SYSTEM_PROMPT, parse_completion
from core.records import Record, write_jsonl
from trainer.dataset import (
    DataError,
    drop_overlong,
    encode_example,
    load_examples,
    read_records,
    to_example,
)

from .conftest import build_tiny_tokenizer, make_records


def test_open_record_becomes_a_prompt_completion_example():
    rec = make_records("train", 1, 0)[0]
    ex = to_example(rec)
    assert [m["role"] for m in ex["prompt"]] == ["system", "user"]
    assert ex["prompt"][0]["content"] == SYSTEM_PROMPT
    assert ex["prompt"][1]["content"] == rec.question
    [completion] = ex["completion"]
    assert completion["role"] == "assistant"
    parsed = parse_completion(completion["content"])
    assert parsed.well_formed and parsed.reasoning == rec.reasoning and parsed.answer == rec.answer


def test_mcq_record_shows_options_and_answers_with_letter_and_text():
    rec = make_records("train", 0, 1)[0]
    ex = to_example(rec)
    user = ex["prompt"][1]["content"]
    assert "B. Protamine sulfate" in user and "Options:" in user
    assert ex["completion"][0]["content"].endswith(f"{FINAL_ANSWER_MARKER} B. Protamine sulfate")


def test_context_precedes_the_question():
    rec = Record(id="p:1", source="pubmedqa", license="MIT", question="Does X help?", context="Abstract text.",
                 reasoning="Because.", answer="yes")
    assert to_example(rec)["prompt"][1]["content"] == "Abstract text.\n\nDoes X help?"


def test_records_without_targets_are_counted_not_trained(tmp_path):
    recs = make_records("train", 2, 0) + [Record(id="b:1", source="medqa", license="MIT", question="Q?", kind="mcq",
                                                 options={"A": "x", "B": "y"}, correct="A", answer="x")]
    write_jsonl(tmp_path / "train.jsonl", recs)
    ex = load_examples(tmp_path / "train.jsonl")
    assert len(ex.examples) == 2 and ex.n_records == 3
    assert ex.skipped == {"no reasoning or answer": 1}
    assert len(ex.sha256) == 64


def test_bad_lines_are_reported_with_file_and_line(tmp_path):
    good = json.dumps(make_records("train", 1, 0)[0].to_dict())
    path = tmp_path / "train.jsonl"
    path.write_text(f"{good}\n{{broken\n[1, 2]\n{json.dumps({'question': 'no id'})}\n")
    with pytest.raises(DataError) as info:
        read_records(path)
    text = str(info.value)
    assert "3 bad line(s)" in text
    assert "train.jsonl:2:" in text and "train.jsonl:3:" in text and "train.jsonl:4:" in text


def test_file_without_trainable_records_is_an_error(tmp_path):
    write_jsonl(tmp_path / "t.jsonl", [Record(id="x", source="s", license="l", question="q")])
    with pytest.raises(DataError, match="none of its 1 records"):
        load_examples(tmp_path / "t.jsonl")


def test_encode_example_masks_the_prompt_and_ends_with_end_of_turn(tmp_path):
    tok = build_tiny_tokenizer(tmp_path)
    ex = to_example(make_records("train", 1, 0)[0])
    ids, labels = encode_example(tok, ex, max_len=10_000)
    assert len(ids) == len(labels)
    first = next(i for i, label in enumerate(labels) if label != -100)
    assert all(label == -100 for label in labels[:first])
    prompt_text = tok.decode(ids[:first])
    assert prompt_text.endswith("<|im_start|>assistant\n")
    completion_text = tok.decode(labels[first:])
    assert completion_text == ex["completion"][0]["content"] + "<|im_end|>\n"
    cut_ids, cut_labels = encode_example(tok, ex, max_len=first + 3)
    assert len(cut_ids) == first + 3 and cut_labels[-3:] == labels[first:first + 3]


def test_drop_overlong_leaves_out_long_examples(tmp_path):
    tok = build_tiny_tokenizer(tmp_path)
    write_jsonl(tmp_path / "train.jsonl", make_records("train", 3, 0))
    examples = load_examples(tmp_path / "train.jsonl")
    lengths = sorted(len(encode_example(tok, e, 10_000)[0]) for e in examples.examples)
    kept = drop_overlong(tok, examples, lengths[1])
    assert len(kept.examples) == 2 and kept.skipped == {f"longer than {lengths[1]} tokens": 1}
    with pytest.raises(DataError):
        drop_overlong(tok, examples, lengths[0] - 1)


# -- retrieval-augmented examples (RAFT-style) -------------------------------------------------------


class _FakeIndex:
    """Passages ``p0..p19``; the search returns the record's own passage first, then p0, p1, ..."""

    def __init__(self) -> None:
        from core.retrieval import Passage

        self._passages = [
            Passage(id=f"medquad:x-{n}:1:0", title=f"Topic {n}", focus="", question="", text=f"passage text {n}",
                    site="MedlinePlus", url="https://example.org", license="CC BY 4.0", attribution="MedQuAD")
            for n in range(20)
        ]
        self.Passage = Passage

    def __len__(self) -> int:
        return len(self._passages)

    def passage(self, row: int):
        return self._passages[row]

    def search(self, query: str, *, k: int = 5):
        own = self.Passage(id=f"train:{query}:0", title="Own worked case", focus="", question=query, text="OWN ANSWER",
                           site="x", url="https://example.org", license="x", attribution="x")
        return [own, *self._passages[:k - 1]]


def _raft_records(n: int) -> list[Record]:
    return [Record(id=f"r{i}", source="medical-o1", license="Apache-2.0", question=f"r{i}", reasoning="because", answer="yes")
            for i in range(n)]


def test_raft_references_never_show_a_records_own_passage_and_add_one_distractor():
    from trainer.dataset import raft_references

    context_for = raft_references(_FakeIndex(), fraction=1.0, seed=7)
    for rec in _raft_records(30):
        context = context_for(rec)
        assert "OWN ANSWER" not in context and "Own worked case" not in context
        titles = re.findall(r"^\[\d\] (.*)$", context, flags=re.M)
        assert len(titles) == 3  # the two best other passages and one distractor
        assert {"Topic 0", "Topic 1"} <= set(titles)
        assert context_for(rec) == context  # seeded: the same example every epoch and every run


def test_raft_fraction_picks_a_seeded_share_and_the_examples_carry_the_context(tmp_path):
    from trainer.dataset import raft_references

    records = _raft_records(400)
    picked = [bool(raft_references(_FakeIndex(), fraction=0.5, seed=1)(r)) for r in records]
    assert 150 < sum(picked) < 250
    assert not any(raft_references(_FakeIndex(), fraction=0.0, seed=1)(r) for r in records)
    path = tmp_path / "train.jsonl"
    write_jsonl(path, records)
    examples = load_examples(path, references=raft_references(_FakeIndex(), fraction=0.5, seed=1))
    with_refs = [ex for ex in examples.examples if ex["prompt"][1]["content"].startswith("Context:\n[1] ")]
    assert len(with_refs) == sum(picked)
