"""core.runs (curves, progress and ETA, estimates, summaries, evaluation rows) and the training figures of core.charts."""

from __future__ import annotations

import json
import math

import pytest

from core import charts
from core import runs as runs_lib
from core.metrics import read_metrics
from core.model import DEFAULT_ADAPTER_DIR
from core.records import Record

SHIPPED_METRICS = DEFAULT_ADAPTER_DIR / "metrics.jsonl"
SHIPPED_EVAL = DEFAULT_ADAPTER_DIR / "eval.json"


def _train(step, loss, **extra):
    return {"event": "train", "step": step, "loss": loss, "learning_rate": 1e-3, "tokens_per_s": 50.0 * step,
            "total_steps": 10, **extra}


def test_a_single_logged_step_still_draws_a_point(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"event": "start", "step": 0}) + "\n" + json.dumps(_train(1, 2.5)) + "\n"
                    + '{"event": "train", "step": 2, "lo')  # the writer was killed mid-line
    c = runs_lib.curves(read_metrics(path))
    assert c.train_loss.steps == [1] and c.train_loss.values == [2.5]
    assert len(c.eval_loss) == 0
    fig = charts.loss_figure(c)
    assert len(fig.data) == 1 and "markers" in fig.data[0].mode and list(fig.data[0].y) == [2.5]
    for builder in (charts.learning_rate_figure, charts.tokens_per_second_figure):
        assert "markers" in builder(c).data[0].mode


def test_curves_keep_the_latest_value_of_a_step_and_skip_non_numbers():
    records = [_train(1, 3.0), _train(2, float("nan")), _train(2, 2.0), {"event": "eval", "step": 2, "eval_loss": 2.2},
               {"event": "train", "step": 3, "loss": None}, {"event": "train", "step": "4", "loss": 1.0}]
    c = runs_lib.curves(records)
    assert c.train_loss.steps == [1, 2] and c.train_loss.values == [3.0, 2.0]
    assert c.eval_loss.steps == [2] and c.eval_loss.values == [2.2]
    fig = charts.loss_figure(c)
    assert [t.name for t in fig.data] == ["training loss", "validation loss"] and fig.data[1].line.dash == "dash"


def test_empty_run_figures_carry_a_note():
    c = runs_lib.curves([])
    for fig in (charts.loss_figure(c), charts.learning_rate_figure(c), charts.tokens_per_second_figure(c),
                charts.loss_overlay_figure({}), charts.token_length_figure([], max_seq_len=10),
                charts.eval_comparison_figure([])):
        assert not fig.data and fig.layout.annotations


def test_progress_eta_counts_down_from_the_last_line():
    records = [_train(1, 2.0, eta_s=90.0, time=1000.0, elapsed_s=10.0), _train(2, 1.5, eta_s=80.0, time=1010.0,
                                                                               elapsed_s=20.0)]
    p = runs_lib.progress(records, step=3, total_steps=10, active=True, now=1030.0)
    assert p.step == 3 and p.total_steps == 10 and p.fraction == pytest.approx(0.3)
    assert p.eta_s == pytest.approx(60.0) and p.elapsed_s == 20.0 and p.last_loss == 1.5 and p.tokens_per_s == 100.0
    assert runs_lib.progress(records, active=True, now=5000.0).eta_s == 0.0
    done = runs_lib.progress(records, active=False, now=1030.0)
    assert done.eta_s is None and done.step == 2 and done.total_steps == 10  # total from the metrics
    assert runs_lib.progress([], active=True).fraction == 0.0


def test_estimated_steps_match_the_shipped_run():
    """The estimate from the shipped card's example count and settings equals the steps its trainer logged."""
    records = read_metrics(SHIPPED_METRICS)
    logged_total = next(r["total_steps"] for r in records if r.get("event") == "train")
    card = json.loads((SHIPPED_METRICS.parent / "adapter_card.json").read_text(encoding="utf-8"))
    cfg = card["config"]
    assert runs_lib.estimate_steps(card["data"]["train"]["examples"], batch_size=cfg["batch_size"],
                                   gradient_accumulation_steps=cfg["gradient_accumulation_steps"],
                                   num_epochs=cfg["num_epochs"], max_steps=cfg["max_steps"]) == logged_total
    assert runs_lib.estimate_steps(841, batch_size=16, gradient_accumulation_steps=1, num_epochs=6, max_steps=-1) == 318
    assert runs_lib.estimate_steps(881, batch_size=4, gradient_accumulation_steps=4, num_epochs=3, max_steps=-1) == 168
    assert runs_lib.estimate_steps(8, batch_size=2, gradient_accumulation_steps=1, num_epochs=1, max_steps=-1) == 4
    assert runs_lib.estimate_steps(8, batch_size=2, gradient_accumulation_steps=3, num_epochs=0.5, max_steps=-1) == 1
    assert runs_lib.estimate_steps(10, batch_size=2, gradient_accumulation_steps=1, num_epochs=3, max_steps=7) == 7


