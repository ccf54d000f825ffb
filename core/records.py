"""The canonical record: one shape for every source, used by the data pipeline, trainer, quiz and app.

Prepared data is JSONL, one record per line (see :func:`write_jsonl` / :func:`read_jsonl`), in
``<work_dir>/data/``: ``train.jsonl``, ``validation.jsonl``, ``test.jsonl`` (the reasoning corpus)
and ``bank.jsonl`` (held-out quiz and evaluation items), plus ``manifest.json``.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

from core.atomic import atomic_file

Kind = Literal["open", "mcq"]
Split = Literal["train", "validation", "test", "bank"]


@dataclass
class Record:
    """One question with everything a training example or a quiz item needs."""

    id: str
    """Stable id: ``<source>:<hash of normalised question + options>`` (see :func:`stable_id`)."""
    source: str
    """Short source name, e.g. ``medical-o1``, ``casimedicos``, ``medqa``, ``medmcqa``, ``mmlu``, ``pubmedqa``."""
    license: str
    """License of the record's text, e.g. ``Apache-2.0``, ``CC BY 4.0``, ``MIT``."""
    question: str
    kind: Kind = "open"
    reasoning: str = ""
    """Step-by-step reasoning (training target); empty for bank-only items."""
    answer: str = ""
    """Final answer text (for an MCQ: the correct letter and its text, ``"C. option text"``)."""
    options: dict[str, str] | None = None
    """Option key -> text for multiple choice, keys ``A``, ``B``, ... in display order."""
    correct: str | None = None
    """Key of the correct option for multiple choice."""
    explanation: str = ""
    """Human-written explanation shown after answering (where the source has one)."""
    context: str = ""
    """Extra material shown with the question (PubMedQA abstract)."""
    subject: str = ""
    tags: list[str] = field(default_factory=list)
    """Free tags, e.g. ``step1``, ``step2&3``, ``official-test``."""
    flags: list[str] = field(default_factory=list)
    """Quality flags, e.g. ``ocr-suspect`` (never a silent edit of the text)."""
    split: str = ""
    attribution: str = ""
    """Credit line shown wherever the item appears (required for CC BY sources)."""
    origin: str = ""
    """Where it came from: file and line / row id, for error messages and audits."""
    source_mcq: dict[str, Any] | None = None
    """The exam question an open-ended item was rewritten from (HuatuoGPT-o1 demo):
    ``{"question": str, "options": {"A": str, ...}, "correct": "A"}``; grade by its key, never by ``answer``."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Record":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def mcq_answer(options: dict[str, str], correct: str) -> str:
    """The final-answer text used for every multiple-choice record: ``"C. option text"``."""
    return f"{correct}. {options[correct]}"


_WS = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]")


def normalise(text: str) -> str:
    """Lower-case, NFKC, punctuation dropped, whitespace folded: the text used for ids and dedup."""
    text = unicodedata.normalize("NFKC", text).lower()
    return _WS.sub(" ", _PUNCT.sub(" ", text)).strip()


def stable_id(source: str, question: str, options: dict[str, str] | None = None) -> str:
    """Deterministic id from the normalised question and options."""
    payload = normalise(question)
    if options:
        payload += "\x1f" + "\x1f".join(normalise(v) for v in options.values())
    return f"{source}:{hashlib.sha256(payload.encode()).hexdigest()[:16]}"


def write_jsonl(path: Path, records: Iterable[Record | dict[str, Any]]) -> int:
    """Write records atomically (temp file in the same folder, then rename); returns the count."""
    n = 0
    with atomic_file(path) as fh:
        for rec in records:
            data = rec.to_dict() if isinstance(rec, Record) else rec
            fh.write(json.dumps(data, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    return n


class RecordsError(ValueError):
    """A records file that is not what :func:`write_jsonl` writes; the message names the file and line."""


_REQUIRED = ("id", "source", "license", "question")
_TEXT_FIELDS = ("id", "source", "license", "question", "kind", "reasoning", "answer", "explanation", "context",
                "subject", "split", "attribution", "origin")


def _problem(data: Any) -> str | None:
    """Why ``data`` (one parsed line) is not a record, or None."""
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    wrong = [k for k in _TEXT_FIELDS if k in data and not isinstance(data[k], str)]
    if wrong:
        return f"field(s) {', '.join(wrong)} must be text"
    options = data.get("options")
    if options is not None and not (
        isinstance(options, dict) and all(isinstance(v, str) for v in options.values())
    ):
        return "options must be an object of letter: text"
    for name in ("tags", "flags"):
        if not isinstance(data.get(name, []), list):
            return f"{name} must be a list"
    return None


def read_jsonl(path: Path) -> Iterator[Record]:
    """Read records written by :func:`write_jsonl`.

    Raises :class:`RecordsError` (a ValueError) naming the file and line of the first line that is
    not a record (broken JSON, not an object, missing or mistyped fields); blank lines are skipped.
    """
    with path.open(encoding="utf-8", errors="strict") as fh:
        number = 0
        while True:
            try:
                line = fh.readline()
            except UnicodeDecodeError as exc:
                raise RecordsError(f"{path}: after line {number}: not UTF-8 text ({exc.reason})") from exc
            if not line:
                return
            number += 1
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except RecursionError:
                raise RecordsError(f"{path}, line {number}: invalid JSON (nested too deeply)") from None
            except ValueError as exc:  # JSONDecodeError, or an integer beyond the 4300-digit limit
                raise RecordsError(f"{path}, line {number}: invalid JSON ({str(exc)[:120]})") from exc
            problem = _problem(data)
            if problem:
                raise RecordsError(f"{path}, line {number}: not a record: {problem}")
            yield Record.from_dict(data)
