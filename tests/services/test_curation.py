"""Curation (services.curation): edits, quiz sets, imports and analytics, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlmodel import Session

from core.quiz import OverrideError
from core.quiz_import import parse_import
from services import curation, quiz
from storage import quizzes
from tests.services.quiz_world import MCQ, catalog, load, published_set, wrong


def test_edits_store_only_changes_and_keep_retirement(session: Session, make_user) -> None:
    teacher = make_user("teach", "instructor")
    original = MCQ["medqa:q1"]
    edit = dict(session=session, item_id="medqa:q1", editor_id=teacher.id)
    row = curation.save_edit(catalog=catalog(session), question=original.question + " ",
                                 options={**original.options, "B": "Cobalamin deficiency"},
                                 explanation=original.explanation, **edit)
    assert (row.question, row.options["B"], row.explanation) == (None, "Cobalamin deficiency", None)
    curation.set_retired(catalog=catalog(session), retired=True, **edit)
    current = catalog(session)
    assert current.is_retired("medqa:q1") and current.item("medqa:q1").options["B"] == "Cobalamin deficiency"
    assert "medqa:q1" not in {r.id for r in current.items()}
    curation.save_edit(catalog=current, question="New stem?", options=original.options,
                           explanation=original.explanation, **edit)
    current = catalog(session)
    assert current.is_retired("medqa:q1")  # editing does not bring a retired item back
    assert current.item("medqa:q1").question == "New stem?" and current.item("medqa:q1").options == original.options
    assert current.original("medqa:q1") is original
    history = curation.edit_history(session=session, catalog=current, item_id="medqa:q1")
    assert [version.question for _, version in history] == [original.question, original.question, "New stem?"]

    with pytest.raises(OverrideError) as info:
        curation.save_edit(catalog=current, question="", options={"A": "x", "B": ""}, explanation="", **edit)
    assert "options must keep the letters A, B, C, D" in info.value.problems
    with pytest.raises(OverrideError) as info:
        curation.save_edit(catalog=current, question="", options={**original.options, "C": ""}, explanation="",
                               **edit)
    assert info.value.problems == ["question must be non-empty text", "every option needs text"]
    with pytest.raises(quizzes.QuizError, match="no item"):
        curation.set_retired(session=session, catalog=current, item_id="nope:1", editor_id=teacher.id,
                                 retired=True)


def test_quiz_set_editing_is_checked_and_ordered(session: Session, make_user) -> None:
    teacher, other = make_user("teach", "instructor"), make_user("other", "instructor")
    admin = make_user("root", "admin")
    qs = quizzes.create_quiz_set(session=session, owner_id=teacher.id, title="Mine").id
    kwargs = dict(session=session, quiz_set_id=qs)
    added = curation.add_to_quiz_set(catalog=catalog(session), viewer=teacher,
                                         item_ids=["medqa:q1", "medqa:q2", "medqa:q1", "x:1", " medqa:q3 "], **kwargs)
    assert (added.added, added.already, added.unknown) == (["medqa:q1", "medqa:q2", "medqa:q3"], [], ["x:1"])
    assert curation.move_in_quiz_set(viewer=teacher, item_id="medqa:q3", offset=-5, **kwargs) == [
        "medqa:q3", "medqa:q1", "medqa:q2"]
    assert curation.move_in_quiz_set(viewer=admin, item_id="medqa:q3", offset=1, **kwargs) == [
        "medqa:q1", "medqa:q3", "medqa:q2"]
    with pytest.raises(quizzes.QuizError, match="may not change"):
        curation.remove_from_quiz_set(viewer=other, item_id="medqa:q1", **kwargs)
    quizzes.set_published(published=True, **kwargs)
    for item_id in ("medqa:q1", "medqa:q3"):
        curation.remove_from_quiz_set(viewer=teacher, item_id=item_id, **kwargs)
    with pytest.raises(quizzes.QuizError, match="at least one question"):
        curation.remove_from_quiz_set(viewer=teacher, item_id="medqa:q2", **kwargs)
    assert [q.title for q in curation.editable_quiz_sets(session=session, viewer=other)] == []
    assert [q.title for q in curation.editable_quiz_sets(session=session, viewer=admin)] == ["Mine"]


def test_imported_items_join_the_catalog_and_exports_reimport(session: Session, make_user) -> None:
    teacher = make_user("teach", "instructor")
    data = b"question,A,B,correct,license\nWhich ion? =SUM(1),Sodium,Potassium,B,own work\n"
    parsed = parse_import(data, "items.csv", existing_ids=catalog(session).all_ids())
    assert parsed.ok
    assert curation.import_items(session=session, importer_id=teacher.id, records=parsed.valid) == 1
    current = catalog(session)
    imported_id = parsed.valid[0].id
    assert current.is_imported(imported_id) and current.item(imported_id).question == "Which ion? =SUM(1)"
    qs = quizzes.create_quiz_set(session=session, owner_id=teacher.id, title="Export").id
    quizzes.set_quiz_set_items(session=session, quiz_set_id=qs, item_ids=["medqa:q1", imported_id])
    exported = curation.quiz_set_csv(session=session, catalog=current, quiz_set_id=qs)
    again = parse_import(exported.encode(), "again.csv")
    assert [(r.question, r.options, r.correct) for r in again.valid] == [
        (current.item(i).question, current.item(i).options, current.item(i).correct) for i in ("medqa:q1", imported_id)]
    assert parse_import(exported.encode(), "again.csv", existing_ids=current.all_ids()).valid == [
        r for r in again.valid if r.id != imported_id and r.id not in current.all_ids()]


def test_quiz_set_report_and_student_history(session: Session, make_user) -> None:
    teacher = make_user("teach", "instructor")
    quiz_set_id = published_set(session, teacher, ["medqa:q1", "medqa:q2", "medqa:q3", "medmcqa:q4"],
                                passing_score=0.5)
    now = datetime.now(UTC)
    right_counts = [4, 3, 2, 1, 0, 4]  # six students: enough for the discrimination index
    students = [make_user(f"stu{i}") for i in range(len(right_counts))]
    for student, n_right in zip(students, right_counts):
        kwargs = dict(session=session, catalog=catalog(session), user_id=student.id)
        attempt_id = quiz.start_quiz_set(quiz_set_id=quiz_set_id, **kwargs)
        for item in load(session, attempt_id, student).items:
            good = item.position < n_right
            choice = item.record.correct if good else wrong(item.record.id)
            quiz.choose(attempt_id=attempt_id, position=item.position, choice=choice, now=now, **kwargs)
        quiz.submit(attempt_id=attempt_id, now=now, **kwargs)
    quiz.start_quiz_set(session=session, catalog=catalog(session), user_id=teacher.id, quiz_set_id=quiz_set_id)

    report = curation.quiz_set_report(session=session, catalog=catalog(session),
                                          quiz_set=quizzes.get_quiz_set(session=session, quiz_set_id=quiz_set_id))
    stats = report.analytics
    assert (stats.attempts, report.in_progress, stats.group_size) == (6, 1, 2)
    assert stats.mean_percent == pytest.approx(100 * sum(right_counts) / 24)
    assert stats.pass_rate == pytest.approx(4 / 6)  # 100, 75, 50, 100 pass; 25 and 0 do not
    assert [round(s.percent_correct) for s in stats.items] == [83, 67, 50, 33]
    # Upper group: the two 100% attempts; lower group: 25% and 0%.
    assert [s.discrimination for s in stats.items] == pytest.approx([0.5, 1.0, 1.0, 1.0])
    assert report.labels["medqa:q1"].startswith("Q1: A 24-year-old")

    csv_text = curation.results_csv(report)
    header, first = csv_text.splitlines()[:2]
    assert header.startswith("attempt,user,status,started_at,finished_at,time_taken_s,score_percent,passed,Q1 medqa:q1")
    assert first.split(",")[1:3] == ["stu0", "submitted"] and first.endswith(",100,true,1,1,1,1")

    history = quiz.student_history(session=session, user_id=students[1].id)
    assert [(h.title, h.percent, h.passed) for h in history] == [("Set", 75.0, True)]
    points = quiz.trend_points(history)
    assert [(p.percent, p.label) for p in points] == [(75.0, "Set")]
