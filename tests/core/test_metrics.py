"""core.metrics: the metrics.jsonl writer/reader, ROUGE-L, Wilson intervals and MCQ letter extraction."""

from __future__ import annotations

import json
import math

import pytest

from core.metrics import (
    MetricsWriter,
    accuracy,
    append_metrics,
    extract_choice,
    read_metrics,
    rouge_l,
    wilson_interval,
)

# -- metrics.jsonl -----------------------------------------------------------------------------------


def test_writer_appends_one_flushed_line_per_record(tmp_path):
    path = tmp_path / "metrics.jsonl"
    writer = MetricsWriter(path)
    writer.write({"event": "train", "step": 1, "loss": 2.5})
    # Flushed per line: readable before the writer is closed.
    assert read_metrics(path) == [{"event": "train", "step": 1, "loss": 2.5}]
    writer.write({"event": "train", "step": 2, "loss": 2.0})
    writer.close()
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
    assert path.read_text().count("\n") == 2


def test_reader_tolerates_truncated_last_line_and_missing_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert read_metrics(path) == []
    path.write_text('{"event": "train", "step": 1, "loss": 1.5}\n{"event": "train", "st')
    assert read_metrics(path) == [{"event": "train", "step": 1, "loss": 1.5}]


def test_single_line_file_without_newline(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"event": "train", "step": 1, "loss": 1.5}')
    assert read_metrics(path) == [{"event": "train", "step": 1, "loss": 1.5}]


def test_writer_after_a_torn_line_starts_a_new_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "lo')
    append_metrics(path, {"step": 3})
    assert [r["step"] for r in read_metrics(path)] == [1, 3]


def test_non_finite_numbers_are_written_as_null(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_metrics(path, {"step": 1, "loss": float("nan"), "grad_norm": float("inf")})
    line = path.read_text().strip()
    assert json.loads(line) == {"step": 1, "loss": None, "grad_norm": None}


def test_resume_event_drops_steps_after_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    for step in (1, 2, 3, 4, 5):
        append_metrics(path, {"event": "train", "step": step, "loss": 10 - step})
    append_metrics(path, {"event": "eval", "step": 4, "eval_loss": 3.0})
    append_metrics(path, {"event": "resume", "step": 3})
    for step in (4, 5, 6):
        append_metrics(path, {"event": "train", "step": step, "loss": 1.0})
    effective = read_metrics(path)
    train_steps = [r["step"] for r in effective if r["event"] == "train"]
    assert train_steps == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in effective if r["event"] == "train"][3:] == [1.0, 1.0, 1.0]
    assert not [r for r in effective if r["event"] == "eval"]  # the eval at step 4 was superseded
    assert len(read_metrics(path, raw=True)) == 10


# -- ROUGE-L -----------------------------------------------------------------------------------------


def test_rouge_l_values():
    assert rouge_l("Carcinoma of the pancreas", "Carcinoma of the pancreas") == pytest.approx(1.0)
    assert rouge_l("", "anything") == 0.0
    assert rouge_l("completely unrelated words", "Graves disease") == 0.0
    # LCS "the patient has pneumonia" vs stemmed reference: 2 of 3 / 2 of 4 tokens.
    assert rouge_l("the patient has pneumonia", "Patient had pneumonias") == pytest.approx(4 / 7)


# -- accuracy and Wilson interval ----------------------------------------------------------------------


