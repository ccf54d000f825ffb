"""HuatuoGPT-o1 demo data: 198 medical-o1 triples, each with the exam question it was rewritten from.

File: ``huatuogpt-o1-demo/demo_data.json`` (a JSON array). The training item is the open-ended
triple (``Question`` / ``Complex_CoT`` / ``Response``); the source MCQ (``question``, ``options``,
``answer_idx``) is kept in ``Record.source_mcq`` so leak control can match it against the quiz bank
(3 of them reappear in MedMCQA). ``Response`` sometimes contradicts ``answer_idx``: grade by the key.
"""

from __future__ import annotations

from pathlib import Path

from core.datasets.base import DataError, SourceInfo, iter_json_items, require_options, require_str
from core.records import Record, stable_id

INFO = SourceInfo(
    name="huatuogpt-o1-demo",
    license="Apache-2.0",
    attribution="HuatuoGPT-o1 demo data by FreedomIntelligence (Chen et al. 2024); Apache-2.0 inferred from the "
    "authors' medical-o1-reasoning-SFT release; source questions from MedQA/MedMCQA (MIT)",
)
FOLDER = "huatuogpt-o1-demo"
FILE = f"{FOLDER}/demo_data.json"


def read(path: Path, *, relative: str = FILE) -> list[Record]:
    records = []
    for line, index, row in iter_json_items(path):
        if not isinstance(row, dict):
            raise DataError(path, line, None, f"expected a JSON object per record, got {type(row).__name__}")
        question = require_str(row, "Question", path, line).strip()
        mcq_question = require_str(row, "question", path, line).strip()
        if "options" not in row:
            raise DataError(path, line, "options", "missing")
        options = require_options(row["options"], path, line, "options")
        correct = require_str(row, "answer_idx", path, line).strip().upper()
        if correct not in options:
            raise DataError(path, line, "answer_idx", f"{correct!r} is not one of the options {list(options)}")
        records.append(
            Record(
                id=stable_id(INFO.name, question),
                source=INFO.name,
                license=INFO.license,
                question=question,
                kind="open",
                reasoning=require_str(row, "Complex_CoT", path, line).strip(),
                answer=require_str(row, "Response", path, line).strip(),
                attribution=INFO.attribution,
                origin=f"{relative}:{line} (record {index})",
                source_mcq={"question": mcq_question, "options": options, "correct": correct},
            )
        )
    return records
