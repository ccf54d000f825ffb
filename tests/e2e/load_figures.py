"""Response-time figures of the browser load test: per action type, count, p50, p95 and max.

The load test (``tests/e2e/test_load_browser.py``) adds one sample per action, from the click until
the app is idle again; :meth:`ActionTimes.table` prints the figures and :meth:`ActionTimes.write_json`
writes them to ``test-artifacts/load-figures.json`` for the reliability document. Timings are
reported, never asserted (the CI machine has two shared cores).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class ActionTimes:
    """Seconds per action type, in the order the samples came in."""

    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, kind: str, seconds: float) -> None:
        self.samples.setdefault(kind, []).append(seconds)

    def summary(self) -> dict[str, dict[str, float | int]]:
        """Per action type: ``count``, ``p50_s``, ``p95_s``, ``max_s`` (seconds, rounded to milliseconds)."""
        return {
            kind: {
                "count": len(values),
                "p50_s": round(percentile(values, 50), 3),
                "p95_s": round(percentile(values, 95), 3),
                "max_s": round(max(values), 3),
            }
            for kind, values in sorted(self.samples.items())
        }

    def table(self) -> str:
        """The summary as a Markdown table (what the reliability document shows)."""
        lines = ["| action | count | p50 (s) | p95 (s) | max (s) |", "| --- | ---: | ---: | ---: | ---: |"]
        for kind, row in self.summary().items():
            lines.append(f"| {kind} | {row['count']} | {row['p50_s']:.2f} | {row['p95_s']:.2f} | {row['max_s']:.2f} |")
        return "\n".join(lines)

    def write_json(self, path: Path, *, also: dict[str, ActionTimes] | None = None, **meta: Any) -> None:
        """Write ``{"meta": meta, "actions": summary, "samples": raw seconds}`` to ``path``.

        ``also`` adds other measurements of the same actions, each as ``{name: summary}``.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        raw = {kind: [round(v, 3) for v in values] for kind, values in sorted(self.samples.items())}
        figures: dict[str, Any] = {"meta": meta, "actions": self.summary()}
        figures.update({name: other.summary() for name, other in (also or {}).items()})
        figures["samples"] = raw
        path.write_text(json.dumps(figures, indent=2) + "\n")
