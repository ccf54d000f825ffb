"""Quiz sets built by instructors, item overrides (edits and retirements) and imported items.

The bank file is never modified: an edit is an :class:`~storage.models.ItemOverride` row (the newest
per item wins, older ones stay as history), and imported items are stored as Record dicts.
Unpublishing or deleting a quiz set never deletes anybody's attempts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlmodel import Session, col, delete, func, select

from storage import rows
from storage.models import QUIZ_MODES, ImportedItem, ItemOverride, QuizSet, QuizSetItem, utcnow

QUIZ_SET_FIELDS = ("title", "description", "mode", "time_limit_s", "passing_score", "attempts_allowed")


class QuizError(ValueError):
    """A quiz-set request that cannot be done; the message is safe to show."""


def _quiz_set_problems(values: Mapping[str, Any]) -> list[str]:
    problems = []
    if "title" in values and not str(values["title"] or "").strip():
        problems.append("A quiz set needs a title.")
    if "title" in values and len(str(values["title"] or "")) > 200:
        problems.append("Titles may have at most 200 characters.")
    if "mode" in values and values["mode"] not in QUIZ_MODES:
        problems.append(f"Mode must be one of {', '.join(QUIZ_MODES)}.")
    if values.get("time_limit_s") is not None and values["time_limit_s"] <= 0:
        problems.append("The time limit must be a positive number of seconds.")
    if values.get("passing_score") is not None and not 0 <= values["passing_score"] <= 1:
        problems.append("The passing score is a fraction between 0 and 1.")
    if values.get("attempts_allowed") is not None and values["attempts_allowed"] < 1:
        problems.append("Attempts allowed must be at least 1 (or empty for unlimited).")
    return problems


def create_quiz_set(
    *,
    session: Session,
    owner_id: int,
    title: str,
    description: str = "",
    mode: str = "tutor",
    time_limit_s: int | None = None,
    passing_score: float | None = None,
    attempts_allowed: int | None = None,
) -> QuizSet:
    values = dict(title=title, description=description, mode=mode, time_limit_s=time_limit_s,
                  passing_score=passing_score, attempts_allowed=attempts_allowed)
    problems = _quiz_set_problems(values)
    if problems:
        raise QuizError(" ".join(problems))
    quiz_set = QuizSet(owner_id=owner_id, **{**values, "title": title.strip()})
    return rows.save(session, quiz_set)


def get_quiz_set(*, session: Session, quiz_set_id: int) -> QuizSet | None:
    return session.get(QuizSet, quiz_set_id)


def list_quiz_sets(*, session: Session, owner_id: int | None = None, published_only: bool = False) -> list[QuizSet]:
    """Quiz sets, newest first; optionally only one owner's, or only published ones."""
    query = select(QuizSet)
    if owner_id is not None:
        query = query.where(QuizSet.owner_id == owner_id)
    if published_only:
        query = query.where(QuizSet.published == True)  # noqa: E712
    return list(session.exec(query.order_by(col(QuizSet.created_at).desc(), col(QuizSet.id).desc())))


def update_quiz_set(*, session: Session, quiz_set_id: int, **changes: Any) -> QuizSet:
    """Change any of :data:`QUIZ_SET_FIELDS`; unknown fields and bad values raise :class:`QuizError`."""
    unknown = sorted(set(changes) - set(QUIZ_SET_FIELDS))
    problems = [f"Unknown quiz-set field {name!r}." for name in unknown] + _quiz_set_problems(changes)
    quiz_set = session.get(QuizSet, quiz_set_id)
    if quiz_set is None:
        problems.append(f"No quiz set with id {quiz_set_id}.")
    if problems:
        raise QuizError(" ".join(problems))
    for name, value in changes.items():
        setattr(quiz_set, name, value.strip() if name == "title" else value)
    quiz_set.updated_at = utcnow()
    return rows.save(session, quiz_set)


def set_published(*, session: Session, quiz_set_id: int, published: bool) -> QuizSet:
    """Publish or unpublish (attempts already made are kept either way)."""
    quiz_set = session.get(QuizSet, quiz_set_id)
    if quiz_set is None:
        raise QuizError(f"No quiz set with id {quiz_set_id}.")
    if published and not quiz_set_item_ids(session=session, quiz_set_id=quiz_set_id):
        raise QuizError("Add at least one question before publishing.")
    quiz_set.published = published
    quiz_set.updated_at = utcnow()
    return rows.save(session, quiz_set)


