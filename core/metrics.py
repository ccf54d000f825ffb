"""Evaluation metrics and the training-metrics log, shared by the trainer, the evaluation and the UI.

- ``metrics.jsonl``: one JSON object per event, appended and flushed line by line
  (:class:`MetricsWriter`), read back by :func:`read_metrics`, which tolerates a truncated
  last line (a writer killed mid-line) and hides lines superseded by a resume.
- :func:`rouge_l`: ROUGE-L F-measure from the maintained ``rouge-score`` package.
- :func:`accuracy` / :func:`wilson_interval`: a proportion with its 95% Wilson score interval.
- :func:`extract_choice`: the option letter a free-text answer picks ("the answer is (C)",
  "C.", "option c", "Final answer: C - text").
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from core.prompts import parse_completion

RESUME_EVENT = "resume"
"""Event written when a run resumes from a checkpoint; its ``step`` is the checkpoint's step."""

# -- metrics.jsonl -----------------------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    """NaN/inf are not JSON (browsers reject them): write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


class MetricsWriter:
    """Append-only JSONL writer: one object per line, flushed after every line.

    If the file ends in a partial line (a previous writer was killed mid-write), a newline is
    written first so the new records never merge with the broken one.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        needs_newline = False
        if self.path.is_file() and self.path.stat().st_size > 0:
            with self.path.open("rb") as fh:
                fh.seek(-1, 2)
                needs_newline = fh.read(1) != b"\n"
        self._fh = self.path.open("a", encoding="utf-8")
        if needs_newline:
            self._fh.write("\n")
            self._fh.flush()

    def write(self, record: Mapping[str, Any]) -> None:
        self._fh.write(json.dumps(_json_safe(dict(record)), ensure_ascii=False, allow_nan=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def append_metrics(path: Path, record: Mapping[str, Any]) -> None:
    """Append one record (opens and closes the file; use :class:`MetricsWriter` for many)."""
    with MetricsWriter(path) as writer:
        writer.write(record)


def read_metrics(path: Path, *, raw: bool = False) -> list[dict[str, Any]]:
    """Read ``metrics.jsonl``; a missing file is an empty list.

    Lines that are not complete JSON objects are skipped: in practice only the last line, while
    a writer is in the middle of it or was killed there. Unless ``raw``, a ``resume`` event at
    step S drops the earlier records with a step above S, because the run went back to the
    checkpoint at S and those steps are trained again (no duplicated steps in the curve).
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    records: list[dict[str, Any]] = []
    for line in text.split("\n"):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):  # JSONDecodeError, a >4300-digit integer, absurd nesting
            continue
        if not isinstance(obj, dict):
            continue
        if not raw and obj.get("event") == RESUME_EVENT and isinstance(obj.get("step"), (int, float)):
            step = obj["step"]
            records = [r for r in records if not (isinstance(r.get("step"), (int, float)) and r["step"] > step)]
        records.append(obj)
    return records


# -- text similarity ---------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence of stemmed tokens), in [0, 1]."""
    if not prediction.strip() or not reference.strip():
        return 0.0
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure)


# -- proportions -------------------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, *, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default); (0, 1) when ``n`` is 0."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n={n}, got {successes}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Accuracy:
    """A measured proportion with its 95% Wilson interval."""

    correct: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.correct / self.n if self.n else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.value, "correct": self.correct, "n": self.n, "ci95": [self.low, self.high]}


def accuracy(outcomes: Iterable[bool]) -> Accuracy:
    """Fraction of true outcomes with its 95% Wilson confidence interval."""
    values = [bool(v) for v in outcomes]
    correct = sum(values)
    low, high = wilson_interval(correct, len(values))
    return Accuracy(correct=correct, n=len(values), low=low, high=high)


# -- multiple-choice letter extraction ---------------------------------------------------------------

_EMPHASIS = re.compile(r"[*_`]+")
_CUE = r"(?:correct\s+(?:answer|option|choice|response)|best\s+(?:answer|option|choice)|answer|response)"


