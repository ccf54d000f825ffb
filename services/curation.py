"""Curating the question bank and quiz sets: item edits and retirements, imports, quiz sets, analytics.

Instructors change what students see without touching the prepared bank: an edit is an
:class:`~storage.models.ItemOverride` row whose newest version is the item's whole state (edited
fields and retirement), so :func:`save_edit` and :func:`set_retired` carry the other half over and
store only fields that differ from the original. Quiz sets change through the functions here,
which check who may change the set (admins every set, instructors their own). The analytics of a
set recompute every finished attempt's score from its stored answers with ``core.quiz``.

Functions take a keyword-only ``session`` (one unit of work each, as the page opens it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session

from core import quiz as quiz_core
from core.quiz import AttemptResult, OverrideError, QuizAnalytics, apply_override, validate_override
from core.quiz_catalog import Catalog, edit_fields
from core.quiz_import import quiz_set_to_csv, results_to_csv
from core.quiz_text import preview
from core.records import Record
from storage import accounts, attempts, quizzes
from storage.history import Viewer
from storage.models import ItemOverride, QuizSet
from storage.quizzes import QuizError
from services.quiz import item_difficulty, load_catalog, sitting_from_rows

__all__ = [
    "AddResult", "Catalog", "OverrideError", "QuizError", "QuizSetReport", "add_to_quiz_set", "create_quiz_set",
    "edit_history", "editable_quiz_set", "editable_quiz_sets", "import_items", "item_difficulty", "load_catalog", "move_in_quiz_set",
    "quiz_set_csv", "quiz_set_item_ids", "quiz_set_report", "remove_from_quiz_set", "results_csv", "save_edit",
    "set_published", "set_retired", "update_quiz_set",
]

log = logging.getLogger(__name__)

FINISHED = attempts.FINISHED_STATUSES

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
            version = apply_override(original, edit_fields(row))
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


def create_quiz_set(*, session: Session, owner_id: int, title: str, **values: Any) -> QuizSet:
    """A new, unpublished quiz set owned by ``owner_id`` (settings as in ``storage.quizzes.QUIZ_SET_FIELDS``)."""
    return quizzes.create_quiz_set(session=session, owner_id=owner_id, title=title, **values)


def quiz_set_item_ids(*, session: Session, quiz_set_id: int) -> list[str]:
    """The set's item ids in quiz order."""
    return quizzes.quiz_set_item_ids(session=session, quiz_set_id=quiz_set_id)


def update_quiz_set(*, session: Session, viewer: Viewer, quiz_set_id: int, **values: Any) -> QuizSet:
    """Change a set's settings (``storage.quizzes.QUIZ_SET_FIELDS``) if ``viewer`` may change the set."""
    editable_quiz_set(session=session, viewer=viewer, quiz_set_id=quiz_set_id)
    return quizzes.update_quiz_set(session=session, quiz_set_id=quiz_set_id, **values)


def set_published(*, session: Session, viewer: Viewer, quiz_set_id: int, published: bool) -> QuizSet:
    """Publish a set to students or take it back, if ``viewer`` may change the set."""
    editable_quiz_set(session=session, viewer=viewer, quiz_set_id=quiz_set_id)
    return quizzes.set_published(session=session, quiz_set_id=quiz_set_id, published=published)


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


# -- an instructor's quiz-set analytics --------------------------------------------------------------------------


@dataclass(frozen=True)
class AttemptRow:
    attempt_id: int
    username: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    result: AttemptResult


@dataclass(frozen=True)
class QuizSetReport:
    """Everything the analytics tab shows for one quiz set."""

    quiz_set_id: int
    title: str
    passing_percent: float | None
    item_ids: list[str]
    """Quiz-set order, then items that only past attempts contain."""
    labels: dict[str, str]
    """Item id -> short label (``Q3: stem…``)."""
    analytics: QuizAnalytics
    attempts: list[AttemptRow]
    """Finished attempts, oldest first."""
    in_progress: int


def quiz_set_report(*, session: Session, catalog: Catalog, quiz_set: QuizSet) -> QuizSetReport:
    """Analytics over every finished attempt at ``quiz_set`` (retakes included)."""
    assert quiz_set.id is not None
    all_attempts = attempts.quiz_set_attempts(session=session, quiz_set_id=quiz_set.id)
    finished = [a for a in all_attempts if a.status in FINISHED]
    names = accounts.usernames(session=session, user_ids=(a.user_id for a in finished))
    passing = None if quiz_set.passing_score is None else 100.0 * quiz_set.passing_score
    rows = []
    items = attempts.items_by_attempt(session=session, attempt_ids=[a.id for a in finished if a.id is not None])
    for attempt in finished:
        assert attempt.id is not None
        sitting = sitting_from_rows(attempt, items[attempt.id], catalog)
        # The set's pass mark today, not the one copied into the attempt: analytics judge by the current rule.
        result = quiz_core.score_attempt(
            [i.record for i in sitting.items], [i.answer for i in sitting.items], started_at=sitting.started_at,
            finished_at=sitting.finished_at, time_limit_s=sitting.time_limit_s if sitting.mode == "exam" else None,
            passing_score=passing,
        )
        rows.append(AttemptRow(attempt_id=attempt.id, username=names.get(attempt.user_id, "?"), status=attempt.status,
                               started_at=attempt.started_at, finished_at=attempt.finished_at, result=result))
    item_ids = quizzes.quiz_set_item_ids(session=session, quiz_set_id=quiz_set.id)
    item_ids += [i.item_id for row in rows for i in row.result.items if i.item_id not in item_ids]
    item_ids = list(dict.fromkeys(item_ids))
    labels = {}
    for n, item_id in enumerate(item_ids, start=1):
        record = catalog.item(item_id)
        labels[item_id] = f"Q{n}: {preview(record.question, 40)}" if record else f"Q{n}: {item_id}"
    analytics = quiz_core.quiz_analytics([r.result for r in rows], passing_score=passing, item_ids=item_ids)
    return QuizSetReport(quiz_set_id=quiz_set.id, title=quiz_set.title, passing_percent=passing, item_ids=item_ids,
                         labels=labels, analytics=analytics, attempts=rows,
                         in_progress=sum(1 for a in all_attempts if a.status == "in_progress"))


RESULT_COLUMNS = ("attempt", "user", "status", "started_at", "finished_at", "time_taken_s", "score_percent", "passed")


def results_csv(report: QuizSetReport) -> str:
    """One row per finished attempt, then one column per question (its score: 1, 0.5 or 0; empty if not asked)."""
    question_columns = [f"Q{n} {item_id}" for n, item_id in enumerate(report.item_ids, start=1)]
    rows: list[dict[str, Any]] = []
    for row in report.attempts:
        scores = {i.item_id: i.score for i in row.result.items}
        data: dict[str, Any] = {
            "attempt": row.attempt_id, "user": row.username, "status": row.status, "started_at": row.started_at,
            "finished_at": row.finished_at, "time_taken_s": row.result.time_taken_s,
            "score_percent": row.result.percent, "passed": row.result.passed,
        }
        for column, item_id in zip(question_columns, report.item_ids):
            data[column] = scores.get(item_id)
        rows.append(data)
    return results_to_csv(rows, columns=[*RESULT_COLUMNS, *question_columns])


def quiz_set_csv(*, session: Session, catalog: Catalog, quiz_set_id: int) -> str:
    """The set's items (as students see them) in the import format."""
    records = [catalog.item(i) for i in quizzes.quiz_set_item_ids(session=session, quiz_set_id=quiz_set_id)]
    return quiz_set_to_csv(r for r in records if r is not None)
