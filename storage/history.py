"""A user's history: case-study runs and quiz attempts, who may see and delete them, and export.

Visibility (checked here, so every page gets the same answer):
- a student sees their own case runs and attempts;
- an instructor also sees the attempts made at quiz sets they own (not other people's case runs);
- an admin sees everything.
Only the owner or an admin may delete an entry. Deleting a case run deletes only it; deleting an
attempt deletes its answers too.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from sqlalchemy import or_
from sqlmodel import Session, col, func, select

from storage import attempts as attempts_repo
from storage import rows
from storage.models import CASE_RUN_STATUSES, Attempt, AttemptItem, CaseRun, GenerationEvent, QuizSet, User

EntryKind = Literal["case", "quiz"]
KINDS: tuple[EntryKind, ...] = ("case", "quiz")
TITLE_CHARS = 120
CSV_COLUMNS = (
    "type", "id", "user", "created_at", "status", "title", "case_text", "reasoning", "answer", "base_model",
    "adapter", "settings", "timings", "source_item_id", "references", "mode", "finished_at", "score", "time_limit_s",
    "config", "answers",
)
REFERENCE_EXPORT_FIELDS = ("title", "site", "url", "license")
"""What an export keeps of each reference passage: enough to find and credit it (the text is in the source)."""


class HistoryError(ValueError):
    """A history request that is not allowed or cannot be done; the message is safe to show."""


class Viewer(Protocol):
    """Who is asking: a :class:`~storage.models.User` or the app's signed-in user."""

    @property
    def id(self) -> int | None: ...

    @property
    def role(self) -> str: ...


@dataclass(frozen=True)
class HistoryEntry:
    """One row of the history list (details are loaded on demand)."""

    kind: EntryKind
    id: int
    user_id: int
    username: str
    created_at: datetime
    title: str
    """The start of the case text, or the quiz set's title."""
    status: str
    adapter: str = ""
    score: float | None = None


# -- case runs ---------------------------------------------------------------------------------------------------


def save_case_run(
    *,
    session: Session,
    user_id: int,
    case_text: str,
    reasoning: str,
    answer: str,
    base_model: str,
    adapter: str,
    settings: dict[str, Any] | None = None,
    timings: dict[str, Any] | None = None,
    status: str = "completed",
    source_item_id: str | None = None,
    references: Sequence[dict[str, Any]] | None = None,
    count_generation: bool = True,
) -> CaseRun:
    """Save one case-study generation; by default it also counts toward the user's hourly limit.

    ``timings`` holds ``ttft_s``, ``tokens``, ``tokens_per_s`` and ``total_s``; ``status`` is
    ``completed``, ``stopped`` or ``error``; ``references`` are the passages shown with the run
    (``core.retrieval.Passage.to_dict()``), best first.
    """
    if status not in CASE_RUN_STATUSES:
        raise HistoryError(f"Unknown case-run status {status!r}; one of {', '.join(CASE_RUN_STATUSES)}.")
    run = CaseRun(
        user_id=user_id, case_text=case_text, reasoning=reasoning, answer=answer, base_model=base_model,
        adapter=adapter, settings=dict(settings or {}), timings=dict(timings or {}), status=status,
        source_item_id=source_item_id, references=[dict(r) for r in references or ()],
    )
    session.add(run)
    if count_generation:
        # Same transaction: a saved run and its rate-limit event exist together or not at all.
        session.add(GenerationEvent(user_id=user_id, kind="case_study", created_at=run.created_at))
    session.commit()
    session.refresh(run)
    return run


def get_case_run(*, session: Session, run_id: int) -> CaseRun | None:
    return session.get(CaseRun, run_id)


def list_case_runs(*, session: Session, user_id: int, limit: int = 50) -> list[CaseRun]:
    """The user's most recent case runs, newest first."""
    query = select(CaseRun).where(CaseRun.user_id == user_id)
    return list(session.exec(query.order_by(col(CaseRun.created_at).desc(), col(CaseRun.id).desc()).limit(limit)))


def delete_case_run(*, session: Session, run_id: int) -> bool:
    """Delete one case run (nothing else); False if it does not exist."""
    return rows.delete(session, CaseRun, run_id)


# -- who may see what --------------------------------------------------------------------------------------------


def can_view_case_run(viewer: Viewer, run: CaseRun) -> bool:
    return viewer.role == "admin" or run.user_id == viewer.id


def can_view_attempt(*, session: Session, viewer: Viewer, attempt: Attempt) -> bool:
    if viewer.role == "admin" or attempt.user_id == viewer.id:
        return True
    if viewer.role == "instructor" and attempt.quiz_set_id is not None:
        quiz_set = session.get(QuizSet, attempt.quiz_set_id)
        return quiz_set is not None and quiz_set.owner_id == viewer.id
    return False


