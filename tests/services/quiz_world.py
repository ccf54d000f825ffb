"""Shared world of the service tests: the quiz harness bank, a catalog over it, a published set."""

from __future__ import annotations

from sqlmodel import Session

from core.quiz_bank import Bank
from core.quiz_catalog import Catalog
from services import quiz
from storage import quizzes
from storage.models import User
from tests.pages.quiz_harness import BANK

BANK_INDEX = Bank.from_records(BANK)
MCQ = {r.id: r for r in BANK if r.kind == "mcq"}


def catalog(session: Session) -> Catalog:
    return quiz.load_catalog(session=session, bank=BANK_INDEX)


def published_set(session: Session, owner: User, item_ids: list[str], **settings) -> int:
    qs = quizzes.create_quiz_set(session=session, owner_id=owner.id, title="Set", **settings)
    quizzes.set_quiz_set_items(session=session, quiz_set_id=qs.id, item_ids=item_ids)
    quizzes.set_published(session=session, quiz_set_id=qs.id, published=True)
    return qs.id


def load(session: Session, attempt_id: int, user: User) -> quiz.Sitting:
    sitting = quiz.load_sitting(session=session, catalog=catalog(session), attempt_id=attempt_id,
                                        user_id=user.id)
    assert sitting is not None
    return sitting


def wrong(item_id: str) -> str:
    record = MCQ[item_id]
    return next(k for k in record.options if k != record.correct)


