"""Taking a quiz, from start to results: one student's sitting, their results history and review queue.

A sitting is an :class:`~storage.models.Attempt` with its questions. This module starts one (from a
published quiz set, an ad-hoc selection, or the FSRS review queue), reads it back as a
:class:`Sitting` (items resolved through the :class:`~core.quiz_catalog.Catalog`, answers as
``core.quiz.Answer``), saves every answer the moment it is given, enforces exam time, and finishes
it: score, status, and the spaced-repetition cards of missed and flagged items.

Phases: ``answering`` -> (``grading``) -> ``finished``. When a sitting is submitted (or its exam
time runs out) with open-ended answers the student has not self-graded yet, answers close but the
attempt stays open for grading: the reference answers are shown and the student grades each one,
then the sitting finishes. Without such answers it finishes at once.

Times: functions take ``now`` explicitly; :func:`act` passes :func:`current_time` (tests replace it).
Passing scores are stored as fractions (``QuizSet.passing_score``, 0..1) and handed to
``core.quiz`` as percentages. Functions take a keyword-only ``session``; :func:`act` and the
``start_*`` page entry points open one themselves.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Engine
from sqlmodel import Session

from core import quiz as quiz_core
from core import review
from core.charts import TrendPoint
from core.metrics import rouge_l
from core.quiz import Answer, AttemptResult, NotEnoughItemsError
from core.quiz_bank import Bank
from core.quiz_catalog import Catalog, EditInfo, edit_fields
from core.records import Record
from storage import attempts, classes, quizzes, reviews
from storage.attempts import AttemptError
from storage.models import Attempt, AttemptItem, QuizSet

Phase = Literal["answering", "grading", "finished"]
Pool = Literal["all", "unseen", "missed"]
POOLS: tuple[Pool, ...] = ("all", "unseen", "missed")
KIND_QUIZ_SET, KIND_AD_HOC, KIND_REVIEW = "quiz_set", "ad_hoc", "review"
AD_HOC_TITLE = "Ad-hoc quiz"
REVIEW_TITLE = "Due for review"
MAX_QUESTIONS = 200

log = logging.getLogger(__name__)

__all__ = [
    "AdHocSpec", "AttemptError", "NotEnoughItemsError", "Sitting", "SittingItem", "choose", "current_time",
    "enforce_deadline", "load_sitting", "resume_id", "save_text", "self_grade", "set_flag", "start_ad_hoc",
    "start_quiz_set", "start_review", "submit", "load_catalog", "student_history", "trend_points", "HistoryRow",
    "PublishedQuiz", "published_quizzes", "open_sitting", "act",
]


def current_time() -> datetime:
    """The clock every sitting decision uses (tests monkeypatch this one function)."""
    return datetime.now(UTC)


# -- the catalog ------------------------------------------------------------------------------------------------


def load_catalog(*, session: Session, bank: Bank) -> Catalog:
    """The catalog over ``bank``: imported items and the newest edit of every item, read now."""
    imported: dict[str, Record] = {}
    for row in quizzes.list_imported_items(session=session):
        try:
            imported[row.item_id] = Record.from_dict({**row.record, "id": row.item_id})
        except TypeError as exc:  # a row written by a future version with a different shape
            log.warning("skipping imported item %s: %s", row.item_id, exc)
    edits = {
        item_id: EditInfo(fields=edit_fields(row), retired=row.retired, editor_id=row.editor_id,
                          edited_at=row.created_at)
        for item_id, row in quizzes.latest_overrides(session=session).items()
    }
    return Catalog(bank=bank, imported=imported, edits=edits)


# -- reading a sitting -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SittingItem:
    """One question of a sitting with the answer saved so far."""

    position: int
    """The stored position (what :func:`storage.attempts.record_answer` takes)."""
    record: Record
    answer: Answer
    rouge_l: float | None
    answered_at: datetime | None

    @property
    def answered(self) -> bool:
        if self.record.kind == "mcq":
            return bool(self.answer.choice)
        return bool(self.answer.text.strip())

    @property
    def needs_grading(self) -> bool:
        return self.record.kind == "open" and self.answered and self.answer.self_grade is None


@dataclass(frozen=True)
class Sitting:
    """An attempt as the quiz page shows it."""

    attempt_id: int
    user_id: int
    quiz_set_id: int | None
    title: str
    kind: str
    mode: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    time_limit_s: int | None
    passing_percent: float | None
    answers_closed: bool
    """Answers can no longer change (submitted or timed out); only self-grades are still open."""
    items: list[SittingItem]
    unavailable: list[str] = field(default_factory=list)
    """Item ids of this attempt that are no longer in the bank (left out of the score)."""
    assignment_id: int | None = None
    submission: str | None = None
    """For an assignment: ``on_time``, ``late`` or ``refused`` (``core.quiz.submission_timing``), once finished."""

    @property
    def phase(self) -> Phase:
        if self.status != "in_progress":
            return "finished"
        return "grading" if self.answers_closed else "answering"

    @property
    def submitted(self) -> bool:
        return self.phase != "answering"

    def remaining_s(self, now: datetime) -> float | None:
        """Seconds left on the exam clock; None when there is no clock (tutor mode or untimed)."""
        if self.mode != "exam":
            return None
        return quiz_core.remaining_s(self.started_at, self.time_limit_s, now)

    def due_for_auto_submit(self, now: datetime) -> bool:
        return self.phase == "answering" and quiz_core.should_auto_submit(
            mode=self.mode, started_at=self.started_at, time_limit_s=self.time_limit_s, now=now, submitted=False
        )

    def feedback_visible(self, index: int) -> bool:
        """Whether the correct answer and explanation of item ``index`` may be shown."""
        return quiz_core.feedback_visible(self.mode, submitted=self.submitted, answered=self.items[index].answered)

    def locked(self, index: int, now: datetime) -> bool:
        """Whether the answer to item ``index`` can no longer change."""
        return quiz_core.answer_locked(
            self.mode, submitted=self.submitted, answered=self.items[index].answered,
            timed_out=self.due_for_auto_submit(now),
        )

    def can_self_grade(self, index: int) -> bool:
        item = self.items[index]
        return (self.phase != "finished" and item.record.kind == "open" and item.answered
                and self.feedback_visible(index))

    @property
    def to_grade(self) -> list[int]:
        """Indexes of answered open-ended items still waiting for the student's self-grade."""
        return [i for i, item in enumerate(self.items) if item.needs_grading]

    @property
    def flagged(self) -> list[int]:
        return [i for i, item in enumerate(self.items) if item.answer.flagged]

    @property
    def unanswered(self) -> list[int]:
        return [i for i, item in enumerate(self.items) if not item.answered]

    def resume_index(self) -> int:
        """Where to continue after a reload: the first unanswered item (the last one when all are answered)."""
        if self.phase == "grading" and self.to_grade:
            return self.to_grade[0]
        return self.unanswered[0] if self.unanswered else max(0, len(self.items) - 1)

    def result(self, now: datetime | None = None) -> AttemptResult:
        """The scored sitting (time runs to ``finished_at``, or to ``now`` while it is open)."""
        return quiz_core.score_attempt(
            [item.record for item in self.items],
            [item.answer for item in self.items],
            started_at=self.started_at,
            finished_at=self.finished_at or now,
            time_limit_s=self.time_limit_s if self.mode == "exam" else None,
            passing_score=self.passing_percent,
        )


