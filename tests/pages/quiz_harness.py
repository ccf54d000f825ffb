"""Helpers for the quiz and curation page tests: a small prepared bank in a throwaway work dir.

Plain functions, like ``auth_harness``: :func:`quiz_environment` wraps ``app_environment`` and
writes :data:`BANK` as prepared data (``<work_dir>/data/bank.jsonl`` + ``manifest.json``), which is
all ``app.resources.get_bank`` needs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from streamlit.testing.v1 import AppTest

from core.records import Record, mcq_answer, write_jsonl
from tests.pages.auth_harness import app_environment


def mcq(item_id: str, question: str, options: Sequence[str], correct: str, **fields: Any) -> Record:
    opts = {chr(ord("A") + i): text for i, text in enumerate(options)}
    fields.setdefault("license", "MIT")
    fields.setdefault("attribution", f"{item_id.split(':')[0]} test fixture")
    return Record(id=item_id, source=item_id.split(":")[0], question=question, kind="mcq", options=opts,
                  correct=correct, answer=mcq_answer(opts, correct), split="bank", **fields)


BANK: list[Record] = [
    mcq("medqa:q1", "A 24-year-old woman has fatigue, a low MCV and low ferritin. Most likely cause?",
        ["Iron deficiency", "Vitamin B12 deficiency", "Folate deficiency", "Hemolysis"], "A",
        explanation="Low ferritin is specific for iron deficiency.", subject="Hematology", tags=["step1"]),
    mcq("medqa:q2", "First-line drug for an anaphylactic reaction?",
        ["Diphenhydramine", "Epinephrine", "Prednisone", "Albuterol"], "B",
        explanation="Intramuscular epinephrine first.", subject="Pharmacology", tags=["step1"]),
    mcq("medqa:q3", "ECG finding of hyperkalemia?",
        ["U waves", "Peaked T waves", "Delta waves", "Osborn waves"], "B",
        subject="Cardiology", tags=["step2&3"]),
    mcq("medmcqa:q4", "Nerve supplying the deltoid?",
        ["Radial", "Axillary", "Musculocutaneous", "Ulnar"], "B", subject="Anatomy"),
    mcq("medmcqa:q5", "Moality of emergency abdominal aoic surgery?",
        ["10%", "20%", "40%", ">50%"], "C", subject="Surgery", flags=["ocr-suspect"]),
    mcq("casimedicos:q6", "A 60-year-old with crushing chest pain and ST elevation in II, III, aVF. Culprit artery?",
        ["Left anterior descending", "Right coronary", "Left circumflex", "Left main"], "B",
        subject="Cardiology", license="CC BY 4.0",
        attribution="CasiMedicos-Arg by IXA/HiTZ (Goenaga et al. 2023), CC BY 4.0",
        explanation="Inferior leads point to the right coronary artery."),
    mcq("pubmedqa:q7", "Does surgical effort still matter in quaternary cytoreduction?",
        ["yes", "no", "maybe"], "A", context="BACKGROUND: Outcomes of quaternary cytoreduction in ovarian cancer.",
        explanation="Maximal effort prolonged survival."),
    Record(id="medical-o1:o1", source="medical-o1", license="Apache-2.0", kind="open", split="bank",
           question="Which electrolyte disturbance causes peaked T waves on an ECG?",
           reasoning="Peaked T waves reflect faster repolarisation, typical of high potassium.",
           answer="Hyperkalemia causes peaked T waves.", subject="Emergency medicine", tags=["reasoning-test"],
           attribution="medical-o1-reasoning-SFT test fixture"),
]


def write_prepared_bank(work_dir: Path, records: Sequence[Record] = BANK) -> Path:
    """Write ``records`` as the prepared bank of ``work_dir``; returns the data folder."""
    data = work_dir / "data"
    write_jsonl(data / "bank.jsonl", records)
    (data / "manifest.json").write_text(json.dumps({"pipeline": "test", "counts": {"bank": len(records)}}))
    return data


def quiz_environment(monkeypatch: pytest.MonkeyPatch, work_dir: Path,
                     records: Sequence[Record] = BANK) -> Iterator[Engine]:
    """``app_environment`` plus a prepared bank of ``records``."""
    write_prepared_bank(work_dir, records)
    yield from app_environment(monkeypatch, work_dir)


def texts(at: AppTest) -> list[str]:
    """Values of every ``st.text`` element of the last run."""
    return [t.value for t in at.text]
