"""Spaced-repetition review cards: one FSRS card per (user, item), stored as ``fsrs.Card.to_dict()``.

Scheduling itself lives in ``core/quiz.py``; this module only stores cards and finds the due ones.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session, col, func, select

from storage import rows
from storage.models import ReviewCard, ReviewSettings, utcnow


def get_review_card(*, session: Session, user_id: int, item_id: str) -> ReviewCard | None:
    return session.exec(select(ReviewCard).where(ReviewCard.user_id == user_id, ReviewCard.item_id == item_id)).first()


def save_review_card(*, session: Session, user_id: int, item_id: str, card: dict[str, Any], due: datetime) -> ReviewCard:
    """Insert or replace the user's card for ``item_id``."""
    row = get_review_card(session=session, user_id=user_id, item_id=item_id)
    if row is None:
        row = ReviewCard(user_id=user_id, item_id=item_id, card={}, due=due)
    row.card = dict(card)
    row.due = due
    row.updated_at = utcnow()
    return rows.save(session, row)


def due_review_cards(
    *, session: Session, user_id: int, now: datetime | None = None, limit: int | None = None
) -> list[ReviewCard]:
    """The user's cards due at ``now`` (default: now), most overdue first."""
    query = (
        select(ReviewCard)
        .where(ReviewCard.user_id == user_id, col(ReviewCard.due) <= (now or utcnow()))
        .order_by(col(ReviewCard.due), col(ReviewCard.id))
    )
    return list(session.exec(query.limit(limit) if limit else query))


def count_due_review_cards(*, session: Session, user_id: int, now: datetime | None = None) -> int:
    query = select(func.count()).select_from(ReviewCard).where(
        ReviewCard.user_id == user_id, col(ReviewCard.due) <= (now or utcnow())
    )
    return session.exec(query).one()


def save_schedule(
    *, session: Session, user_id: int, desired_retention: float, parameters: list[float] | None,
    optimised_at: datetime | None, reviews_fitted: int | None, cards: dict[str, tuple[dict[str, Any], datetime]],
) -> None:
    """New FSRS settings and the user's cards rescheduled under them, in one transaction (all or nothing)."""
    settings = session.get(ReviewSettings, user_id) or ReviewSettings(user_id=user_id)
    settings.desired_retention = float(desired_retention)
    settings.parameters = None if parameters is None else [float(p) for p in parameters]
    settings.optimised_at = optimised_at
    settings.reviews_fitted = reviews_fitted
    settings.updated_at = utcnow()
    session.add(settings)
    existing = {row.item_id: row for row in session.exec(select(ReviewCard).where(ReviewCard.user_id == user_id))}
    for item_id, (card, due) in cards.items():
        row = existing.get(item_id)
        if row is None:
            continue
        row.card, row.due, row.updated_at = dict(card), due, utcnow()
        session.add(row)
    session.commit()


def list_review_cards(*, session: Session, user_id: int) -> list[ReviewCard]:
    return list(session.exec(select(ReviewCard).where(ReviewCard.user_id == user_id).order_by(col(ReviewCard.id))))
