"""Classes and assignments: an instructor's class, its students and work; a student's assigned work.

Who may do what is decided here, on the server, for every call: an instructor manages (sees,
enrols into, assigns to, and reads the progress of) only the classes they own; an admin manages
every class; a student sees only the assignments of classes they are enrolled in and joins a class
with its join code. A refusal says the same thing for "absent" and "not yours", so ids cannot be
probed.

An assignment is a published quiz set given to a class with an opening time, a due date (UTC in
storage) and its own mode, time limit, attempt limit and late policy. A submission after the due
date is accepted and marked late, or refused (kept, not counted) — ``core.quiz.submission_timing``,
applied when the sitting finishes (``services.quiz``). Functions take a keyword-only ``session``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlmodel import Session

from core import quiz as quiz_core
from core.quiz import AttemptResult, GroupScore
from core.quiz_catalog import Catalog
from core.quiz_import import results_to_csv
from storage import accounts, attempts, classes, quizzes
from storage.attempts import AttemptError
from storage.classes import ClassError
from storage.history import Viewer
from storage.models import Assignment, Attempt, QuizSet, StudyClass, User
from services.quiz import KIND_QUIZ_SET, sitting_from_rows

__all__ = [
    "AssignedWork", "AttemptError", "ClassError", "ProgressReport", "ProgressRow", "Status", "assign",
    "assignable_quiz_sets", "assigned_to", "class_assignments", "create_class", "enrol", "enrolment_candidates",
    "join_class", "managed_class", "manageable_classes", "members", "progress", "progress_csv", "start_assignment",
]

NOT_YOURS = "This class does not exist or is not yours."
Status = Literal["not_started", "in_progress", "submitted", "late", "refused"]
STATUS_LABELS: dict[str, str] = {"not_started": "not started", "in_progress": "in progress", "submitted": "submitted",
                                 "late": "late", "refused": "refused (too late)"}
FINISHED = attempts.FINISHED_STATUSES


# -- who may manage a class ------------------------------------------------------------------------------------


def can_manage(viewer: Viewer, study_class: StudyClass) -> bool:
    """Admins manage every class, instructors their own, students none."""
    return viewer.role == "admin" or (viewer.role == "instructor" and study_class.owner_id == viewer.id)


def managed_class(*, session: Session, viewer: Viewer, class_id: int) -> StudyClass:
    """The class if ``viewer`` may manage it; :class:`ClassError` (one message for absent and not yours)."""
    study_class = classes.get_class(session=session, class_id=class_id)
    if study_class is None or not can_manage(viewer, study_class):
        raise ClassError(NOT_YOURS)
    return study_class


def manageable_classes(*, session: Session, viewer: Viewer) -> list[StudyClass]:
    """The classes ``viewer`` manages: an admin's all, an instructor's own, a student's none."""
    if viewer.role == "admin":
        return classes.list_classes(session=session)
    if viewer.role == "instructor" and viewer.id is not None:
        return classes.list_classes(session=session, owner_id=viewer.id)
    return []


def create_class(*, session: Session, viewer: Viewer, name: str) -> StudyClass:
    if viewer.role not in classes.CLASS_STAFF_ROLES or viewer.id is None:
        raise ClassError("Only instructors and admins can create a class.")
    return classes.create_class(session=session, owner_id=viewer.id, name=name)


def members(*, session: Session, viewer: Viewer, class_id: int) -> list[User]:
    managed_class(session=session, viewer=viewer, class_id=class_id)
    return classes.members(session=session, class_id=class_id)


def enrolment_candidates(*, session: Session, viewer: Viewer, class_id: int) -> list[User]:
    """Active students not yet in the class, by username."""
    managed_class(session=session, viewer=viewer, class_id=class_id)
    enrolled = {u.id for u in classes.members(session=session, class_id=class_id)}
    return [u for u in accounts.list_users(session=session)
            if u.active and u.role == "student" and u.id not in enrolled]


def enrol(*, session: Session, viewer: Viewer, class_id: int, user_ids: Sequence[int]) -> list[str]:
    """Enrol students (all or none); returns their usernames."""
    managed_class(session=session, viewer=viewer, class_id=class_id)
    classes.enrol(session=session, class_id=class_id, user_ids=user_ids)
    names = accounts.usernames(session=session, user_ids=user_ids)
    return [names[i] for i in dict.fromkeys(user_ids) if i in names]


