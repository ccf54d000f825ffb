"""A user's own FSRS schedule (core.review): retention range, fitting parameters to a synthetic review log
with fsrs's optimizer, and due dates that move as the desired retention says."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from fsrs import Card, Rating, State

from core import review
from core.review import NotEnoughReviews, Review

START = datetime(2026, 1, 1, tzinfo=UTC)


def synthetic_history(n_cards: int = 110, reviews_each: int = 7, seed: int = 7) -> list[Review]:
    """A learner who forgets 20% of the time, reviewing each card when the default scheduler says."""
    rng = random.Random(seed)
    scheduler = review.scheduler_for()
    out = []
    for c in range(n_cards):
        item = f"synthetic:{c}"
        card = Card(card_id=review.card_id_for(item), due=START + timedelta(days=c % 20))
        when = card.due
        for _ in range(reviews_each):
            rating = Rating.Again if rng.random() < 0.2 else Rating.Good
            out.append(Review(item, rating, when))
            card, _ = scheduler.review_card(card, rating, review_datetime=when)
            when = max(card.due, when + timedelta(days=1))
    return out


def test_retention_range_is_checked() -> None:
    assert review.retention_problems(0.70) == [] and review.retention_problems(0.97) == []
    for bad in (0.69, 0.98, 1.5, -1):
        assert review.retention_problems(bad) == ["Desired retention must be between 0.70 and 0.97."]
        with pytest.raises(ValueError, match="between 0.70 and 0.97"):
            review.scheduler_for(bad)


def test_card_ids_are_stable_and_positive() -> None:
    assert review.card_id_for("medqa:q1") == review.card_id_for("medqa:q1") != review.card_id_for("medqa:q2")
    assert 0 < review.card_id_for("medqa:q1") < 2**63


def test_too_few_reviews_are_refused_with_the_count() -> None:
    logs = review.review_log(synthetic_history(n_cards=10, reviews_each=4))
    usable = review.optimisable_reviews(logs)
    assert usable == 30  # every review after a card's first is at least a day later
    with pytest.raises(NotEnoughReviews, match=f"at least 512 .* you have {usable}"):
        review.optimise_parameters(logs)


@pytest.mark.slow
def test_fitted_parameters_schedule_and_retention_moves_due_dates() -> None:
    history = synthetic_history()
    logs = review.review_log(history)
    assert review.optimisable_reviews(logs) >= review.MIN_REVIEWS_TO_OPTIMISE
    fitted = review.optimise_parameters(logs)
    default = list(review.scheduler_for().parameters)
    assert len(fitted) == len(default) and fitted != default  # the optimizer really fitted something

    # A well-learnt card of the log (its last three answers right), replayed under the fitted parameters.
    by_item: dict[str, list[Review]] = {}
    for r in history:
        by_item.setdefault(r.item_id, []).append(r)
    item = next(i for i, rs in sorted(by_item.items()) if all(r.rating == Rating.Good for r in rs[-3:]))
    mine = by_item[item]
    base, _ = review.schedule_review(None, "good", mine[0].reviewed_at)
    dues = {}
    for retention in (0.70, 0.9, 0.97):
        card_json, due = review.reschedule(base, review.scheduler_for(retention, fitted), mine)
        assert review.load_card(card_json).state == State.Review
        dues[retention] = due
    last = max(r.reviewed_at for r in mine)
    assert all(due > last for due in dues.values())
    assert dues[0.97] < dues[0.9] < dues[0.70]  # wanting to remember more means reviewing sooner


def test_retention_reschedules_a_review_card_from_its_stability() -> None:
    card_json, _ = review.schedule_review(None, "good", START)
    card_json, due_default = review.schedule_review(card_json, "good", START + timedelta(days=3))
    assert review.load_card(card_json).state == State.Review
    _, due_high = review.reschedule(card_json, review.scheduler_for(0.97))
    _, due_low = review.reschedule(card_json, review.scheduler_for(0.70))
    assert due_high < due_default < due_low
    learning, due = review.schedule_review(None, "again", START)  # still in learning steps: left alone
    assert review.reschedule(learning, review.scheduler_for(0.70))[1] == due
    assert review.due_within([START, START + timedelta(days=6), START + timedelta(days=8)], START) == 2
    assert json.loads(card_json)["card_id"] == review.load_card(card_json).card_id
