"""History: saving case runs, who sees what, filters, deletion rules and export."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, select

from storage import attempts, history, quizzes, rate_limit
from storage.history import HistoryError
from storage.models import AttemptItem, CaseRun, GenerationEvent

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def _run(session: Session, user_id: int, text: str, *, answer: str = "Answer", adapter: str = "adapters/a",
         at: datetime | None = None, **kwargs) -> CaseRun:
    run = history.save_case_run(
        session=session, user_id=user_id, case_text=text, reasoning="Step 1. Think.", answer=answer,
        base_model="embedded", adapter=adapter, settings={"temperature": 0.7, "max_new_tokens": 256},
        timings={"ttft_s": 0.4, "tokens": 120, "tokens_per_s": 31.5, "total_s": 4.2}, **kwargs,
    )
    if at is not None:  # place it in time for the date filters
        run.created_at = at
        session.add(run)
        session.commit()
        session.refresh(run)
    return run


def test_save_case_run_round_trips_and_counts_a_generation(session: Session, make_user) -> None:
    user = make_user("ann")
    run = _run(session, user.id, "A 45-year-old man with chest pain", status="stopped", source_item_id="medqa:abc")
    again = history.get_case_run(session=session, run_id=run.id)
    assert again.case_text == "A 45-year-old man with chest pain"
    assert again.settings == {"temperature": 0.7, "max_new_tokens": 256}
    assert again.timings["tokens_per_s"] == 31.5
    assert again.status == "stopped" and again.source_item_id == "medqa:abc"
    assert again.created_at.tzinfo is not None
    assert rate_limit.count_generations(session=session, user_id=user.id, since=T0) == 1
    history.save_case_run(session=session, user_id=user.id, case_text="x", reasoning="", answer="", base_model="b",
                          adapter="", count_generation=False)
    assert rate_limit.count_generations(session=session, user_id=user.id, since=T0) == 1
    with pytest.raises(HistoryError, match="Unknown case-run status"):
        _run(session, user.id, "bad", status="weird")


PASSAGE = {
    "id": "medquad:0001", "title": "What is Pyelonephritis?", "focus": "Pyelonephritis",
    "question": "What is pyelonephritis?", "text": "Pyelonephritis is a kidney infection.", "site": "niddk.nih.gov",
    "url": "https://www.niddk.nih.gov/health-information/kidney-disease/kidney-infection-pyelonephritis",
    "license": "CC BY 4.0", "attribution": "Ben Abacha & Demner-Fushman 2019", "score": 7.25,
}


def test_references_are_saved_in_order_and_default_to_none(session: Session, make_user) -> None:
    user = make_user("ann")
    second = {**PASSAGE, "id": "medquad:0002", "title": "Kidney infection \u2014 \u00e9tude", "score": 3.5}
    run = _run(session, user.id, "Flank pain and fever", references=[PASSAGE, second])
    session.expire_all()  # read back from the database, not the identity map
    again = history.get_case_run(session=session, run_id=run.id)
    assert again.references == [PASSAGE, second]
    assert _run(session, user.id, "No references").references == []
    row = session.exec(select(CaseRun).where(CaseRun.case_text == "No references")).one()
    assert row.references == []


def test_list_case_runs_newest_first_and_only_own(session: Session, make_user) -> None:
    a, b = make_user("ann"), make_user("ben")
    first = _run(session, a.id, "first", at=T0)
    second = _run(session, a.id, "second", at=T0 + timedelta(minutes=5))
    _run(session, b.id, "other")
    assert [r.id for r in history.list_case_runs(session=session, user_id=a.id)] == [second.id, first.id]
    assert len(history.list_case_runs(session=session, user_id=a.id, limit=1)) == 1


def test_deleting_a_case_run_deletes_only_it(session: Session, make_user) -> None:
    user = make_user("ann")
    keep, gone = _run(session, user.id, "keep"), _run(session, user.id, "gone")
    assert history.delete_case_run(session=session, run_id=gone.id)
    assert not history.delete_case_run(session=session, run_id=gone.id)
    assert history.get_case_run(session=session, run_id=keep.id) is not None
    assert history.get_case_run(session=session, run_id=gone.id) is None
    assert accounts_exist(session, user.id)
    # The generation still counts toward the limit: deleting history does not reset it.
    assert session.exec(select(GenerationEvent).where(GenerationEvent.user_id == user.id)).all().__len__() == 2


def accounts_exist(session: Session, user_id: int) -> bool:
    from storage import accounts

    return accounts.get_user(session=session, user_id=user_id) is not None


@pytest.fixture
def world(session: Session, make_user):
    """Two students, an instructor with a quiz, another instructor, an admin, and some history."""
    s1, s2 = make_user("stu1"), make_user("stu2")
    teacher, other_teacher, admin = make_user("teach", "instructor"), make_user("teach2", "instructor"), make_user("boss", "admin")
    quiz = quizzes.create_quiz_set(session=session, owner_id=teacher.id, title="Cardiology basics")
    quizzes.set_quiz_set_items(session=session, quiz_set_id=quiz.id, item_ids=["medqa:1", "medqa:2"])
    other_quiz = quizzes.create_quiz_set(session=session, owner_id=other_teacher.id, title="Renal")
    runs = {
        "s1": _run(session, s1.id, "Fever and rash in a child", answer="Measles", adapter="adapters/a", at=T0),
        "s1b": _run(session, s1.id, "Crushing chest pain 100%", answer="Myocardial infarction", adapter="adapters/b",
                    at=T0 + timedelta(days=2)),
        "s2": _run(session, s2.id, "Headache", answer="Migraine", at=T0 + timedelta(days=1)),
        "teach": _run(session, teacher.id, "Teacher's own case", at=T0),
    }
    tries = {
        "s1_quiz": attempts.start_attempt(session=session, user_id=s1.id, item_ids=["medqa:1", "medqa:2"], quiz_set_id=quiz.id),
        "s2_quiz": attempts.start_attempt(session=session, user_id=s2.id, item_ids=["medqa:1"], quiz_set_id=quiz.id),
        "s2_other": attempts.start_attempt(session=session, user_id=s2.id, item_ids=["x:1"], quiz_set_id=other_quiz.id),
        "s2_adhoc": attempts.start_attempt(session=session, user_id=s2.id, item_ids=["x:2"]),
    }
    return dict(s1=s1, s2=s2, teacher=teacher, other_teacher=other_teacher, admin=admin, runs=runs, tries=tries,
                quiz=quiz)


def _keys(entries) -> set[tuple[str, int]]:
    return {(e.kind, e.id) for e in entries}


def test_visibility_by_role(session: Session, world) -> None:
    runs, tries = world["runs"], world["tries"]
    student = history.list_history(session=session, viewer=world["s1"])
    assert _keys(student) == {("case", runs["s1"].id), ("case", runs["s1b"].id), ("quiz", tries["s1_quiz"].id)}
    teacher = history.list_history(session=session, viewer=world["teacher"])
    assert _keys(teacher) == {("case", runs["teach"].id), ("quiz", tries["s1_quiz"].id), ("quiz", tries["s2_quiz"].id)}
    other = history.list_history(session=session, viewer=world["other_teacher"])
    assert _keys(other) == {("quiz", tries["s2_other"].id)}
    admin = history.list_history(session=session, viewer=world["admin"])
    assert len(admin) == len(runs) + len(tries)
    assert {e.username for e in admin} == {"stu1", "stu2", "teach"}


def test_history_is_newest_first_with_titles(session: Session, world) -> None:
    entries = history.list_history(session=session, viewer=world["s1"])
    assert [e.created_at for e in entries] == sorted((e.created_at for e in entries), reverse=True)
    quiz_entry = next(e for e in entries if e.kind == "quiz")
    assert quiz_entry.title == "Cardiology basics" and quiz_entry.status == "in_progress"
    adhoc = next(e for e in history.list_history(session=session, viewer=world["s2"]) if e.id == world["tries"]["s2_adhoc"].id)
    assert adhoc.title == "Ad-hoc quiz"


def test_filters(session: Session, world) -> None:
    s1, runs = world["s1"], world["runs"]
    assert _keys(history.list_history(session=session, viewer=s1, search="MEASLES")) == {("case", runs["s1"].id)}
    assert _keys(history.list_history(session=session, viewer=s1, search="rash")) == {("case", runs["s1"].id)}
    # LIKE wildcards are taken literally.
    assert _keys(history.list_history(session=session, viewer=s1, search="100%")) == {("case", runs["s1b"].id)}
    assert history.list_history(session=session, viewer=s1, search="_") == []
    assert _keys(history.list_history(session=session, viewer=s1, search="cardio")) == {("quiz", world["tries"]["s1_quiz"].id)}
    assert {e.kind for e in history.list_history(session=session, viewer=s1, kind="case")} == {"case"}
    assert {e.kind for e in history.list_history(session=session, viewer=s1, kind="quiz")} == {"quiz"}
    assert _keys(history.list_history(session=session, viewer=s1, adapter="adapters/b")) == {("case", runs["s1b"].id)}
    window = history.list_history(session=session, viewer=s1, kind="case", since=T0 + timedelta(days=1),
                                  until=T0 + timedelta(days=3))
    assert _keys(window) == {("case", runs["s1b"].id)}
    assert history.list_history(session=session, viewer=s1, kind="case", until=T0) == []
    assert len(history.list_history(session=session, viewer=world["admin"], limit=2)) == 2
    assert history.history_adapters(session=session, viewer=s1) == ["adapters/a", "adapters/b"]
    assert history.history_adapters(session=session, viewer=world["s2"]) == ["adapters/a"]


def test_visible_detail_checks(session: Session, world) -> None:
    runs, tries = world["runs"], world["tries"]
    assert history.visible_case_run(session=session, viewer=world["s1"], run_id=runs["s1"].id) is not None
    assert history.visible_case_run(session=session, viewer=world["s2"], run_id=runs["s1"].id) is None
    assert history.visible_case_run(session=session, viewer=world["teacher"], run_id=runs["s1"].id) is None
    assert history.visible_case_run(session=session, viewer=world["admin"], run_id=runs["s1"].id) is not None
    assert history.visible_case_run(session=session, viewer=world["admin"], run_id=99_999) is None
    assert history.visible_attempt(session=session, viewer=world["teacher"], attempt_id=tries["s2_quiz"].id) is not None
    assert history.visible_attempt(session=session, viewer=world["teacher"], attempt_id=tries["s2_adhoc"].id) is None
    assert history.visible_attempt(session=session, viewer=world["s1"], attempt_id=tries["s2_quiz"].id) is None
    assert history.visible_attempt(session=session, viewer=world["admin"], attempt_id=tries["s2_adhoc"].id) is not None


def test_permission_predicates(session: Session, world) -> None:
    run, attempt = world["runs"]["s1"], world["tries"]["s2_quiz"]
    assert history.can_view_case_run(world["s1"], run) and not history.can_view_case_run(world["s2"], run)
    assert not history.can_view_case_run(world["teacher"], run) and history.can_view_case_run(world["admin"], run)
    assert history.can_view_attempt(session=session, viewer=world["teacher"], attempt=attempt)
    assert not history.can_view_attempt(session=session, viewer=world["other_teacher"], attempt=attempt)
    assert history.can_delete(world["s1"], world["s1"].id) and history.can_delete(world["admin"], world["s1"].id)
    assert not history.can_delete(world["teacher"], world["s1"].id)


def test_delete_rules(session: Session, world) -> None:
    runs, tries = world["runs"], world["tries"]
    with pytest.raises(HistoryError, match="may not delete"):
        history.delete_history_entry(session=session, viewer=world["s2"], kind="case", entry_id=runs["s1"].id)
    with pytest.raises(HistoryError, match="may not delete"):  # an instructor sees it but may not delete it
        history.delete_history_entry(session=session, viewer=world["teacher"], kind="quiz", entry_id=tries["s2_quiz"].id)
    with pytest.raises(HistoryError, match="may not delete"):
        history.delete_history_entry(session=session, viewer=world["s1"], kind="case", entry_id=99_999)
    with pytest.raises(HistoryError, match="Unknown history entry type"):
        history.delete_history_entry(session=session, viewer=world["s1"], kind="note", entry_id=1)  # type: ignore[arg-type]
    assert history.get_case_run(session=session, run_id=runs["s1"].id) is not None

    attempts.record_answer(session=session, attempt_id=tries["s1_quiz"].id, user_id=world["s1"].id, position=0, chosen="A")
    history.delete_history_entry(session=session, viewer=world["s1"], kind="quiz", entry_id=tries["s1_quiz"].id)
    assert attempts.get_attempt(session=session, attempt_id=tries["s1_quiz"].id) is None
    assert session.exec(select(AttemptItem).where(AttemptItem.attempt_id == tries["s1_quiz"].id)).all() == []
    history.delete_history_entry(session=session, viewer=world["admin"], kind="case", entry_id=runs["s2"].id)
    assert history.get_case_run(session=session, run_id=runs["s2"].id) is None
    assert history.get_case_run(session=session, run_id=runs["s1"].id) is not None  # untouched


def test_export_json_and_csv(session: Session, world) -> None:
    s1 = world["s1"]
    attempts.record_answer(session=session, attempt_id=world["tries"]["s1_quiz"].id, user_id=s1.id, position=1,
                           chosen="C", correct=True)
    entries = history.list_history(session=session, viewer=s1)
    records = history.export_records(session=session, viewer=s1, entries=entries)
    assert [r["id"] for r in records] == [e.id for e in entries]
    case = next(r for r in records if r["type"] == "case_study" and r["id"] == world["runs"]["s1"].id)
    assert case["reasoning"] == "Step 1. Think." and case["answer"] == "Measles"
    assert case["timings"]["tokens"] == 120 and case["created_at"].startswith("2025-03-01T09:00:00")
    quiz = next(r for r in records if r["type"] == "quiz_attempt")
    assert [a["chosen"] for a in quiz["answers"]] == [None, "C"]
    assert json.loads(history.to_json(records)) == records

    rows = list(csv.DictReader(io.StringIO(history.to_csv(records))))
    assert len(rows) == len(records)
    assert rows[0].keys() == set(history.CSV_COLUMNS)
    row = next(r for r in rows if r["type"] == "case_study" and r["id"] == str(world["runs"]["s1"].id))
    assert row["answer"] == "Measles" and json.loads(row["settings"])["temperature"] == 0.7

    assert case["references"] == []

    # Another user's entries are left out even if asked for.
    assert history.export_records(session=session, viewer=world["s2"], entries=entries) == []
    everything = history.list_history(session=session, viewer=world["admin"])
    assert len(history.export_records(session=session, viewer=world["admin"], entries=everything)) == len(everything)
    teacher_view = history.export_records(session=session, viewer=world["teacher"], entries=everything)
    assert {(r["type"], r["id"]) for r in teacher_view} == {
        ("case_study", world["runs"]["teach"].id), ("quiz_attempt", world["tries"]["s1_quiz"].id),
        ("quiz_attempt", world["tries"]["s2_quiz"].id)}


def test_csv_cells_cannot_become_formulas(session: Session, make_user) -> None:
    user = make_user("eve")
    _run(session, user.id, "=HYPERLINK(\"http://x\")", answer="+1 then -2 @ end")
    records = history.export_records(session=session, viewer=user,
                                     entries=history.list_history(session=session, viewer=user))
    row = next(csv.DictReader(io.StringIO(history.to_csv(records))))
    assert row["case_text"].startswith("'=") and row["answer"].startswith("'+")
    assert history.entry_dict(history.list_history(session=session, viewer=user)[0])["kind"] == "case"


def test_export_names_each_reference_by_title_site_url_and_license(session: Session, make_user) -> None:
    user = make_user("ann")
    _run(session, user.id, "Flank pain", references=[PASSAGE, {**PASSAGE, "title": "=cmd()", "url": "", "score": 1.0}])
    records = history.export_records(session=session, viewer=user,
                                     entries=history.list_history(session=session, viewer=user))
    expected = [
        {"title": "What is Pyelonephritis?", "site": "niddk.nih.gov", "url": PASSAGE["url"], "license": "CC BY 4.0"},
        {"title": "=cmd()", "site": "niddk.nih.gov", "url": "", "license": "CC BY 4.0"},
    ]
    (record,) = records
    assert record["references"] == expected  # the passage text and scores stay out of the export
    assert json.loads(history.to_json(records))[0]["references"] == expected
    (row,) = csv.DictReader(io.StringIO(history.to_csv(records)))
    assert json.loads(row["references"]) == expected
