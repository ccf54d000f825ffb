"""Properties of peer difficulty, percentile, the late rule and the weakest-subject summary (core.quiz).

Whatever the counts (zero, negative, more correct than answered) difficulty never divides by zero,
is hidden below its minimum and stays in [0, 1]; whatever the scores a percentile is hidden below
its minimum, stays in [0, 1], never falls when the score rises, and is 0.5 when everyone ties.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from core import quiz as q

FAST = settings(max_examples=300, deadline=None)
scores = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@FAST
@given(answered=st.integers(-5, 10_000), correct=st.integers(-5, 10_000), minimum=st.integers(-3, 50))
def test_difficulty_is_hidden_below_the_minimum_and_in_unit_range(answered: int, correct: int, minimum: int) -> None:
    share = q.peer_difficulty(answered, correct, minimum=minimum)
    if answered <= 0 or answered < minimum:
        assert share is None
    else:
        assert share is not None and 0.0 <= share <= 1.0
        if 0 <= correct <= answered:
            assert share == correct / answered
    assert q.difficulty_label(share) in (None, *q.DIFFICULTIES)


@FAST
@given(answered=st.integers(0, q.DIFFICULTY_MIN_ANSWERS - 1), correct=st.integers(0, 20))
def test_difficulty_default_minimum_hides_small_counts(answered: int, correct: int) -> None:
    assert q.peer_difficulty(answered, correct) is None


@FAST
@given(score=scores, peers=st.lists(scores, max_size=60), minimum=st.integers(-2, 30))
def test_percentile_is_hidden_below_the_minimum_and_in_unit_range(score: float, peers: list[float],
                                                                   minimum: int) -> None:
    value = q.percentile(score, peers, minimum=minimum)
    if not peers or len(peers) < minimum:
        assert value is None
    else:
        assert value is not None and 0.0 <= value <= 1.0


@FAST
@given(low=scores, high=scores, peers=st.lists(scores, min_size=q.PERCENTILE_MIN_PEERS, max_size=40))
def test_a_higher_score_never_has_a_lower_percentile(low: float, high: float, peers: list[float]) -> None:
    low, high = min(low, high), max(low, high)
    assert q.percentile(low, peers) <= q.percentile(high, peers)


@FAST
@given(score=scores, n=st.integers(q.PERCENTILE_MIN_PEERS, 40))
def test_everyone_tied_is_the_median(score: float, n: int) -> None:
    assert q.percentile(score, [score] * n) == 0.5


@FAST
@given(due=st.datetimes(timezones=st.just(UTC)), delta_s=st.integers(-10**7, 10**7),
       policy=st.sampled_from(["accept", "refuse"]))
def test_late_rule(due: datetime, delta_s: int, policy: str) -> None:
    timing = q.submission_timing(due_at=due, late_policy=policy, now=due + timedelta(seconds=delta_s)) \
        if datetime.min.replace(tzinfo=UTC) + timedelta(seconds=abs(delta_s)) < due < \
        datetime.max.replace(tzinfo=UTC) - timedelta(seconds=abs(delta_s)) else None
    if timing is None:
        return
    if delta_s <= 0:
        assert timing == "on_time"
    else:
        assert timing == ("late" if policy == "accept" else "refused")
