"""Classes page and "Assigned to you" (AppTest): an instructor creates a class, enrols, assigns and reads
progress; students see their assignment first on the Quiz page and join by code; outsiders and other
instructors are refused on the server; bad input shows a clear message and writes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, func, select
from streamlit.testing.v1 import AppTest

from app import resources
from services import quiz
from storage import classes, quizzes
from storage.models import Assignment, ClassMember, StudyClass, User
from tests.pages.auth_harness import add_user, app_as, rendered_text
from tests.pages.quiz_harness import quiz_environment

PAGE, QUIZ = "pages/classes.py", "pages/quiz.py"


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Engine]:
    yield from quiz_environment(monkeypatch, tmp_path)


def _button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def shown(elements) -> list[str]:
    """Element values as the reader sees them (the page escapes Markdown in messages)."""
    return [str(e.value).replace("\\", "") for e in elements]


def _count(engine: Engine, model) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(model)).one()


def _published(engine: Engine, owner: User) -> int:
    with Session(engine) as session:
        qs = quizzes.create_quiz_set(session=session, owner_id=owner.id, title="Cardiology week 1")
        quizzes.set_quiz_set_items(session=session, quiz_set_id=qs.id, item_ids=["medqa:q1", "medqa:q2"])
        quizzes.set_published(session=session, quiz_set_id=qs.id, published=True)
        return qs.id


def _create_class(at: AppTest, name: str) -> AppTest:
    at.text_input(key="cls_new_name").input(name)
    return _button(at, "Create class").click().run()


def test_instructor_creates_enrols_assigns_and_students_see_it_first(engine: Engine) -> None:
    teach = add_user(engine, "teach", "instructor")
    ann, bob, eve = add_user(engine, "ann"), add_user(engine, "bob"), add_user(engine, "eve")
    quiz_set_id = _published(engine, teach)

    at = app_as(teach, PAGE).run()
    assert "You have no classes yet" in rendered_text(at)
    at = _create_class(at, "Cardiology")
    assert not at.exception and any("Class created. Its join code is" in v for v in shown(at.success))
    with Session(engine) as session:
        [study_class] = classes.list_classes(session=session)

    at.multiselect(key="cls_enrol_pick").select(ann.id).select(bob.id)
    at = _button(at, "Enrol").click().run()
    assert any("Enrolled ann, bob." in v for v in shown(at.success))

    at.session_state["cls_tab"] = "Assign"
    at.run()
    at.selectbox(key="cls_quiz_set").select(quiz_set_id)
    due_day = (datetime.now(UTC) + timedelta(days=1)).date()
    at.date_input(key="cls_due_date").set_value(due_day)
    # Bad input first: a due date before the opening time.
    at.date_input(key="cls_opens_date").set_value(due_day + timedelta(days=2))
    at = _button(at, "Assign").click().run()
    assert any("The due date must be after the opening time." in v for v in shown(at.error))
    assert _count(engine, Assignment) == 0
    at.date_input(key="cls_opens_date").set_value(due_day - timedelta(days=1))
    at = _button(at, "Assign").click().run()
    assert any("Assigned." in v for v in shown(at.success)), [e.value for e in at.error]
    with Session(engine) as session:
        [assignment] = classes.class_assignments(session=session, class_id=study_class.id)
    assert assignment.title == "Cardiology week 1" and assignment.due_at.date() == due_day

    # ann sees it first on the Quiz page; eve (not in the class) does not.
    student = app_as(ann, QUIZ).run()
    assert not student.exception
    assert "Assigned to you" in [h.value for h in student.subheader]
    assert "Cardiology week 1" in rendered_text(student) and "status: not started" in rendered_text(student)
    student = student.button(key=f"quiz_start_assignment_{assignment.id}").click().run()
    assert student.session_state["quiz_attempt"] is not None
    outsider = app_as(eve, QUIZ).run()
    assert "Assigned to you" not in [h.value for h in outsider.subheader]
    assert "Cardiology week 1" not in rendered_text(outsider).split("Published quizzes")[0]

    # Progress: ann in progress, bob not started.
    at.session_state["cls_tab"] = "Progress"
    at.run()
    table = at.table[0].value
    assert list(table["Student"]) == ["ann", "bob"]
    assert list(table["Status"]) == ["in progress", "not started"]


def test_outsiders_cannot_open_the_classes_page_or_another_instructors_class(engine: Engine) -> None:
    teach, other = add_user(engine, "teach", "instructor"), add_user(engine, "other", "instructor")
    eve = add_user(engine, "eve")
    with Session(engine) as session:
        classes.create_class(session=session, owner_id=teach.id, name="Cardiology")
    student = app_as(eve, PAGE).run()
    assert [e.value for e in student.error] == ["You do not have access to this page."]
    assert "Cardiology" not in rendered_text(student)
    # Another instructor sees no class, even when the session state names it.
    with Session(engine) as session:
        [study_class] = classes.list_classes(session=session)
    at = app_as(other, PAGE, cls_current=study_class.id).run()
    assert not at.exception and "You have no classes yet" in rendered_text(at)
    assert study_class.join_code not in rendered_text(at)


def test_join_by_code_and_clear_messages_for_bad_codes(engine: Engine) -> None:
    teach, eve = add_user(engine, "teach", "instructor"), add_user(engine, "eve")
    with Session(engine) as session:
        study_class = classes.create_class(session=session, owner_id=teach.id, name="Renal")
    at = app_as(eve, QUIZ).run()
    at.text_input(key="quiz_join_code").input("WRONG999")
    at = at.button(key="quiz_join").click().run()
    assert any("No class has the join code 'WRONG999'" in v for v in shown(at.error))
    assert _count(engine, ClassMember) == 0
    at.text_input(key="quiz_join_code").input(study_class.join_code.lower())
    at = at.button(key="quiz_join").click().run()
    assert any("You joined Renal." in v for v in shown(at.success))
    at.text_input(key="quiz_join_code").input(study_class.join_code)
    at = at.button(key="quiz_join").click().run()
    assert any("You are already in Renal." in v for v in shown(at.error))
    assert _count(engine, ClassMember) == 1


def test_duplicate_class_name_is_allowed_but_empty_name_is_refused(engine: Engine) -> None:
    teach = add_user(engine, "teach", "instructor")
    at = app_as(teach, PAGE).run()
    at = _create_class(at, "   ")
    assert any("A class needs a name." in v for v in shown(at.error))
    assert _count(engine, StudyClass) == 0


def test_schedule_panel_saves_retention(engine: Engine) -> None:
    ann = add_user(engine, "ann")
    at = app_as(ann, QUIZ, quiz_tab="Due for review").run()
    assert not at.exception
    at.slider(key="quiz_retention").set_value(0.8)
    at.run()
    assert any("with retention 0.80" in v for v in shown(at.caption))
    at = at.button(key="quiz_retention_save").click().run()
    assert any("Desired retention set to 0.80" in v for v in shown(at.success))
    with Session(engine) as session:
        assert classes.get_review_settings(session=session, user_id=ann.id).desired_retention == 0.8
    assert at.button(key="quiz_optimise").disabled


def _first_answers(engine: Engine, item_id: str, right: int, total: int) -> None:
    """``total`` users answer ``item_id`` once each, the first ``right`` of them correctly."""
    from storage import attempts

    peers = [add_user(engine, f"{item_id.split(':')[1]}peer{n:02d}") for n in range(total)]
    with Session(engine) as session:
        for n, peer in enumerate(peers):
            attempt = attempts.start_attempt(session=session, user_id=peer.id, item_ids=[item_id])
            attempts.record_answer(session=session, attempt_id=attempt.id, user_id=peer.id, position=0, chosen="A",
                                   correct=n < right)


def test_difficulty_shows_in_curation_and_filters_build_your_own(engine: Engine) -> None:
    teach, ann = add_user(engine, "teach", "instructor"), add_user(engine, "ann")
    _first_answers(engine, "medqa:q2", right=2, total=10)  # hard
    _first_answers(engine, "medqa:q3", right=2, total=9)  # hard so far, but below the minimum: hidden
    at = app_as(teach, "pages/curation.py").run()
    assert not at.exception
    table = at.dataframe[0].value
    difficulty = dict(zip(table["Id"], table["Difficulty"]))
    assert difficulty["medqa:q2"] == "hard (20% right)"
    assert difficulty["medqa:q3"] == "" and difficulty["medqa:q1"] == ""
    assert any("shown once 10 users have answered" in c.value for c in at.caption)

    at = app_as(ann, QUIZ, quiz_tab="Build your own").run()
    at.multiselect(key="quiz_difficulty").select("hard")
    at.number_input(key="quiz_n").set_value(1)
    at = at.button(key="quiz_adhoc_start").click().run()
    assert not at.exception
    with Session(engine) as session:
        catalog = quiz.load_catalog(session=session, bank=resources.get_bank())
        sitting = quiz.load_sitting(session=session, catalog=catalog, attempt_id=at.session_state["quiz_attempt"],
                                    user_id=ann.id)
    assert [i.record.id for i in sitting.items] == ["medqa:q2"]