def _percent(fraction: Any) -> float | None:
    return None if fraction is None else 100.0 * float(fraction)


def sitting_from_rows(attempt: Attempt, rows: list[AttemptItem], catalog: Catalog) -> Sitting:
    """Build a :class:`Sitting` from stored rows (items resolved with their current edits, retired ones kept)."""
    assert attempt.id is not None
    items: list[SittingItem] = []
    unavailable: list[str] = []
    for row in rows:
        record = catalog.item(row.item_id)
        if record is None:
            unavailable.append(row.item_id)
            continue
        answer = Answer(item_id=row.item_id, choice=row.chosen, text=row.free_text or "", self_grade=row.self_grade,
                        flagged=row.flagged)
        items.append(SittingItem(position=row.position, record=record, answer=answer, rouge_l=row.rouge_l,
                                 answered_at=row.answered_at))
    config = attempt.config or {}
    return Sitting(
        attempt_id=attempt.id, user_id=attempt.user_id, quiz_set_id=attempt.quiz_set_id,
        title=str(config.get("title") or AD_HOC_TITLE), kind=str(config.get("kind") or KIND_AD_HOC),
        mode=attempt.mode, status=attempt.status, started_at=attempt.started_at, finished_at=attempt.finished_at,
        time_limit_s=attempt.time_limit_s, passing_percent=_percent(config.get("passing_score")),
        answers_closed=bool(config.get("answers_closed_at")), items=items, unavailable=unavailable,
        assignment_id=attempt.assignment_id, submission=config.get("submission"),
    )