def can_delete(viewer: Viewer, owner_id: int) -> bool:
    return viewer.role == "admin" or owner_id == viewer.id


def visible_case_run(*, session: Session, viewer: Viewer, run_id: int) -> CaseRun | None:
    """The case run if it exists and ``viewer`` may see it, else None (the two are not told apart)."""
    run = session.get(CaseRun, run_id)
    return run if run is not None and can_view_case_run(viewer, run) else None


def visible_attempt(*, session: Session, viewer: Viewer, attempt_id: int) -> Attempt | None:
    attempt = session.get(Attempt, attempt_id)
    return attempt if attempt is not None and can_view_attempt(session=session, viewer=viewer, attempt=attempt) else None


# -- the history list --------------------------------------------------------------------------------------------


def _case_query(viewer: Viewer, search: str, since: datetime | None, until: datetime | None, adapter: str | None):
    query = select(
        CaseRun.id, CaseRun.user_id, User.username, CaseRun.created_at,
        func.substr(CaseRun.case_text, 1, TITLE_CHARS), CaseRun.status, CaseRun.adapter,
    ).join(User, col(User.id) == col(CaseRun.user_id))
    if viewer.role != "admin":
        query = query.where(CaseRun.user_id == viewer.id)
    if search:
        query = query.where(or_(col(CaseRun.case_text).icontains(search, autoescape=True),
                                col(CaseRun.answer).icontains(search, autoescape=True)))
    if since is not None:
        query = query.where(col(CaseRun.created_at) >= since)
    if until is not None:
        query = query.where(col(CaseRun.created_at) < until)
    if adapter:
        query = query.where(CaseRun.adapter == adapter)
    return query.order_by(col(CaseRun.created_at).desc(), col(CaseRun.id).desc())


def _attempt_query(viewer: Viewer, search: str, since: datetime | None, until: datetime | None):
    query = (
        select(Attempt.id, Attempt.user_id, User.username, Attempt.started_at, QuizSet.title, Attempt.status,
               Attempt.score)
        .join(User, col(User.id) == col(Attempt.user_id))
        .outerjoin(QuizSet, col(QuizSet.id) == col(Attempt.quiz_set_id))
    )
    if viewer.role == "instructor":
        query = query.where(or_(Attempt.user_id == viewer.id, QuizSet.owner_id == viewer.id))
    elif viewer.role != "admin":
        query = query.where(Attempt.user_id == viewer.id)
    if search:
        query = query.where(col(QuizSet.title).icontains(search, autoescape=True))
    if since is not None:
        query = query.where(col(Attempt.started_at) >= since)
    if until is not None:
        query = query.where(col(Attempt.started_at) < until)
    return query.order_by(col(Attempt.started_at).desc(), col(Attempt.id).desc())


SEARCH_MAX_CHARS = 200
"""Longer searches are cut (SQLite refuses LIKE patterns over 50,000 bytes; nobody types 200 characters)."""


def list_history(
    *,
    session: Session,
    viewer: Viewer,
    kind: EntryKind | None = None,
    search: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
    adapter: str | None = None,
    limit: int = 500,
) -> list[HistoryEntry]:
    """What ``viewer`` may see, newest first, filtered.

    ``search`` matches case text and answers (case runs) or the quiz set's title (attempts), case
    insensitive; ``since``/``until`` bound the start time (``until`` excluded); ``adapter`` keeps only
    case runs made with that adapter (attempts have none, so they drop out).
    """
    search = search.replace("\x00", "").strip()[:SEARCH_MAX_CHARS]
    entries: list[HistoryEntry] = []
    if kind in (None, "case"):
        for run_id, user_id, username, created, title, status, run_adapter in session.exec(
            _case_query(viewer, search, since, until, adapter).limit(limit)
        ):
            entries.append(HistoryEntry("case", run_id, user_id, username, created, " ".join(title.split()), status,
                                        adapter=run_adapter))
    if kind in (None, "quiz") and not adapter:
        for attempt_id, user_id, username, started, title, status, score in session.exec(
            _attempt_query(viewer, search, since, until).limit(limit)
        ):
            entries.append(HistoryEntry("quiz", attempt_id, user_id, username, started, title or "Ad-hoc quiz", status,
                                        score=score))
    entries.sort(key=lambda e: (e.created_at, e.id), reverse=True)
    return entries[:limit]


def history_adapters(*, session: Session, viewer: Viewer) -> list[str]:
    """Adapters that appear in the case runs ``viewer`` may see (for the filter)."""
    query = select(CaseRun.adapter).distinct()
    if viewer.role != "admin":
        query = query.where(CaseRun.user_id == viewer.id)
    return sorted(a for a in session.exec(query) if a)


