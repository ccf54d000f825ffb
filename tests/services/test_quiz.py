"""Taking a quiz (services.quiz) over the attempt tables, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session

from core.quiz import NotEnoughItemsError
from services import curation, quiz
from services.quiz import AdHocSpec
from storage import quizzes, reviews
from storage.attempts import AttemptError
from storage.models import Attempt, User
from tests.services.quiz_world import catalog, load, published_set, wrong


def test_quiz_set_sitting_copies_its_settings_and_leaves_out_retired_and_vanished_items(
    session: Session, make_user: Callable[..., User]
) -> None:
    teacher, student = make_user("teach", "instructor"), make_user("stu")
    curation.set_retired(session=session, catalog=catalog(session), item_id="medqa:q3", editor_id=teacher.id,
                             retired=True)
    quiz_set_id = published_set(session, teacher, ["medqa:q1", "medqa:q3", "gone:1", "medqa:q2"], mode="exam",
                                time_limit_s=60, passing_score=0.6)
    attempt_id = quiz.start_quiz_set(session=session, catalog=catalog(session), user_id=student.id,
                                             quiz_set_id=quiz_set_id)
    sitting = load(session, attempt_id, student)
    assert [i.record.id for i in sitting.items] == ["medqa:q1", "medqa:q2"]
    assert (sitting.mode, sitting.time_limit_s, sitting.passing_percent, sitting.title) == ("exam", 60, 60.0, "Set")
    assert quiz.load_sitting(session=session, catalog=catalog(session), attempt_id=attempt_id,
                                     user_id=teacher.id) is None  # someone else's attempt

    quizzes.set_published(session=session, quiz_set_id=quiz_set_id, published=False)
    with pytest.raises(AttemptError, match="not available"):
        quiz.start_quiz_set(session=session, catalog=catalog(session), user_id=student.id,
                                    quiz_set_id=quiz_set_id)


def test_tutor_answers_lock_and_exam_answers_stay_changeable(session: Session, make_user) -> None:
    student = make_user("stu")
    now = datetime.now(UTC)
    kwargs = dict(session=session, catalog=catalog(session), user_id=student.id)
    tutor = quiz.start_ad_hoc(spec=AdHocSpec(n=2, sources=["medqa"], seed=1), **kwargs)
    first = load(session, tutor, student).items[0]
    assert quiz.choose(attempt_id=tutor, position=first.position, choice=first.record.correct, now=now,
                               **kwargs) is True
    with pytest.raises(AttemptError, match="can no longer change"):
        quiz.choose(attempt_id=tutor, position=first.position, choice=wrong(first.record.id), now=now, **kwargs)
    with pytest.raises(AttemptError, match="not one of"):
        quiz.choose(attempt_id=tutor, position=1, choice="Z", now=now, **kwargs)
    quiz.submit(attempt_id=tutor, now=now, **kwargs)  # one in-progress attempt at a time keeps resume simple

    exam = quiz.start_ad_hoc(spec=AdHocSpec(n=2, sources=["medqa"], mode="exam", time_limit_s=600, seed=1),
                                     **kwargs)
    item = load(session, exam, student).items[0]
    assert quiz.choose(attempt_id=exam, position=0, choice=wrong(item.record.id), now=now, **kwargs) is False
    assert quiz.choose(attempt_id=exam, position=0, choice=item.record.correct, now=now, **kwargs) is True
    sitting = load(session, exam, student)
    assert sitting.items[0].answer.choice == item.record.correct and not sitting.feedback_visible(0)
    assert quiz.resume_id(session=session, user_id=student.id) == exam


def test_exam_time_out_submits_and_caps_the_time(session: Session, make_user) -> None:
    student = make_user("stu")
    kwargs = dict(session=session, catalog=catalog(session), user_id=student.id)
    attempt_id = quiz.start_ad_hoc(spec=AdHocSpec(n=3, sources=["medqa"], mode="exam", time_limit_s=60,
                                                          seed=3), **kwargs)
    started = load(session, attempt_id, student).started_at
    first = load(session, attempt_id, student).items[0]
    quiz.choose(attempt_id=attempt_id, position=0, choice=first.record.correct,
                        now=started + timedelta(seconds=30), **kwargs)
    assert not quiz.enforce_deadline(attempt_id=attempt_id, now=started + timedelta(seconds=59), **kwargs)
    with pytest.raises(AttemptError, match="Time is up"):
        quiz.choose(attempt_id=attempt_id, position=1, choice="A", now=started + timedelta(seconds=61),
                            **kwargs)
    sitting = load(session, attempt_id, student)
    assert sitting.status == "timed_out" and sitting.phase == "finished"
    result = sitting.result()
    assert result.time_taken_s == 60 and result.percent == pytest.approx(100 / 3)
    assert session.get(Attempt, attempt_id).score == pytest.approx(1 / 3)
    assert quiz.resume_id(session=session, user_id=student.id) is None


def test_ad_hoc_pools_unseen_and_missed(session: Session, make_user) -> None:
    student = make_user("stu")
    now = datetime.now(UTC)
    kwargs = dict(session=session, catalog=catalog(session), user_id=student.id)
    spec = AdHocSpec(n=2, sources=["medqa"], seed=7)
    first = quiz.start_ad_hoc(spec=spec, **kwargs)
    items = load(session, first, student).items
    quiz.choose(attempt_id=first, position=0, choice=wrong(items[0].record.id), now=now, **kwargs)
    quiz.choose(attempt_id=first, position=1, choice=items[1].record.correct, now=now, **kwargs)
    quiz.submit(attempt_id=first, now=now, **kwargs)
    seen = {i.record.id for i in items}

    unseen = quiz.start_ad_hoc(spec=AdHocSpec(n=1, sources=["medqa"], pool="unseen", seed=1), **kwargs)
    assert {i.record.id for i in load(session, unseen, student).items} == {"medqa:q1", "medqa:q2", "medqa:q3"} - seen
    quiz.submit(attempt_id=unseen, now=now, **kwargs)
    missed = quiz.start_ad_hoc(spec=AdHocSpec(n=1, pool="missed", seed=1), **kwargs)
    assert [i.record.id for i in load(session, missed, student).items] == [items[0].record.id]
    quiz.submit(attempt_id=missed, now=now, **kwargs)
    with pytest.raises(NotEnoughItemsError) as info:
        quiz.start_ad_hoc(spec=AdHocSpec(n=2, pool="missed"), **kwargs)
    assert info.value.available == 1
    with pytest.raises(AttemptError, match="1 to 200"):
        quiz.start_ad_hoc(spec=AdHocSpec(n=0), **kwargs)

    again = quiz.start_ad_hoc(spec=spec, **kwargs)  # same seed, same draw
    assert [i.record.id for i in load(session, again, student).items] == [i.record.id for i in items]
    assert session.get(Attempt, again).config["seed"] == 7


def test_written_answers_are_graded_before_the_sitting_finishes(session: Session, make_user) -> None:
    student = make_user("stu")
    now = datetime.now(UTC)
    kwargs = dict(session=session, catalog=catalog(session), user_id=student.id)
    attempt_id = quiz.start_ad_hoc(spec=AdHocSpec(n=1, kinds=["open"], mode="exam", time_limit_s=600),
                                           **kwargs)
    with pytest.raises(AttemptError, match="Write an answer"):
        quiz.save_text(attempt_id=attempt_id, position=0, text="  ", now=now, **kwargs)
    score = quiz.save_text(attempt_id=attempt_id, position=0, text="Hyperkalemia causes peaked T waves.",
                                   now=now, **kwargs)
    assert score == pytest.approx(1.0)
    with pytest.raises(AttemptError, match="before grading"):
        quiz.self_grade(attempt_id=attempt_id, position=0, grade="correct", now=now, **kwargs)
    assert quiz.submit(attempt_id=attempt_id, now=now, **kwargs) == "grading"
    sitting = load(session, attempt_id, student)
    assert sitting.phase == "grading" and sitting.to_grade == [0] and sitting.locked(0, now)
    with pytest.raises(AttemptError, match="Grade your written answers"):
        quiz.submit(attempt_id=attempt_id, now=now, **kwargs)
    with pytest.raises(ValueError, match="Self-grade"):
        quiz.self_grade(attempt_id=attempt_id, position=0, grade="great", now=now, **kwargs)
    # Grading may happen after the exam clock ran out: the answers closed in time.
    later = now + timedelta(hours=2)
    assert quiz.self_grade(attempt_id=attempt_id, position=0, grade="partly", now=later, **kwargs) == "finished"
    sitting = load(session, attempt_id, student)
    assert sitting.status == "submitted" and sitting.result().percent == 50.0


def test_missed_and_flagged_items_enter_the_review_queue(session: Session, make_user) -> None:
    teacher, student = make_user("teach", "instructor"), make_user("stu")
    now = datetime.now(UTC)
    kwargs = dict(session=session, catalog=catalog(session), user_id=student.id)
    quiz_set_id = published_set(session, teacher, ["medqa:q1", "medqa:q2", "medqa:q3"])
    attempt_id = quiz.start_quiz_set(quiz_set_id=quiz_set_id, **kwargs)
    quiz.choose(attempt_id=attempt_id, position=0, choice=wrong("medqa:q1"), now=now, **kwargs)
    quiz.choose(attempt_id=attempt_id, position=1, choice="B", now=now, **kwargs)
    quiz.set_flag(attempt_id=attempt_id, position=1, flagged=True, now=now, **kwargs)
    quiz.choose(attempt_id=attempt_id, position=2, choice="B", now=now, **kwargs)
    assert quiz.submit(attempt_id=attempt_id, now=now, **kwargs) == "finished"

    cards = {c.item_id: c for c in reviews.due_review_cards(session=session, user_id=student.id,
                                                            now=now + timedelta(days=365))}
    assert set(cards) == {"medqa:q1", "medqa:q2"}
    assert cards["medqa:q1"].due < cards["medqa:q2"].due  # Again comes back sooner than Hard
    assert quiz.due_item_ids(now=now, **kwargs) == []
    month = now + timedelta(days=30)
    assert quiz.due_item_ids(now=month, **kwargs) == ["medqa:q1", "medqa:q2"]

    curation.set_retired(session=session, catalog=catalog(session), item_id="medqa:q2", editor_id=teacher.id,
                             retired=True)
    review_id = quiz.start_review(n=10, now=month, **{**kwargs, "catalog": catalog(session)})
    review = load(session, review_id, student)
    assert [i.record.id for i in review.items] == ["medqa:q1"] and review.title == "Due for review"
    quiz.choose(attempt_id=review_id, position=0, choice="A", now=month, **kwargs)
    quiz.submit(attempt_id=review_id, now=month, **kwargs)
    rescheduled = reviews.get_review_card(session=session, user_id=student.id, item_id="medqa:q1")
    assert rescheduled.due > month  # reviewed at `month`: scheduled again (FSRS learning step after Again)
    assert rescheduled.card["step"] == 1 and rescheduled.card["last_review"].startswith(month.date().isoformat())
    with pytest.raises(AttemptError, match="Nothing is due"):
        quiz.start_review(n=5, now=month, **{**kwargs, "catalog": catalog(session)})
