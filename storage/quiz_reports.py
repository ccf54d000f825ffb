"""Results across sittings: a student's history and score trend, an instructor's per-quiz analytics, CSV exports.

Scores are recomputed from the stored answers with ``core.quiz`` (so analytics see per-item
scores), in a fixed number of queries whatever the number of attempts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from core import quiz as quiz_core
from core.charts import TrendPoint
from core.quiz import AttemptResult, QuizAnalytics
from core.quiz_import import quiz_set_to_csv, results_to_csv
from core.quiz_text import preview
from storage import quizzes
from storage.models import Attempt, AttemptItem, QuizSet, User
from storage.quiz_catalog import Catalog
from storage.quiz_sitting import Sitting, sitting_from_rows

FINISHED = ("submitted", "timed_out")


def _sittings(session: Session, catalog: Catalog, attempts: Sequence[Attempt]) -> list[Sitting]:
    ids = [a.id for a in attempts if a.id is not None]
    rows: dict[int, list[AttemptItem]] = {i: [] for i in ids}
    if ids:
        query = select(AttemptItem).where(col(AttemptItem.attempt_id).in_(ids)).order_by(
            col(AttemptItem.attempt_id), col(AttemptItem.position))
        for row in session.exec(query):
            rows[row.attempt_id].append(row)
    return [sitting_from_rows(a, rows[a.id], catalog) for a in attempts if a.id is not None]


# -- a student's own history -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryRow:
    """One finished attempt in the student's list."""

    attempt_id: int
    title: str
    mode: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    percent: float
    passed: bool | None


def student_history(*, session: Session, user_id: int, limit: int = 200) -> list[HistoryRow]:
    """The user's finished attempts, newest first (the stored score; no bank needed)."""
    query = (select(Attempt).where(Attempt.user_id == user_id, col(Attempt.status).in_(FINISHED))
             .order_by(col(Attempt.finished_at).desc(), col(Attempt.id).desc()).limit(limit))
    out = []
    for attempt in session.exec(query):
        assert attempt.id is not None
        config = attempt.config or {}
        percent = 100.0 * (attempt.score or 0.0)
        passing = config.get("passing_score")
        out.append(HistoryRow(
            attempt_id=attempt.id, title=str(config.get("title") or "Quiz"), mode=attempt.mode, status=attempt.status,
            started_at=attempt.started_at, finished_at=attempt.finished_at, percent=percent,
            passed=None if passing is None else percent >= 100.0 * float(passing) - 1e-9,
        ))
    return out


def trend_points(rows: Sequence[HistoryRow]) -> list[TrendPoint]:
    """The history as points of the score-trend chart."""
    return [TrendPoint(finished_at=r.finished_at, percent=r.percent, label=r.title) for r in rows if r.finished_at]


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
    attempts = list(session.exec(
        select(Attempt).where(Attempt.quiz_set_id == quiz_set.id).order_by(col(Attempt.started_at), col(Attempt.id))
    ))
    finished = [a for a in attempts if a.status in FINISHED]
    user_ids = sorted({a.user_id for a in finished})
    names = {uid: name for uid, name in session.exec(select(User.id, User.username).where(col(User.id).in_(user_ids)))}
    passing = None if quiz_set.passing_score is None else 100.0 * quiz_set.passing_score
    rows = []
    for attempt, sitting in zip(finished, _sittings(session, catalog, finished)):
        result = quiz_core.score_attempt(
            [i.record for i in sitting.items], [i.answer for i in sitting.items], started_at=sitting.started_at,
            finished_at=sitting.finished_at, time_limit_s=sitting.time_limit_s if sitting.mode == "exam" else None,
            passing_score=passing,
        )
        assert attempt.id is not None
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
                         in_progress=sum(1 for a in attempts if a.status == "in_progress"))


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
