"""A user's own spaced-repetition schedule: desired retention, "optimise my schedule", the coming workload.

The review log the optimiser fits is derived from the user's graded quiz answers in finished
attempts (``core.review.rating_for``: wrong or unanswered -> Again, partly or flagged -> Hard,
right -> Good), one FSRS card per item. Changing the retention or the parameters reschedules the
user's existing cards at once (settings and cards in one transaction), so the workload shown before
saving is the one the user gets. Functions take a keyword-only ``session``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from core import review
from core.review import NotEnoughReviews, Review
from storage import attempts, classes, reviews

__all__ = ["NotEnoughReviews", "ScheduleSettings", "Workload", "optimise", "preview", "review_history",
           "save_retention", "schedule_settings"]

HISTORY_LIMIT = 100_000


@dataclass(frozen=True)
class ScheduleSettings:
    desired_retention: float
    optimised: bool
    optimised_at: datetime | None
    reviews_fitted: int | None
    usable_reviews: int
    """Reviews the optimiser can learn from now (``core.review.optimisable_reviews``)."""
    cards: int

    @property
    def can_optimise(self) -> bool:
        return self.usable_reviews >= review.MIN_REVIEWS_TO_OPTIMISE


@dataclass(frozen=True)
class Workload:
    """Reviews due in the next ``core.review.WORKLOAD_DAYS`` days (overdue included), now and with a change."""

    before: int
    after: int


def review_history(*, session: Session, user_id: int) -> list[Review]:
    """Every graded answer of the user's finished attempts at their finish time, oldest first (unanswered as Again)."""
    finished = attempts.finished_attempts(session=session, user_id=user_id, limit=HISTORY_LIMIT)
    items = attempts.items_by_attempt(session=session, attempt_ids=[a.id for a in finished if a.id is not None])
    out = []
    for attempt in finished:
        for item in items.get(attempt.id or -1, []):
            # The finish time, as the review cards are scheduled then (answers of one sitting are one review each).
            when = attempt.finished_at or item.answered_at
            if when is None:
                continue
            if item.correct is None and item.self_grade is None and item.answered_at is not None:
                continue  # a written answer never graded tells us nothing
            correct = bool(item.correct) if item.correct is not None else item.self_grade == "correct"
            rating = review.rating_for(correct=correct, flagged=item.flagged, partly=item.self_grade == "partly")
            out.append(Review(item_id=item.item_id, rating=rating, reviewed_at=when))
    return sorted(out, key=lambda r: (r.reviewed_at, r.item_id))


def schedule_settings(*, session: Session, user_id: int) -> ScheduleSettings:
    row = classes.get_review_settings(session=session, user_id=user_id)
    logs = review.review_log(review_history(session=session, user_id=user_id))
    return ScheduleSettings(
        desired_retention=row.desired_retention if row else review.DEFAULT_RETENTION,
        optimised=bool(row and row.parameters), optimised_at=row.optimised_at if row else None,
        reviews_fitted=row.reviews_fitted if row else None, usable_reviews=review.optimisable_reviews(logs),
        cards=len(reviews.list_review_cards(session=session, user_id=user_id)),
    )


def _rescheduled(session: Session, user_id: int, scheduler: review.Scheduler,
                 history: Sequence[Review] = ()) -> dict[str, tuple[str, datetime]]:
    by_item: dict[str, list[Review]] = {}
    for r in history:
        by_item.setdefault(r.item_id, []).append(r)
    out = {}
    for row in reviews.list_review_cards(session=session, user_id=user_id):
        try:
            out[row.item_id] = review.reschedule(json.dumps(row.card), scheduler, by_item.get(row.item_id, ()))
        except ValueError:
            continue  # an unreadable card keeps its due time
    return out


def _current(session: Session, user_id: int) -> tuple[float, list[float] | None]:
    row = classes.get_review_settings(session=session, user_id=user_id)
    return (row.desired_retention, row.parameters) if row else (review.DEFAULT_RETENTION, None)


def preview(*, session: Session, user_id: int, desired_retention: float, now: datetime) -> Workload:
    """The coming week's reviews now, and if the retention were ``desired_retention``; ValueError when out of range."""
    _, parameters = _current(session, user_id)
    scheduler = review.scheduler_for(desired_retention, parameters)
    before = [row.due for row in reviews.list_review_cards(session=session, user_id=user_id)]
    after = [due for _, due in _rescheduled(session, user_id, scheduler).values()]
    return Workload(before=review.due_within(before, now), after=review.due_within(after, now))


def save_retention(*, session: Session, user_id: int, desired_retention: float, now: datetime) -> Workload:
    """Set the desired retention and reschedule the user's cards with it; returns the workload change."""
    problems = review.retention_problems(desired_retention)
    if problems:
        raise ValueError(problems[0])
    workload = preview(session=session, user_id=user_id, desired_retention=desired_retention, now=now)
    row = classes.get_review_settings(session=session, user_id=user_id)
    scheduler = review.scheduler_for(desired_retention, row.parameters if row else None)
    cards = {item: (json.loads(card), due) for item, (card, due) in _rescheduled(session, user_id, scheduler).items()}
    reviews.save_schedule(session=session, user_id=user_id, desired_retention=desired_retention,
                          parameters=row.parameters if row else None, optimised_at=row.optimised_at if row else None,
                          reviews_fitted=row.reviews_fitted if row else None, cards=cards)
    return workload


def optimise(*, session: Session, user_id: int, now: datetime) -> Workload:
    """Fit FSRS parameters to the user's own review log and reschedule their cards with them.

    Raises :class:`NotEnoughReviews` (nothing changed) below ``core.review.MIN_REVIEWS_TO_OPTIMISE``.
    """
    history = review_history(session=session, user_id=user_id)
    logs = review.review_log(history)
    parameters = review.optimise_parameters(logs)
    retention, _ = _current(session, user_id)
    scheduler = review.scheduler_for(retention, parameters)
    before = [row.due for row in reviews.list_review_cards(session=session, user_id=user_id)]
    rescheduled = _rescheduled(session, user_id, scheduler, history)
    reviews.save_schedule(session=session, user_id=user_id, desired_retention=retention, parameters=parameters,
                          optimised_at=now, reviews_fitted=review.optimisable_reviews(logs),
                          cards={item: (json.loads(card), due) for item, (card, due) in rescheduled.items()})
    return Workload(before=review.due_within(before, now),
                    after=review.due_within([due for _, due in rescheduled.values()], now))