def join_class(*, session: Session, user_id: int, join_code: str) -> StudyClass:
    """A student joins a class by its code; an unknown code or a second join gets a clear message."""
    code = classes.normalise_join_code(join_code)
    if not code:
        raise ClassError("Enter the join code your instructor gave you.")
    study_class = classes.get_class_by_code(session=session, join_code=code)
    if study_class is None:
        raise ClassError(f"No class has the join code {code[:16]!r}. Check it with your instructor.")
    if classes.is_member(session=session, class_id=study_class.id, user_id=user_id):
        raise ClassError(f"You are already in {study_class.name}.")
    classes.enrol(session=session, class_id=study_class.id, user_ids=[user_id])
    session.refresh(study_class)  # loaded again after the commit, so callers may read it outside the session
    return study_class


# -- assignments ----------------------------------------------------------------------------------------------


def assignable_quiz_sets(*, session: Session, viewer: Viewer) -> list[QuizSet]:
    """Published quiz sets (any instructor's: sets are shared teaching material)."""
    if viewer.role not in classes.CLASS_STAFF_ROLES:
        return []
    return quizzes.list_quiz_sets(session=session, published_only=True)


def assign(
    *, session: Session, viewer: Viewer, class_id: int, quiz_set_id: int, opens_at: datetime, due_at: datetime,
    title: str = "", mode: str | None = None, time_limit_s: int | None = None, attempts_allowed: int | None = None,
    late_policy: str = "accept",
) -> Assignment:
    """Assign a published quiz set to a managed class. Mode defaults to the set's; title to the set's title."""
    managed_class(session=session, viewer=viewer, class_id=class_id)
    assert viewer.id is not None
    quiz_set = quizzes.get_quiz_set(session=session, quiz_set_id=quiz_set_id)
    if quiz_set is None:
        raise ClassError("This quiz set does not exist.")
    return classes.create_assignment(
        session=session, class_id=class_id, quiz_set_id=quiz_set_id, created_by_id=viewer.id,
        title=(title or "").strip() or quiz_set.title, opens_at=quiz_core.as_utc(opens_at),
        due_at=quiz_core.as_utc(due_at), mode=mode or quiz_set.mode, time_limit_s=time_limit_s,
        attempts_allowed=attempts_allowed, late_policy=late_policy,
    )


def class_assignments(*, session: Session, viewer: Viewer, class_id: int) -> list[Assignment]:
    managed_class(session=session, viewer=viewer, class_id=class_id)
    return classes.class_assignments(session=session, class_id=class_id)


def _managed_assignment(session: Session, viewer: Viewer, assignment_id: int) -> tuple[Assignment, StudyClass]:
    assignment = classes.get_assignment(session=session, assignment_id=assignment_id)
    if assignment is None:
        raise ClassError(NOT_YOURS)
    return assignment, managed_class(session=session, viewer=viewer, class_id=assignment.class_id)


# -- one student's status on an assignment ------------------------------------------------------------------


def _counted(attempt: Attempt) -> bool:
    return attempt.status in FINISHED and (attempt.config or {}).get("submission") != "refused"


def _status(tries: Sequence[Attempt], assignment: Assignment) -> tuple[Status, Attempt | None]:
    """The student's status and the attempt it rests on: the best on-time submission, else the best late
    one, else an open attempt, else a refused one."""
    def late(a: Attempt) -> bool:
        timing = (a.config or {}).get("submission")
        if timing is None and a.finished_at is not None:
            timing = quiz_core.submission_timing(due_at=assignment.due_at, late_policy="accept", now=a.finished_at)
        return timing == "late"

    counted = [a for a in tries if _counted(a)]
    on_time = [a for a in counted if not late(a)]
    for group, status in ((on_time, "submitted"), (counted, "late")):
        if group:
            return status, max(group, key=lambda a: (a.score or 0.0, -(a.id or 0)))  # type: ignore[return-value]
    open_tries = [a for a in tries if a.status == "in_progress"]
    if open_tries:
        return "in_progress", open_tries[-1]
    refused = [a for a in tries if a.status in FINISHED]
    return ("refused", refused[-1]) if refused else ("not_started", None)


# -- what a student sees ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AssignedWork:
    """One assignment as its student sees it on the quiz page."""

    assignment: Assignment
    class_name: str
    n_items: int
    status: Status
    score_percent: float | None
    attempts_used: int
    open_attempt_id: int | None
    percentile: float | None
    """Share of submitted classmates (self included) scoring below, ties half; None below the minimum."""
    can_start: bool
    why_not: str
    """Why the student cannot start (empty when they can)."""

    @property
    def overdue(self) -> bool:
        return self.status in ("not_started", "in_progress") and self.why_not.startswith("Due")