def test_wilson_interval_known_values():
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(10, 10)
    assert high == pytest.approx(1.0) and low == pytest.approx(0.7225, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(5, 3)


def test_accuracy_counts_and_interval_contains_estimate():
    acc = accuracy([True, False, True, True])
    assert (acc.correct, acc.n, acc.value) == (3, 4, 0.75)
    assert acc.low < 0.75 < acc.high
    assert acc.to_dict()["ci95"] == [acc.low, acc.high]
    assert accuracy([]).value == 0.0


# -- MCQ letter extraction ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("the answer is (C)", "C"),
        ("C.", "C"),
        ("option c", "C"),
        ("Final answer: C - text", "C"),
        ("Reasoning here.\n\nFinal answer: (B) Protamine sulfate", "B"),
        ("**Final answer:** **D**", "D"),
        ("Final answer: Option D: Warfarin", "D"),
        ("Final answer: b) something", "B"),
        ("I think the correct answer is B because heparin is acidic", "B"),
        ("Answer: a", "A"),
        ("The answer is A.", "A"),
        ("c", "C"),
        ("A. Aspirin is wrong, B. maybe.\nSo the best answer is C.", "C"),
        ("Not B... the answer is (D)", "D"),
    ],
)
def test_extract_choice_finds_the_letter(text, expected):
    assert extract_choice(text, "ABCDE") == expected


@pytest.mark.parametrize(
    "text",
    [
        "Final answer: A 45-year-old man with chest pain",  # article, not a choice
        "the answer is a tumour",
        "answer is A because",
        "I am not sure.",
        "",
        "Final answer: Aspirin",  # option text, but no options given
    ],
)
def test_extract_choice_refuses_unclear_text(text):
    assert extract_choice(text, "ABCDE") is None


def test_extract_choice_only_returns_valid_letters():
    assert extract_choice("the answer is (E)", "ABCD") is None
    assert extract_choice("the answer is (E)", ["A", "B", "C", "D", "E"]) == "E"


def test_extract_choice_matches_option_text_on_the_final_line():
    options = {"A": "Vitamin K", "B": "Protamine sulfate", "C": "Naloxone"}
    assert extract_choice("...\nFinal answer: protamine sulfate.", options, options=options) == "B"
    # Two options named on the line: ambiguous unless one is longer (more specific).
    both = {"A": "Vitamin C", "B": "Vitamin C and zinc"}
    assert extract_choice("Final answer: vitamin C and zinc", both, options=both) == "B"
    assert extract_choice("Final answer: naloxone or vitamin k", options, options=options) is None


def test_extract_choice_prefers_the_final_answer_line():
    text = "Option A looks tempting and the answer is not obvious.\n\nFinal answer: C. Naloxone"
    assert extract_choice(text, "ABCD") == "C"


def test_wilson_matches_formula_property():
    for k, n in [(1, 3), (7, 20), (150, 400)]:
        low, high = wilson_interval(k, n)
        p, z = k / n, 1.959964
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        assert (low + high) / 2 == pytest.approx(centre)
        assert not math.isnan(low) and 0 <= low <= p <= high <= 1


QUIZ_OPTIONS = {"A": "Aspirin", "B": "Heparin", "C": "Warfarin", "D": "Clopidogrel", "E": "Alteplase"}


@pytest.mark.parametrize("text", [
    "C", "c", "C.", "c)", "(C)", "[C]", "  C  ", "**C**", "the answer is (C)", "The answer is C.",
    "The correct answer is: C", "option c", "Option C", "choice C", "Answer: C - Warfarin", "Answer: C",
    "Final answer: C", "final answer: (c) Warfarin", "Final answer: Warfarin",
    "Aspirin is tempting, but the answer is C", "B and D are wrong.\n\nFinal answer: C",
    "Final answer: C\nB would be wrong because ...",
])
def test_extract_choice_reads_the_ways_a_student_or_model_names_c(text):
    assert extract_choice(text, "ABCDE", options=QUIZ_OPTIONS) == "C"


@pytest.mark.parametrize("text", [
    "", "   ", "A or B", "A. or B.", "(A) and (C)", "C/D", "the answer is A or B", "C. Heparin", "I don't know",
    "F", "option f", "A patient on anticoagulants", "Final answer:",
])
def test_extract_choice_refuses_ambiguous_or_empty_answers(text):
    assert extract_choice(text, "ABCDE", options=QUIZ_OPTIONS) is None


def test_extract_choice_last_answer_cue_wins():
    assert extract_choice("At first the answer is A.\nOn reflection the answer is D.", "ABCDE") == "D"
