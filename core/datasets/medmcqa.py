"""MedMCQA dev set (4,183 items, 4 options), with OCR damage flagged but never edited.

The copy has no subject field (checked: every row holds only ``problem_id``, ``problem_text``,
``choices``, ``answer``, ``points``, ``text_only``), so ``subject`` stays empty.

OCR damage in this dataset mostly drops the letters "rt" ("aery" for artery, "cailage" for
cartilage, "Sta" for Start). A word is suspect when it is not a known word but becomes one when
"rt" is put back somewhere in it. Known words come from the other sources' text (passed in by the
pipeline) plus a small built-in list, so the check works on small fixtures too. Suspect items get
the flag ``ocr-suspect``; instructors fix or retire them in the app.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Iterable

from core.datasets.aistairc import FOLDER, iter_rows, mcq_record
from core.datasets.base import SourceInfo
from core.records import Record

INFO = SourceInfo(
    name="medmcqa",
    license="MIT",
    attribution="MedMCQA dev set (Pal et al. 2022, MIT), via aistairc/medLLM_QA_benchmark",
)
FILE = f"{FOLDER}/medmcqa.jsonl"
OCR_FLAG = "ocr-suspect"

_WORD = re.compile(r"[A-Za-z]+")

BUILTIN_WORDS = frozenset(
    """
    abortion aorta aortic apart arterial arteries arteriole artery arthritis article articles assortment
    birth births cartilage cartilaginous certain chart cohort compartment converted cortex cortical
    corticosteroid corticosteroids cortisol court department distort distorted expert experts fertile
    fertility fertilization further heart hearts hypertension hypertensive hypertensives hypertrophy important
    importance infertility inserted insertion mortality mortem orthopedic orthopaedic partial partially partner
    portal portion postpartum proportion puberty quartile report reported reports short shortness start started
    starting starts support supportive supports urticaria vertebra vertebral vertebrae vertex vertigo
    """.split()
)
"""Common medical words containing "rt", so the check also works when no other source is present."""

REAL_WORDS = frozenset({"hyperopia", "ale", "cha", "apa", "disto"})
"""Real words, abbreviations or dental terms ("disto-occlusal") that only look like damaged ones."""


def read(path: Path, *, relative: str = FILE) -> list[Record]:
    return [mcq_record(INFO, row, relative=relative) for row in iter_rows(path)]


def vocabulary(texts: Iterable[str], *, min_count: int = 2) -> frozenset[str]:
    """Lower-case words seen at least ``min_count`` times in ``texts``, plus the built-in list."""
    counts = Counter(w.lower() for text in texts for w in _WORD.findall(text))
    return BUILTIN_WORDS | {w for w, n in counts.items() if n >= min_count}


def suspect_words(text: str, known: frozenset[str]) -> list[str]:
    """Words of ``text`` that look like a known word with "rt" dropped."""
    found = []
    for word in _WORD.findall(text):
        w = word.lower()
        if len(w) < 3 or w in known or w in REAL_WORDS:
            continue
        if any(w[:i] + "rt" + w[i:] in known for i in range(len(w) + 1)):
            found.append(word)
    return found


def flag_ocr(records: Iterable[Record], known: frozenset[str]) -> Counter[str]:
    """Add the ``ocr-suspect`` flag to damaged records (text untouched); returns the suspect-word counts."""
    seen: Counter[str] = Counter()
    for rec in records:
        words = suspect_words(" ".join([rec.question, *(rec.options or {}).values()]), known)
        if words and OCR_FLAG not in rec.flags:
            rec.flags.append(OCR_FLAG)
        seen.update(w.lower() for w in words)
    return seen
