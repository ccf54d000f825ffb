"""Classes, enrolment, assignments, peer first answers and review settings, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, func, select

from storage import accounts, attempts, classes, quizzes, reviews
from storage.classes import ClassError
from storage.models import Assignment, ClassMember, StudyClass

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def _published(session: Session, owner_id: int, items: list[str]) -> int:
    quiz = quizzes.create_quiz_set(session=session, owner_id=owner_id, title="Week 1")
    quizzes.set_quiz_set_items(session=session, quiz_set_id=quiz.id, item_ids=items)
    quizzes.set_published(session=session, quiz_set_id=quiz.id, published=True)
    return quiz.id


def _count(session: Session, model) -> int:
    return session.exec(select(func.count()).select_from(model)).one()


def test_class_has_a_unique_readable_join_code(session: Session, make_user) -> None:
    teach = make_user("teach", "instructor")
    a = classes.create_class(session=session, owner_id=teach.id, name="  Cardiology ")
    b = classes.create_class(session=session, owner_id=teach.id, name="Renal")
    assert a.name == "Cardiology" and a.join_code != b.join_code
    assert len(a.join_code) == classes.JOIN_CODE_LENGTH and set(a.join_code) <= set(classes.JOIN_CODE_ALPHABET)
    spaced = " ".join(a.join_code.lower())
    assert classes.get_class_by_code(session=session, join_code=spaced).id == a.id
    assert classes.get_class_by_code(session=session, join_code="NOPE1234") is None
    assert classes.get_class_by_code(session=session, join_code="\x00") is None
    assert [c.name for c in classes.list_classes(session=session, owner_id=teach.id)] == ["Cardiology", "Renal"]


def test_class_owner_must_be_active_staff(session: Session, make_user) -> None:
    student = make_user("stud")
    teach = make_user("teach", "instructor")
    with pytest.raises(ClassError, match="Only instructors and admins"):
        classes.create_class(session=session, owner_id=student.id, name="X")
    accounts.set_active(session=session, user_id=teach.id, active=False)
    with pytest.raises(ClassError, match="deactivated"):
        classes.create_class(session=session, owner_id=teach.id, name="X")
    with pytest.raises(ClassError, match="does not exist"):
        classes.create_class(session=session, owner_id=9999, name="X")
    with pytest.raises(ClassError, match="needs a name"):
        classes.create_class(session=session, owner_id=teach.id, name="   ")
    assert _count(session, StudyClass) == 0


def test_enrol_is_all_or_nothing(session: Session, make_user) -> None:
    teach = make_user("teach", "instructor")
    ann, bob, gone = make_user("ann"), make_user("bob"), make_user("gone")
    accounts.set_active(session=session, user_id=gone.id, active=False)
    study_class = classes.create_class(session=session, owner_id=teach.id, name="Cardiology")
    classes.enrol(session=session, class_id=study_class.id, user_ids=[ann.id])
    with pytest.raises(ClassError) as caught:
        classes.enrol(session=session, class_id=study_class.id, user_ids=[bob.id, ann.id, gone.id, 4242])
    message = str(caught.value)
    assert "ann is already enrolled in Cardiology" in message
    assert "'gone' has been deactivated" in message and "id 4242" in message
    assert [u.username for u in classes.members(session=session, class_id=study_class.id)] == ["ann"]
    assert _count(session, ClassMember) == 1  # bob was not half-enrolled
    classes.enrol(session=session, class_id=study_class.id, user_ids=[bob.id, bob.id])
    assert [u.username for u in classes.members(session=session, class_id=study_class.id)] == ["ann", "bob"]
    assert [c.name for c in classes.classes_of_member(session=session, user_id=bob.id)] == ["Cardiology"]
    with pytest.raises(ClassError, match="does not exist"):
        classes.enrol(session=session, class_id=999, user_ids=[bob.id])


def test_assignment_validation_writes_nothing(session: Session, make_user) -> None:
    teach = make_user("teach", "instructor")
    study_class = classes.create_class(session=session, owner_id=teach.id, name="C")
    draft = quizzes.create_quiz_set(session=session, owner_id=teach.id, title="Draft")
    with pytest.raises(ClassError) as caught:
        classes.create_assignment(session=session, class_id=study_class.id, quiz_set_id=draft.id,
                                  created_by_id=teach.id, title="", opens_at=NOW, due_at=NOW - timedelta(hours=1),
                                  mode="oral", late_policy="maybe", attempts_allowed=0)
    message = str(caught.value)
    for part in ("needs a title", "due date must be after the opening time", "Mode must be one of",
                 "Late submissions must be one of", "Attempts allowed must be at least 1", "publish it first"):
        assert part in message
    assert _count(session, Assignment) == 0


def test_assignment_attempts_are_counted_per_assignment(session: Session, make_user) -> None:
    teach, ann = make_user("teach", "instructor"), make_user("ann")
    study_class = classes.create_class(session=session, owner_id=teach.id, name="C")
    classes.enrol(session=session, class_id=study_class.id, user_ids=[ann.id])
    quiz_id = _published(session, teach.id, ["medqa:q1"])
    assignment = classes.create_assignment(session=session, class_id=study_class.id, quiz_set_id=quiz_id,
                                           created_by_id=teach.id, title="W1", opens_at=NOW,
                                           due_at=NOW + timedelta(days=1), attempts_allowed=1)
    assert assignment.due_at == NOW + timedelta(days=1) and assignment.due_at.tzinfo is not None
    attempts.start_attempt(session=session, user_id=ann.id, item_ids=["medqa:q1"], quiz_set_id=quiz_id)  # practice
    first = attempts.start_attempt(session=session, user_id=ann.id, item_ids=["medqa:q1"], quiz_set_id=quiz_id,
                                   assignment_id=assignment.id)
    with pytest.raises(attempts.AttemptError, match="all 1 attempts allowed for this assignment"):
        attempts.start_attempt(session=session, user_id=ann.id, item_ids=["medqa:q1"], quiz_set_id=quiz_id,
                               assignment_id=assignment.id)
    assert [a.id for a in classes.assignment_attempts(session=session, assignment_id=assignment.id)] == [first.id]
    assert [a.id for a in classes.assignments_for_student(session=session, user_id=ann.id)] == [assignment.id]
    assert classes.assignments_for_student(session=session, user_id=teach.id) == []
    assert classes.delete_class(session=session, class_id=study_class.id)
    session.expire_all()
    assert _count(session, Assignment) == 0 and _count(session, ClassMember) == 0
    assert attempts.get_attempt(session=session, attempt_id=first.id).assignment_id is None  # kept, unlinked


def test_first_answers_count_each_users_earliest_graded_answer(session: Session, make_user) -> None:
    ann, bob = make_user("ann"), make_user("bob")
    for user, picks in ((ann, [False, True]), (bob, [True])):
        for correct in picks:  # ann is wrong first, then right: only the first counts
            attempt = attempts.start_attempt(session=session, user_id=user.id, item_ids=["medqa:q1", "medqa:q2"])
            attempts.record_answer(session=session, attempt_id=attempt.id, user_id=user.id, position=0,
                                   chosen="A", correct=correct)
            attempts.record_answer(session=session, attempt_id=attempt.id, user_id=user.id, position=1, flagged=True)
    assert classes.first_answers(session=session) == {"medqa:q1": (2, 1)}
    assert classes.first_answers(session=session, item_ids=["medqa:q2"]) == {}


def test_review_settings_round_trip(session: Session, make_user) -> None:
    ann = make_user("ann")
    assert classes.get_review_settings(session=session, user_id=ann.id) is None
    reviews.save_schedule(session=session, user_id=ann.id, desired_retention=0.8, parameters=[0.1] * 21,
                          optimised_at=NOW, reviews_fitted=600, cards={})
    row = classes.get_review_settings(session=session, user_id=ann.id)
    assert (row.desired_retention, row.parameters[0], row.optimised_at, row.reviews_fitted) == (0.8, 0.1, NOW, 600)
    reviews.save_schedule(session=session, user_id=ann.id, desired_retention=0.95, parameters=None,
                          optimised_at=None, reviews_fitted=None, cards={})
    row = classes.get_review_settings(session=session, user_id=ann.id)
    assert row.parameters is None and row.desired_retention == 0.95
