"""A user's FSRS settings (services.review) on SQLite and PostgreSQL: retention reschedules the user's cards
and the workload preview matches what saving does; optimising with too few reviews changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session

from core import review as core_review
from services import quiz, review
from storage import classes, reviews
from tests.services.quiz_world import MCQ, catalog, wrong

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def _sit(session: Session, user, item_ids: list[str], *, right: bool, now: datetime) -> None:
    attempt_id = quiz.start_ad_hoc(session=session, catalog=catalog(session), user_id=user.id,
                                   spec=quiz.AdHocSpec(n=len(item_ids), sources=["medqa"], seed=1))
    sitting = quiz.load_sitting(session=session, catalog=catalog(session), attempt_id=attempt_id, user_id=user.id)
    for item in sitting.items:
        choice = item.record.correct if right else wrong(item.record.id)
        quiz.choose(session=session, catalog=catalog(session), attempt_id=attempt_id, user_id=user.id,
                    position=item.position, choice=choice, now=now)
    quiz.submit(session=session, catalog=catalog(session), attempt_id=attempt_id, user_id=user.id, now=now)


def test_retention_reschedules_cards_and_the_preview_matches(session: Session, make_user) -> None:
    ann = make_user("ann")
    medqa = [i for i in MCQ if i.startswith("medqa:")]
    _sit(session, ann, medqa, right=False, now=T0)  # all missed: into the queue
    for day in (1, 4):
        _sit(session, ann, medqa, right=True, now=T0 + timedelta(days=day))  # then learnt: review state
    settings = review.schedule_settings(session=session, user_id=ann.id)
    assert (settings.desired_retention, settings.optimised, settings.cards) == (0.9, False, len(medqa))
    assert settings.usable_reviews == 2 * len(medqa) and not settings.can_optimise
    before = {c.item_id: c.due for c in reviews.list_review_cards(session=session, user_id=ann.id)}
    now = T0 + timedelta(days=4, hours=1)

    low = review.preview(session=session, user_id=ann.id, desired_retention=0.70, now=now)
    high = review.preview(session=session, user_id=ann.id, desired_retention=0.97, now=now)
    assert high.before == low.before and high.after >= low.after
    saved = review.save_retention(session=session, user_id=ann.id, desired_retention=0.97, now=now)
    assert saved == high
    after = {c.item_id: c.due for c in reviews.list_review_cards(session=session, user_id=ann.id)}
    assert all(after[i] < before[i] for i in before)  # higher retention: every card comes back sooner
    assert classes.get_review_settings(session=session, user_id=ann.id).desired_retention == 0.97
    # The next review is scheduled with the user's retention too.
    assert quiz.user_scheduler(session=session, user_id=ann.id).desired_retention == 0.97

    with pytest.raises(ValueError, match="between 0.70 and 0.97"):
        review.save_retention(session=session, user_id=ann.id, desired_retention=0.99, now=now)
    assert classes.get_review_settings(session=session, user_id=ann.id).desired_retention == 0.97


def test_optimising_with_too_few_reviews_says_so_and_changes_nothing(session: Session, make_user) -> None:
    ann = make_user("ann")
    _sit(session, ann, ["medqa:q1"], right=False, now=T0)
    cards = {c.item_id: c.due for c in reviews.list_review_cards(session=session, user_id=ann.id)}
    with pytest.raises(review.NotEnoughReviews, match=f"at least {core_review.MIN_REVIEWS_TO_OPTIMISE}"):
        review.optimise(session=session, user_id=ann.id, now=T0)
    assert classes.get_review_settings(session=session, user_id=ann.id) is None
    assert {c.item_id: c.due for c in reviews.list_review_cards(session=session, user_id=ann.id)} == cards