def _best_scores(session: Session, assignment: Assignment) -> dict[int, float]:
    """Each student's counted score (the one their status rests on), for percentiles."""
    by_user: dict[int, list[Attempt]] = {}
    for attempt in classes.assignment_attempts(session=session, assignment_id=assignment.id):
        by_user.setdefault(attempt.user_id, []).append(attempt)
    out = {}
    for user_id, tries in by_user.items():
        status, chosen = _status(tries, assignment)
        if status in ("submitted", "late") and chosen is not None:
            out[user_id] = chosen.score or 0.0
    return out


def _start_refusal(assignment: Assignment, *, now: datetime, used: int, in_progress: bool) -> str:
    if in_progress:
        return ""
    if now < assignment.opens_at:
        return f"Opens {assignment.opens_at:%Y-%m-%d %H:%M} UTC."
    if quiz_core.submission_timing(due_at=assignment.due_at, late_policy=assignment.late_policy, now=now) == "refused":
        return "Due date passed; late submissions are refused."
    if assignment.attempts_allowed is not None and used >= assignment.attempts_allowed:
        return f"All {assignment.attempts_allowed} attempts used."
    return ""


def assigned_to(*, session: Session, user_id: int, now: datetime) -> list[AssignedWork]:
    """The user's assignments from every class they are in: open ones first by due date, then the rest."""
    out = []
    class_names = {c.id: c.name for c in classes.classes_of_member(session=session, user_id=user_id)}
    for assignment in classes.assignments_for_student(session=session, user_id=user_id):
        assert assignment.id is not None
        tries = [a for a in classes.assignment_attempts(session=session, assignment_id=assignment.id)
                 if a.user_id == user_id]
        status, chosen = _status(tries, assignment)
        open_try = next((a for a in reversed(tries) if a.status == "in_progress"), None)
        why_not = _start_refusal(assignment, now=now, used=len(tries), in_progress=open_try is not None)
        pct = None
        if status in ("submitted", "late") and chosen is not None:
            scores = _best_scores(session, assignment)
            pct = quiz_core.percentile(chosen.score or 0.0, list(scores.values()))
        out.append(AssignedWork(
            assignment=assignment, class_name=class_names.get(assignment.class_id, ""),
            n_items=len(quizzes.quiz_set_item_ids(session=session, quiz_set_id=assignment.quiz_set_id)),
            status=status, score_percent=None if chosen is None or chosen.score is None or status == "in_progress"
            else 100.0 * chosen.score, attempts_used=len(tries),
            open_attempt_id=open_try.id if open_try is not None else None, percentile=pct,
            can_start=not why_not, why_not=why_not,
        ))
    done = ("submitted", "late", "refused")
    return sorted(out, key=lambda w: (w.status in done, w.assignment.due_at, w.assignment.id or 0))


def start_assignment(*, session: Session, catalog: Catalog, user_id: int, assignment_id: int, now: datetime) -> int:
    """Start (or continue) the student's sitting of an assignment; returns the attempt id.

    Refused with :class:`AttemptError` when the student is not in the class, before the opening time,
    after the due date when late submissions are refused, or when the attempts are used up.
    """
    assignment = classes.get_assignment(session=session, assignment_id=assignment_id)
    if assignment is None or not classes.is_member(session=session, class_id=assignment.class_id, user_id=user_id):
        raise AttemptError("This assignment does not exist or is not yours.")
    tries = [a for a in classes.assignment_attempts(session=session, assignment_id=assignment_id)
             if a.user_id == user_id]
    open_try = next((a for a in reversed(tries) if a.status == "in_progress"), None)
    if open_try is not None and open_try.id is not None:
        return open_try.id
    why_not = _start_refusal(assignment, now=now, used=len(tries), in_progress=False)
    if why_not:
        raise AttemptError(f"You cannot start {assignment.title!r}: {why_not}")
    quiz_set = quizzes.get_quiz_set(session=session, quiz_set_id=assignment.quiz_set_id)
    ids = [i for i in dict.fromkeys(quizzes.quiz_set_item_ids(session=session, quiz_set_id=assignment.quiz_set_id))
           if catalog.original(i) is not None and not catalog.is_retired(i)]
    if quiz_set is None or not ids:
        raise AttemptError("This assignment has no questions left; ask your instructor.")
    config = {"kind": KIND_QUIZ_SET, "title": assignment.title, "passing_score": quiz_set.passing_score,
              "attempts_allowed": assignment.attempts_allowed, "assignment_id": assignment.id,
              "due_at": assignment.due_at.isoformat(), "late_policy": assignment.late_policy}
    attempt = attempts.start_attempt(
        session=session, user_id=user_id, item_ids=ids, mode=assignment.mode, quiz_set_id=assignment.quiz_set_id,
        config=config, time_limit_s=assignment.time_limit_s if assignment.mode == "exam" else None,
        assignment_id=assignment.id,
    )
    assert attempt.id is not None
    return attempt.id


