"""Grading: MCQ grading and self-grades (core.quiz); letters in free text are core.metrics.extract_choice's."""

from __future__ import annotations

import pytest

from core.quiz import grade_mcq, self_grade_score
from core.records import Record

OPTIONS = {"A": "Aspirin", "B": "Heparin", "C": "Warfarin", "D": "Clopidogrel", "E": "Alteplase"}


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
