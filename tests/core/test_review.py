"""FSRS spaced-repetition scheduling of missed and flagged items (core.review)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from fsrs import Rating

from core.quiz import Answer, score_attempt
from core.records import Record
from core.review import (
    card_due,
    due_items,
    load_card,
    needs_review,
    rating_for,
    review_updates,
    schedule_review,
)

NOW = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)


def test_outcomes_map_to_ratings():
    assert rating_for(correct=False) is Rating.Again
    assert rating_for(correct=False, flagged=True) is Rating.Again
    assert rating_for(correct=True, flagged=True) is Rating.Hard
    assert rating_for(correct=True) is Rating.Good
    assert rating_for(correct=False, partly=True) is Rating.Hard


def test_new_card_json_round_trips_and_due_is_after_now():
    card_json, due = schedule_review(None, Rating.Good, NOW)
    data = json.loads(card_json)
    assert data["card_id"] == int(NOW.timestamp() * 1000)
    assert due > NOW and due.tzinfo is not None
    assert card_due(card_json) == due


def test_again_comes_back_sooner_than_good():
    _, due_again = schedule_review(None, Rating.Again, NOW)
    _, due_hard = schedule_review(None, Rating.Hard, NOW)
    _, due_good = schedule_review(None, Rating.Good, NOW)
    assert NOW < due_again < due_hard < due_good


def test_good_reviews_push_the_due_date_further_each_time():
    card, due = schedule_review(None, "good", NOW)
    intervals = []
    for _ in range(5):
        now = due
        card, due = schedule_review(card, "good", now)
        intervals.append(due - now)
    assert all(b > a for a, b in zip(intervals, intervals[1:]))
    assert intervals[-1] > timedelta(days=30)


def test_again_after_good_reviews_resets_to_a_short_interval():
    card, due = schedule_review(None, Rating.Good, NOW)
    for _ in range(3):
        card, due = schedule_review(card, Rating.Good, due)
    good_card, good_due = schedule_review(card, Rating.Good, due)
    _, again_due = schedule_review(card, Rating.Again, due)
    assert again_due - due < timedelta(days=1) < good_due - due
    assert good_card != card


def test_scheduling_is_deterministic():
    runs = []
    for _ in range(2):
        card, due = schedule_review(None, 3, NOW)
        for _ in range(4):
            card, due = schedule_review(card, 3, due)
        runs.append((card, due))
    assert runs[0] == runs[1]


def test_naive_now_is_utc():
    _, aware = schedule_review(None, Rating.Again, NOW)
    _, naive = schedule_review(None, Rating.Again, NOW.replace(tzinfo=None))
    assert aware == naive


def test_bad_rating_and_bad_card_are_clear_errors():
    with pytest.raises(ValueError, match="again"):
        schedule_review(None, "perfect", NOW)
    with pytest.raises(ValueError, match="1-4"):
        schedule_review(None, 7, NOW)
    with pytest.raises(ValueError, match="not a valid FSRS card"):
        load_card("{not json")
    with pytest.raises(ValueError, match="not a valid FSRS card"):
        load_card('{"card_id": 1}')


def test_due_items_most_overdue_first_and_skips_unreadable_cards():
    a, due_a = schedule_review(None, Rating.Again, NOW)  # +1 min
    g, due_g = schedule_review(None, Rating.Good, NOW)  # +10 min
    cards = {"item-g": g, "item-a": a, "broken": "oops"}
    assert due_items(cards, NOW) == []
    assert due_items(cards, due_a) == ["item-a"]
    assert due_items(cards, NOW + timedelta(days=1)) == ["item-a", "item-g"]


OPTS = {"A": "a", "B": "b"}
ITEMS = [
    Record(id=f"t:{i}", source="t", license="MIT", question=f"q{i}", kind="mcq", options=OPTS, correct="A")
    for i in range(4)
]


def test_review_updates_after_an_attempt():
    # t:0 right, t:1 wrong, t:2 right but flagged, t:3 right and already in the queue
    answers = [
        Answer("t:0", choice="A"),
        Answer("t:1", choice="B"),
        Answer("t:2", choice="A", flagged=True),
        Answer("t:3", choice="A"),
    ]
    result = score_attempt(ITEMS, answers)
    assert [needs_review(r) for r in result.items] == [False, True, True, False]
    old_card, old_due = schedule_review(None, Rating.Again, NOW - timedelta(days=2))
    updates = review_updates(result.items, {"t:3": old_card}, now=NOW)
    assert set(updates) == {"t:1", "t:2", "t:3"}
    _, due_wrong = updates["t:1"]
    _, due_flagged = updates["t:2"]
    assert due_wrong < due_flagged  # Again sooner than Hard
    card3, due3 = updates["t:3"]
    assert due3 > NOW > old_due and json.loads(card3)["card_id"] == json.loads(old_card)["card_id"]