def load_sitting(*, session: Session, catalog: Catalog, attempt_id: int, user_id: int) -> Sitting | None:
    """The user's own attempt as a sitting; None when it does not exist or is someone else's."""
    attempt = attempts.get_attempt(session=session, attempt_id=attempt_id)
    if attempt is None or attempt.user_id != user_id:
        return None
    return sitting_from_rows(attempt, attempts.attempt_items(session=session, attempt_id=attempt_id), catalog)


def resume_id(*, session: Session, user_id: int) -> int | None:
    """The user's newest unfinished attempt, to continue after a reload or on another device."""
    attempt = attempts.unfinished_attempt(session=session, user_id=user_id)
    return attempt.id if attempt is not None else None


# -- starting -------------------------------------------------------------------------------------------------------


def _start(session: Session, *, user_id: int, item_ids: list[str], mode: str, quiz_set_id: int | None,
           config: dict[str, Any], time_limit_s: int | None) -> int:
    attempt = attempts.start_attempt(session=session, user_id=user_id, item_ids=item_ids, mode=mode,
                                     quiz_set_id=quiz_set_id, config=config, time_limit_s=time_limit_s)
    assert attempt.id is not None
    return attempt.id


def start_quiz_set(*, session: Session, catalog: Catalog, user_id: int, quiz_set_id: int) -> int:
    """Start a published quiz set; its settings are copied into the attempt. Returns the attempt id.

    Retired items and items no longer in the bank are left out. Raises :class:`AttemptError` when
    the set is not published, has no usable item, or its attempts are used up.
    """
    quiz_set = session.get(QuizSet, quiz_set_id)
    if quiz_set is None or not quiz_set.published:
        raise AttemptError("This quiz is not available.")
    ids = [i for i in dict.fromkeys(quizzes.quiz_set_item_ids(session=session, quiz_set_id=quiz_set_id))
           if catalog.original(i) is not None and not catalog.is_retired(i)]
    if not ids:
        raise AttemptError("This quiz has no questions left; ask its instructor.")
    config = {"kind": KIND_QUIZ_SET, "title": quiz_set.title, "passing_score": quiz_set.passing_score,
              "attempts_allowed": quiz_set.attempts_allowed}
    limit = quiz_set.time_limit_s if quiz_set.mode == "exam" else None
    return _start(session, user_id=user_id, item_ids=ids, mode=quiz_set.mode, quiz_set_id=quiz_set_id,
                  config=config, time_limit_s=limit)


@dataclass(frozen=True)
class AdHocSpec:
    """What a student asked for in the ad-hoc quiz form. ``None`` filters let everything through."""

    n: int
    mode: str = "tutor"
    sources: list[str] | None = None
    subjects: list[str] | None = None
    steps: list[str] | None = None
    kinds: list[str] | None = None
    difficulties: list[str] | None = None
    """Peer difficulty labels (``core.quiz.DIFFICULTIES``); items without enough answers are left out."""
    pool: Pool = "all"
    include_flagged: bool = False
    time_limit_s: int | None = None
    """Exam mode only; None is untimed."""
    seed: int | None = None
    """None draws a fresh seed (stored with the attempt, so the draw can be reproduced)."""

    def problems(self) -> list[str]:
        found = []
        if not 1 <= self.n <= MAX_QUESTIONS:
            found.append(f"Ask for 1 to {MAX_QUESTIONS} questions.")
        if self.mode not in quiz_core.MODES:
            found.append(f"Mode must be one of {', '.join(quiz_core.MODES)}.")
        if self.pool not in POOLS:
            found.append(f"Pool must be one of {', '.join(POOLS)}.")
        if self.time_limit_s is not None and self.time_limit_s <= 0:
            found.append("The time limit must be a positive number of seconds.")
        unknown = sorted(set(self.difficulties or ()) - set(quiz_core.DIFFICULTIES))
        if unknown:
            found.append(f"Difficulty must be one of {', '.join(quiz_core.DIFFICULTIES)}.")
        return found


