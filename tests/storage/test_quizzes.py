"""Quiz sets, item overrides and imported items; unpublishing or deleting a set keeps attempts."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from storage import attempts, quizzes
from storage.models import QuizSetItem
from storage.quizzes import QuizError


def test_create_update_and_validation(session: Session, make_user) -> None:
    teacher = make_user("teach", "instructor")
    quiz = quizzes.create_quiz_set(session=session, owner_id=teacher.id, title="  Renal  ", mode="exam",
                                   time_limit_s=600, passing_score=0.7, attempts_allowed=2)
    assert quiz.title == "Renal" and quiz.mode == "exam" and not quiz.published
    with pytest.raises(QuizError) as excinfo:
        quizzes.create_quiz_set(session=session, owner_id=teacher.id, title=" ", mode="race", passing_score=70,
                                time_limit_s=0, attempts_allowed=0)
    for text in ("needs a title", "Mode must be", "fraction between 0 and 1", "positive number", "at least 1"):
        assert text in str(excinfo.value)
    before = quiz.updated_at
    updated = quizzes.update_quiz_set(session=session, quiz_set_id=quiz.id, description="Kidneys", mode="tutor")
    assert updated.description == "Kidneys" and updated.mode == "tutor" and updated.updated_at >= before
    with pytest.raises(QuizError, match="Unknown quiz-set field 'owner_id'"):
        quizzes.update_quiz_set(session=session, quiz_set_id=quiz.id, owner_id=99)
    with pytest.raises(QuizError, match="No quiz set"):
        quizzes.update_quiz_set(session=session, quiz_set_id=9999, title="x")
    assert quizzes.get_quiz_set(session=session, quiz_set_id=quiz.id).description == "Kidneys"


def test_items_add_remove_reorder_and_publish(session: Session, make_user) -> None:
    teacher = make_user("teach", "instructor")
    quiz = quizzes.create_quiz_set(session=session, owner_id=teacher.id, title="Q")
    with pytest.raises(QuizError, match="at least one question"):
        quizzes.set_published(session=session, quiz_set_id=quiz.id, published=True)
    quizzes.set_quiz_set_items(session=session, quiz_set_id=quiz.id, item_ids=["a", "b", "c"])
    quizzes.set_quiz_set_items(session=session, quiz_set_id=quiz.id, item_ids=["c", "a", "d"])
    assert quizzes.quiz_set_item_ids(session=session, quiz_set_id=quiz.id) == ["c", "a", "d"]
    with pytest.raises(QuizError, match="only once"):
        quizzes.set_quiz_set_items(session=session, quiz_set_id=quiz.id, item_ids=["a", "a"])
    with pytest.raises(QuizError, match="No quiz set"):
        quizzes.set_quiz_set_items(session=session, quiz_set_id=9999, item_ids=["a"])
    assert quizzes.set_published(session=session, quiz_set_id=quiz.id, published=True).published


def test_list_quiz_sets(session: Session, make_user) -> None:
    t1, t2 = make_user("teach1", "instructor"), make_user("teach2", "instructor")
    a = quizzes.create_quiz_set(session=session, owner_id=t1.id, title="A")
    b = quizzes.create_quiz_set(session=session, owner_id=t2.id, title="B")
    quizzes.set_quiz_set_items(session=session, quiz_set_id=b.id, item_ids=["x"])
    quizzes.set_published(session=session, quiz_set_id=b.id, published=True)
    assert [q.id for q in quizzes.list_quiz_sets(session=session)] == [b.id, a.id]
    assert [q.id for q in quizzes.list_quiz_sets(session=session, owner_id=t1.id)] == [a.id]
    assert [q.id for q in quizzes.list_quiz_sets(session=session, published_only=True)] == [b.id]


def test_unpublishing_and_deleting_a_set_keep_everyones_attempts(session: Session, make_user) -> None:
    teacher, student = make_user("teach", "instructor"), make_user("stu")
    quiz = quizzes.create_quiz_set(session=session, owner_id=teacher.id, title="Q")
    quizzes.set_quiz_set_items(session=session, quiz_set_id=quiz.id, item_ids=["a", "b"])
    quizzes.set_published(session=session, quiz_set_id=quiz.id, published=True)
    attempt = attempts.start_attempt(session=session, user_id=student.id, item_ids=["a", "b"], quiz_set_id=quiz.id)
    attempts.record_answer(session=session, attempt_id=attempt.id, user_id=student.id, position=0, chosen="B",
                           correct=True)
    quizzes.set_published(session=session, quiz_set_id=quiz.id, published=False)
    assert attempts.get_attempt(session=session, attempt_id=attempt.id).quiz_set_id == quiz.id
    assert quizzes.delete_quiz_set(session=session, quiz_set_id=quiz.id)
    assert not quizzes.delete_quiz_set(session=session, quiz_set_id=quiz.id)
    session.expire_all()
    kept = attempts.get_attempt(session=session, attempt_id=attempt.id)
    assert kept is not None and kept.quiz_set_id is None
    assert [i.chosen for i in attempts.attempt_items(session=session, attempt_id=attempt.id)] == ["B", None]
    assert session.exec(select(QuizSetItem).where(QuizSetItem.quiz_set_id == quiz.id)).all() == []


def test_overrides_keep_history_and_newest_wins(session: Session, make_user) -> None:
    teacher = make_user("teach", "instructor")
    first = quizzes.add_override(session=session, item_id="medqa:1", editor_id=teacher.id, question="Fixed stem?")
    second = quizzes.add_override(session=session, item_id="medqa:1", editor_id=teacher.id,
                                  options={"A": "one", "B": "two"}, explanation="Because.")
    retired = quizzes.add_override(session=session, item_id="medqa:2", editor_id=teacher.id, retired=True)
    latest = quizzes.latest_overrides(session=session)
    assert latest["medqa:1"].id == second.id and latest["medqa:1"].options == {"A": "one", "B": "two"}
    assert latest["medqa:2"].retired and latest["medqa:2"].id == retired.id
    assert set(quizzes.latest_overrides(session=session, item_ids=["medqa:2", "nope"])) == {"medqa:2"}
    assert [o.id for o in quizzes.override_history(session=session, item_id="medqa:1")] == [first.id, second.id]


def test_imported_items_upsert_all_or_nothing(session: Session, make_user) -> None:
    teacher = make_user("teach", "instructor")
    record = {"id": "import:1", "source": "import", "license": "CC BY 4.0", "question": "Q?", "kind": "mcq",
              "options": {"A": "x", "B": "y"}, "correct": "A"}
    saved = quizzes.save_imported_items(session=session, importer_id=teacher.id, records=[record])
    assert saved[0].record == record
    quizzes.save_imported_items(session=session, importer_id=teacher.id,
                                records=[{**record, "question": "Q2?"}, {**record, "id": "import:2"}])
    items = quizzes.list_imported_items(session=session)
    assert [i.item_id for i in items] == ["import:1", "import:2"] and items[0].record["question"] == "Q2?"
    with pytest.raises(QuizError, match="without an id"):
        quizzes.save_imported_items(session=session, importer_id=teacher.id, records=[{**record, "id": "import:3"}, {"q": 1}])
    with pytest.raises(QuizError, match="more than once"):
        quizzes.save_imported_items(session=session, importer_id=teacher.id, records=[record, record])
    assert len(quizzes.list_imported_items(session=session)) == 2
