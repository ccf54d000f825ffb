"""Pure Plotly figure builders for quiz results and training runs: data in, ``plotly.graph_objects.Figure`` out.

Pages hand the figure to ``st.plotly_chart``; nothing here touches Streamlit. Labels come from
imported or edited items (subjects, sources), so they are HTML-escaped: Plotly renders a small
HTML subset in text, and a ``<b>`` or ``<script>`` in a subject must show as text.
With no data a figure still comes back, carrying a "no data" note instead of empty axes.
Training curves always draw markers, so a run with a single logged step still shows a point.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import plotly.graph_objects as go

from core.quiz import AttemptResult, GroupScore, ItemStats
from core.runs import Curves, EvalRow, Series

NO_SUBJECT_LABEL = "(no subject)"
_PERCENT_AXIS = dict(range=[0, 100], ticksuffix="%")
_LEGEND_BELOW = dict(orientation="h", yanchor="top", y=-0.25, xanchor="left", x=0)


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


# -- training runs ---------------------------------------------------------------------------------------


def _line(fig: go.Figure, series: Series, name: str, *, dash: str | None = None) -> None:
    fig.add_scatter(x=series.steps, y=series.values, mode="lines+markers", name=html.escape(name),
                    line=dict(dash=dash) if dash else None,
                    hovertemplate="step %{x}: %{y:.4g}<extra>" + html.escape(name) + "</extra>")


def loss_figure(c: Curves, *, title: str = "Loss") -> go.Figure:
    """Training loss and validation loss against the optimiser step."""
    fig = go.Figure(layout=dict(title=title))
    if not c.train_loss and not c.eval_loss:
        return _empty(fig, "No loss logged yet")
    if c.train_loss:
        _line(fig, c.train_loss, "training loss")
    if c.eval_loss:
        _line(fig, c.eval_loss, "validation loss", dash="dash")
    fig.update_xaxes(title="Step", rangemode="tozero")
    fig.update_yaxes(title="Loss")
    fig.update_layout(legend=_LEGEND_BELOW)
    return fig


def _one_series_figure(points: Series, *, title: str, name: str, missing: str, **yaxis: object) -> go.Figure:
    """One logged series against the step, or a note that nothing is logged yet."""
    fig = go.Figure(layout=dict(title=title))
    if not points:
        return _empty(fig, missing)
    _line(fig, points, name)
    fig.update_xaxes(title="Step", rangemode="tozero")
    fig.update_yaxes(**yaxis)
    return fig


def learning_rate_figure(c: Curves) -> go.Figure:
    return _one_series_figure(c.learning_rate, title="Learning rate", name="learning rate",
                              missing="No learning rate logged yet", title_text="Learning rate", exponentformat="e")


def tokens_per_second_figure(c: Curves) -> go.Figure:
    return _one_series_figure(c.tokens_per_s, title="Throughput", name="tokens/s", missing="No throughput logged yet",
                              title_text="Tokens per second", rangemode="tozero")


def loss_overlay_figure(runs: Mapping[str, Curves]) -> go.Figure:
    """Training (solid) and validation (dashed) loss of several runs on one chart, keyed by run name."""
    fig = go.Figure(layout=dict(title="Loss of the picked runs"))
    drawn = False
    for name, c in runs.items():
        if c.train_loss:
            _line(fig, c.train_loss, f"{name} · training")
            drawn = True
        if c.eval_loss:
            _line(fig, c.eval_loss, f"{name} · validation", dash="dash")
            drawn = True
    if not drawn:
        return _empty(fig, "Pick runs that have logged a loss")
    fig.update_xaxes(title="Step", rangemode="tozero")
    fig.update_yaxes(title="Loss")
    fig.update_layout(legend=_LEGEND_BELOW)
    return fig


def token_length_figure(lengths: Sequence[int], *, max_seq_len: int) -> go.Figure:
    """Histogram of training-example token lengths with the max_seq_len cut-off marked."""
    fig = go.Figure(layout=dict(title="Tokens per training example"))
    if not lengths:
        return _empty(fig, "No training examples")
    fig.add_histogram(x=list(lengths), nbinsx=40, name="examples",
                      hovertemplate="%{x} tokens: %{y} examples<extra></extra>")
    over = sum(n > max_seq_len for n in lengths)
    fig.add_vline(x=max_seq_len, line_dash="dash", line_color="#B03A2E",
                  annotation_text=f"max_seq_len {max_seq_len} ({over} left out)")
    fig.update_xaxes(title="Tokens (prompt + completion)")
    fig.update_yaxes(title="Examples")
    return fig


def eval_comparison_figure(rows: Sequence[EvalRow]) -> go.Figure:
    """Grouped bars, base model vs adapter, of the percentage rows (accuracy, format adherence)."""
    fig = go.Figure(layout=dict(title="Base model vs adapter", barmode="group"))
    shown = [r for r in rows if r.unit == "%" and r.base is not None and r.adapter is not None]
    if not shown:
        return _empty(fig, "No evaluation results")
    labels = [html.escape(f"{r.metric} (n={r.n})" if r.n else r.metric) for r in shown]
    for name, values in (("Base model", [r.base for r in shown]), ("Adapter", [r.adapter for r in shown])):
        fig.add_bar(x=values, y=labels, orientation="h", name=name, text=[f"{v:.1f}%" for v in values],
                    hovertemplate="%{y}: %{x:.1f}%<extra>" + name + "</extra>")
    fig.update_xaxes(title="Percent", **_PERCENT_AXIS)
    fig.update_yaxes(autorange="reversed")
    return fig