def _sample(catalog: Catalog, spec: AdHocSpec, seed: int, *, seen: Collection[str],
            missed: Collection[str], rated: Collection[str] | None = None) -> list[Record]:
    only: set[str] | None = set(missed) if spec.pool == "missed" else None
    if rated is not None:
        only = set(rated) if only is None else only & set(rated)
    return quiz_core.sample_items(
        catalog.items(), n=spec.n, seed=seed, sources=spec.sources, subjects=spec.subjects, steps=spec.steps,
        kinds=spec.kinds, include_flagged=spec.include_flagged,
        exclude_ids=seen if spec.pool == "unseen" else (),
        only_ids=only,
    )


# -- peer difficulty ---------------------------------------------------------------------------------------------


def item_difficulty(*, session: Session, item_ids: Collection[str] | None = None) -> dict[str, float]:
    """Item id -> share of correct first answers over all users, for items with enough answers
    (``core.quiz.DIFFICULTY_MIN_ANSWERS``); items below the minimum are absent."""
    out = {}
    for item_id, (answered, correct) in classes.first_answers(session=session, item_ids=item_ids).items():
        share = quiz_core.peer_difficulty(answered, correct)
        if share is not None:
            out[item_id] = share
    return out


def difficulty_counts(*, session: Session, catalog: Catalog) -> dict[str, int]:
    """How many of the catalog's items are easy, medium and hard (the rest have too few answers)."""
    ids = {r.id for r in catalog.items()}
    shares = item_difficulty(session=session, item_ids=ids) if ids else {}
    labels = [quiz_core.difficulty_label(p) for p in shares.values()]
    return {d: labels.count(d) for d in quiz_core.DIFFICULTIES}


def start_ad_hoc(*, session: Session, catalog: Catalog, user_id: int, spec: AdHocSpec) -> int:
    """Draw ``spec.n`` items that match the spec and start a sitting over them. Returns the attempt id.

    Raises :class:`AttemptError` for a bad spec and ``core.quiz.NotEnoughItemsError`` (with
    ``available``) when fewer items match.
    """
    problems = spec.problems()
    if problems:
        raise AttemptError(" ".join(problems))
    seed = spec.seed if spec.seed is not None else random.SystemRandom().randrange(2**31)
    seen = attempts.seen_item_ids(session=session, user_id=user_id) if spec.pool == "unseen" else set()
    missed = attempts.missed_item_ids(session=session, user_id=user_id) if spec.pool == "missed" else set()
    rated = None
    if spec.difficulties:
        rated = {item_id for item_id, share in item_difficulty(session=session).items()
                 if quiz_core.difficulty_label(share) in spec.difficulties}
    items = _sample(catalog, spec, seed, seen=seen, missed=missed, rated=rated)
    config = {"kind": KIND_AD_HOC, "title": AD_HOC_TITLE, "passing_score": None, **asdict(spec), "seed": seed}
    return _start(session, user_id=user_id, item_ids=[r.id for r in items], mode=spec.mode, quiz_set_id=None,
                  config=config, time_limit_s=spec.time_limit_s if spec.mode == "exam" else None)


def due_item_ids(*, session: Session, catalog: Catalog, user_id: int, now: datetime) -> list[str]:
    """Items whose review card is due, most overdue first (retired and vanished items left out)."""
    return [card.item_id for card in reviews.due_review_cards(session=session, user_id=user_id, now=now)
            if catalog.original(card.item_id) is not None and not catalog.is_retired(card.item_id)]


