"""The question bank as students and instructors see it, and the instructors' changes to it.

A :class:`Catalog` is the read-only prepared bank (``core.quiz_bank.Bank``) plus the items
instructors imported, with their edits applied and retired items marked. It is loaded per page run
with :func:`load_catalog` (a few small queries; the bank itself is cached by the app) and never
kept across runs, so every change shows up at once.

Edits are :class:`~storage.models.ItemOverride` rows; the newest row per item is the item's whole
current state (edited fields and retirement), so :func:`save_edit` and :func:`set_retired` carry
the other half over. A row stores only the fields that differ from the original, and the original
is always kept (``Catalog.original``). Quiz sets are edited through :func:`add_to_quiz_set`,
:func:`remove_from_quiz_set` and :func:`move_in_quiz_set`, which check who may change the set.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session

from core.quiz import OverrideError, apply_override, validate_override
from core.quiz_bank import Bank
from core.records import Record
from storage import quizzes
from storage.models import ItemOverride, QuizSet
from storage.history import Viewer
from storage.quizzes import QuizError

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


def _edit_fields(row: ItemOverride) -> dict[str, Any]:
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


def load_catalog(*, session: Session, bank: Bank) -> Catalog:
    """The catalog over ``bank``: imported items and the newest edit of every item, read now."""
    imported: dict[str, Record] = {}
    for row in quizzes.list_imported_items(session=session):
        try:
            imported[row.item_id] = Record.from_dict({**row.record, "id": row.item_id})
        except TypeError as exc:  # a row written by a future version with a different shape
            log.warning("skipping imported item %s: %s", row.item_id, exc)
    edits = {
        item_id: EditInfo(fields=_edit_fields(row), retired=row.retired, editor_id=row.editor_id,
                          edited_at=row.created_at)
        for item_id, row in quizzes.latest_overrides(session=session).items()
    }
    return Catalog(bank=bank, imported=imported, edits=edits)


# -- instructors' changes to items -------------------------------------------------------------------


def _require_item(catalog: Catalog, item_id: str) -> Record:
    original = catalog.original(item_id)
    if original is None:
        raise QuizError(f"There is no item {item_id!r} in the bank.")
    return original


def save_edit(
    *,
    session: Session,
    catalog: Catalog,
    item_id: str,
    editor_id: int,
    question: str,
    options: Mapping[str, str] | None = None,
    explanation: str = "",
) -> ItemOverride:
    """Save the item's text as the instructor wants students to see it (the original is kept).

    Pass the whole intended text; only fields that differ from the original are stored, so saving
    the original text back removes the edit. Options keep the original's letters (and so its
    answer key). Raises :class:`~core.quiz.OverrideError` listing every problem.
    """
    original = _require_item(catalog, item_id)
    fields: dict[str, Any] = {}
    question = (question or "").strip()
    if question != original.question.strip():
        fields["question"] = question
    if options is not None and original.options is not None:
        cleaned = {key: str(text).strip() for key, text in options.items()}
        if list(cleaned) != list(original.options):
            raise OverrideError([f"options must keep the letters {', '.join(original.options)}"])
        if cleaned != {k: v.strip() for k, v in original.options.items()}:
            fields["options"] = cleaned
    elif options is not None:
        fields["options"] = dict(options)  # validate_override explains why an open item cannot take options
    explanation = (explanation or "").strip()
    if explanation != original.explanation.strip():
        fields["explanation"] = explanation
    problems = validate_override(original, fields)
    if problems:
        raise OverrideError(problems)
    return quizzes.add_override(
        session=session, item_id=item_id, editor_id=editor_id, question=fields.get("question"),
        options=fields.get("options"), explanation=fields.get("explanation"), retired=catalog.is_retired(item_id),
    )


def set_retired(*, session: Session, catalog: Catalog, item_id: str, editor_id: int, retired: bool) -> ItemOverride:
    """Retire an item (no new quiz draws it; attempts already made keep it) or bring it back; edits stay."""
    _require_item(catalog, item_id)
    info = catalog.edits.get(item_id)
    fields = dict(info.fields) if info else {}
    return quizzes.add_override(
        session=session, item_id=item_id, editor_id=editor_id, question=fields.get("question"),
        options=fields.get("options"), explanation=fields.get("explanation"), retired=retired,
    )


def edit_history(*, session: Session, catalog: Catalog, item_id: str) -> list[tuple[ItemOverride, Record]]:
    """Every saved edit of an item, oldest first, each with the item as it read after that edit."""
    original = _require_item(catalog, item_id)
    out = []
    for row in quizzes.override_history(session=session, item_id=item_id):
        try:
            version = apply_override(original, _edit_fields(row))
        except OverrideError:
            version = original
        out.append((row, version))
    return out


def import_items(*, session: Session, importer_id: int, records: Sequence[Record]) -> int:
    """Store validated records (from ``core.quiz_import.parse_import``) in one transaction; returns the count."""
    quizzes.save_imported_items(session=session, importer_id=importer_id, records=[r.to_dict() for r in records])
    return len(records)


# -- quiz sets -------------------------------------------------------------------------------------------


def can_edit_quiz_set(viewer: Viewer, quiz_set: QuizSet) -> bool:
    """Admins may change every quiz set, instructors their own."""
    return viewer.role == "admin" or (viewer.role == "instructor" and quiz_set.owner_id == viewer.id)


def editable_quiz_sets(*, session: Session, viewer: Viewer) -> list[QuizSet]:
    """The quiz sets ``viewer`` may change and analyse, newest first."""
    if viewer.role == "admin":
        return quizzes.list_quiz_sets(session=session)
    if viewer.role == "instructor" and viewer.id is not None:
        return quizzes.list_quiz_sets(session=session, owner_id=viewer.id)
    return []


def editable_quiz_set(*, session: Session, viewer: Viewer, quiz_set_id: int) -> QuizSet:
    """The quiz set if ``viewer`` may change it; :class:`QuizError` (one message for absent and not yours)."""
    quiz_set = quizzes.get_quiz_set(session=session, quiz_set_id=quiz_set_id)
    if quiz_set is None or not can_edit_quiz_set(viewer, quiz_set):
        raise QuizError("This quiz set does not exist or you may not change it.")
    return quiz_set


@dataclass(frozen=True)
class AddResult:
    added: list[str]
    already: list[str]
    """Already in the set (left where they are)."""
    unknown: list[str]
    """Not in the bank."""
    retired: list[str]
    """Retired items are not added."""


def add_to_quiz_set(
    *, session: Session, catalog: Catalog, viewer: Viewer, quiz_set_id: int, item_ids: Sequence[str]
) -> AddResult:
    """Append items to the end of a set, in the order given; says which were skipped and why."""
    editable_quiz_set(session=session, viewer=viewer, quiz_set_id=quiz_set_id)
    current = quizzes.quiz_set_item_ids(session=session, quiz_set_id=quiz_set_id)
    added, already, unknown, retired = [], [], [], []
    for item_id in dict.fromkeys(i.strip() for i in item_ids if i and i.strip()):
        if item_id in current or item_id in added:
            already.append(item_id)
        elif catalog.original(item_id) is None:
            unknown.append(item_id)
        elif catalog.is_retired(item_id):
            retired.append(item_id)
        else:
            added.append(item_id)
    if added:
        quizzes.set_quiz_set_items(session=session, quiz_set_id=quiz_set_id, item_ids=[*current, *added])
    return AddResult(added=added, already=already, unknown=unknown, retired=retired)


def remove_from_quiz_set(*, session: Session, viewer: Viewer, quiz_set_id: int, item_id: str) -> list[str]:
    """Take an item out of a set (attempts already made keep it); returns the new order."""
    editable_quiz_set(session=session, viewer=viewer, quiz_set_id=quiz_set_id)
    current = quizzes.quiz_set_item_ids(session=session, quiz_set_id=quiz_set_id)
    if item_id not in current:
        return current
    remaining = [i for i in current if i != item_id]
    if not remaining:
        quiz_set = quizzes.get_quiz_set(session=session, quiz_set_id=quiz_set_id)
        if quiz_set is not None and quiz_set.published:
            raise QuizError("A published quiz set needs at least one question; unpublish it first.")
    return quizzes.set_quiz_set_items(session=session, quiz_set_id=quiz_set_id, item_ids=remaining)


def move_in_quiz_set(*, session: Session, viewer: Viewer, quiz_set_id: int, item_id: str, offset: int) -> list[str]:
    """Move an item ``offset`` places (negative: towards the start), clamped to the ends; returns the new order."""
    editable_quiz_set(session=session, viewer=viewer, quiz_set_id=quiz_set_id)
    current = quizzes.quiz_set_item_ids(session=session, quiz_set_id=quiz_set_id)
    if item_id not in current:
        raise QuizError(f"{item_id} is not in this quiz set.")
    index = current.index(item_id)
    target = min(max(index + offset, 0), len(current) - 1)
    if target == index:
        return current
    current.insert(target, current.pop(index))
    return quizzes.set_quiz_set_items(session=session, quiz_set_id=quiz_set_id, item_ids=current)
