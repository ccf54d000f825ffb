"""core.estimate: the projection's arithmetic, and the long-CPU-run warning."""

from __future__ import annotations

import pytest

from core.estimate import EVAL_SPEEDUP, Throughput, estimate, evaluations, long_cpu_warning


def test_evaluations_follow_the_trainers_schedule():
    assert evaluations(100, eval_steps=25, has_eval=True) == 5  # 0 (baseline), 25, 50, 75, 100 (also the final one)
    assert evaluations(110, eval_steps=25, has_eval=True) == 6  # + a final one at 110
    assert evaluations(110, eval_steps=0, has_eval=True) == 2  # the baseline and the end
    assert evaluations(110, eval_steps=25, has_eval=False) == 0


def test_estimate_without_a_measurement_has_tokens_but_no_time():
    est = estimate([100, 200, 300], steps=4, batch_size=2, gradient_accumulation_steps=2, eval_examples=10,
                   eval_steps=2, throughput=None)
    assert est.tokens_per_epoch == 600 and est.examples == 3
    assert est.tokens_per_step == pytest.approx(200 * 4) and est.train_tokens == pytest.approx(3200)
    assert est.evaluations == 3 and est.eval_tokens == pytest.approx(2000)
    assert est.total_s is None and est.epochs == pytest.approx(3200 / 600)


def test_estimate_adds_start_up_training_and_validation():
    tp = Throughput(tokens_per_s=100.0, startup_s=20.0, basis="test")
    est = estimate([100, 300], steps=10, batch_size=1, gradient_accumulation_steps=1, eval_examples=5, eval_steps=5,
                   throughput=tp)
    assert est.train_s == pytest.approx(10 * 200 / 100.0)
    assert est.eval_s == pytest.approx(3 * 5 * 200 / (EVAL_SPEEDUP * 100.0))
    assert est.total_s == pytest.approx(20.0 + 20.0 + est.eval_s)


def test_long_cpu_runs_are_warned_about_and_gpu_runs_are_not():
    tp = Throughput(tokens_per_s=10.0, startup_s=None, basis="test")
    long = estimate([1000] * 100, steps=100, batch_size=4, gradient_accumulation_steps=1, eval_examples=0,
                    eval_steps=0, throughput=tp)
    assert long.total_s == pytest.approx(40_000)
    warning = long_cpu_warning(long, device="cpu")
    assert warning and "11.1 hours" in warning and "CPU demo (minutes)" in warning and "GPU" in warning
    assert long_cpu_warning(long, device="cuda") is None
    short = estimate([100], steps=1, batch_size=1, gradient_accumulation_steps=1, eval_examples=0, eval_steps=0,
                     throughput=tp)
    assert long_cpu_warning(short, device="cpu") is None