def start_review(*, session: Session, catalog: Catalog, user_id: int, n: int, now: datetime,
                 mode: str = "tutor") -> int:
    """A tutor-mode sitting over up to ``n`` of the user's due review items. Returns the attempt id."""
    if n < 1:
        raise AttemptError("Ask for at least one question.")
    ids = due_item_ids(session=session, catalog=catalog, user_id=user_id, now=now)[:n]
    if not ids:
        raise AttemptError("Nothing is due for review right now.")
    config = {"kind": KIND_REVIEW, "title": REVIEW_TITLE, "passing_score": None}
    return _start(session, user_id=user_id, item_ids=ids, mode=mode, quiz_set_id=None, config=config,
                  time_limit_s=None)


# -- answering ------------------------------------------------------------------------------------------------------


def _open_sitting(session: Session, catalog: Catalog, attempt_id: int, user_id: int, now: datetime) -> Sitting:
    """The sitting, checked to be the user's and still open; an expired exam is submitted first."""
    sitting = load_sitting(session=session, catalog=catalog, attempt_id=attempt_id, user_id=user_id)
    if sitting is None:
        raise AttemptError("This attempt does not exist or is not yours.")
    if sitting.phase == "finished":
        raise AttemptError("This attempt is already finished; answers can no longer change.")
    if sitting.due_for_auto_submit(now):
        _close(session, catalog, sitting, now=now, timed_out=True)
        raise AttemptError("Time is up: your answers were submitted.")
    return sitting


def _index_of(sitting: Sitting, position: int) -> int:
    for index, item in enumerate(sitting.items):
        if item.position == position:
            return index
    raise AttemptError(f"This attempt has no question {position + 1}.")


_WRONG_KIND = {"mcq": "This question takes a written answer.", "open": "This question is multiple choice."}


def _changeable_item(session: Session, catalog: Catalog, attempt_id: int, user_id: int, position: int,
                     now: datetime, *, kind: str) -> SittingItem:
    """The item at ``position`` if it is of ``kind`` and its answer may still change."""
    sitting = _open_sitting(session, catalog, attempt_id, user_id, now)
    index = _index_of(sitting, position)
    item = sitting.items[index]
    if item.record.kind != kind:
        raise AttemptError(_WRONG_KIND[kind])
    if sitting.locked(index, now):
        raise AttemptError("This answer can no longer change.")
    return item


def choose(*, session: Session, catalog: Catalog, attempt_id: int, user_id: int, position: int, choice: str | None,
           now: datetime) -> bool | None:
    """Save a multiple-choice answer (None clears it, exam mode only); returns whether it is correct.

    Tutor mode locks an item once answered; exam mode allows changes until submission.
    """
    item = _changeable_item(session, catalog, attempt_id, user_id, position, now, kind="mcq")
    if choice is not None and choice not in (item.record.options or {}):
        raise AttemptError(f"{choice!r} is not one of this question's options.")
    correct = None if choice is None else quiz_core.grade_mcq(item.record, choice)
    attempts.record_answer(session=session, attempt_id=attempt_id, user_id=user_id, position=position, chosen=choice,
                           correct=correct)
    return correct


def save_text(*, session: Session, catalog: Catalog, attempt_id: int, user_id: int, position: int, text: str,
              now: datetime) -> float:
    """Save a written answer to an open-ended item; returns its ROUGE-L against the reference answer."""
    item = _changeable_item(session, catalog, attempt_id, user_id, position, now, kind="open")
    text = (text or "").strip()
    if not text:
        raise AttemptError("Write an answer first.")
    score = rouge_l(text, item.record.answer)
    attempts.record_answer(session=session, attempt_id=attempt_id, user_id=user_id, position=position,
                           free_text=text, rouge_l=score)
    return score


