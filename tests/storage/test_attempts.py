"""Attempts: answers saved one by one, ownership and closing rules, scoring, resume, seen/missed items."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from storage import attempts, quizzes
from storage.attempts import AttemptError
from storage.models import AttemptItem


def test_start_creates_every_position(session: Session, make_user) -> None:
    user = make_user("stu")
    attempt = attempts.start_attempt(session=session, user_id=user.id, item_ids=["q1", "q2", "q3"], mode="exam",
                                     config={"sources": ["medqa"], "count": 3}, time_limit_s=300)
    assert attempt.status == "in_progress" and attempt.mode == "exam" and attempt.time_limit_s == 300
    assert attempt.config == {"sources": ["medqa"], "count": 3} and attempt.quiz_set_id is None
    items = attempts.attempt_items(session=session, attempt_id=attempt.id)
    assert [(i.position, i.item_id, i.chosen, i.flagged) for i in items] == [(0, "q1", None, False), (1, "q2", None, False),
                                                                              (2, "q3", None, False)]
    with pytest.raises(AttemptError) as excinfo:
        attempts.start_attempt(session=session, user_id=user.id, item_ids=[], mode="speed", time_limit_s=-1,
                               quiz_set_id=9999)
    for text in ("at least one question", "Mode must be", "positive number", "No quiz set"):
        assert text in str(excinfo.value)


def test_attempts_allowed_is_enforced(session: Session, make_user) -> None:
    teacher, user = make_user("teach", "instructor"), make_user("stu")
    quiz = quizzes.create_quiz_set(session=session, owner_id=teacher.id, title="Once", attempts_allowed=1)
    attempts.start_attempt(session=session, user_id=user.id, item_ids=["q"], quiz_set_id=quiz.id)
    with pytest.raises(AttemptError, match="all 1 attempts"):
        attempts.start_attempt(session=session, user_id=user.id, item_ids=["q"], quiz_set_id=quiz.id)
    assert attempts.count_attempts(session=session, user_id=user.id, quiz_set_id=quiz.id) == 1


def test_record_answer_updates_only_given_fields(session: Session, make_user) -> None:
    user = make_user("stu")
    attempt = attempts.start_attempt(session=session, user_id=user.id, item_ids=["q1", "q2"])
    flagged = attempts.record_answer(session=session, attempt_id=attempt.id, user_id=user.id, position=1, flagged=True)
    assert flagged.flagged and flagged.answered_at is None  # a flag alone is not an answer
    answered = attempts.record_answer(session=session, attempt_id=attempt.id, user_id=user.id, position=1, chosen="C",
                                      correct=False)
    assert answered.flagged and answered.chosen == "C" and answered.correct is False
    assert answered.answered_at is not None and answered.answered_at.tzinfo is not None
    cleared = attempts.record_answer(session=session, attempt_id=attempt.id, user_id=user.id, position=1, chosen=None,
                                     correct=None)
    assert cleared.chosen is None and cleared.flagged
    open_item = attempts.record_answer(session=session, attempt_id=attempt.id, user_id=user.id, position=0,
                                       free_text="Aortic dissection", self_grade="partly", rouge_l=0.42)
    assert (open_item.free_text, open_item.self_grade, open_item.rouge_l) == ("Aortic dissection", "partly", 0.42)
    with pytest.raises(AttemptError, match="Self-grade"):
        attempts.record_answer(session=session, attempt_id=attempt.id, user_id=user.id, position=0, self_grade="meh")
    with pytest.raises(AttemptError, match="no question 3"):
        attempts.record_answer(session=session, attempt_id=attempt.id, user_id=user.id, position=2, chosen="A")
    assert repr(attempts.UNSET) == "UNSET"


def test_only_the_owner_can_answer_or_finish(session: Session, make_user) -> None:
    owner, other = make_user("stu"), make_user("intruder")
    attempt = attempts.start_attempt(session=session, user_id=owner.id, item_ids=["q1"])
    with pytest.raises(AttemptError, match="not yours"):
        attempts.record_answer(session=session, attempt_id=attempt.id, user_id=other.id, position=0, chosen="A")
    with pytest.raises(AttemptError, match="not yours"):
        attempts.finish_attempt(session=session, attempt_id=attempt.id, user_id=other.id)
    with pytest.raises(AttemptError, match="not yours"):
        attempts.record_answer(session=session, attempt_id=9999, user_id=owner.id, position=0, chosen="A")
    assert attempts.attempt_items(session=session, attempt_id=attempt.id)[0].chosen is None


def test_finish_scores_and_closes(session: Session, make_user) -> None:
    user = make_user("stu")
    attempt = attempts.start_attempt(session=session, user_id=user.id, item_ids=["q1", "q2", "q3", "q4"])
    attempts.record_answer(session=session, attempt_id=attempt.id, user_id=user.id, position=0, chosen="A", correct=True)
    attempts.record_answer(session=session, attempt_id=attempt.id, user_id=user.id, position=1, chosen="B", correct=False)
    attempts.record_answer(session=session, attempt_id=attempt.id, user_id=user.id, position=2, free_text="x",
                           self_grade="partly")
    with pytest.raises(AttemptError, match="'submitted' or 'timed_out'"):
        attempts.finish_attempt(session=session, attempt_id=attempt.id, user_id=user.id, status="in_progress")
    done = attempts.finish_attempt(session=session, attempt_id=attempt.id, user_id=user.id, status="timed_out")
    assert done.status == "timed_out" and done.finished_at is not None
    assert done.score == pytest.approx((1 + 0 + 0.5 + 0) / 4)
    with pytest.raises(AttemptError, match="already finished"):
        attempts.record_answer(session=session, attempt_id=attempt.id, user_id=user.id, position=3, chosen="A")
    with pytest.raises(AttemptError, match="already finished"):
        attempts.finish_attempt(session=session, attempt_id=attempt.id, user_id=user.id)
    other = attempts.start_attempt(session=session, user_id=user.id, item_ids=["q1"])
    assert attempts.finish_attempt(session=session, attempt_id=other.id, user_id=user.id, score=0.9).score == 0.9
    assert attempts.score_items([]) == 0.0


def test_resume_list_and_delete_cascade(session: Session, make_user) -> None:
    teacher, user = make_user("teach", "instructor"), make_user("stu")
    quiz = quizzes.create_quiz_set(session=session, owner_id=teacher.id, title="Q")
    first = attempts.start_attempt(session=session, user_id=user.id, item_ids=["q1"])
    second = attempts.start_attempt(session=session, user_id=user.id, item_ids=["q1", "q2"], quiz_set_id=quiz.id)
    assert attempts.unfinished_attempt(session=session, user_id=user.id).id == second.id
    assert attempts.unfinished_attempt(session=session, user_id=user.id, quiz_set_id=quiz.id).id == second.id
    attempts.finish_attempt(session=session, attempt_id=second.id, user_id=user.id)
    assert attempts.unfinished_attempt(session=session, user_id=user.id).id == first.id
    assert attempts.unfinished_attempt(session=session, user_id=user.id, quiz_set_id=quiz.id) is None
    assert [a.id for a in attempts.list_attempts(session=session, user_id=user.id)] == [second.id, first.id]
    assert [a.id for a in attempts.list_attempts(session=session, quiz_set_id=quiz.id)] == [second.id]
    assert len(attempts.list_attempts(session=session, limit=1)) == 1
    assert attempts.delete_attempt(session=session, attempt_id=second.id)
    assert not attempts.delete_attempt(session=session, attempt_id=second.id)
    assert session.exec(select(AttemptItem).where(AttemptItem.attempt_id == second.id)).all() == []
    assert len(attempts.attempt_items(session=session, attempt_id=first.id)) == 1


def test_seen_and_missed_items_follow_the_latest_answer(session: Session, make_user) -> None:
    user, other = make_user("stu"), make_user("other")
    one = attempts.start_attempt(session=session, user_id=user.id, item_ids=["a", "b", "c", "d"])
    attempts.record_answer(session=session, attempt_id=one.id, user_id=user.id, position=0, chosen="A", correct=False)
    attempts.record_answer(session=session, attempt_id=one.id, user_id=user.id, position=1, chosen="A", correct=True)
    attempts.record_answer(session=session, attempt_id=one.id, user_id=user.id, position=2, free_text="?", self_grade="wrong")
    attempts.record_answer(session=session, attempt_id=one.id, user_id=user.id, position=3, flagged=True)
    two = attempts.start_attempt(session=session, user_id=user.id, item_ids=["a"])
    attempts.record_answer(session=session, attempt_id=two.id, user_id=user.id, position=0, chosen="B", correct=True)
    theirs = attempts.start_attempt(session=session, user_id=other.id, item_ids=["z"])
    attempts.record_answer(session=session, attempt_id=theirs.id, user_id=other.id, position=0, chosen="A", correct=False)
    assert attempts.seen_item_ids(session=session, user_id=user.id) == {"a", "b", "c"}
    assert attempts.missed_item_ids(session=session, user_id=user.id) == {"c"}
    assert attempts.missed_item_ids(session=session, user_id=other.id) == {"z"}
