"""Spaced repetition of missed and flagged quiz items, scheduled with FSRS (the ``fsrs`` package).

A review card is stored as the JSON text of an ``fsrs.Card`` (one per student and item); these
functions take and return that text, so storage keeps a plain string column plus the due time.
Scheduling is deterministic: interval fuzzing is off, so the same history always gives the same
due dates (and tests can assert them).

Outcome -> rating: wrong or unanswered -> Again; correct but flagged, or partly right -> Hard;
correct -> Good. Missed and flagged items enter the queue; an item already in the queue is
rescheduled by every later outcome, including a plain correct answer.

Each user may set a desired retention (:data:`RETENTION_RANGE`) and fit FSRS parameters to their own
review log (:func:`optimise_parameters`, fsrs's optimizer, which needs torch); :func:`scheduler_for`
builds the scheduler from those settings. The review log is derived from the user's graded quiz
answers (:func:`review_log`), one FSRS card id per item.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from fsrs import Card, Rating, ReviewLog, Scheduler, State

from core.quiz import ItemResult, as_utc

# Fuzzing draws from the global `random` module; without it a schedule is reproducible.
_SCHEDULER = Scheduler(enable_fuzzing=False)

RETENTION_RANGE = (0.70, 0.97)
"""Desired retention a user may choose (Anki's range); fsrs's default is 0.9."""
DEFAULT_RETENTION = 0.9
MIN_REVIEWS_TO_OPTIMISE = 512
"""fsrs's optimizer keeps its default parameters below one mini-batch (512) of reviews made at least a
day after the card's previous review; :func:`optimisable_reviews` counts them the same way."""
WORKLOAD_DAYS = 7


def retention_problems(desired_retention: float) -> list[str]:
    low, high = RETENTION_RANGE
    if not isinstance(desired_retention, (int, float)) or not low <= float(desired_retention) <= high:
        return [f"Desired retention must be between {low:.2f} and {high:.2f}."]
    return []


def scheduler_for(desired_retention: float = DEFAULT_RETENTION, parameters: Sequence[float] | None = None) -> Scheduler:
    """A deterministic scheduler (no fuzzing) for a user's retention and (fitted) parameters."""
    problems = retention_problems(desired_retention)
    if problems:
        raise ValueError(problems[0])
    if parameters is None:
        return Scheduler(desired_retention=float(desired_retention), enable_fuzzing=False)
    return Scheduler(parameters=tuple(float(p) for p in parameters), desired_retention=float(desired_retention),
                     enable_fuzzing=False)

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


def schedule_review(card_json: str | None, rating: Rating | str | int, now: datetime,
                    scheduler: Scheduler | None = None) -> tuple[str, datetime]:
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
    card, _log = (scheduler or _SCHEDULER).review_card(card, rating, review_datetime=now)
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
    items: Iterable[ItemResult], cards: Mapping[str, str], *, now: datetime, scheduler: Scheduler | None = None
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
        out[item.item_id] = schedule_review(existing, rating_for_result(item), now, scheduler)
    return out


# -- a user's own schedule: review log, optimiser, retention --------------------------------------------------------


def card_id_for(item_id: str) -> int:
    """A stable positive FSRS card id for an item (the first 8 bytes of its SHA-256, 63 bits)."""
    return int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:8], "big") >> 1


@dataclass(frozen=True)
class Review:
    """One graded answer of the user's, as the optimiser sees it."""

    item_id: str
    rating: Rating
    reviewed_at: datetime


def review_log(reviews: Iterable[Review]) -> list[ReviewLog]:
    """fsrs ``ReviewLog`` objects for ``reviews`` (card id per item, times in UTC)."""
    return [ReviewLog(card_id=card_id_for(r.item_id), rating=r.rating, review_datetime=as_utc(r.reviewed_at),
                      review_duration=None) for r in reviews]


def optimisable_reviews(logs: Iterable[ReviewLog]) -> int:
    """Reviews that teach the optimiser something: at least a whole day after the card's previous review."""
    by_card: dict[int, list[datetime]] = {}
    for log in logs:
        by_card.setdefault(log.card_id, []).append(as_utc(log.review_datetime))
    count = 0
    for times in by_card.values():
        times.sort()
        count += sum(1 for before, after in zip(times, times[1:]) if (after - before).days > 0)
    return count


class NotEnoughReviews(ValueError):
    """Too few reviews to fit parameters; the message says how many there are and how many are needed."""


def optimise_parameters(logs: Sequence[ReviewLog]) -> list[float]:
    """FSRS parameters fitted to ``logs`` with fsrs's optimizer (torch); :class:`NotEnoughReviews` below the minimum."""
    usable = optimisable_reviews(logs)
    if usable < MIN_REVIEWS_TO_OPTIMISE:
        raise NotEnoughReviews(
            f"Optimising needs at least {MIN_REVIEWS_TO_OPTIMISE} reviews made a day or more after the previous "
            f"review of the same question; you have {usable}. Keep reviewing and try again later.")
    from fsrs import Optimizer  # imports torch: only when optimising

    return [float(p) for p in Optimizer(list(logs)).compute_optimal_parameters()]


def reschedule(card_json: str, scheduler: Scheduler, item_reviews: Sequence[Review] = ()) -> tuple[str, datetime]:
    """The card as ``scheduler`` would have scheduled it: replayed from the item's ``item_reviews`` when
    given, else its next interval recomputed from its stability (review-state cards; cards in learning
    steps keep their due time)."""
    card = load_card(card_json)
    own = [ReviewLog(card_id=card.card_id, rating=r.rating, review_datetime=as_utc(r.reviewed_at), review_duration=None)
           for r in item_reviews]
    if own:
        card = scheduler.reschedule_card(card, own)
        card.due = as_utc(card.due)
    elif card.state == State.Review and card.stability is not None and card.last_review is not None:
        card.due = as_utc(card.last_review) + timedelta(days=scheduler._next_interval(stability=card.stability))
    return card.to_json(), as_utc(card.due)


def due_within(dues: Iterable[datetime], now: datetime, days: int = WORKLOAD_DAYS) -> int:
    """How many of ``dues`` fall before ``now + days`` (overdue ones included): the coming workload."""
    end = as_utc(now) + timedelta(days=days)
    return sum(1 for due in dues if as_utc(due) < end)