def self_grade(*, session: Session, catalog: Catalog, attempt_id: int, user_id: int, position: int, grade: str,
               now: datetime) -> Phase:
    """The student's grade of their own written answer; finishes a sitting in grading once all are graded.

    Returns the sitting's phase afterwards.
    """
    quiz_core.self_grade_score(grade)  # raises ValueError for an unknown grade
    sitting = _open_sitting(session, catalog, attempt_id, user_id, now)
    index = _index_of(sitting, position)
    if not sitting.can_self_grade(index):
        raise AttemptError("Answer the question (and, in exam mode, submit) before grading it.")
    attempts.record_answer(session=session, attempt_id=attempt_id, user_id=user_id, position=position,
                           self_grade=grade)
    if sitting.phase == "grading":
        updated = load_sitting(session=session, catalog=catalog, attempt_id=attempt_id, user_id=user_id)
        assert updated is not None
        if not updated.to_grade:
            _finish(session, updated, now=now)
            return "finished"
    return sitting.phase


def set_flag(*, session: Session, catalog: Catalog, attempt_id: int, user_id: int, position: int, flagged: bool,
             now: datetime) -> None:
    """Mark an item for review (flagged items enter the spaced-repetition queue)."""
    sitting = _open_sitting(session, catalog, attempt_id, user_id, now)
    _index_of(sitting, position)
    attempts.record_answer(session=session, attempt_id=attempt_id, user_id=user_id, position=position, flagged=flagged)


# -- submitting and finishing ---------------------------------------------------------------------------------------


def submit(*, session: Session, catalog: Catalog, attempt_id: int, user_id: int, now: datetime) -> Phase:
    """The student submits: finish, or close answers for self-grading first. Returns the new phase."""
    sitting = load_sitting(session=session, catalog=catalog, attempt_id=attempt_id, user_id=user_id)
    if sitting is None:
        raise AttemptError("This attempt does not exist or is not yours.")
    if sitting.phase == "finished":
        return "finished"
    if sitting.phase == "grading":
        if sitting.to_grade:
            raise AttemptError("Grade your written answers first.")
        _finish(session, sitting, now=now)
        return "finished"
    return _close(session, catalog, sitting, now=now, timed_out=sitting.due_for_auto_submit(now))


def enforce_deadline(*, session: Session, catalog: Catalog, attempt_id: int, user_id: int, now: datetime) -> bool:
    """Submit an exam whose time is up (also when the page is opened again after the deadline).

    Returns True when it did.
    """
    sitting = load_sitting(session=session, catalog=catalog, attempt_id=attempt_id, user_id=user_id)
    if sitting is None or not sitting.due_for_auto_submit(now):
        return False
    _close(session, catalog, sitting, now=now, timed_out=True)
    return True


def _close(session: Session, catalog: Catalog, sitting: Sitting, *, now: datetime, timed_out: bool) -> Phase:
    """Close answers; finish now unless written answers wait for a self-grade."""
    if not sitting.to_grade:
        _finish(session, sitting, now=now, timed_out=timed_out)
        return "finished"
    attempt = session.get(Attempt, sitting.attempt_id)
    assert attempt is not None
    attempt.config = {**(attempt.config or {}), "answers_closed_at": now.isoformat(),
                      "closed_by": "time-out" if timed_out else "student"}
    session.add(attempt)
    session.commit()
    return "grading"


def _finish(session: Session, sitting: Sitting, *, now: datetime, timed_out: bool | None = None) -> AttemptResult:
    """Score the sitting, close the attempt, and update the student's review cards."""
    attempt = session.get(Attempt, sitting.attempt_id)
    assert attempt is not None
    if timed_out is None:
        timed_out = (attempt.config or {}).get("closed_by") == "time-out"
    result = sitting.result(now)
    attempts.finish_attempt(session=session, attempt_id=sitting.attempt_id, user_id=sitting.user_id,
                            status="timed_out" if timed_out else "submitted", score=result.percent / 100.0)
    # The same clock as every other decision of the sitting (finish_attempt stamps the wall clock).
    attempt.finished_at = now
    assignment = (classes.get_assignment(session=session, assignment_id=attempt.assignment_id)
                  if attempt.assignment_id is not None else None)
    if assignment is not None:  # on time, late, or refused (kept, but it does not count for the assignment)
        timing = quiz_core.submission_timing(due_at=assignment.due_at, late_policy=assignment.late_policy, now=now)
        attempt.config = {**(attempt.config or {}), "submission": timing}
    session.add(attempt)
    session.commit()
    update_review_cards(session=session, user_id=sitting.user_id, result=result, now=now)
    return result


