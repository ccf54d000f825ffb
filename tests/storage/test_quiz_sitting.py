"""Quiz glue over the attempt tables (storage.quiz_sitting, quiz_catalog, quiz_reports), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session

from core.quiz import NotEnoughItemsError, OverrideError
from core.quiz_bank import Bank
from core.quiz_import import parse_import
from storage import quiz_catalog, quiz_reports, quiz_sitting, quizzes, reviews
from storage.attempts import AttemptError
from storage.models import Attempt, User
from storage.quiz_catalog import Catalog
from storage.quiz_sitting import AdHocSpec
from tests.pages.quiz_harness import BANK

BANK_INDEX = Bank.from_records(BANK)
MCQ = {r.id: r for r in BANK if r.kind == "mcq"}


def catalog(session: Session) -> Catalog:
    return quiz_catalog.load_catalog(session=session, bank=BANK_INDEX)


def published_set(session: Session, owner: User, item_ids: list[str], **settings) -> int:
    qs = quizzes.create_quiz_set(session=session, owner_id=owner.id, title="Set", **settings)
    quizzes.set_quiz_set_items(session=session, quiz_set_id=qs.id, item_ids=item_ids)
    quizzes.set_published(session=session, quiz_set_id=qs.id, published=True)
    return qs.id


def load(session: Session, attempt_id: int, user: User) -> quiz_sitting.Sitting:
    sitting = quiz_sitting.load_sitting(session=session, catalog=catalog(session), attempt_id=attempt_id,
                                        user_id=user.id)
    assert sitting is not None
    return sitting


def wrong(item_id: str) -> str:
    record = MCQ[item_id]
    return next(k for k in record.options if k != record.correct)


def test_quiz_set_sitting_copies_its_settings_and_leaves_out_retired_and_vanished_items(
    session: Session, make_user: Callable[..., User]
) -> None:
    teacher, student = make_user("teach", "instructor"), make_user("stu")
    quiz_catalog.set_retired(session=session, catalog=catalog(session), item_id="medqa:q3", editor_id=teacher.id,
                             retired=True)
    quiz_set_id = published_set(session, teacher, ["medqa:q1", "medqa:q3", "gone:1", "medqa:q2"], mode="exam",
                                time_limit_s=60, passing_score=0.6)
    attempt_id = quiz_sitting.start_quiz_set(session=session, catalog=catalog(session), user_id=student.id,
                                             quiz_set_id=quiz_set_id)
    sitting = load(session, attempt_id, student)
    assert [i.record.id for i in sitting.items] == ["medqa:q1", "medqa:q2"]
    assert (sitting.mode, sitting.time_limit_s, sitting.passing_percent, sitting.title) == ("exam", 60, 60.0, "Set")
    assert quiz_sitting.load_sitting(session=session, catalog=catalog(session), attempt_id=attempt_id,
                                     user_id=teacher.id) is None  # someone else's attempt

    quizzes.set_published(session=session, quiz_set_id=quiz_set_id, published=False)
    with pytest.raises(AttemptError, match="not available"):
        quiz_sitting.start_quiz_set(session=session, catalog=catalog(session), user_id=student.id,
                                    quiz_set_id=quiz_set_id)


def test_tutor_answers_lock_and_exam_answers_stay_changeable(session: Session, make_user) -> None:
    student = make_user("stu")
    now = datetime.now(UTC)
    kwargs = dict(session=session, catalog=catalog(session), user_id=student.id)
    tutor = quiz_sitting.start_ad_hoc(spec=AdHocSpec(n=2, sources=["medqa"], seed=1), **kwargs)
    first = load(session, tutor, student).items[0]
    assert quiz_sitting.choose(attempt_id=tutor, position=first.position, choice=first.record.correct, now=now,
                               **kwargs) is True
    with pytest.raises(AttemptError, match="can no longer change"):
        quiz_sitting.choose(attempt_id=tutor, position=first.position, choice=wrong(first.record.id), now=now, **kwargs)
    with pytest.raises(AttemptError, match="not one of"):
        quiz_sitting.choose(attempt_id=tutor, position=1, choice="Z", now=now, **kwargs)
    quiz_sitting.submit(attempt_id=tutor, now=now, **kwargs)  # one in-progress attempt at a time keeps resume simple

    exam = quiz_sitting.start_ad_hoc(spec=AdHocSpec(n=2, sources=["medqa"], mode="exam", time_limit_s=600, seed=1),
                                     **kwargs)
    item = load(session, exam, student).items[0]
    assert quiz_sitting.choose(attempt_id=exam, position=0, choice=wrong(item.record.id), now=now, **kwargs) is False
    assert quiz_sitting.choose(attempt_id=exam, position=0, choice=item.record.correct, now=now, **kwargs) is True
    sitting = load(session, exam, student)
    assert sitting.items[0].answer.choice == item.record.correct and not sitting.feedback_visible(0)
    assert quiz_sitting.resume_id(session=session, user_id=student.id) == exam


def test_exam_time_out_submits_and_caps_the_time(session: Session, make_user) -> None:
    student = make_user("stu")
    kwargs = dict(session=session, catalog=catalog(session), user_id=student.id)
    attempt_id = quiz_sitting.start_ad_hoc(spec=AdHocSpec(n=3, sources=["medqa"], mode="exam", time_limit_s=60,
                                                          seed=3), **kwargs)
    started = load(session, attempt_id, student).started_at
    first = load(session, attempt_id, student).items[0]
    quiz_sitting.choose(attempt_id=attempt_id, position=0, choice=first.record.correct,
                        now=started + timedelta(seconds=30), **kwargs)
    assert not quiz_sitting.enforce_deadline(attempt_id=attempt_id, now=started + timedelta(seconds=59), **kwargs)
    with pytest.raises(AttemptError, match="Time is up"):
        quiz_sitting.choose(attempt_id=attempt_id, position=1, choice="A", now=started + timedelta(seconds=61),
                            **kwargs)
    sitting = load(session, attempt_id, student)
    assert sitting.status == "timed_out" and sitting.phase == "finished"
    result = sitting.result()
    assert result.time_taken_s == 60 and result.percent == pytest.approx(100 / 3)
    assert session.get(Attempt, attempt_id).score == pytest.approx(1 / 3)
    assert quiz_sitting.resume_id(session=session, user_id=student.id) is None


def test_ad_hoc_pools_unseen_and_missed(session: Session, make_user) -> None:
    student = make_user("stu")
    now = datetime.now(UTC)
    kwargs = dict(session=session, catalog=catalog(session), user_id=student.id)
    spec = AdHocSpec(n=2, sources=["medqa"], seed=7)
    first = quiz_sitting.start_ad_hoc(spec=spec, **kwargs)
    items = load(session, first, student).items
    quiz_sitting.choose(attempt_id=first, position=0, choice=wrong(items[0].record.id), now=now, **kwargs)
    quiz_sitting.choose(attempt_id=first, position=1, choice=items[1].record.correct, now=now, **kwargs)
    quiz_sitting.submit(attempt_id=first, now=now, **kwargs)
    seen = {i.record.id for i in items}

    unseen = quiz_sitting.start_ad_hoc(spec=AdHocSpec(n=1, sources=["medqa"], pool="unseen", seed=1), **kwargs)
    assert {i.record.id for i in load(session, unseen, student).items} == {"medqa:q1", "medqa:q2", "medqa:q3"} - seen
    quiz_sitting.submit(attempt_id=unseen, now=now, **kwargs)
    missed = quiz_sitting.start_ad_hoc(spec=AdHocSpec(n=1, pool="missed", seed=1), **kwargs)
    assert [i.record.id for i in load(session, missed, student).items] == [items[0].record.id]
    quiz_sitting.submit(attempt_id=missed, now=now, **kwargs)
    with pytest.raises(NotEnoughItemsError) as info:
        quiz_sitting.start_ad_hoc(spec=AdHocSpec(n=2, pool="missed"), **kwargs)
    assert info.value.available == 1
    with pytest.raises(AttemptError, match="1 to 200"):
        quiz_sitting.start_ad_hoc(spec=AdHocSpec(n=0), **kwargs)

    again = quiz_sitting.start_ad_hoc(spec=spec, **kwargs)  # same seed, same draw
    assert [i.record.id for i in load(session, again, student).items] == [i.record.id for i in items]
    assert session.get(Attempt, again).config["seed"] == 7


def test_written_answers_are_graded_before_the_sitting_finishes(session: Session, make_user) -> None:
    student = make_user("stu")
    now = datetime.now(UTC)
    kwargs = dict(session=session, catalog=catalog(session), user_id=student.id)
    attempt_id = quiz_sitting.start_ad_hoc(spec=AdHocSpec(n=1, kinds=["open"], mode="exam", time_limit_s=600),
                                           **kwargs)
    with pytest.raises(AttemptError, match="Write an answer"):
        quiz_sitting.save_text(attempt_id=attempt_id, position=0, text="  ", now=now, **kwargs)
    score = quiz_sitting.save_text(attempt_id=attempt_id, position=0, text="Hyperkalemia causes peaked T waves.",
                                   now=now, **kwargs)
    assert score == pytest.approx(1.0)
    with pytest.raises(AttemptError, match="before grading"):
        quiz_sitting.self_grade(attempt_id=attempt_id, position=0, grade="correct", now=now, **kwargs)
    assert quiz_sitting.submit(attempt_id=attempt_id, now=now, **kwargs) == "grading"
    sitting = load(session, attempt_id, student)
    assert sitting.phase == "grading" and sitting.to_grade == [0] and sitting.locked(0, now)
    with pytest.raises(AttemptError, match="Grade your written answers"):
        quiz_sitting.submit(attempt_id=attempt_id, now=now, **kwargs)
    with pytest.raises(ValueError, match="Self-grade"):
        quiz_sitting.self_grade(attempt_id=attempt_id, position=0, grade="great", now=now, **kwargs)
    # Grading may happen after the exam clock ran out: the answers closed in time.
    later = now + timedelta(hours=2)
    assert quiz_sitting.self_grade(attempt_id=attempt_id, position=0, grade="partly", now=later, **kwargs) == "finished"
    sitting = load(session, attempt_id, student)
    assert sitting.status == "submitted" and sitting.result().percent == 50.0


def test_missed_and_flagged_items_enter_the_review_queue(session: Session, make_user) -> None:
    teacher, student = make_user("teach", "instructor"), make_user("stu")
    now = datetime.now(UTC)
    kwargs = dict(session=session, catalog=catalog(session), user_id=student.id)
    quiz_set_id = published_set(session, teacher, ["medqa:q1", "medqa:q2", "medqa:q3"])
    attempt_id = quiz_sitting.start_quiz_set(quiz_set_id=quiz_set_id, **kwargs)
    quiz_sitting.choose(attempt_id=attempt_id, position=0, choice=wrong("medqa:q1"), now=now, **kwargs)
    quiz_sitting.choose(attempt_id=attempt_id, position=1, choice="B", now=now, **kwargs)
    quiz_sitting.set_flag(attempt_id=attempt_id, position=1, flagged=True, now=now, **kwargs)
    quiz_sitting.choose(attempt_id=attempt_id, position=2, choice="B", now=now, **kwargs)
    assert quiz_sitting.submit(attempt_id=attempt_id, now=now, **kwargs) == "finished"

    cards = {c.item_id: c for c in reviews.due_review_cards(session=session, user_id=student.id,
                                                            now=now + timedelta(days=365))}
    assert set(cards) == {"medqa:q1", "medqa:q2"}
    assert cards["medqa:q1"].due < cards["medqa:q2"].due  # Again comes back sooner than Hard
    assert quiz_sitting.due_item_ids(now=now, **kwargs) == []
    month = now + timedelta(days=30)
    assert quiz_sitting.due_item_ids(now=month, **kwargs) == ["medqa:q1", "medqa:q2"]

    quiz_catalog.set_retired(session=session, catalog=catalog(session), item_id="medqa:q2", editor_id=teacher.id,
                             retired=True)
    review_id = quiz_sitting.start_review(n=10, now=month, **{**kwargs, "catalog": catalog(session)})
    review = load(session, review_id, student)
    assert [i.record.id for i in review.items] == ["medqa:q1"] and review.title == "Due for review"
    quiz_sitting.choose(attempt_id=review_id, position=0, choice="A", now=month, **kwargs)
    quiz_sitting.submit(attempt_id=review_id, now=month, **kwargs)
    rescheduled = reviews.get_review_card(session=session, user_id=student.id, item_id="medqa:q1")
    assert rescheduled.due > month  # reviewed at `month`: scheduled again (FSRS learning step after Again)
    assert rescheduled.card["step"] == 1 and rescheduled.card["last_review"].startswith(month.date().isoformat())
    with pytest.raises(AttemptError, match="Nothing is due"):
        quiz_sitting.start_review(n=5, now=month, **{**kwargs, "catalog": catalog(session)})


def test_edits_store_only_changes_and_keep_retirement(session: Session, make_user) -> None:
    teacher = make_user("teach", "instructor")
    original = MCQ["medqa:q1"]
    edit = dict(session=session, item_id="medqa:q1", editor_id=teacher.id)
    row = quiz_catalog.save_edit(catalog=catalog(session), question=original.question + " ",
                                 options={**original.options, "B": "Cobalamin deficiency"},
                                 explanation=original.explanation, **edit)
    assert (row.question, row.options["B"], row.explanation) == (None, "Cobalamin deficiency", None)
    quiz_catalog.set_retired(catalog=catalog(session), retired=True, **edit)
    current = catalog(session)
    assert current.is_retired("medqa:q1") and current.item("medqa:q1").options["B"] == "Cobalamin deficiency"
    assert "medqa:q1" not in {r.id for r in current.items()}
    quiz_catalog.save_edit(catalog=current, question="New stem?", options=original.options,
                           explanation=original.explanation, **edit)
    current = catalog(session)
    assert current.is_retired("medqa:q1")  # editing does not bring a retired item back
    assert current.item("medqa:q1").question == "New stem?" and current.item("medqa:q1").options == original.options
    assert current.original("medqa:q1") is original
    history = quiz_catalog.edit_history(session=session, catalog=current, item_id="medqa:q1")
    assert [version.question for _, version in history] == [original.question, original.question, "New stem?"]

    with pytest.raises(OverrideError) as info:
        quiz_catalog.save_edit(catalog=current, question="", options={"A": "x", "B": ""}, explanation="", **edit)
    assert "options must keep the letters A, B, C, D" in info.value.problems
    with pytest.raises(OverrideError) as info:
        quiz_catalog.save_edit(catalog=current, question="", options={**original.options, "C": ""}, explanation="",
                               **edit)
    assert info.value.problems == ["question must be non-empty text", "every option needs text"]
    with pytest.raises(quizzes.QuizError, match="no item"):
        quiz_catalog.set_retired(session=session, catalog=current, item_id="nope:1", editor_id=teacher.id,
                                 retired=True)


def test_quiz_set_editing_is_checked_and_ordered(session: Session, make_user) -> None:
    teacher, other = make_user("teach", "instructor"), make_user("other", "instructor")
    admin = make_user("root", "admin")
    qs = quizzes.create_quiz_set(session=session, owner_id=teacher.id, title="Mine").id
    kwargs = dict(session=session, quiz_set_id=qs)
    added = quiz_catalog.add_to_quiz_set(catalog=catalog(session), viewer=teacher,
                                         item_ids=["medqa:q1", "medqa:q2", "medqa:q1", "x:1", " medqa:q3 "], **kwargs)
    assert (added.added, added.already, added.unknown) == (["medqa:q1", "medqa:q2", "medqa:q3"], [], ["x:1"])
    assert quiz_catalog.move_in_quiz_set(viewer=teacher, item_id="medqa:q3", offset=-5, **kwargs) == [
        "medqa:q3", "medqa:q1", "medqa:q2"]
    assert quiz_catalog.move_in_quiz_set(viewer=admin, item_id="medqa:q3", offset=1, **kwargs) == [
        "medqa:q1", "medqa:q3", "medqa:q2"]
    with pytest.raises(quizzes.QuizError, match="may not change"):
        quiz_catalog.remove_from_quiz_set(viewer=other, item_id="medqa:q1", **kwargs)
    quizzes.set_published(published=True, **kwargs)
    for item_id in ("medqa:q1", "medqa:q3"):
        quiz_catalog.remove_from_quiz_set(viewer=teacher, item_id=item_id, **kwargs)
    with pytest.raises(quizzes.QuizError, match="at least one question"):
        quiz_catalog.remove_from_quiz_set(viewer=teacher, item_id="medqa:q2", **kwargs)
    assert [q.title for q in quiz_catalog.editable_quiz_sets(session=session, viewer=other)] == []
    assert [q.title for q in quiz_catalog.editable_quiz_sets(session=session, viewer=admin)] == ["Mine"]


def test_imported_items_join_the_catalog_and_exports_reimport(session: Session, make_user) -> None:
    teacher = make_user("teach", "instructor")
    data = b"question,A,B,correct,license\nWhich ion? =SUM(1),Sodium,Potassium,B,own work\n"
    parsed = parse_import(data, "items.csv", existing_ids=catalog(session).all_ids())
    assert parsed.ok
    assert quiz_catalog.import_items(session=session, importer_id=teacher.id, records=parsed.valid) == 1
    current = catalog(session)
    imported_id = parsed.valid[0].id
    assert current.is_imported(imported_id) and current.item(imported_id).question == "Which ion? =SUM(1)"
    qs = quizzes.create_quiz_set(session=session, owner_id=teacher.id, title="Export").id
    quizzes.set_quiz_set_items(session=session, quiz_set_id=qs, item_ids=["medqa:q1", imported_id])
    exported = quiz_reports.quiz_set_csv(session=session, catalog=current, quiz_set_id=qs)
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
        attempt_id = quiz_sitting.start_quiz_set(quiz_set_id=quiz_set_id, **kwargs)
        for item in load(session, attempt_id, student).items:
            good = item.position < n_right
            choice = item.record.correct if good else wrong(item.record.id)
            quiz_sitting.choose(attempt_id=attempt_id, position=item.position, choice=choice, now=now, **kwargs)
        quiz_sitting.submit(attempt_id=attempt_id, now=now, **kwargs)
    quiz_sitting.start_quiz_set(session=session, catalog=catalog(session), user_id=teacher.id, quiz_set_id=quiz_set_id)

    report = quiz_reports.quiz_set_report(session=session, catalog=catalog(session),
                                          quiz_set=quizzes.get_quiz_set(session=session, quiz_set_id=quiz_set_id))
    stats = report.analytics
    assert (stats.attempts, report.in_progress, stats.group_size) == (6, 1, 2)
    assert stats.mean_percent == pytest.approx(100 * sum(right_counts) / 24)
    assert stats.pass_rate == pytest.approx(4 / 6)  # 100, 75, 50, 100 pass; 25 and 0 do not
    assert [round(s.percent_correct) for s in stats.items] == [83, 67, 50, 33]
    # Upper group: the two 100% attempts; lower group: 25% and 0%.
    assert [s.discrimination for s in stats.items] == pytest.approx([0.5, 1.0, 1.0, 1.0])
    assert report.labels["medqa:q1"].startswith("Q1: A 24-year-old")

    csv_text = quiz_reports.results_csv(report)
    header, first = csv_text.splitlines()[:2]
    assert header.startswith("attempt,user,status,started_at,finished_at,time_taken_s,score_percent,passed,Q1 medqa:q1")
    assert first.split(",")[1:3] == ["stu0", "submitted"] and first.endswith(",100,true,1,1,1,1")

    history = quiz_reports.student_history(session=session, user_id=students[1].id)
    assert [(h.title, h.percent, h.passed) for h in history] == [("Set", 75.0, True)]
    points = quiz_reports.trend_points(history)
    assert [(p.percent, p.label) for p in points] == [(75.0, "Set")]
