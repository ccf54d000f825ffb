"""Training runs as the admin page shows them: curves, progress and ETA, summaries, estimates, evaluation rows.

Everything here reads what the trainer already wrote (``metrics.jsonl`` records from
:func:`core.metrics.read_metrics`, the adapter's ``eval.json``) and returns plain data; the
figures are built by :mod:`core.charts`. Nothing here starts processes or touches the database.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.records import Record

Metrics = Sequence[Mapping[str, Any]]


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


# -- curves ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """One curve: x = optimiser step, y = the value."""

    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.steps)


@dataclass(frozen=True)
class Curves:
    """The curves of one run, from its ``metrics.jsonl`` records."""

    train_loss: Series
    eval_loss: Series
    learning_rate: Series
    tokens_per_s: Series


def _series(records: Metrics, event: str, key: str) -> Series:
    points: dict[int, float] = {}
    for rec in records:
        if rec.get("event") != event:
            continue
        step, value = rec.get("step"), _num(rec.get(key))
        if isinstance(step, int) and value is not None:
            points[step] = value  # a repeated step (after a resume) keeps its latest value
    ordered = sorted(points.items())
    return Series([s for s, _ in ordered], [v for _, v in ordered])


def curves(records: Metrics) -> Curves:
    return Curves(
        train_loss=_series(records, "train", "loss"),
        eval_loss=_series(records, "eval", "eval_loss"),
        learning_rate=_series(records, "train", "learning_rate"),
        tokens_per_s=_series(records, "train", "tokens_per_s"),
    )


# -- progress ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """Where a run is: steps done, the fraction for a progress bar, time spent and left."""

    step: int
    total_steps: int | None
    elapsed_s: float | None
    eta_s: float | None
    """None until a step has been timed (or when the run is not active)."""
    last_loss: float | None
    last_eval_loss: float | None
    tokens_per_s: float | None

    @property
    def fraction(self) -> float:
        if not self.total_steps:
            return 0.0
        return max(0.0, min(1.0, self.step / self.total_steps))


def progress(
    records: Metrics, *, step: int | None = None, total_steps: int | None = None, active: bool = True,
    now: float | None = None,
) -> Progress:
    """Progress from the metrics and the status file's ``step``/``total_steps`` (the newer wins).

    The ETA is the trainer's last ``eta_s`` minus the time since that line was written; while
    the run is not active there is no ETA.
    """
    now = time.time() if now is None else now
    timed = [r for r in records if r.get("event") in ("train", "eval") and isinstance(r.get("step"), int)]
    last = timed[-1] if timed else {}
    done = max([step or 0, *(r["step"] for r in timed)])
    total = total_steps or next((r.get("total_steps") for r in reversed(timed) if r.get("total_steps")), None)
    eta = None
    if active and last:
        eta_s, written = _num(last.get("eta_s")), _num(last.get("time"))
        if eta_s is not None:
            eta = max(0.0, eta_s - max(0.0, now - written) if written is not None else eta_s)
    train = [r for r in timed if r.get("event") == "train"]
    evals = [r for r in timed if r.get("event") == "eval"]
    elapsed = next((_num(r.get("elapsed_s")) for r in reversed(timed) if _num(r.get("elapsed_s")) is not None), None)
    return Progress(
        step=done,
        total_steps=total if isinstance(total, int) else None,
        elapsed_s=elapsed,
        eta_s=eta,
        last_loss=_num(train[-1].get("loss")) if train else None,
        last_eval_loss=_num(evals[-1].get("eval_loss")) if evals else None,
        tokens_per_s=_num(train[-1].get("tokens_per_s")) if train else None,
    )


def measured_tokens_per_s(records: Metrics) -> float | None:
    """Median training throughput (non-padding tokens/s) of a run; the first line (start-up) is left out."""
    values = [v for r in records if r.get("event") == "train" and (v := _num(r.get("tokens_per_s")))]
    if len(values) > 1:
        values = values[1:]
    return statistics.median(values) if values else None


def final_metrics(records: Metrics) -> dict[str, Any]:
    """The numbers a run history row shows: last train loss, last and best eval loss, steps, time, speed."""
    c = curves(records)
    out: dict[str, Any] = {}
    if c.train_loss:
        out["train_loss"] = c.train_loss.values[-1]
    if c.eval_loss:
        out["eval_loss"] = c.eval_loss.values[-1]
        out["best_eval_loss"] = min(c.eval_loss.values)
    steps = [r["step"] for r in records if isinstance(r.get("step"), int)]
    if steps:
        out["steps"] = max(steps)
    elapsed = [v for r in records if (v := _num(r.get("elapsed_s")) or _num(r.get("wall_time_s"))) is not None]
    if elapsed:
        out["train_time_s"] = max(elapsed)
    tps = measured_tokens_per_s(records)
    if tps is not None:
        out["tokens_per_s"] = tps
    return out


def format_duration(seconds: float | None) -> str:
    """``45 s``, ``3 min 05 s``, ``2 h 04 min``; an em dash when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


# -- estimates ---------------------------------------------------------------------------------------


