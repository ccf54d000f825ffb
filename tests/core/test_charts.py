"""Plotly figure builders for quiz results (core.charts)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import plotly.graph_objects as go
import pytest

from core.charts import (
    NO_SUBJECT_LABEL,
    TrendPoint,
    group_scores_bar,
    item_percent_correct_figure,
    score_by_source_figure,
    score_by_subject_figure,
    score_trend_figure,
)
from core.quiz import Answer, GroupScore, ItemStats, score_attempt
from core.records import Record

OPTS = {"A": "a", "B": "b"}


def _item(i: int, subject: str, source: str) -> Record:
    return Record(id=f"t:{i}", source=source, license="MIT", question="q", kind="mcq", options=OPTS,
                  correct="A", subject=subject)


RESULT = score_attempt(
    [_item(1, "Cardiology", "medqa"), _item(2, "Cardiology", "medqa"), _item(3, "", "mmlu"),
     _item(4, "<b>Renal</b>", "medmcqa")],
    [Answer("t:1", choice="A"), Answer("t:2", choice="B"), Answer("t:3", choice="A")],
)


def test_score_by_subject_bars_hold_the_percentages():
    fig = score_by_subject_figure(RESULT)
    assert isinstance(fig, go.Figure) and len(fig.data) == 1
    bar = fig.data[0]
    got = dict(zip(bar.y, bar.x))
    assert got == {"Cardiology": 50.0, NO_SUBJECT_LABEL: 100.0, "&lt;b&gt;Renal&lt;/b&gt;": 0.0}
    assert list(fig.layout.xaxis.range) == [0, 100]


def test_score_by_source():
    bar = score_by_source_figure(RESULT).data[0]
    assert dict(zip(bar.y, bar.x)) == {"medmcqa": 0.0, "medqa": 50.0, "mmlu": 100.0}
    assert [list(c) for c in bar.customdata] == [[0.0, 1], [1.0, 2], [1.0, 1]]


def test_empty_groups_give_a_note_not_an_error():
    fig = group_scores_bar({}, title="t", axis_title="a")
    assert len(fig.data) == 0 and fig.layout.annotations[0].text == "No answers yet"


def test_trend_is_in_time_order_with_passing_line():
    t0 = datetime(2025, 3, 1, tzinfo=timezone.utc)
    pts = [
        TrendPoint(t0 + timedelta(days=2), 80, "<script>x</script>"),
        TrendPoint(t0, 40),
        TrendPoint(t0 + timedelta(days=1), 60),
    ]
    fig = score_trend_figure(pts, passing_score=70)
    line = fig.data[0]
    assert list(line.y) == [40, 60, 80]
    assert list(line.x) == [t0, t0 + timedelta(days=1), t0 + timedelta(days=2)]
    assert line.text[-1] == "&lt;script&gt;x&lt;/script&gt;"
    assert any(s.y0 == 70 and s.y1 == 70 for s in fig.layout.shapes)
    assert len(score_trend_figure(pts).layout.shapes) == 0


def test_item_percent_correct_figure_orders_labels_and_skips_unseen_items():
    stats = [
        ItemStats("t:1", attempts=6, percent_correct=66.7, discrimination=1.0),
        ItemStats("t:2", attempts=0, percent_correct=None, discrimination=None),
        ItemStats("t:3", attempts=6, percent_correct=50.0, discrimination=None),
    ]
    bar = item_percent_correct_figure(stats).data[0]
    assert list(bar.x) == ["Q1", "Q3"] and list(bar.y) == [66.7, 50.0]
    assert [list(c) for c in bar.customdata] == [[6, "+1.00"], [6, "n/a"]]
    labelled = item_percent_correct_figure(stats, labels={"t:3": "Q3: <i>chest</i> pain"}).data[0]
    assert list(labelled.x) == ["Q1", "Q3: &lt;i&gt;chest&lt;/i&gt; pain"]


@pytest.mark.parametrize("fig", [score_trend_figure([]), item_percent_correct_figure([])])
def test_no_data_figures(fig):
    assert len(fig.data) == 0 and fig.layout.annotations


def test_group_score_percent():
    assert GroupScore(n=4, score=1.5).percent == 37.5 and GroupScore(n=0, score=0).percent == 0.0
