"""Exam clock and tutor/exam mode rules (core.quiz)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from core.quiz import (
    answer_locked,
    elapsed_s,
    feedback_visible,
    is_timed_out,
    remaining_s,
    should_auto_submit,
)

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_remaining_counts_down_and_floors_at_zero():
    assert remaining_s(T0, 600, at(0)) == 600
    assert remaining_s(T0, 600, at(90.5)) == pytest.approx(509.5)
    assert remaining_s(T0, 600, at(600)) == 0
    assert remaining_s(T0, 600, at(5000)) == 0


def test_untimed_attempt_has_no_clock():
    assert remaining_s(T0, None, at(10**6)) is None
    assert not is_timed_out(T0, None, at(10**6))


def test_timed_out_exactly_at_the_limit():
    assert not is_timed_out(T0, 60, at(59.999))
    assert is_timed_out(T0, 60, at(60))


def test_clock_skew_never_gives_more_than_the_limit():
    assert remaining_s(T0, 60, at(-30)) == 60
    assert elapsed_s(T0, at(-30)) == 0


def test_naive_datetimes_are_utc_like_sqlite_returns_them():
    naive_start = T0.replace(tzinfo=None)
    assert remaining_s(naive_start, 600, at(100)) == pytest.approx(500)
    other_zone = at(100).astimezone(timezone(timedelta(hours=5)))
    assert remaining_s(T0, 600, other_zone) == pytest.approx(500)


def test_bad_time_limit_is_refused():
    with pytest.raises(ValueError, match="positive"):
        remaining_s(T0, 0, at(1))


def test_auto_submit_only_unsubmitted_exam_past_its_time():
    kw = dict(started_at=T0, time_limit_s=300)
    assert should_auto_submit(mode="exam", now=at(300), submitted=False, **kw)
    assert not should_auto_submit(mode="exam", now=at(299), submitted=False, **kw)
    assert not should_auto_submit(mode="exam", now=at(400), submitted=True, **kw)
    assert not should_auto_submit(mode="tutor", now=at(400), submitted=False, **kw)
    assert not should_auto_submit(mode="exam", now=at(10**6), submitted=False, started_at=T0, time_limit_s=None)


def test_auto_submit_after_a_reload_long_past_the_limit():
    # The page reloads an hour later: the stored start time still decides.
    assert should_auto_submit(mode="exam", started_at=T0, time_limit_s=600, now=at(3600), submitted=False)


def test_feedback_only_in_tutor_mode_or_after_submit():
    assert feedback_visible("tutor", submitted=False, answered=True)
    assert not feedback_visible("tutor", submitted=False, answered=False)
    assert not feedback_visible("exam", submitted=False, answered=True)
    assert feedback_visible("exam", submitted=True, answered=False)


def test_answer_locking():
    assert answer_locked("tutor", submitted=False, answered=True)
    assert not answer_locked("tutor", submitted=False, answered=False)
    assert not answer_locked("exam", submitted=False, answered=True)
    assert answer_locked("exam", submitted=False, answered=True, timed_out=True)
    assert answer_locked("exam", submitted=True, answered=False)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="tutor"):
        feedback_visible("practice", submitted=False, answered=True)