def estimate_steps(
    n_examples: int, *, batch_size: int, gradient_accumulation_steps: int, num_epochs: float, max_steps: int,
) -> int:
    """Optimiser steps the trainer will take (the same arithmetic as transformers' Trainer)."""
    if max_steps > 0:
        return max_steps
    batches = math.ceil(n_examples / batch_size) if n_examples > 0 else 0
    per_epoch = max(batches // gradient_accumulation_steps + int(batches % gradient_accumulation_steps > 0), 1)
    return math.ceil(num_epochs * per_epoch)


def estimate_seconds(total_steps: int, *, tokens_per_step: float, tokens_per_s: float | None) -> float | None:
    """Training time at a measured throughput (None without one)."""
    if not tokens_per_s or tokens_per_s <= 0 or total_steps <= 0:
        return None
    return total_steps * tokens_per_step / tokens_per_s


@dataclass(frozen=True)
class LengthStats:
    """Token lengths of the training examples against ``max_seq_len``."""

    n: int
    mean: float
    p50: int
    p90: int
    max: int
    over_limit: int
    """Examples longer than max_seq_len: the trainer leaves them out."""


def length_stats(lengths: Sequence[int], max_seq_len: int) -> LengthStats:
    if not lengths:
        return LengthStats(0, 0.0, 0, 0, 0, 0)
    ordered = sorted(lengths)

    def pct(p: float) -> int:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    return LengthStats(len(ordered), round(sum(ordered) / len(ordered), 1), pct(0.5), pct(0.9), ordered[-1],
                       sum(n > max_seq_len for n in ordered))


def preview_rows(records: Sequence[Record], *, n: int = 5, seed: int = 0, width: int = 240) -> list[dict[str, Any]]:
    """A fixed random sample of records, shortened for a table."""

    def cut(text: str, limit: int) -> str:
        text = " ".join(text.split())
        return text if len(text) <= limit else text[: limit - 1] + "…"

    picked = random.Random(seed).sample(list(records), min(n, len(records)))
    return [{"id": r.id, "source": r.source, "kind": r.kind, "question": cut(r.question, width),
             "reasoning": cut(r.reasoning, width), "answer": cut(r.answer, 120)} for r in picked]


# -- evaluation reports ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalRow:
    """One line of the base-vs-adapter comparison."""

    metric: str
    base: float | None
    adapter: float | None
    unit: str
    """``""`` for a plain number, ``"%"`` for a proportion shown in percent."""
    n: int | None = None

    @property
    def change(self) -> float | None:
        if self.base is None or self.adapter is None:
            return None
        return self.adapter - self.base


def eval_rows(report: Mapping[str, Any]) -> list[EvalRow]:
    """The comparison rows of an ``eval.json`` (trainer.evaluate's report); parts not measured are left out."""
    results = report.get("results") or {}
    base, adapter = results.get("base") or {}, results.get("adapter") or {}
    rows: list[EvalRow] = []

    def pair(*path: str) -> tuple[Any, Any]:
        def get(d: Mapping[str, Any]) -> Any:
            for key in path:
                if not isinstance(d, Mapping):
                    return None
                d = d.get(key)  # type: ignore[assignment]
            return d
        return get(base), get(adapter)

    b, a = pair("test_loss")
    if b and a:
        rows.append(EvalRow("Test loss", _num(b.get("loss")), _num(a.get("loss")), "", b.get("n_items")))
        rows.append(EvalRow("Test perplexity", _num(b.get("perplexity")), _num(a.get("perplexity")), "",
                            b.get("n_items")))
    b, a = pair("open")
    if b and a:
        rows.append(EvalRow("ROUGE-L (open-ended)", _num(b.get("rouge_l")), _num(a.get("rouge_l")), "", b.get("n")))
        rows.append(EvalRow("Format adherence: own final-answer line (open-ended)", _pct(b.get("format_adherence")),
                            _pct(a.get("format_adherence")), "%", b.get("n")))
        if b.get("final_answer") and a.get("final_answer"):
            rows.append(EvalRow("Final answer, natural or forced (open-ended)", _pct(b.get("final_answer")),
                                _pct(a.get("final_answer")), "%", b.get("n")))
    bm, am = pair("mcq")
    if isinstance(bm, Mapping) and isinstance(am, Mapping):
        sources = [s for s in bm if s != "all" and s in am] + (["all"] if "all" in bm and "all" in am else [])
        for source in sources:
            label = "all sampled" if source == "all" else source
            rows.append(EvalRow(f"MCQ accuracy, {label}", _pct(bm[source]), _pct(am[source]), "%",
                                bm[source].get("n")))
    return rows


def _pct(part: Any) -> float | None:
    if not isinstance(part, Mapping) or not part.get("n"):
        return None
    value = _num(part.get("accuracy"))
    return None if value is None else 100.0 * value


# -- learning from an evaluation's samples -----------------------------------------------------------


@dataclass(frozen=True)
class SampleLessons:
    """The held-out items worth reading after an evaluation, for one row (``adapter`` by default)."""

    best: list[dict[str, Any]]
    """Open-ended items with the highest ROUGE-L, best first."""
    worst: list[dict[str, Any]]
    """Open-ended items with the lowest ROUGE-L, worst first."""
    wrong_mcq: list[dict[str, Any]]
    """Multiple-choice items answered wrongly (or not at all), in the evaluation's order."""
    open_n: int
    mcq_n: int


def sample_lessons(samples: Sequence[Mapping[str, Any]], *, row: str = "adapter", n: int = 3) -> SampleLessons:
    """Best and worst open-ended samples by ROUGE-L and the wrong MCQ items of ``row`` (``eval_samples.jsonl`` lines).

    The best and worst lists never share an item (with fewer than 2n scored items the worst list is shorter).
    """
    mine = [dict(s) for s in samples if s.get("row") == row]
    scored = [s for s in mine if s.get("kind") == "open" and _num(s.get("rouge_l")) is not None]
    ranked = sorted(scored, key=lambda s: (-float(s["rouge_l"]), str(s.get("id"))))
    best = ranked[:n]
    best_ids = {id(s) for s in best}
    worst = [s for s in reversed(ranked) if id(s) not in best_ids][:n]
    mcq = [s for s in mine if s.get("kind") == "mcq"]
    wrong = [s for s in mcq if s.get("is_correct") is not True]
    return SampleLessons(best=best, worst=worst, wrong_mcq=wrong, open_n=len(scored), mcq_n=len(mcq))
