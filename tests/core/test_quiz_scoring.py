"""Attempt scoring and per-quiz analytics on hand-checked examples (core.quiz)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from core.quiz import Answer, quiz_analytics, score_attempt
from core.records import Record

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)
OPTS = {"A": "a", "B": "b", "C": "c", "D": "d"}


def mcq(i: int, correct: str = "A", subject: str = "", source: str = "medqa") -> Record:
    return Record(
        id=f"t:{i}", source=source, license="MIT", question=f"q{i}", kind="mcq",
        options=OPTS, correct=correct, answer=OPTS[correct], subject=subject,
    )


def open_item(i: int, subject: str = "") -> Record:
    return Record(
        id=f"t:{i}", source="medical-o1", license="Apache-2.0", question=f"q{i}", answer="ref", subject=subject
    )


ITEMS = [
    mcq(1, "A", "Cardiology"),
    mcq(2, "B", "Cardiology"),
    mcq(3, "C", "Anatomy", source="medmcqa"),
    mcq(4, "D", "", source="mmlu"),
    open_item(5, "Cardiology"),
]


def test_score_attempt_by_hand():
    answers = [
        Answer("t:1", choice="A"),  # right
        Answer("t:2", choice="C", flagged=True),  # wrong
        Answer("t:3", choice="c"),  # right (case-insensitive)
        # t:4 unanswered
        Answer("t:5", text="my answer", self_grade="partly"),
        Answer("t:99", choice="A"),  # not in this attempt: ignored
    ]
    res = score_attempt(
        ITEMS, answers, started_at=T0, finished_at=T0 + timedelta(seconds=754), passing_score=60
    )
    assert res.raw_score == 2.5 and res.n_items == 5
    assert res.percent == pytest.approx(50.0)
    assert res.passed is False and res.passing_score == 60
    assert res.time_taken_s == 754
    assert [r.item_id for r in res.wrong] == ["t:2", "t:4", "t:5"]
    assert [r.item_id for r in res.unanswered] == ["t:4"]
    assert res.items[1].flagged and res.items[1].chosen == "C" and res.items[1].correct_key == "B"
    # Cardiology: t:1 (1) + t:2 (0) + t:5 (0.5) = 1.5 of 3
    assert res.by_subject["Cardiology"].score == 1.5 and res.by_subject["Cardiology"].n == 3
    assert res.by_subject["Cardiology"].percent == pytest.approx(50.0)
    assert res.by_subject[""].percent == 0.0
    assert res.by_source["medmcqa"].percent == 100.0
    assert list(res.by_source) == ["medical-o1", "medmcqa", "medqa", "mmlu"]


def test_answers_may_be_a_mapping_and_pass_at_exactly_the_passing_score():
    answers = {"t:1": Answer("t:1", choice="A"), "t:2": Answer("t:2", choice="B")}
    res = score_attempt(ITEMS[:4], answers, passing_score=50)
    assert res.percent == 50 and res.passed is True


def test_no_passing_score_no_verdict_and_no_times_no_duration():
    res = score_attempt(ITEMS[:1], [])
    assert res.passed is None and res.time_taken_s is None and res.percent == 0


def test_time_taken_is_capped_at_the_limit():
    res = score_attempt(
        ITEMS[:1], [], started_at=T0, finished_at=T0 + timedelta(hours=2), time_limit_s=600
    )
    assert res.time_taken_s == 600


def test_open_item_answered_but_not_self_graded_is_ungraded_and_scores_zero():
    res = score_attempt([ITEMS[4]], [Answer("t:5", text="epinephrine")])
    assert res.items[0].answered and res.raw_score == 0
    assert [r.item_id for r in res.ungraded] == ["t:5"]
    graded = score_attempt([ITEMS[4]], [Answer("t:5", text="epinephrine", self_grade="wrong")])
    assert graded.ungraded == [] and graded.raw_score == 0


def test_duplicate_items_and_bad_passing_score_are_refused():
    with pytest.raises(ValueError, match="more than once"):
        score_attempt([ITEMS[0], ITEMS[0]], [])
    with pytest.raises(ValueError, match="0-100"):
        score_attempt(ITEMS, [], passing_score=120)


# ---------------------------------------------------------------- analytics

QUIZ = [mcq(1, "A"), mcq(2, "A"), mcq(3, "A"), mcq(4, "A")]
# Item vectors (1 = right) of six attempts, hand-ranked below.
VECTORS = [
    [1, 1, 1, 1],  # 100
    [1, 1, 1, 0],  # 75
    [1, 0, 1, 0],  # 50
    [1, 1, 0, 0],  # 50
    [0, 1, 0, 0],  # 25
    [0, 0, 0, 0],  # 0
]


def attempt(vector):
    answers = [Answer(item.id, choice="A" if ok else "B") for item, ok in zip(QUIZ, vector)]
    return score_attempt(QUIZ, answers)


def test_analytics_by_hand():
    results = [attempt(v) for v in VECTORS]
    an = quiz_analytics(results, passing_score=50)
    assert an.attempts == 6
    assert an.mean_percent == pytest.approx(50.0)  # (100+75+50+50+25+0)/6
    assert an.pass_rate == pytest.approx(4 / 6)
    # k = round(0.27 * 6) = 2: upper = attempts 1 and 2, lower = attempts 5 and 6
    assert an.group_size == 2
    got = {s.item_id: s for s in an.items}
    assert [s.item_id for s in an.items] == ["t:1", "t:2", "t:3", "t:4"]
    assert got["t:1"].percent_correct == pytest.approx(100 * 4 / 6)
    assert got["t:3"].percent_correct == pytest.approx(50.0)
    assert got["t:4"].percent_correct == pytest.approx(100 / 6)
    assert got["t:1"].discrimination == pytest.approx(1.0)  # 2/2 - 0/2
    assert got["t:2"].discrimination == pytest.approx(0.5)  # 2/2 - 1/2
    assert got["t:3"].discrimination == pytest.approx(1.0)
    assert got["t:4"].discrimination == pytest.approx(0.5)  # 1/2 - 0/2
    assert all(s.attempts == 6 for s in an.items)


def test_negative_discrimination_when_weaker_students_do_better():
    vectors = [[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]]
    an = quiz_analytics([attempt(v) for v in vectors])
    assert an.items[3].discrimination == pytest.approx(-1.0)
    assert an.pass_rate is None


def test_too_few_attempts_give_no_discrimination():
    results = [attempt(v) for v in VECTORS[:4]]
    an = quiz_analytics(results)
    assert an.group_size is None and all(s.discrimination is None for s in an.items)
    assert an.items[0].percent_correct == 100.0
    # the threshold is a parameter: two attempts make groups of one
    two = quiz_analytics([attempt(VECTORS[0]), attempt(VECTORS[5])], min_attempts=2)
    assert two.group_size == 1 and two.items[0].discrimination == 1.0


def test_no_attempts():
    an = quiz_analytics([], passing_score=70, item_ids=["t:1"])
    assert an.attempts == 0 and an.mean_percent is None and an.pass_rate is None
    assert an.items[0].percent_correct is None and an.items[0].attempts == 0


def test_partly_counts_half_and_items_missing_from_some_attempts():
    item = open_item(5)
    res_a = score_attempt([QUIZ[0], item], [Answer("t:1", choice="A"), Answer("t:5", text="x", self_grade="partly")])
    res_b = score_attempt([QUIZ[0]], [Answer("t:1", choice="B")])
    an = quiz_analytics([res_a, res_b], item_ids=["t:1", "t:5"])
    assert an.items[0].percent_correct == 50.0 and an.items[0].attempts == 2
    assert an.items[1].percent_correct == 50.0 and an.items[1].attempts == 1
