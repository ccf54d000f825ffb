"""MMLU medical subjects (test split, 1,089 items); the copy stores no subject, so ``subject`` stays empty."""

from __future__ import annotations

from pathlib import Path

from core.datasets.aistairc import FOLDER, iter_rows, mcq_record
from core.datasets.base import SourceInfo
from core.records import Record

INFO = SourceInfo(
    name="mmlu",
    license="MIT",
    attribution="MMLU medical subsets (Hendrycks et al. 2021, MIT), via aistairc/medLLM_QA_benchmark",
)
FILE = f"{FOLDER}/mmlu_en_medical.jsonl"


def read(path: Path, *, relative: str = FILE) -> list[Record]:
    return [mcq_record(INFO, row, relative=relative) for row in iter_rows(path)]
