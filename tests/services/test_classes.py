"""Classes and assignments (services.classes) on SQLite and PostgreSQL: role checks on the server,
enrolment and join codes, due dates (late or refused), progress, CSV, percentile, peer difficulty."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session, func, select

from core import quiz as quiz_core
from services import classes as svc
from services import quiz
from services.classes import AttemptError, ClassError
from services.quiz import AdHocSpec
from storage import accounts, attempts
from storage.models import Assignment, Attempt, ClassMember, StudyClass, User
from tests.services.quiz_world import MCQ, catalog, published_set, wrong

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
ITEMS = ["medqa:q1", "medqa:q2", "medqa:q3"]


def _count(session: Session, model) -> int:
    return session.exec(select(func.count()).select_from(model)).one()


def _world(session: Session, make_user: Callable[..., User], *, late_policy: str = "accept", mode: str = "tutor",
           due: datetime = NOW + timedelta(days=1), time_limit_s: int | None = None):
    teach = make_user("teach", "instructor")
    ann, bob, eve = make_user("ann"), make_user("bob"), make_user("eve")
    study_class = svc.create_class(session=session, viewer=teach, name="Cardiology")
    enrolled = svc.enrol(session=session, viewer=teach, class_id=study_class.id, user_ids=[ann.id, bob.id])
    assert enrolled == ["ann", "bob"]
    quiz_set_id = published_set(session, teach, ITEMS)
    assignment = svc.assign(session=session, viewer=teach, class_id=study_class.id, quiz_set_id=quiz_set_id,
                            opens_at=NOW - timedelta(hours=1), due_at=due, late_policy=late_policy, mode=mode,
                            time_limit_s=time_limit_s)
    return teach, ann, bob, eve, study_class, assignment


def _sit(session: Session, user: User, assignment_id: int, *, right: int, start: datetime = NOW,
         finish: datetime | None = None) -> int:
    """Start the assignment at ``start``, answer the first ``right`` questions right and the rest wrong, submit."""
    attempt_id = svc.start_assignment(session=session, catalog=catalog(session), user_id=user.id,
                                      assignment_id=assignment_id, now=start)
    for position, item_id in enumerate(ITEMS):
        choice = MCQ[item_id].correct if position < right else wrong(item_id)
        quiz.choose(session=session, catalog=catalog(session), attempt_id=attempt_id, user_id=user.id,
                    position=position, choice=choice, now=start)
    quiz.submit(session=session, catalog=catalog(session), attempt_id=attempt_id, user_id=user.id,
                now=finish or start + timedelta(minutes=5))
    return attempt_id


def test_one_submits_one_does_not_start_and_an_outsider_sees_nothing(session: Session, make_user) -> None:
    teach, ann, bob, eve, study_class, assignment = _world(session, make_user)
    [work] = svc.assigned_to(session=session, user_id=ann.id, now=NOW)
    assert (work.status, work.can_start, work.class_name, work.n_items) == ("not_started", True, "Cardiology", 3)
    _sit(session, ann, assignment.id, right=2)
    [work] = svc.assigned_to(session=session, user_id=ann.id, now=NOW)
    assert work.status == "submitted" and work.score_percent == pytest.approx(200 / 3)
    assert work.percentile is None  # one submission is below the minimum

    report = svc.progress(session=session, catalog=catalog(session), viewer=teach, assignment_id=assignment.id)
    rows = {r.username: r for r in report.rows}
    assert (rows["ann"].status, rows["bob"].status) == ("submitted", "not_started")
    sat = session.exec(select(Attempt).where(Attempt.user_id == ann.id)).one()
    assert rows["ann"].score_percent == pytest.approx(200 / 3)
    # started_at is the wall clock (start_attempt stamps it), finished_at the test's clock; the time is never negative.
    assert rows["ann"].time_taken_s == pytest.approx(max(0.0, (sat.finished_at - sat.started_at).total_seconds()))
    assert rows["bob"].score_percent is None and "eve" not in rows
    assert report.weakest[0][0] == "Cardiology"  # ann missed the cardiology item
    assert report.counts["submitted"] == 1 and report.counts["not_started"] == 1

    # The outsider: no assignment, cannot start it, cannot read progress; nor can another instructor.
    assert svc.assigned_to(session=session, user_id=eve.id, now=NOW) == []
    with pytest.raises(AttemptError, match="does not exist or is not yours"):
        svc.start_assignment(session=session, catalog=catalog(session), user_id=eve.id, assignment_id=assignment.id,
                             now=NOW)
    other = make_user("other", "instructor")
    for viewer in (eve, other):
        with pytest.raises(ClassError, match="does not exist or is not yours"):
            svc.progress(session=session, catalog=catalog(session), viewer=viewer, assignment_id=assignment.id)
        with pytest.raises(ClassError, match="does not exist or is not yours"):
            svc.enrol(session=session, viewer=viewer, class_id=study_class.id, user_ids=[eve.id])
        assert svc.manageable_classes(session=session, viewer=viewer) == []
    admin = accounts.create_user(session=session, username="root", password="admin pass phrase", role="admin")
    assert [c.id for c in svc.manageable_classes(session=session, viewer=admin)] == [study_class.id]
    assert svc.progress(session=session, catalog=catalog(session), viewer=admin, assignment_id=assignment.id).rows


def test_progress_csv_has_one_row_per_student(session: Session, make_user) -> None:
    teach, ann, _bob, _eve, _c, assignment = _world(session, make_user)
    _sit(session, ann, assignment.id, right=3)
    report = svc.progress(session=session, catalog=catalog(session), viewer=teach, assignment_id=assignment.id)
    table = list(csv.DictReader(io.StringIO(svc.progress_csv(report))))
    assert [(r["student"], r["status"]) for r in table] == [("ann", "submitted"), ("bob", "not started")]
    assert float(table[0]["score_percent"]) == 100.0 and table[1]["score_percent"] == ""
    assert table[0]["submitted_at_utc"].startswith("2026-12-06T09:05:00")


def test_a_due_date_in_the_past_makes_a_submission_late_when_accepted(session: Session, make_user) -> None:
    teach, ann, bob, _eve, _c, assignment = _world(session, make_user, late_policy="accept",
                                                   due=NOW + timedelta(minutes=2))
    _sit(session, ann, assignment.id, right=3, start=NOW, finish=NOW + timedelta(minutes=10))  # after the due date
    _sit(session, bob, assignment.id, right=1, start=NOW + timedelta(hours=2))  # started after it too
    rows = {r.username: r for r in svc.progress(session=session, catalog=catalog(session), viewer=teach,
                                                assignment_id=assignment.id).rows}
    assert (rows["ann"].status, rows["bob"].status) == ("late", "late")
    assert rows["ann"].score_percent == 100.0  # a late submission still counts
    [work] = svc.assigned_to(session=session, user_id=ann.id, now=NOW + timedelta(hours=3))
    assert work.status == "late"
    attempt = session.exec(select(Attempt).where(Attempt.user_id == ann.id)).one()
    assert attempt.config["submission"] == "late"


def test_a_due_date_in_the_past_refuses_a_submission_when_set(session: Session, make_user) -> None:
    teach, ann, bob, _eve, _c, assignment = _world(session, make_user, late_policy="refuse",
                                                   due=NOW + timedelta(minutes=2))
    attempt_id = _sit(session, ann, assignment.id, right=3, start=NOW, finish=NOW + timedelta(minutes=10))
    later = NOW + timedelta(hours=1)
    [work] = svc.assigned_to(session=session, user_id=bob.id, now=later)
    assert not work.can_start and "late submissions are refused" in work.why_not
    with pytest.raises(AttemptError, match="late submissions are refused"):
        svc.start_assignment(session=session, catalog=catalog(session), user_id=bob.id, assignment_id=assignment.id,
                             now=later)
    rows = {r.username: r for r in svc.progress(session=session, catalog=catalog(session), viewer=teach,
                                                assignment_id=assignment.id).rows}
    assert (rows["ann"].status, rows["ann"].score_percent) == ("refused", None)
    assert rows["bob"].status == "not_started"
    sitting = quiz.load_sitting(session=session, catalog=catalog(session), attempt_id=attempt_id, user_id=ann.id)
    assert sitting.submission == "refused" and sitting.result().percent == 100.0  # her answers are kept
    assert _count(session, Attempt) == 1  # bob's refused start wrote nothing


def test_exactly_at_the_due_time_is_on_time(session: Session, make_user) -> None:
    teach, ann, *_rest, assignment = _world(session, make_user, late_policy="refuse", due=NOW + timedelta(minutes=5))
    _sit(session, ann, assignment.id, right=1, finish=NOW + timedelta(minutes=5))
    [work] = svc.assigned_to(session=session, user_id=ann.id, now=NOW + timedelta(minutes=6))
    assert work.status == "submitted"


def test_assignment_mode_attempts_and_opening_time(session: Session, make_user) -> None:
    teach, ann, *_rest, assignment = _world(session, make_user, mode="exam", time_limit_s=600)
    early = svc.assign(session=session, viewer=teach, class_id=assignment.class_id, quiz_set_id=assignment.quiz_set_id,
                       opens_at=NOW + timedelta(days=1), due_at=NOW + timedelta(days=2), attempts_allowed=1,
                       title="Next week")
    with pytest.raises(AttemptError, match="Opens 2026-12-07 09:00 UTC"):
        svc.start_assignment(session=session, catalog=catalog(session), user_id=ann.id, assignment_id=early.id, now=NOW)
    attempt_id = svc.start_assignment(session=session, catalog=catalog(session), user_id=ann.id,
                                      assignment_id=assignment.id, now=NOW)
    # Starting again continues the open attempt rather than opening a second one.
    assert svc.start_assignment(session=session, catalog=catalog(session), user_id=ann.id,
                                assignment_id=assignment.id, now=NOW) == attempt_id
    sitting = quiz.load_sitting(session=session, catalog=catalog(session), attempt_id=attempt_id, user_id=ann.id)
    assert (sitting.mode, sitting.time_limit_s, sitting.assignment_id) == ("exam", 600, assignment.id)
    [first, second] = svc.assigned_to(session=session, user_id=ann.id, now=NOW)
    assert first.status == "in_progress" and first.open_attempt_id == attempt_id
    assert second.assignment.title == "Next week" and not second.can_start


def test_bad_input_gets_a_clear_message_and_writes_nothing(session: Session, make_user) -> None:
    teach, ann, bob, eve, study_class, assignment = _world(session, make_user)
    members_before, classes_before, assignments_before = (_count(session, ClassMember), _count(session, StudyClass),
                                                          _count(session, Assignment))
    with pytest.raises(ClassError, match="ann is already enrolled in Cardiology"):
        svc.enrol(session=session, viewer=teach, class_id=study_class.id, user_ids=[eve.id, ann.id])
    with pytest.raises(ClassError, match="No class has the join code 'NOSUCH12'"):
        svc.join_class(session=session, user_id=eve.id, join_code="nosuch12")
    with pytest.raises(ClassError, match="already in Cardiology"):
        svc.join_class(session=session, user_id=ann.id, join_code=study_class.join_code)
    with pytest.raises(ClassError, match="Enter the join code"):
        svc.join_class(session=session, user_id=eve.id, join_code="  ")
    with pytest.raises(ClassError, match="due date must be after the opening time"):
        svc.assign(session=session, viewer=teach, class_id=study_class.id, quiz_set_id=assignment.quiz_set_id,
                   opens_at=NOW, due_at=NOW - timedelta(days=1))
    gone = make_user("gone", "instructor")
    accounts.set_active(session=session, user_id=gone.id, active=False)
    with pytest.raises(ClassError, match="'gone' has been deactivated"):
        svc.create_class(session=session, viewer=gone, name="Ghost class")
    accounts.set_active(session=session, user_id=bob.id, active=False)
    with pytest.raises(ClassError, match="'bob' has been deactivated"):
        svc.enrol(session=session, viewer=teach, class_id=study_class.id, user_ids=[eve.id, bob.id])
    with pytest.raises(ClassError, match="Only instructors and admins"):
        svc.create_class(session=session, viewer=ann, name="Mine")
    assert (_count(session, ClassMember), _count(session, StudyClass), _count(session, Assignment)) == (
        members_before, classes_before, assignments_before)
    joined = svc.join_class(session=session, user_id=eve.id, join_code=study_class.join_code.lower())
    assert joined.id == study_class.id and _count(session, ClassMember) == members_before + 1
    assert [u.username for u in svc.enrolment_candidates(session=session, viewer=teach, class_id=study_class.id)] == []


def test_times_are_stored_in_utc_whatever_zone_they_were_entered_in(session: Session, make_user) -> None:
    teach, *_rest, study_class, assignment = _world(session, make_user)
    berlin = ZoneInfo("Europe/Berlin")
    opens = datetime(2026, 12, 7, 8, 0, tzinfo=berlin)  # 07:00 UTC
    made = svc.assign(session=session, viewer=teach, class_id=study_class.id, quiz_set_id=assignment.quiz_set_id,
                      opens_at=opens, due_at=opens + timedelta(hours=2))
    session.expire_all()
    stored = session.get(Assignment, made.id)
    assert stored.opens_at == datetime(2026, 12, 7, 7, 0, tzinfo=UTC) and stored.opens_at.utcoffset() == timedelta(0)
    assert quiz_core.in_zone(stored.opens_at, "Europe/Berlin").hour == 8
    assert quiz_core.in_zone(stored.opens_at, "Not/AZone").hour == 7  # an unknown zone falls back to UTC
    assert quiz_core.local_to_utc(datetime(2026, 12, 7, 8, 0), "Europe/Berlin") == stored.opens_at


def test_percentile_waits_for_enough_submissions(session: Session, make_user) -> None:
    teach, ann, bob, eve, study_class, assignment = _world(session, make_user)
    more = [make_user(f"stu{i}") for i in range(3)]
    svc.enrol(session=session, viewer=teach, class_id=study_class.id, user_ids=[eve.id, *[u.id for u in more]])
    for user, right in zip([ann, bob, eve, more[0]], [3, 2, 1, 0]):
        _sit(session, user, assignment.id, right=right)
    [work] = svc.assigned_to(session=session, user_id=ann.id, now=NOW)
    assert work.percentile is None  # 4 < PERCENTILE_MIN_PEERS
    _sit(session, more[1], assignment.id, right=2)
    by_user = {u.username: svc.assigned_to(session=session, user_id=u.id, now=NOW)[0].percentile
               for u in (ann, bob, more[0])}
    assert by_user["ann"] == pytest.approx(0.9) and by_user["stu0"] == pytest.approx(0.1)
    assert by_user["bob"] == pytest.approx(0.6)  # two at 67%: ties count half


def test_peer_difficulty_shows_from_the_minimum_and_filters_build_your_own(session: Session, make_user) -> None:
    students = [make_user(f"p{i:02d}") for i in range(quiz_core.DIFFICULTY_MIN_ANSWERS)]
    for n, student in enumerate(students):
        attempt = attempts.start_attempt(session=session, user_id=student.id, item_ids=["medqa:q1", "medqa:q2"])
        attempts.record_answer(session=session, attempt_id=attempt.id, user_id=student.id, position=0, chosen="A",
                               correct=True)  # everyone right: easy
        attempts.record_answer(session=session, attempt_id=attempt.id, user_id=student.id, position=1, chosen="A",
                               correct=n < 2)  # 2 of 10 right: hard
        if n == len(students) - 2:
            assert quiz.item_difficulty(session=session) == {}  # 9 answers: hidden
    assert quiz.item_difficulty(session=session) == {"medqa:q1": 1.0, "medqa:q2": 0.2}
    assert quiz.difficulty_counts(session=session, catalog=catalog(session)) == {"easy": 1, "medium": 0, "hard": 1}
    learner = make_user("learner")
    attempt_id = quiz.start_ad_hoc(session=session, catalog=catalog(session), user_id=learner.id,
                                   spec=AdHocSpec(n=1, difficulties=["hard"], seed=1))
    sitting = quiz.load_sitting(session=session, catalog=catalog(session), attempt_id=attempt_id, user_id=learner.id)
    assert [i.record.id for i in sitting.items] == ["medqa:q2"]
    with pytest.raises(quiz.NotEnoughItemsError):
        quiz.start_ad_hoc(session=session, catalog=catalog(session), user_id=learner.id,
                          spec=AdHocSpec(n=1, difficulties=["medium"]))
    with pytest.raises(AttemptError, match="Difficulty must be one of"):
        quiz.start_ad_hoc(session=session, catalog=catalog(session), user_id=learner.id,
                          spec=AdHocSpec(n=1, difficulties=["trivial"]))


def test_a_student_in_several_classes_sees_each_classes_work_open_first(session: Session, make_user) -> None:
    teach, ann, bob, _eve, _c, assignment = _world(session, make_user)
    other_teacher = make_user("other", "instructor")
    second = svc.create_class(session=session, viewer=other_teacher, name="Renal")
    svc.join_class(session=session, user_id=ann.id, join_code=second.join_code)
    renal = svc.assign(session=session, viewer=other_teacher, class_id=second.id, quiz_set_id=assignment.quiz_set_id,
                       opens_at=NOW - timedelta(hours=1), due_at=NOW + timedelta(days=3), title="Renal week")
    assert [(w.class_name, w.assignment.title) for w in svc.assigned_to(session=session, user_id=ann.id, now=NOW)] == [
        ("Cardiology", "Set"), ("Renal", "Renal week")]  # soonest due first
    _sit(session, ann, assignment.id, right=3)
    work = svc.assigned_to(session=session, user_id=ann.id, now=NOW)
    assert [(w.assignment.id, w.status) for w in work] == [(renal.id, "not_started"), (assignment.id, "submitted")]
    assert [w.assignment.id for w in svc.assigned_to(session=session, user_id=bob.id, now=NOW)] == [assignment.id]
    # Each instructor sees only their own class's assignment.
    own = svc.class_assignments(session=session, viewer=other_teacher, class_id=second.id)
    assert [a.id for a in own] == [renal.id]
    with pytest.raises(ClassError):
        svc.class_assignments(session=session, viewer=teach, class_id=second.id)