def delete_history_entry(*, session: Session, viewer: Viewer, kind: EntryKind, entry_id: int) -> None:
    """Delete a case run or an attempt (with its answers) if ``viewer`` owns it or is an admin.

    Raises :class:`HistoryError` otherwise, with the same message whether it exists or not.
    """
    owner: int | None = None
    if kind == "case":
        run = session.get(CaseRun, entry_id)
        owner = run.user_id if run is not None else None
    elif kind == "quiz":
        attempt = session.get(Attempt, entry_id)
        owner = attempt.user_id if attempt is not None else None
    else:
        raise HistoryError(f"Unknown history entry type {kind!r}.")
    if owner is None or not can_delete(viewer, owner):
        raise HistoryError("This entry does not exist or you may not delete it.")
    if kind == "case":
        delete_case_run(session=session, run_id=entry_id)
    else:
        attempts_repo.delete_attempt(session=session, attempt_id=entry_id)


# -- export ------------------------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def export_records(*, session: Session, viewer: Viewer, entries: Sequence[HistoryEntry]) -> list[dict[str, Any]]:
    """Full details of ``entries`` as plain dicts (only what ``viewer`` may see), ready for JSON or CSV.

    Loads everything in a few queries, whatever the number of entries.
    """
    case_ids = [e.id for e in entries if e.kind == "case"]
    attempt_ids = [e.id for e in entries if e.kind == "quiz"]
    runs = {r.id: r for r in session.exec(select(CaseRun).where(col(CaseRun.id).in_(case_ids)))} if case_ids else {}
    tries = {a.id: a for a in session.exec(select(Attempt).where(col(Attempt.id).in_(attempt_ids)))} if attempt_ids else {}
    set_ids = {a.quiz_set_id for a in tries.values() if a.quiz_set_id is not None}
    owners: dict[int | None, int] = {}
    if set_ids:
        owners = {qid: owner for qid, owner in session.exec(select(QuizSet.id, QuizSet.owner_id).where(col(QuizSet.id).in_(set_ids)))}
    answers: dict[int, list[dict[str, Any]]] = {}
    if tries:
        items = session.exec(select(AttemptItem).where(col(AttemptItem.attempt_id).in_(list(tries)))
                             .order_by(col(AttemptItem.attempt_id), col(AttemptItem.position)))
        for item in items:
            answers.setdefault(item.attempt_id, []).append(
                {k: (_iso(v) if isinstance(v, datetime) else v) for k, v in item.model_dump(exclude={"id", "attempt_id"}).items()}
            )

    records: list[dict[str, Any]] = []
    for entry in entries:
        if entry.kind == "case":
            run = runs.get(entry.id)
            if run is None or not can_view_case_run(viewer, run):
                continue
            records.append({
                "type": "case_study", "id": run.id, "user": entry.username, "created_at": _iso(run.created_at),
                "status": run.status, "title": entry.title, "case_text": run.case_text, "reasoning": run.reasoning,
                "answer": run.answer, "base_model": run.base_model, "adapter": run.adapter, "settings": run.settings,
                "timings": run.timings, "source_item_id": run.source_item_id,
                "references": [{k: ref.get(k, "") for k in REFERENCE_EXPORT_FIELDS} for ref in run.references or []],
            })
            continue
        attempt = tries.get(entry.id)
        if attempt is None:
            continue
        teaches = viewer.role == "instructor" and owners.get(attempt.quiz_set_id) == viewer.id
        if not (viewer.role == "admin" or attempt.user_id == viewer.id or teaches):
            continue
        records.append({
            "type": "quiz_attempt", "id": attempt.id, "user": entry.username, "created_at": _iso(attempt.started_at),
            "status": attempt.status, "title": entry.title, "mode": attempt.mode,
            "finished_at": _iso(attempt.finished_at), "score": attempt.score, "time_limit_s": attempt.time_limit_s,
            "config": attempt.config, "answers": answers.get(attempt.id, []),
        })
    return records


def to_json(records: Sequence[dict[str, Any]]) -> str:
    return json.dumps(list(records), ensure_ascii=False, indent=2)


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    # A spreadsheet would run a cell starting with these as a formula (CSV injection).
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def to_csv(records: Sequence[dict[str, Any]]) -> str:
    """One row per entry with :data:`CSV_COLUMNS`; nested values (settings, answers) as JSON text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for record in records:
        writer.writerow(_csv_cell(record.get(column)) for column in CSV_COLUMNS)
    return buffer.getvalue()


def entry_dict(entry: HistoryEntry) -> dict[str, Any]:
    """A list row as a plain dict (for tables)."""
    return asdict(entry)