# -- the instructor's progress view -------------------------------------------------------------------------


@dataclass(frozen=True)
class ProgressRow:
    user_id: int
    username: str
    status: Status
    score_percent: float | None
    time_taken_s: float | None
    submitted_at: datetime | None
    attempts: int
    percentile: float | None


@dataclass(frozen=True)
class ProgressReport:
    assignment: Assignment
    class_name: str
    rows: list[ProgressRow]
    weakest: list[tuple[str, GroupScore]]
    """The class's weakest subjects over counted submissions, lowest pooled score first."""

    @property
    def counts(self) -> dict[str, int]:
        return {status: sum(1 for r in self.rows if r.status == status) for status in STATUS_LABELS}


def progress(*, session: Session, catalog: Catalog, viewer: Viewer, assignment_id: int) -> ProgressReport:
    """Every enrolled student's status, score and time on the assignment, and the class's weakest subjects.

    Only for a viewer who manages the class (checked here). Students who left the class but made
    attempts are listed too, so no submitted work disappears from the view.
    """
    assignment, study_class = _managed_assignment(session, viewer, assignment_id)
    all_tries = classes.assignment_attempts(session=session, assignment_id=assignment_id)
    by_user: dict[int, list[Attempt]] = {}
    for attempt in all_tries:
        by_user.setdefault(attempt.user_id, []).append(attempt)
    students = {u.id: u.username for u in classes.members(session=session, class_id=study_class.id)}
    students.update(accounts.usernames(session=session, user_ids=[u for u in by_user if u not in students]))
    chosen_by_user = {uid: _status(by_user.get(uid, []), assignment) for uid in students}
    counted = {uid: ch for uid, (st, ch) in chosen_by_user.items() if st in ("submitted", "late") and ch is not None}
    items = attempts.items_by_attempt(session=session, attempt_ids=[a.id for a in counted.values() if a.id])
    results: dict[int, AttemptResult] = {}
    for uid, attempt in counted.items():
        assert attempt.id is not None
        results[uid] = sitting_from_rows(attempt, items[attempt.id], catalog).result()
    peer_scores = [a.score or 0.0 for a in counted.values()]
    rows = []
    for uid, name in sorted(students.items(), key=lambda kv: kv[1]):
        status, chosen = chosen_by_user[uid]
        result = results.get(uid)
        rows.append(ProgressRow(
            user_id=uid, username=name, status=status,
            score_percent=100.0 * (chosen.score or 0.0) if uid in counted and chosen is not None else None,
            time_taken_s=result.time_taken_s if result is not None else None,
            submitted_at=chosen.finished_at if chosen is not None and uid in counted else None,
            attempts=len(by_user.get(uid, [])),
            percentile=quiz_core.percentile(chosen.score or 0.0, peer_scores) if uid in counted and chosen else None,
        ))
    return ProgressReport(assignment=assignment, class_name=study_class.name, rows=rows,
                          weakest=quiz_core.weakest_subjects(results.values()))


PROGRESS_COLUMNS = ("student", "status", "score_percent", "time_taken_s", "submitted_at_utc", "attempts",
                    "percentile")


def progress_csv(report: ProgressReport) -> str:
    """One row per student (times in UTC, ISO 8601)."""
    rows: list[dict[str, Any]] = [
        {"student": r.username, "status": STATUS_LABELS[r.status], "score_percent": r.score_percent,
         "time_taken_s": r.time_taken_s, "submitted_at_utc": r.submitted_at, "attempts": r.attempts,
         "percentile": r.percentile}
        for r in report.rows
    ]
    return results_to_csv(rows, columns=list(PROGRESS_COLUMNS))
