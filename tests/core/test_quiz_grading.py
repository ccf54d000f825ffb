"""Grading: letter parsing of free text, MCQ grading, ROUGE-L and self-grades (core.quiz)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.quiz import grade_mcq, parse_choice, self_grade_score
from core.records import Record

LETTERS = "ABCDE"
OPTIONS = {"A": "Aspirin", "B": "Heparin", "C": "Warfarin", "D": "Clopidogrel", "E": "Alteplase"}


@pytest.mark.parametrize(
    "text",
    [
        "C",
        "c",
        "C.",
        "c)",
        "(C)",
        "[C]",
        "  C  ",
        "**C**",
        "the answer is (C)",
        "The answer is C.",
        "The correct answer is: C",
        "option c",
        "Option C",
        "choice C",
        "Answer: C - Warfarin",
        "Answer: C",
        "Final answer: C",
        "final answer: (c) Warfarin",
        "C. Warfarin",
        "(C) Warfarin",
        "Warfarin",
        "warfarin.",
        "Final answer: Warfarin",
        "I think C is right",
        "Aspirin is tempting, but the answer is C",
        "B and D are wrong.\n\nFinal answer: C",
        "Final answer: C\nB would be wrong because ...",
    ],
)
def test_parses_c(text):
    assert parse_choice(text, LETTERS, options=OPTIONS) == "C"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "A or B",
        "A. or B.",
        "(A) and (C)",
        "C/D",
        "option B or option C",
        "the answer is A or B",
        "C. Heparin",  # the letter and the text name different options
        "I don't know",
        "F",  # not an option here
        "option f",
        "A patient on anticoagulants",  # 'A' as an article, nothing chosen
        "Final answer:",
    ],
)
def test_refuses_ambiguous_or_empty(text):
    assert parse_choice(text, LETTERS, options=OPTIONS) is None


def test_option_text_needs_the_options():
    assert parse_choice("Warfarin", LETTERS) is None
    assert parse_choice("Warfarin", LETTERS, options=OPTIONS) == "C"


def test_last_answer_marker_wins():
    text = "At first the answer is A.\nOn reflection the answer is D."
    assert parse_choice(text, LETTERS) == "D"


def test_letters_limit_what_counts_and_keys_are_returned_as_given():
    assert parse_choice("E", "ABCD") is None
    assert parse_choice("b", ["A", "B", "C"]) == "B"
    yes_no = {"A": "yes", "B": "no", "C": "maybe"}
    assert parse_choice("Yes.", yes_no, options=yes_no) == "A"


def test_bad_letters_are_a_programming_error():
    with pytest.raises(ValueError, match="single letters"):
        parse_choice("A", ["AB"])


def test_non_text_gives_none():
    assert parse_choice(None, LETTERS) is None  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_never_crashes_and_only_returns_a_given_letter(text):
    got = parse_choice(text, LETTERS, options=OPTIONS)
    assert got is None or got in LETTERS


@settings(max_examples=200, deadline=None)
@given(
    letter=st.sampled_from(LETTERS),
    lower=st.booleans(),
    form=st.sampled_from(["{}", "({})", "{}.", "Final answer: {}", "the answer is ({})", "option {}"]),
)
def test_every_plain_form_of_every_letter(letter, lower, form):
    shown = letter.lower() if lower else letter
    assert parse_choice(form.format(shown), LETTERS) == letter


@settings(max_examples=100, deadline=None)
@given(a=st.sampled_from(LETTERS), b=st.sampled_from(LETTERS), joiner=st.sampled_from([" or ", " / ", " and "]))
def test_two_different_letters_are_ambiguous(a, b, joiner):
    got = parse_choice(f"{a}{joiner}{b}", LETTERS)
    assert got == (a if a == b else None)


def _mcq(correct: str = "C") -> Record:
    return Record(id="t:1", source="t", license="MIT", question="q", kind="mcq", options=OPTIONS, correct=correct)


def test_grade_mcq():
    rec = _mcq()
    assert grade_mcq(rec, "C") and grade_mcq(rec, "c") and grade_mcq(rec, " C ")
    assert not grade_mcq(rec, "B")
    assert not grade_mcq(rec, None) and not grade_mcq(rec, "")


def test_grade_mcq_refuses_open_items():
    with pytest.raises(ValueError, match="not a multiple-choice"):
        grade_mcq(Record(id="t:2", source="t", license="MIT", question="q"), "A")


def test_self_grade_scores():
    assert [self_grade_score(g) for g in ("correct", "partly", "wrong")] == [1.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="correct"):
        self_grade_score("maybe")
