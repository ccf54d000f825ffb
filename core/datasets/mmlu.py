"""MMLU medical subjects (test split, 1,089 items); the copy stores no subject, so ``subject`` stays empty."""

from __future__ import annotations

from pathlib import Path

from core.datasets.aistairc import FOLDER, iter_rows
from core.datasets.base import SourceInfo, mcq_answer
from core.records import Record, stable_id

INFO = SourceInfo(
    name="mmlu",
    license="MIT",
    attribution="MMLU medical subsets (Hendrycks et al. 2021, MIT), via aistairc/medLLM_QA_benchmark",
)
FILE = f"{FOLDER}/mmlu_en_medical.jsonl"


def read(path: Path, *, relative: str = FILE) -> list[Record]:
    return [
        Record(
            id=stable_id(INFO.name, row.question, row.options),
            source=INFO.name,
            license=INFO.license,
            question=row.question,
            kind="mcq",
            answer=mcq_answer(row.options, row.correct),
            options=row.options,
            correct=row.correct,
            attribution=INFO.attribution,
            origin=f"{relative}:{row.line} (problem_id {row.problem_id})",
        )
        for row in iter_rows(path)
    ]
