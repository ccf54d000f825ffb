"""How quiz items are put into words on the pages: Markdown escaping, labels, credit lines and notices.

Item text comes from public datasets, imports and instructors' edits, so it is untrusted. Pages show
long text with ``st.text`` (no Markdown, no HTML); where a widget renders Markdown (radio options,
captions) the text goes through :func:`core.safety.markdown_text` (literal form, ``md_escape``) first, so ``<script>``, ``**`` or ``$x$`` show
exactly as written. Nothing here touches Streamlit.
"""

from __future__ import annotations

import math
from functools import partial

from core.quiz_bank import OCR_FLAG
from core.records import Record
from core.safety import markdown_text

NO_SUBJECT = "(no subject)"
STEP_LABELS: dict[str, str] = {"step1": "USMLE Step 1", "step2&3": "USMLE Step 2 & 3"}
KIND_LABELS: dict[str, str] = {"mcq": "Multiple choice", "open": "Open-ended"}
SELF_GRADE_LABELS: dict[str, str] = {"correct": "Correct", "partly": "Partly right", "wrong": "Wrong"}

FLAG_NOTICES: dict[str, str] = {
    OCR_FLAG: "This item's text may contain OCR errors from the source (letters or words garbled); "
              "the answer key is the source's.",
    "conflicting-key": "The sources disagree about this item's answer key.",
    "duplicate": "This item also appears elsewhere in the bank.",
}

md_escape = partial(markdown_text, formatting=False)
"""``text`` as Markdown that renders as exactly that text: :func:`core.safety.markdown_text`'s literal form."""


def option_label(key: str, text: str) -> str:
    """A radio option's Markdown label ``A. text``, escaped."""
    return md_escape(f"{key}. {text}")


def subject_label(subject: str) -> str:
    return subject or NO_SUBJECT


def step_label(tag: str) -> str:
    return STEP_LABELS.get(tag, tag)


def kind_label(kind: str) -> str:
    return KIND_LABELS.get(kind, kind)


def needs_attribution(record: Record) -> bool:
    """Whether the item's license obliges us to credit it (Creative Commons BY family)."""
    return record.license.strip().upper().replace("-", " ").startswith("CC BY")


def credit_line(record: Record) -> str:
    """Plain text: where the item comes from, its license and the credit line.

    A CC BY item without an attribution still names its source and license, and says that the
    credit is missing, so an instructor can fix the import.
    """
    parts = [f"Source: {record.source}", f"License: {record.license or 'unknown'}"]
    if record.attribution:
        parts.append(record.attribution)
    elif needs_attribution(record):
        parts.append("attribution missing: the importer gave no credit line")
    return " · ".join(parts)


def notices(record: Record) -> list[str]:
    """Plain-text notices for the item's quality flags, in a fixed order."""
    return [FLAG_NOTICES[flag] for flag in FLAG_NOTICES if flag in record.flags]


def preview(text: str, width: int = 90) -> str:
    """One line of ``text``, cut at a word boundary with an ellipsis when longer than ``width``."""
    line = " ".join((text or "").split())
    if len(line) <= width:
        return line
    cut = line[: width - 1]
    if line[width - 1] != " " and " " in cut[width // 2 :]:  # mid-word: back up to the last whole word
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,.;:") + "…"


def format_duration(seconds: float | None) -> str:
    """``m:ss`` or ``h:mm:ss``; an en dash for None (or NaN/infinity). Rounds down, never negative."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
