"""PubMedQA PQA-L: 1,000 expert-labelled yes/no/maybe questions on PubMed abstracts.

Files: ``pubmedqa-pqal/ori_pqal.json`` (object keyed by PubMed id) and
``pubmedqa-pqal/test_ground_truth.json`` (the 500 official test ids -> label). Items become MCQs
with options A yes / B no / C maybe, the abstract (paragraphs prefixed with their section label)
in ``context`` and the abstract's conclusion (``LONG_ANSWER``) as the explanation. The official
test items carry the tag ``official-test``.
"""

from __future__ import annotations

from pathlib import Path

from core.datasets.base import DataError, SourceInfo, iter_json_items, mcq_answer, require_str
from core.records import Record, stable_id

INFO = SourceInfo(
    name="pubmedqa",
    license="MIT",
    attribution="PubMedQA PQA-L (Jin et al. 2019, MIT); abstracts from PubMed",
)
FOLDER = "pubmedqa-pqal"
FILE = f"{FOLDER}/ori_pqal.json"
TEST_FILE = f"{FOLDER}/test_ground_truth.json"
OPTIONS = {"A": "yes", "B": "no", "C": "maybe"}
LABEL_TO_KEY = {text: key for key, text in OPTIONS.items()}
TEST_TAG = "official-test"


def read_test_ids(path: Path) -> dict[str, str]:
    """Official test PubMed id -> gold label."""
    labels: dict[str, str] = {}
    for line, key, value in iter_json_items(path):
        if not isinstance(key, str):
            raise DataError(path, line, None, "expected a JSON object keyed by PubMed id")
        if value not in LABEL_TO_KEY:
            raise DataError(path, line, key, f"expected yes, no or maybe, got {value!r}")
        labels[key] = value
    return labels


def read(path: Path, test_labels: dict[str, str] | None = None, *, relative: str = FILE) -> list[Record]:
    records: list[Record] = []
    for line, pmid, row in iter_json_items(path):
        if not isinstance(pmid, str) or not isinstance(row, dict):
            raise DataError(path, line, None, "expected a JSON object of PubMed id -> record object")
        where = f"line {line} (PubMed id {pmid})"
        question = require_str(row, "QUESTION", path, where).strip()
        decision = require_str(row, "final_decision", path, where).strip()
        if decision not in LABEL_TO_KEY:
            raise DataError(path, where, "final_decision", f"expected yes, no or maybe, got {decision!r}")
        contexts, labels = row.get("CONTEXTS"), row.get("LABELS")
        if not isinstance(contexts, list) or not contexts or not all(isinstance(c, str) for c in contexts):
            raise DataError(path, where, "CONTEXTS", "expected a non-empty list of paragraphs")
        if not isinstance(labels, list) or len(labels) != len(contexts):
            raise DataError(path, where, "LABELS", "expected one section label per context paragraph")
        long_answer = require_str(row, "LONG_ANSWER", path, where).strip()
        context = "\n\n".join(f"{label}: {text.strip()}" if label else text.strip() for label, text in zip(labels, contexts))
        tags = []
        if test_labels is not None and pmid in test_labels:
            if test_labels[pmid] != decision:
                raise DataError(path, where, "final_decision", f"{decision!r} disagrees with {TEST_FILE} ({test_labels[pmid]!r})")
            tags.append(TEST_TAG)
        correct = LABEL_TO_KEY[decision]
        records.append(
            Record(
                id=stable_id(INFO.name, question, OPTIONS),
                source=INFO.name,
                license=INFO.license,
                question=question,
                kind="mcq",
                answer=mcq_answer(OPTIONS, correct),
                options=dict(OPTIONS),
                correct=correct,
                explanation=long_answer,
                context=context,
                tags=tags,
                attribution=INFO.attribution,
                origin=f"{relative}:{line} (PubMed id {pmid})",
            )
        )
    return records
