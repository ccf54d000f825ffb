"""Quiz attempts and their answers, saved the moment each answer is given (so a reload can resume).

An attempt is created with all its questions (one :class:`~storage.models.AttemptItem` per
position); :func:`record_answer` fills a position in; :func:`finish_attempt` closes it with a score.
Only the attempt's own user can answer or finish it, and only while it is in progress.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from sqlmodel import Session, col, func, select

from storage import rows
from storage.models import (
    ATTEMPT_STATUSES, QUIZ_MODES, SELF_GRADES, Assignment, Attempt, AttemptItem, QuizSet, utcnow,
)


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()
"""Default of :func:`record_answer` fields: leave the stored value as it is (None clears it)."""

SELF_GRADE_CREDIT = {"correct": 1.0, "partly": 0.5, "wrong": 0.0}


class AttemptError(ValueError):
    """An attempt request that cannot be done; the message is safe to show."""


def start_attempt(
    *,
    session: Session,
    user_id: int,
    item_ids: Sequence[str],
    mode: str = "tutor",
    quiz_set_id: int | None = None,
    config: dict[str, Any] | None = None,
    time_limit_s: int | None = None,
    assignment_id: int | None = None,
) -> Attempt:
    """A new in-progress attempt over ``item_ids`` (in this order).

    For a quiz set, the set's ``attempts_allowed`` is enforced here; for a class assignment, the
    assignment's instead (its own count, so practice on the same set does not use it up).
    """
    problems = []
    if not item_ids:
        problems.append("A quiz needs at least one question.")
    if mode not in QUIZ_MODES:
        problems.append(f"Mode must be one of {', '.join(QUIZ_MODES)}.")
    if time_limit_s is not None and time_limit_s <= 0:
        problems.append("The time limit must be a positive number of seconds.")
    if assignment_id is not None:
        assignment = session.get(Assignment, assignment_id)
        if assignment is None:
            problems.append("This assignment does not exist.")
        elif assignment.attempts_allowed is not None:
            used = session.exec(select(func.count()).select_from(Attempt).where(
                Attempt.user_id == user_id, Attempt.assignment_id == assignment_id)).one()
            if used >= assignment.attempts_allowed:
                problems.append(f"You have used all {assignment.attempts_allowed} attempts allowed for this "
                                "assignment.")
    elif quiz_set_id is not None:
        quiz_set = session.get(QuizSet, quiz_set_id)
        if quiz_set is None:
            problems.append(f"No quiz set with id {quiz_set_id}.")
        elif quiz_set.attempts_allowed is not None:
            used = count_attempts(session=session, user_id=user_id, quiz_set_id=quiz_set_id)
            if used >= quiz_set.attempts_allowed:
                problems.append(f"You have used all {quiz_set.attempts_allowed} attempts allowed for this quiz.")
    if problems:
        raise AttemptError(" ".join(problems))
    attempt = Attempt(user_id=user_id, quiz_set_id=quiz_set_id, mode=mode, config=dict(config or {}),
                      time_limit_s=time_limit_s, assignment_id=assignment_id)
    session.add(attempt)
    session.flush()
    assert attempt.id is not None
    session.add_all(AttemptItem(attempt_id=attempt.id, position=i, item_id=item_id) for i, item_id in enumerate(item_ids))
    session.commit()
    session.refresh(attempt)
    return attempt


def get_attempt(*, session: Session, attempt_id: int) -> Attempt | None:
    return session.get(Attempt, attempt_id)


def attempt_items(*, session: Session, attempt_id: int) -> list[AttemptItem]:
    query = select(AttemptItem).where(AttemptItem.attempt_id == attempt_id).order_by(col(AttemptItem.position))
    return list(session.exec(query))


def _open_attempt(session: Session, attempt_id: int, user_id: int) -> Attempt:
    attempt = session.get(Attempt, attempt_id)
    if attempt is None or attempt.user_id != user_id:
        raise AttemptError("This attempt does not exist or is not yours.")
    if attempt.status != "in_progress":
        raise AttemptError("This attempt is already finished; answers can no longer change.")
    return attempt


def record_answer(
    *,
    session: Session,
    attempt_id: int,
    user_id: int,
    position: int,
    chosen: str | None | _Unset = UNSET,
    correct: bool | None | _Unset = UNSET,
    flagged: bool | _Unset = UNSET,
    free_text: str | None | _Unset = UNSET,
    self_grade: str | None | _Unset = UNSET,
    rouge_l: float | None | _Unset = UNSET,
) -> AttemptItem:
    """Save (part of) the answer at ``position`` and commit at once; fields left UNSET keep their value.

    ``answered_at`` is stamped whenever an answer (choice, free text or self-grade) is given; a flag
    alone does not count as answering.
    """
    _open_attempt(session, attempt_id, user_id)
    if not isinstance(self_grade, _Unset) and self_grade is not None and self_grade not in SELF_GRADES:
        raise AttemptError(f"Self-grade must be one of {', '.join(SELF_GRADES)}.")
    item = session.exec(
        select(AttemptItem).where(AttemptItem.attempt_id == attempt_id, AttemptItem.position == position)
    ).first()
    if item is None:
        raise AttemptError(f"This attempt has no question {position + 1}.")
    changes = dict(chosen=chosen, correct=correct, flagged=flagged, free_text=free_text, self_grade=self_grade,
                   rouge_l=rouge_l)
    for name, value in changes.items():
        if not isinstance(value, _Unset):
            setattr(item, name, value)
    if any(not isinstance(changes[name], _Unset) for name in ("chosen", "free_text", "self_grade")):
        item.answered_at = utcnow()
    return rows.save(session, item)


def score_items(items: Sequence[AttemptItem]) -> float:
    """Fraction of credit over all questions: 1 for correct, else the self-grade's credit; unanswered is 0."""
    if not items:
        return 0.0
    credit = 0.0
    for item in items:
        if item.correct is True:
            credit += 1.0
        elif item.correct is None and item.self_grade is not None:
            credit += SELF_GRADE_CREDIT[item.self_grade]
    return credit / len(items)


