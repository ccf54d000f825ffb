"""MedQA-USMLE test set, 4-option version, with the USMLE Step joined from the MedReason copy.

Files: ``medllm-qa-benchmark-aistairc/medqa_en_4op.jsonl`` (the items) and
``medreason-eval-medqa/medqa_test.jsonl`` (the same questions with ``meta_info`` = ``step1`` or
``step2&3``). The join is on the question text; the Step becomes a tag and the subject.
"""

from __future__ import annotations

import logging
from pathlib import Path

from core.datasets.aistairc import FOLDER, iter_rows, mcq_record
from core.datasets.base import DataError, SourceInfo, iter_jsonl, require_str
from core.records import Record

log = logging.getLogger(__name__)

INFO = SourceInfo(
    name="medqa",
    license="MIT",
    attribution="MedQA-USMLE test set (Jin et al. 2020, MIT), via aistairc/medLLM_QA_benchmark; "
    "USMLE Step tags from UCSC-VLAA/MedReason",
)
FILE = f"{FOLDER}/medqa_en_4op.jsonl"
STEP_FILE = "medreason-eval-medqa/medqa_test.jsonl"
STEPS = {"step1": "USMLE Step 1", "step2&3": "USMLE Step 2&3"}


def read_steps(path: Path) -> dict[str, str]:
    """Question text -> Step tag from the MedReason copy."""
    steps: dict[str, str] = {}
    for line, row in iter_jsonl(path):
        question = require_str(row, "question", path, line)
        step = require_str(row, "meta_info", path, line)
        if step not in STEPS:
            raise DataError(path, line, "meta_info", f"expected one of {sorted(STEPS)}, got {step!r}")
        steps[question.strip()] = step
    return steps


def read(path: Path, steps: dict[str, str] | None = None, *, relative: str = FILE) -> list[Record]:
    """MedQA records; ``steps`` (from :func:`read_steps`) adds the Step tag where the question matches."""
    records: list[Record] = []
    missing = 0
    for row in iter_rows(path):
        step = (steps or {}).get(row.question)
        missing += steps is not None and step is None
        records.append(
            mcq_record(INFO, row, relative=relative, subject=STEPS.get(step or "", ""), tags=[step] if step else [])
        )
    if missing:
        log.warning("medqa: %d of %d questions have no Step tag in %s", missing, len(records), STEP_FILE)
    return records