def test_estimated_seconds_and_durations():
    assert runs_lib.estimate_seconds(100, tokens_per_step=2000, tokens_per_s=1000) == 200
    assert runs_lib.estimate_seconds(100, tokens_per_step=2000, tokens_per_s=None) is None
    assert runs_lib.estimate_seconds(0, tokens_per_step=2000, tokens_per_s=10) is None
    assert [runs_lib.format_duration(s) for s in (None, 0.4, 45, 185, 7440, math.inf)] == \
        ["—", "0 s", "45 s", "3 min 05 s", "2 h 04 min", "—"]


def test_final_metrics_of_the_shipped_run():
    records = read_metrics(SHIPPED_METRICS)
    fm = runs_lib.final_metrics(records)
    train = [r for r in records if r.get("event") == "train"]
    evals = [r for r in records if r.get("event") == "eval"]
    assert fm["train_loss"] == train[-1]["loss"] and fm["eval_loss"] == evals[-1]["eval_loss"]
    assert fm["best_eval_loss"] == min(r["eval_loss"] for r in evals)
    assert fm["steps"] == next(r["total_steps"] for r in train) == train[-1]["total_steps"]  # the last log line may precede the last step
    assert fm["train_time_s"] >= train[-1]["elapsed_s"]
    assert fm["tokens_per_s"] == runs_lib.measured_tokens_per_s(records) > 0
    assert runs_lib.measured_tokens_per_s([_train(1, 1.0, tokens_per_s=5.0), _train(2, 1.0, tokens_per_s=900.0),
                                           _train(3, 1.0, tokens_per_s=1100.0)]) == 1000.0  # start-up line left out


def test_length_stats_and_histogram():
    lengths = [10, 20, 30, 40, 500]
    s = runs_lib.length_stats(lengths, max_seq_len=100)
    assert (s.n, s.mean, s.p50, s.max, s.over_limit) == (5, 120.0, 30, 500, 1)
    fig = charts.token_length_figure(lengths, max_seq_len=100)
    assert list(fig.data[0].x) == lengths and fig.layout.shapes[0].x0 == 100
    assert "1 left out" in fig.layout.annotations[0].text
    assert runs_lib.length_stats([], 100).n == 0


def test_preview_rows_are_a_fixed_shortened_sample():
    records = [Record(id=f"s:{i}", source="s", license="MIT", question=f"Q{i} " + "x" * 500, reasoning="r",
                      answer="a") for i in range(20)]
    rows = runs_lib.preview_rows(records, n=3, seed=1)
    assert rows == runs_lib.preview_rows(records, n=3, seed=1) and len(rows) == 3
    assert all(len(r["question"]) <= 240 and r["question"].endswith("…") for r in rows)
    assert len(runs_lib.preview_rows(records[:2], n=5)) == 2


def test_eval_rows_of_the_shipped_report():
    report = json.loads(SHIPPED_EVAL.read_text())
    rows = {r.metric: r for r in runs_lib.eval_rows(report)}
    base, adapter = report["results"]["base"], report["results"]["adapter"]
    assert rows["Test loss"].base == base["test_loss"]["loss"] and rows["Test loss"].adapter == adapter["test_loss"]["loss"]
    mcq = rows["MCQ accuracy, all sampled"]
    assert mcq.base == pytest.approx(100 * base["mcq"]["all"]["accuracy"]) and mcq.n == base["mcq"]["all"]["n"]
    assert mcq.change == pytest.approx(100 * (adapter["mcq"]["all"]["accuracy"] - base["mcq"]["all"]["accuracy"]))
    assert rows["Format adherence: own final-answer line (open-ended)"].unit == "%"
    fig = charts.eval_comparison_figure(list(rows.values()))
    assert [t.name for t in fig.data] == ["Base model", "Adapter"]
    assert len(fig.data[0].y) == sum(r.unit == "%" for r in rows.values())
    assert runs_lib.eval_rows({"results": {"base": {}, "adapter": {"mcq": {}}}}) == []


def test_overlay_names_runs_and_escapes_them():
    c = runs_lib.curves([_train(1, 2.0), _train(2, 1.0), {"event": "eval", "step": 2, "eval_loss": 1.5}])
    fig = charts.loss_overlay_figure({"<b>a</b>": c, "b": runs_lib.curves([_train(1, 3.0)])})
    assert [t.name for t in fig.data] == ["&lt;b&gt;a&lt;/b&gt; · training", "&lt;b&gt;a&lt;/b&gt; · validation",
                                          "b · training"]

