"""The prepared question bank in memory, and the full-text search behind the curation page's browser.

:class:`Bank` is built once per version of the prepared data (``app.resources.get_bank`` caches it
with ``st.cache_resource``) and never mutated: instructors' edits, retirements and imported items
live in the database and are layered on top by :mod:`core.quiz_catalog` (loaded by ``services.quiz``).

Search: every word of the query must occur (case-insensitive, accents kept, NFKC) in the item's
id, source, subject, tags, question, options, answer, explanation or context; ``"a phrase"`` in
double quotes must occur as written.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from core.quiz import facet_matcher
from core.records import Record

OCR_FLAG = "ocr-suspect"
"""The quality flag of MedMCQA items whose text looks damaged by OCR."""

OcrFilter = Literal["any", "only", "exclude"]
OCR_FILTERS: tuple[OcrFilter, ...] = ("any", "only", "exclude")

_TERM_RE = re.compile(r'"([^"]+)"|(\S+)')


def search_text(record: Record) -> str:
    """Everything the search looks at, folded for case-insensitive matching."""
    parts = [record.id, record.source, record.subject, " ".join(record.tags), record.question, record.answer,
             record.explanation, record.context]
    if record.options:
        parts.extend(record.options.values())
    return _fold(" \n".join(parts))


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def query_terms(query: str) -> list[str]:
    """The query's words and quoted phrases, folded; empty for a blank query."""
    terms = []
    for phrase, word in _TERM_RE.findall(_fold(query or "")):
        term = (phrase or word).strip()
        if term:
            terms.append(term)
    return terms


@dataclass(frozen=True)
class Bank:
    """The held-out bank: records in file order, an index by id, and precomputed search text."""

    records: tuple[Record, ...]
    by_id: Mapping[str, Record]
    _haystacks: Mapping[str, str] = field(repr=False)

    @classmethod
    def from_records(cls, records: Iterable[Record]) -> Bank:
        """Index ``records``; when an id repeats, the first record wins (the pipeline never writes repeats)."""
        by_id: dict[str, Record] = {}
        for record in records:
            by_id.setdefault(record.id, record)
        kept = tuple(by_id.values())
        return cls(records=kept, by_id=by_id, _haystacks={r.id: search_text(r) for r in kept})

    def __len__(self) -> int:
        return len(self.records)

    def get(self, item_id: str) -> Record | None:
        return self.by_id.get(item_id)

    def haystack(self, record: Record) -> str:
        """Search text of ``record``: precomputed for the bank's own records, computed for edited or imported ones."""
        if self.by_id.get(record.id) is record:
            return self._haystacks[record.id]
        return search_text(record)


def has_flag(record: Record, flag: str) -> bool:
    return flag in record.flags


def browse(
    records: Iterable[Record],
    *,
    query: str = "",
    sources: Collection[str] | None = None,
    subjects: Collection[str] | None = None,
    steps: Collection[str] | None = None,
    kinds: Collection[str] | None = None,
    ocr: OcrFilter = "any",
    haystack: Callable[[Record], str] | None = None,
) -> list[Record]:
    """Records matching the query and every filter, in the order given.

    Filters of ``None`` let everything through (unlike an empty collection, which lets nothing
    through). ``ocr``: ``any``, ``only`` (OCR-suspect items only) or ``exclude``. ``haystack``
    gives an item's search text (default :func:`search_text`; pass ``Bank.haystack`` to reuse the
    precomputed text).
    """
    if ocr not in OCR_FILTERS:
        raise ValueError(f"OCR filter must be one of {list(OCR_FILTERS)}, got {ocr!r}.")
    matches = facet_matcher(sources=sources, subjects=subjects, steps=steps, kinds=kinds)
    terms = query_terms(query)
    text_of = haystack or search_text
    out = []
    for record in records:
        if not matches(record):
            continue
        flagged = has_flag(record, OCR_FLAG)
        if (ocr == "only" and not flagged) or (ocr == "exclude" and flagged):
            continue
        if terms:
            text = text_of(record)
            if not all(term in text for term in terms):
                continue
        out.append(record)
    return out