def _letter_patterns(letters: str) -> tuple[re.Pattern[str], ...]:
    upper = letters.upper()
    both = upper + upper.lower()
    end = r"(?=\s*(?:[.):;,!?\-\u2013\u2014]|$))"
    # "A" and "I" double as English words ("A 45-year-old man"), so after a cue they count only
    # when followed by punctuation or the end, like lower-case letters.
    free = "".join(ch for ch in upper if ch not in "AI") or "_"
    strict = "".join(ch for ch in upper if ch in "AI") + upper.lower()
    return (
        # (C) / [C] anywhere after an answer word: "the answer is (C)", "Answer: [b]"
        re.compile(rf"(?i:{_CUE}|option|choice)[^\n()\[\]]{{0,24}}?[(\[]\s*([{both}])\s*[)\]]"),
        # "option c", "choice B", "option (d)"
        re.compile(rf"(?i:\b(?:option|choice))\s*(?:#|no\.?|number)?\s*[(\[]?\s*([{both}])\b(?![\w'])"),
        # "the answer is C", "answer: C", "correct answer would be C." (lower case only with punctuation/end)
        re.compile(
            rf"(?i:{_CUE})\s*(?i:is|would\s+be|should\s+be|=|:)?\s*:?\s*"
            rf"(?:([{free}])\b(?![\w'])|([{strict}]){end})"
        ),
    )


def _leading_letter(segment: str, letters: str) -> str | None:
    """A final-answer line that starts with the letter: "C", "C.", "(C)", "C) text", "C - text"."""
    upper = letters.upper()
    m = re.match(
        rf"\s*(?:[(\[]\s*([{upper}{upper.lower()}])\s*[)\]]|([{upper}])(?=\s*(?:[.):,;\-\u2013\u2014]|$))"
        rf"|([{upper.lower()}])(?=\s*(?:[.):]|$)))",
        segment,
    )
    if not m:
        return None
    return next(g for g in m.groups() if g).upper()


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _match_option_text(segment: str, options: Mapping[str, str]) -> str | None:
    """The one option whose text appears in the segment; None when two unrelated options appear.

    An option whose text is part of another matching option's text ("Vitamin C" inside
    "Vitamin C and zinc") does not count against the longer one.
    """
    hay = _words(segment)
    hits = {}
    for key, text in options.items():
        needle = _words(str(text))
        if needle and re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", hay):
            hits[key] = needle
    specific = [k for k, n in hits.items() if not any(n != m and n in m for m in hits.values())]
    return specific[0].upper() if len(specific) == 1 else None


def _last_cue_letter(text: str, patterns: Sequence[re.Pattern[str]]) -> str | None:
    best: tuple[int, str] | None = None
    for pattern in patterns:
        for m in pattern.finditer(text):
            letter = next((g for g in m.groups() if g), None)
            if letter and (best is None or m.start() > best[0]):
                best = (m.start(), letter.upper())
    return best[1] if best else None


def extract_choice(
    text: str, letters: Iterable[str], *, options: Mapping[str, str] | None = None
) -> str | None:
    """The option letter a free-text answer picks, or None when it does not clearly pick one.

    ``letters`` are the valid keys (``"ABCD"`` or an options dict's keys). The final-answer line
    is read first (a leading letter, a bracketed letter, an "option c" / "answer is C" cue, or,
    with ``options``, exactly one option's text); otherwise the last answer cue anywhere in the
    text. A bare capital ``A`` starting a sentence ("A 45-year-old ...") is not taken as a choice.
    """
    valid = "".join(dict.fromkeys(str(k).strip().upper() for k in letters if len(str(k).strip()) == 1))
    valid = "".join(ch for ch in valid if ch.isalpha())
    if not valid or not text or not text.strip():
        return None
    clean = _EMPHASIS.sub("", text)
    patterns = _letter_patterns(valid)
    parsed = parse_completion(clean)
    if parsed.has_answer and parsed.answer:
        segment = parsed.answer.splitlines()[0] if parsed.answer.splitlines() else parsed.answer
        found = _leading_letter(segment, valid) or _last_cue_letter(segment, patterns)
        if found is None and options:
            found = _match_option_text(segment, options)
        if found is not None:
            return found if found in valid else None
    whole = clean.strip()
    found = _leading_letter(whole, valid) if len(whole) <= 4 else None
    found = found or _last_cue_letter(clean, patterns)
    return found if found and found in valid else None
