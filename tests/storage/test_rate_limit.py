"""The hourly generation limit: counting, the message, and that deleting history does not reset it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlmodel import Session

from storage import history, rate_limit

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def test_record_and_count(session: Session, make_user) -> None:
    a, b = make_user("ann"), make_user("ben")
    event = rate_limit.record_generation(session=session, user_id=a.id, kind="quiz_explanation", at=NOW)
    assert event.id is not None and event.kind == "quiz_explanation" and event.created_at == NOW
    rate_limit.record_generation(session=session, user_id=a.id, at=NOW - timedelta(minutes=90))
    rate_limit.record_generation(session=session, user_id=b.id, at=NOW)
    assert rate_limit.count_generations(session=session, user_id=a.id, since=NOW - timedelta(hours=1)) == 1
    assert rate_limit.count_generations(session=session, user_id=a.id, since=NOW - timedelta(hours=2)) == 2


def test_limit_reached_says_when_it_frees_up(session: Session, make_user) -> None:
    user = make_user("ann")
    for minutes_ago in (50, 30, 10):
        rate_limit.record_generation(session=session, user_id=user.id, at=NOW - timedelta(minutes=minutes_ago))
    assert rate_limit.check_generation_allowed(session=session, user_id=user.id, limit_per_hour=4, now=NOW) == (True, "")
    allowed, message = rate_limit.check_generation_allowed(session=session, user_id=user.id, limit_per_hour=3, now=NOW)
    assert not allowed
    assert "limit of 3 generations per hour" in message and "about 10 minutes" in message
    allowed, message = rate_limit.check_generation_allowed(session=session, user_id=user.id, limit_per_hour=2, now=NOW)
    assert not allowed and "about 30 minutes" in message
    # Once the oldest one leaves the window, one more is allowed again.
    later = NOW + timedelta(minutes=11)
    assert rate_limit.check_generation_allowed(session=session, user_id=user.id, limit_per_hour=3, now=later)[0]


def test_zero_means_no_limit(session: Session, make_user) -> None:
    user = make_user("ann")
    rate_limit.record_generation(session=session, user_id=user.id, at=NOW)
    assert rate_limit.check_generation_allowed(session=session, user_id=user.id, limit_per_hour=0, now=NOW) == (True, "")


def test_deleting_history_does_not_give_generations_back(session: Session, make_user) -> None:
    user = make_user("ann")
    run = history.save_case_run(session=session, user_id=user.id, case_text="c", reasoning="r", answer="a",
                                base_model="embedded", adapter="")
    assert not rate_limit.check_generation_allowed(session=session, user_id=user.id, limit_per_hour=1)[0]
    history.delete_case_run(session=session, run_id=run.id)
    allowed, message = rate_limit.check_generation_allowed(session=session, user_id=user.id, limit_per_hour=1)
    assert not allowed and "about 60 minutes" in message