def finish_attempt(
    *, session: Session, attempt_id: int, user_id: int, status: str = "submitted", score: float | None = None
) -> Attempt:
    """Close an attempt (``submitted`` or ``timed_out``); the score defaults to :func:`score_items`."""
    if status not in ATTEMPT_STATUSES or status == "in_progress":
        raise AttemptError("An attempt finishes as 'submitted' or 'timed_out'.")
    attempt = _open_attempt(session, attempt_id, user_id)
    attempt.status = status
    attempt.finished_at = utcnow()
    attempt.score = score if score is not None else score_items(attempt_items(session=session, attempt_id=attempt_id))
    return rows.save(session, attempt)


def unfinished_attempt(*, session: Session, user_id: int, quiz_set_id: int | None = None) -> Attempt | None:
    """The user's newest in-progress attempt (at ``quiz_set_id`` when given), to resume after a reload."""
    query = select(Attempt).where(Attempt.user_id == user_id, Attempt.status == "in_progress")
    if quiz_set_id is not None:
        query = query.where(Attempt.quiz_set_id == quiz_set_id)
    return session.exec(query.order_by(col(Attempt.started_at).desc(), col(Attempt.id).desc())).first()


def list_attempts(
    *, session: Session, user_id: int | None = None, quiz_set_id: int | None = None, limit: int | None = None
) -> list[Attempt]:
    """Attempts newest first, by user and/or quiz set."""
    query = select(Attempt)
    if user_id is not None:
        query = query.where(Attempt.user_id == user_id)
    if quiz_set_id is not None:
        query = query.where(Attempt.quiz_set_id == quiz_set_id)
    query = query.order_by(col(Attempt.started_at).desc(), col(Attempt.id).desc())
    return list(session.exec(query.limit(limit) if limit else query))


FINISHED_STATUSES: Final = ("submitted", "timed_out")


def finished_attempts(*, session: Session, user_id: int, limit: int = 200) -> list[Attempt]:
    """The user's finished attempts, newest finish first."""
    query = (select(Attempt).where(Attempt.user_id == user_id, col(Attempt.status).in_(FINISHED_STATUSES))
             .order_by(col(Attempt.finished_at).desc(), col(Attempt.id).desc()).limit(limit))
    return list(session.exec(query))


def quiz_set_attempts(*, session: Session, quiz_set_id: int) -> list[Attempt]:
    """Every attempt at a quiz set (any status), oldest first."""
    query = select(Attempt).where(Attempt.quiz_set_id == quiz_set_id).order_by(col(Attempt.started_at), col(Attempt.id))
    return list(session.exec(query))


def items_by_attempt(*, session: Session, attempt_ids: Sequence[int]) -> dict[int, list[AttemptItem]]:
    """The answers of many attempts in one query: attempt id -> its items in position order."""
    rows: dict[int, list[AttemptItem]] = {i: [] for i in attempt_ids}
    if attempt_ids:
        query = select(AttemptItem).where(col(AttemptItem.attempt_id).in_(list(attempt_ids))).order_by(
            col(AttemptItem.attempt_id), col(AttemptItem.position))
        for row in session.exec(query):
            rows[row.attempt_id].append(row)
    return rows


def count_attempts(*, session: Session, user_id: int, quiz_set_id: int) -> int:
    query = select(func.count()).select_from(Attempt).where(Attempt.user_id == user_id, Attempt.quiz_set_id == quiz_set_id)
    return session.exec(query).one()


def delete_attempt(*, session: Session, attempt_id: int) -> bool:
    """Delete an attempt and (by cascade) its answers; False if it does not exist."""
    return rows.delete(session, Attempt, attempt_id)


def seen_item_ids(*, session: Session, user_id: int) -> set[str]:
    """Items the user has answered in any attempt."""
    query = (
        select(AttemptItem.item_id)
        .join(Attempt, col(Attempt.id) == col(AttemptItem.attempt_id))
        .where(Attempt.user_id == user_id, col(AttemptItem.answered_at).is_not(None))
    )
    return set(session.exec(query))


def missed_item_ids(*, session: Session, user_id: int) -> set[str]:
    """Items whose most recent answer by the user was wrong (or self-graded wrong/partly)."""
    query = (
        select(AttemptItem)
        .join(Attempt, col(Attempt.id) == col(AttemptItem.attempt_id))
        .where(Attempt.user_id == user_id, col(AttemptItem.answered_at).is_not(None))
        .order_by(col(AttemptItem.answered_at), col(AttemptItem.id))
    )
    latest: dict[str, AttemptItem] = {}
    for item in session.exec(query):
        latest[item.item_id] = item
    return {
        item_id
        for item_id, item in latest.items()
        if item.correct is False or (item.correct is None and item.self_grade in ("wrong", "partly"))
    }
