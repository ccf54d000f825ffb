"""Pure Plotly figure builders for quiz results: data in, ``plotly.graph_objects.Figure`` out.

Pages hand the figure to ``st.plotly_chart``; nothing here touches Streamlit. Labels come from
imported or edited items (subjects, sources), so they are HTML-escaped: Plotly renders a small
HTML subset in text, and a ``<b>`` or ``<script>`` in a subject must show as text.
With no data a figure still comes back, carrying a "no data" note instead of empty axes.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import plotly.graph_objects as go

from core.quiz import AttemptResult, GroupScore, ItemStats

NO_SUBJECT_LABEL = "(no subject)"
_PERCENT_AXIS = dict(range=[0, 100], ticksuffix="%")


def _label(text: str, empty: str = "(none)") -> str:
    return html.escape(text) if text else empty


def _empty(fig: go.Figure, message: str) -> go.Figure:
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def group_scores_bar(
    groups: Mapping[str, GroupScore], *, title: str, axis_title: str, empty_label: str = "(none)"
) -> go.Figure:
    """Horizontal bars of percent score per group (subject or source), with item counts on hover."""
    fig = go.Figure(layout=dict(title=title))
    if not groups:
        return _empty(fig, "No answers yet")
    labels = [_label(k, empty_label) for k in groups]
    fig.add_bar(
        x=[g.percent for g in groups.values()],
        y=labels,
        orientation="h",
        text=[f"{g.percent:.0f}%" for g in groups.values()],
        customdata=[[g.score, g.n] for g in groups.values()],
        hovertemplate="%{y}: %{x:.0f}% (%{customdata[0]:g} of %{customdata[1]})<extra></extra>",
    )
    fig.update_xaxes(title="Score", **_PERCENT_AXIS)
    fig.update_yaxes(title=axis_title, autorange="reversed")
    return fig


def score_by_subject_figure(result: AttemptResult) -> go.Figure:
    """Score by subject for one attempt."""
    return group_scores_bar(
        result.by_subject, title="Score by subject", axis_title="Subject", empty_label=NO_SUBJECT_LABEL
    )


def score_by_source_figure(result: AttemptResult) -> go.Figure:
    """Score by source for one attempt."""
    return group_scores_bar(result.by_source, title="Score by source", axis_title="Source")


@dataclass(frozen=True)
class TrendPoint:
    """One finished attempt on the trend line."""

    finished_at: datetime
    percent: float
    label: str = ""
    """Shown on hover, e.g. the quiz title."""


def score_trend_figure(points: Sequence[TrendPoint], *, passing_score: float | None = None) -> go.Figure:
    """Percent score over the student's attempts in time order, with the passing line if any."""
    fig = go.Figure(layout=dict(title="Score trend"))
    if not points:
        return _empty(fig, "No finished attempts yet")
    pts = sorted(points, key=lambda p: p.finished_at)
    fig.add_scatter(
        x=[p.finished_at for p in pts],
        y=[p.percent for p in pts],
        mode="lines+markers",
        name="Score",
        text=[html.escape(p.label) for p in pts],
        hovertemplate="%{x|%Y-%m-%d %H:%M}: %{y:.0f}%<br>%{text}<extra></extra>",
    )
    if passing_score is not None:
        fig.add_hline(y=passing_score, line_dash="dash", annotation_text=f"pass {passing_score:g}%")
    fig.update_xaxes(title="Attempt finished")
    fig.update_yaxes(title="Score", **_PERCENT_AXIS)
    return fig


def item_percent_correct_figure(
    stats: Sequence[ItemStats], *, labels: Mapping[str, str] | None = None
) -> go.Figure:
    """Bars of percent correct per item (quiz-set order), discrimination index on hover.

    ``labels`` maps item id -> short label (e.g. "Q3: 45-year-old with chest pain"); by default
    items are labelled Q1, Q2, ... in order. Items no attempt included are left out.
    """
    fig = go.Figure(layout=dict(title="Percent correct per item"))
    shown = [(i, s) for i, s in enumerate(stats, start=1) if s.percent_correct is not None]
    if not shown:
        return _empty(fig, "No attempts yet")
    labels = labels or {}
    names = [html.escape(labels.get(s.item_id, f"Q{i}")) for i, s in shown]
    disc = ["n/a" if s.discrimination is None else f"{s.discrimination:+.2f}" for _, s in shown]
    fig.add_bar(
        x=names,
        y=[s.percent_correct for _, s in shown],
        customdata=[[s.attempts, d] for (_, s), d in zip(shown, disc)],
        hovertemplate="%{x}: %{y:.0f}% correct over %{customdata[0]} attempt(s)"
        "<br>discrimination %{customdata[1]}<extra></extra>",
    )
    fig.update_xaxes(title="Item")
    fig.update_yaxes(title="Percent correct", **_PERCENT_AXIS)
    return fig
