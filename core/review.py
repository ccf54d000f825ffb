"""Spaced repetition of missed and flagged quiz items, scheduled with FSRS (the ``fsrs`` package).

A review card is stored as the JSON text of an ``fsrs.Card`` (one per student and item); these
functions take and return that text, so storage keeps a plain string column plus the due time.
Scheduling is deterministic: interval fuzzing is off, so the same history always gives the same
due dates (and tests can assert them).

Outcome -> rating: wrong or unanswered -> Again; correct but flagged, or partly right -> Hard;
correct -> Good. Missed and flagged items enter the queue; an item already in the queue is
rescheduled by every later outcome, including a plain correct answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime

from fsrs import Card, Rating, Scheduler

from core.quiz import ItemResult, as_utc

# Fuzzing draws from the global `random` module; without it a schedule is reproducible.
_SCHEDULER = Scheduler(enable_fuzzing=False)

RATINGS: dict[str, Rating] = {"again": Rating.Again, "hard": Rating.Hard, "good": Rating.Good, "easy": Rating.Easy}


def rating_for(*, correct: bool, flagged: bool = False, partly: bool = False) -> Rating:
    """FSRS rating of a quiz outcome: wrong -> Again, partly or flagged-correct -> Hard, correct -> Good."""
    if partly:
        return Rating.Hard
    if not correct:
        return Rating.Again
    return Rating.Hard if flagged else Rating.Good


def rating_for_result(item: ItemResult) -> Rating:
    """The rating of one scored item (unanswered counts as wrong)."""
    return rating_for(correct=item.is_correct, flagged=item.flagged, partly=0 < item.score < 1)


def needs_review(item: ItemResult) -> bool:
    """Whether an item not yet in the queue should enter it: missed (not fully correct) or flagged."""
    return not item.is_correct or item.flagged


def _to_rating(rating: Rating | str | int) -> Rating:
    if isinstance(rating, Rating):
        return rating
    if isinstance(rating, str):
        try:
            return RATINGS[rating.lower()]
        except KeyError:
            raise ValueError(f"Rating must be one of {list(RATINGS)}, got {rating!r}.") from None
    try:
        return Rating(rating)
    except ValueError:
        raise ValueError(f"Rating must be 1-4 (Again, Hard, Good, Easy), got {rating!r}.") from None


def load_card(card_json: str) -> Card:
    """The fsrs Card stored as ``card_json``; ValueError with a clear message when it is not one."""
    try:
        card = Card.from_json(card_json)
    except (ValueError, TypeError, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"Stored review card is not a valid FSRS card ({exc!r}).") from exc
    card.due = as_utc(card.due)
    if card.last_review is not None:
        card.last_review = as_utc(card.last_review)
    return card


def schedule_review(card_json: str | None, rating: Rating | str | int, now: datetime) -> tuple[str, datetime]:
    """Review a card (None: a new one) with ``rating`` at ``now``; returns (new card JSON, next due, UTC).

    ``rating`` is an ``fsrs.Rating``, its name (``"good"``) or its value (3). A new card's id is
    ``now`` in epoch milliseconds (fsrs's own default, without its clock read and 1 ms sleep).
    """
    now = as_utc(now)
    rating = _to_rating(rating)
    if card_json is None:
        card = Card(card_id=int(now.timestamp() * 1000), due=now)
    else:
        card = load_card(card_json)
    card, _log = _SCHEDULER.review_card(card, rating, review_datetime=now)
    return card.to_json(), as_utc(card.due)


def card_due(card_json: str) -> datetime:
    """When a stored card is next due (UTC)."""
    return load_card(card_json).due


def due_items(cards: Mapping[str, str], now: datetime) -> list[str]:
    """Item ids whose card is due at ``now``, most overdue first (ties by id).

    ``cards`` maps item id -> card JSON. A card that cannot be read is skipped rather than
    blocking the whole queue; :func:`load_card` says what is wrong with it.
    """
    now = as_utc(now)
    due: list[tuple[datetime, str]] = []
    for item_id, card_json in cards.items():
        try:
            when = card_due(card_json)
        except ValueError:
            continue
        if when <= now:
            due.append((when, item_id))
    return [item_id for _, item_id in sorted(due)]


def review_updates(
    items: Iterable[ItemResult], cards: Mapping[str, str], *, now: datetime
) -> dict[str, tuple[str, datetime]]:
    """New (card JSON, due) per item after a submitted attempt, ready to save.

    Items already in the queue (present in ``cards``) are rescheduled whatever the outcome;
    others enter only when :func:`needs_review`. Items not listed in the result are untouched.
    """
    out: dict[str, tuple[str, datetime]] = {}
    for item in items:
        existing = cards.get(item.item_id)
        if existing is None and not needs_review(item):
            continue
        out[item.item_id] = schedule_review(existing, rating_for_result(item), now)
    return out
