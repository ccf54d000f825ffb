"""The question bank as students and instructors see it: the prepared bank plus imported items, with edits.

A :class:`Catalog` is the read-only prepared bank (``core.quiz_bank.Bank``) plus the items
instructors imported, with their edits applied and retired items marked. ``services.curation``
builds one per page run from the stored rows (the bank itself is cached by the app) and never
keeps it across runs, so every change shows up at once. The newest edit of an item is its whole
current state (edited fields and retirement); the original is always kept (``Catalog.original``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.quiz import OverrideError, apply_override
from core.quiz_bank import Bank
from core.records import Record

log = logging.getLogger(__name__)

EDITABLE_FIELDS = ("question", "options", "explanation")
"""What an instructor can change on an item (core.quiz also allows ``correct``; our table has no column for it)."""


@dataclass(frozen=True)
class EditInfo:
    """The current instructor edit of an item."""

    fields: Mapping[str, Any]
    """Edited field -> new value (only fields that differ from the original)."""
    retired: bool
    editor_id: int
    edited_at: datetime


def edit_fields(row: Any) -> dict[str, Any]:
    """The edited fields of a stored edit (an ``ItemOverride`` row): only those it sets."""
    return {name: getattr(row, name) for name in EDITABLE_FIELDS if getattr(row, name) is not None}


@dataclass(frozen=True)
class Catalog:
    """Bank + imported items, with instructors' edits and retirements."""

    bank: Bank
    imported: Mapping[str, Record]
    edits: Mapping[str, EditInfo]

    # -- looking items up ------------------------------------------------------------------------

    def original(self, item_id: str) -> Record | None:
        """The item as it came from the bank or the import, without edits."""
        return self.bank.get(item_id) or self.imported.get(item_id)

    def item(self, item_id: str) -> Record | None:
        """The item as students see it (edits applied), retired or not; None when it does not exist.

        An edit that no longer fits the original (the bank was re-prepared with other options) is
        ignored and logged rather than breaking every quiz that uses the item.
        """
        original = self.original(item_id)
        if original is None:
            return None
        info = self.edits.get(item_id)
        if info is None or not info.fields:
            return original
        try:
            return apply_override(original, info.fields)
        except OverrideError as exc:
            log.warning("ignoring the edit of %s: %s", item_id, exc)
            return original

    def is_retired(self, item_id: str) -> bool:
        info = self.edits.get(item_id)
        return bool(info and info.retired)

    def is_edited(self, item_id: str) -> bool:
        info = self.edits.get(item_id)
        return bool(info and info.fields)

    def is_imported(self, item_id: str) -> bool:
        return item_id in self.imported and item_id not in self.bank.by_id

    @property
    def retired_ids(self) -> frozenset[str]:
        return frozenset(item_id for item_id, info in self.edits.items() if info.retired)

    def all_ids(self) -> set[str]:
        """Every id in the bank or imported (retired ones included): what a new import must not repeat."""
        return set(self.bank.by_id) | set(self.imported)

    def originals(self) -> Iterator[Record]:
        """Bank items, then imported ones, unedited."""
        yield from self.bank.records
        for item_id, record in self.imported.items():
            if item_id not in self.bank.by_id:
                yield record

    def items(self, *, include_retired: bool = False) -> list[Record]:
        """Every item as students see it, bank order then imports; retired ones only when asked."""
        out = []
        for record in self.originals():
            if not include_retired and self.is_retired(record.id):
                continue
            out.append(self.item(record.id) if record.id in self.edits else record)
        return out

    def haystack(self, record: Record) -> str:
        """Search text of an item (precomputed for unedited bank items)."""
        return self.bank.haystack(record)
