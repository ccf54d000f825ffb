"""The JSONL layout of the aistairc/medLLM_QA_benchmark copies (MedQA, MedMCQA, MMLU, PubMedQA).

Each line: ``problem_id``, ``problem_text``, ``choices`` (list of option texts in order a, b, c, ...)
and ``answer`` (a list with one lower-case letter). See ``medllm-qa-benchmark-aistairc/PROVENANCE.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from core.datasets.base import DataError, SourceInfo, iter_jsonl, require_options, require_str
from core.records import Record, mcq_answer, stable_id

FOLDER = "medllm-qa-benchmark-aistairc"


@dataclass(frozen=True)
class BenchmarkRow:
    line: int
    problem_id: str
    question: str
    options: dict[str, str]
    correct: str


def iter_rows(path: Path) -> Iterator[BenchmarkRow]:
    """Validated rows of one benchmark file; a bad row raises :class:`DataError` with line and field."""
    for line, row in iter_jsonl(path):
        if "problem_id" not in row:
            raise DataError(path, line, "problem_id", "missing")
        question = require_str(row, "problem_text", path, line)
        if "choices" not in row:
            raise DataError(path, line, "choices", "missing")
        options = require_options(row["choices"], path, line, "choices")
        answer = row.get("answer")
        if not (isinstance(answer, list) and len(answer) == 1 and isinstance(answer[0], str)):
            raise DataError(path, line, "answer", f"expected a list with one letter, got {answer!r}")
        correct = answer[0].strip().upper()
        if correct not in options:
            raise DataError(path, line, "answer", f"letter {answer[0]!r} is not one of the options {list(options)}")
        yield BenchmarkRow(line, str(row["problem_id"]), question.strip(), options, correct)


def mcq_record(info: SourceInfo, row: BenchmarkRow, *, relative: str, subject: str = "", tags: list[str] | None = None) -> Record:
    """The canonical multiple-choice record of one benchmark row."""
    return Record(
        id=stable_id(info.name, row.question, row.options),
        source=info.name,
        license=info.license,
        question=row.question,
        kind="mcq",
        answer=mcq_answer(row.options, row.correct),
        options=row.options,
        correct=row.correct,
        subject=subject,
        tags=list(tags or []),
        attribution=info.attribution,
        origin=f"{relative}:{row.line} (problem_id {row.problem_id})",
    )
