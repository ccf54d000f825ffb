"""Spaced-repetition review cards: one FSRS card per (user, item), stored as ``fsrs.Card.to_dict()``.

Scheduling itself lives in ``core/quiz.py``; this module only stores cards and finds the due ones.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session, col, func, select

from storage import rows
from storage.models import ReviewCard, utcnow


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