def update_review_cards(*, session: Session, user_id: int, result: AttemptResult, now: datetime) -> int:
    """Schedule missed and flagged items (and items already in the queue) with FSRS; returns how many changed."""
    cards: dict[str, str] = {}
    for item in result.items:
        row = reviews.get_review_card(session=session, user_id=user_id, item_id=item.item_id)
        if row is not None:
            cards[item.item_id] = json.dumps(row.card)
    updates = review.review_updates(result.items, cards, now=now, scheduler=user_scheduler(session=session,
                                                                                           user_id=user_id))
    for item_id, (card_json, due) in updates.items():
        reviews.save_review_card(session=session, user_id=user_id, item_id=item_id, card=json.loads(card_json), due=due)
    return len(updates)


def user_scheduler(*, session: Session, user_id: int) -> review.Scheduler:
    """The FSRS scheduler of the user's own settings (desired retention, fitted parameters)."""
    row = classes.get_review_settings(session=session, user_id=user_id)
    if row is None:
        return review.scheduler_for()
    try:
        return review.scheduler_for(row.desired_retention, row.parameters)
    except ValueError as exc:  # a row written by another version: schedule with the defaults rather than fail
        log.warning("review settings of user %s unusable (%s); using the defaults", user_id, exc)
        return review.scheduler_for()


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
    out = []
    for attempt in attempts.finished_attempts(session=session, user_id=user_id, limit=limit):
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


# -- what the quiz page opens with ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishedQuiz:
    """A published quiz set as a student sees it in the list."""

    quiz_set: QuizSet
    n_items: int
    attempts_used: int

    @property
    def can_start(self) -> bool:
        allowed = self.quiz_set.attempts_allowed
        return allowed is None or self.attempts_used < allowed


def published_quizzes(*, session: Session, user_id: int) -> list[PublishedQuiz]:
    """Every published quiz set with its size and how many of its attempts the user has used."""
    out = []
    for qs in quizzes.list_quiz_sets(session=session, published_only=True):
        assert qs.id is not None
        out.append(PublishedQuiz(
            quiz_set=qs, n_items=len(quizzes.quiz_set_item_ids(session=session, quiz_set_id=qs.id)),
            attempts_used=attempts.count_attempts(session=session, user_id=user_id, quiz_set_id=qs.id),
        ))
    return out


def open_sitting(*, session: Session, catalog: Catalog, attempt_id: int, user_id: int,
                 now: datetime) -> tuple[Sitting | None, bool]:
    """The sitting to show, after submitting an exam whose time ran out; and whether that just happened.

    The deadline is enforced on every page run, so reopening the page after the deadline submits too.
    """
    sitting = load_sitting(session=session, catalog=catalog, attempt_id=attempt_id, user_id=user_id)
    if sitting is None or not sitting.due_for_auto_submit(now):
        return sitting, False
    enforce_deadline(session=session, catalog=catalog, attempt_id=attempt_id, user_id=user_id, now=now)
    return load_sitting(session=session, catalog=catalog, attempt_id=attempt_id, user_id=user_id), True


def act(action: Callable[..., Any], *, engine: Engine, bank: Bank, user_id: int, **kwargs: Any) -> Any:
    """One answering action (:func:`choose`, :func:`save_text`, :func:`self_grade`, :func:`set_flag`,
    :func:`submit`) against the catalog as it is now and :func:`current_time`.

    The catalog is read in a session of its own, so the action's session starts with its write and a
    lock held by another writer surfaces as a ``StorageError`` rather than mid-read.
    """
    with Session(engine) as session:
        catalog = load_catalog(session=session, bank=bank)
    with Session(engine) as session:
        return action(session=session, catalog=catalog, user_id=user_id, now=current_time(), **kwargs)