def set_quiz_set_items(*, session: Session, quiz_set_id: int, item_ids: Sequence[str]) -> list[str]:
    """Replace the set's questions with ``item_ids`` in this order (add, remove and reorder in one call)."""
    if len(set(item_ids)) != len(item_ids):
        raise QuizError("A question can appear only once in a quiz set.")
    quiz_set = session.get(QuizSet, quiz_set_id)
    if quiz_set is None:
        raise QuizError(f"No quiz set with id {quiz_set_id}.")
    # Delete first and flush: the (quiz_set_id, position) unique key would clash with the new rows.
    session.exec(delete(QuizSetItem).where(QuizSetItem.quiz_set_id == quiz_set_id))  # type: ignore[call-overload]
    session.flush()
    session.add_all(QuizSetItem(quiz_set_id=quiz_set_id, item_id=item_id, position=i) for i, item_id in enumerate(item_ids))
    quiz_set.updated_at = utcnow()
    session.add(quiz_set)
    session.commit()
    return list(item_ids)


def quiz_set_item_ids(*, session: Session, quiz_set_id: int) -> list[str]:
    query = select(QuizSetItem.item_id).where(QuizSetItem.quiz_set_id == quiz_set_id).order_by(QuizSetItem.position)
    return list(session.exec(query))


def delete_quiz_set(*, session: Session, quiz_set_id: int) -> bool:
    """Delete a set and its item list; attempts made on it stay (as ad-hoc attempts). False if absent."""
    return rows.delete(session, QuizSet, quiz_set_id)


# -- item overrides ----------------------------------------------------------------------------------------------


def add_override(
    *,
    session: Session,
    item_id: str,
    editor_id: int,
    question: str | None = None,
    options: Mapping[str, str] | None = None,
    explanation: str | None = None,
    retired: bool = False,
) -> ItemOverride:
    """Record an edit (fields left None keep the bank's text) or a retirement of a bank item."""
    override = ItemOverride(
        item_id=item_id,
        editor_id=editor_id,
        question=question,
        options=dict(options) if options is not None else None,
        explanation=explanation,
        retired=retired,
    )
    return rows.save(session, override)


def latest_overrides(*, session: Session, item_ids: Iterable[str] | None = None) -> dict[str, ItemOverride]:
    """The newest override per item (all items, or only ``item_ids``)."""
    newest = select(ItemOverride.item_id, func.max(ItemOverride.id).label("id")).group_by(ItemOverride.item_id)
    if item_ids is not None:
        newest = newest.where(col(ItemOverride.item_id).in_(list(item_ids)))
    sub = newest.subquery()
    rows = session.exec(select(ItemOverride).join(sub, col(ItemOverride.id) == sub.c.id))
    return {row.item_id: row for row in rows}


def override_history(*, session: Session, item_id: str) -> list[ItemOverride]:
    """Every override of one item, oldest first."""
    query = select(ItemOverride).where(ItemOverride.item_id == item_id).order_by(col(ItemOverride.id))
    return list(session.exec(query))


# -- imported items ----------------------------------------------------------------------------------------------


def save_imported_items(*, session: Session, importer_id: int, records: Sequence[Mapping[str, Any]]) -> list[ImportedItem]:
    """Store validated Record dicts (each with an ``id``); a record whose id already exists is updated.

    All rows are saved in one transaction: either every record is stored or none is.
    """
    missing = [i for i, record in enumerate(records) if not str(record.get("id") or "").strip()]
    if missing:
        raise QuizError(f"Records without an id at positions {missing}.")
    ids = [str(record["id"]) for record in records]
    duplicates = sorted({item_id for item_id in ids if ids.count(item_id) > 1})
    if duplicates:
        raise QuizError(f"The same id appears more than once: {', '.join(duplicates)}.")
    existing = {row.item_id: row for row in session.exec(select(ImportedItem).where(col(ImportedItem.item_id).in_(ids)))}
    saved = []
    for item_id, record in zip(ids, records):
        row = existing.get(item_id) or ImportedItem(item_id=item_id, importer_id=importer_id, record={})
        row.record = dict(record)
        row.importer_id = importer_id
        session.add(row)
        saved.append(row)
    session.commit()
    for row in saved:
        session.refresh(row)
    return saved


def list_imported_items(*, session: Session) -> list[ImportedItem]:
    return list(session.exec(select(ImportedItem).order_by(col(ImportedItem.id))))
