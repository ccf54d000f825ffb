"""Curation page (AppTest): instructor build -> publish -> student takes -> analytics; bank search and filters;
edits kept beside the original; retirement; import with row/field errors; escaping of stored text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from streamlit.testing.v1 import AppTest

from app import resources
from services import curation, quiz
from storage import quizzes
from storage.models import User
from tests.pages.auth_harness import add_user, allows_html, app_as
from tests.pages.quiz_harness import BANK, quiz_environment, texts

PAGE = "pages/curation.py"
QUIZ = "pages/quiz.py"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "quiz"
RECORDS = {r.id: r for r in BANK}


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Engine]:
    yield from quiz_environment(monkeypatch, tmp_path)


@pytest.fixture
def teacher(engine: Engine) -> User:
    return add_user(engine, "teach", "instructor")


def bank_ids(at: AppTest) -> list[str]:
    return list(at.dataframe[0].value["Id"])


def open_tab(at: AppTest, label: str) -> AppTest:
    """Switch the page's tabs (only the open tab's content runs)."""
    at.session_state["cur_tab"] = label
    return at.run()


def create_set(at: AppTest, title: str, *, mode: str = "tutor", minutes: int = 0, passing: int = 0) -> int:
    open_tab(at, "Quiz sets")
    at.text_input(key="cur_new_title").input(title)
    at.radio(key="cur_new_mode").set_value(mode)
    at.number_input(key="cur_new_minutes").set_value(minutes)
    at.number_input(key="cur_new_passing").set_value(passing)
    at.button(key="cur_new_create").click().run()
    assert not at.exception, at.exception
    return at.session_state["cur_set"]


def set_items(engine: Engine, quiz_set_id: int) -> list[str]:
    with Session(engine) as session:
        return quizzes.quiz_set_item_ids(session=session, quiz_set_id=quiz_set_id)


def test_students_cannot_open_curation(engine: Engine) -> None:
    at = app_as(add_user(engine, "stu"), PAGE).run()
    assert [e.value for e in at.error] == ["You do not have access to this page."]
    assert not at.tabs


def test_build_publish_take_and_analyse(engine: Engine, teacher: User) -> None:
    at = app_as(teacher, PAGE).run()
    quiz_set_id = create_set(at, "Cardio & more", mode="exam", minutes=10, passing=60)
    assert any("Quiz set created" in s.value for s in at.success)

    at.text_area(key="cur_add_ids").input("medqa:q1\nmedqa:q2, medqa:q3\nmedmcqa:q4\nnot:there")
    at.button(key="cur_add_ids_button").click().run()
    assert any("Added 4 questions" in s.value and "not\\:there" in s.value for s in at.success)
    assert set_items(engine, quiz_set_id) == ["medqa:q1", "medqa:q2", "medqa:q3", "medmcqa:q4"]
    at.button(key="cur_up_2").click().run()  # medqa:q3 one up
    at.button(key="cur_remove_3").click().run()  # medmcqa:q4 out
    assert set_items(engine, quiz_set_id) == ["medqa:q1", "medqa:q3", "medqa:q2"]
    open_tab(at, "Bank")
    at.text_input(key="cur_query").input("deltoid").run()  # add from the bank browser too
    at.selectbox(key="cur_item").set_value("medmcqa:q4").run()
    at.button(key="cur_item_add").click().run()
    assert set_items(engine, quiz_set_id)[-1] == "medmcqa:q4"

    open_tab(at, "Quiz sets")
    assert [b.label for b in at.get("download_button")] == ["Export questions (CSV)"]
    at.button(key="cur_publish").click().run()
    assert any("Published" in s.value for s in at.success)
    with Session(engine) as session:
        saved = quizzes.get_quiz_set(session=session, quiz_set_id=quiz_set_id)
    assert (saved.published, saved.mode, saved.time_limit_s, saved.passing_score) == (True, "exam", 600, 0.6)

    # A student takes it in exam mode: three right, one wrong.
    student = add_user(engine, "stu")
    quiz = app_as(student, QUIZ).run()
    quiz.button(key=f"quiz_start_set_{quiz_set_id}").click().run()
    for index, item_id in enumerate(set_items(engine, quiz_set_id)):
        quiz.selectbox(key="quiz_index").set_value(index).run()
        record = RECORDS[item_id]
        letter = record.correct if item_id != "medqa:q2" else "A"
        [r for r in quiz.radio if r.key.startswith("quiz_choice_")][0].set_value(letter)
        quiz.run()
    quiz.button(key="quiz_submit").click().run()
    assert {m.label: m.value for m in quiz.metric}["Score"] == "75%"

    open_tab(at, "Analytics")
    analytics = {m.label: m.value for m in at.metric}
    assert analytics == {"Attempts": "1", "Mean score": "75%", "Pass rate": "100%", "In progress": "0"}
    per_item = at.dataframe[-2].value  # per-item table, then the attempts table
    assert list(per_item["Id"]) == set_items(engine, quiz_set_id)
    assert list(per_item["% correct"]) == [100.0, 100.0, 0.0, 100.0]
    assert per_item["Discrimination"].isna().all()  # fewer than 5 attempts
    attempts_table = at.dataframe[-1].value
    assert list(attempts_table["User"]) == ["stu"] and list(attempts_table["Score"]) == ["75%"]
    assert len(at.get("plotly_chart")) == 1
    assert [b.label for b in at.get("download_button")] == ["Export results (CSV)"]


def test_search_and_filters(engine: Engine, teacher: User) -> None:
    at = app_as(teacher, PAGE).run()
    assert len(bank_ids(at)) == len(BANK)
    at.text_input(key="cur_query").input("peaked T").run()
    assert bank_ids(at) == ["medqa:q3", "medical-o1:o1"]  # the question of one, the option and answer of the other
    at.text_input(key="cur_query").input('"peaked t waves" ecg').run()
    assert bank_ids(at) == ["medqa:q3", "medical-o1:o1"]
    at.multiselect(key="cur_kinds").set_value(["open"]).run()
    assert bank_ids(at) == ["medical-o1:o1"]
    at.multiselect(key="cur_kinds").set_value([])
    at.text_input(key="cur_query").input("")
    at.selectbox(key="cur_ocr").set_value("only").run()
    assert bank_ids(at) == ["medmcqa:q5"]
    at.selectbox(key="cur_ocr").set_value("exclude")
    at.multiselect(key="cur_steps").set_value(["step1"]).run()
    assert bank_ids(at) == ["medqa:q1", "medqa:q2"]
    at.multiselect(key="cur_steps").set_value([])
    at.multiselect(key="cur_sources").set_value(["medmcqa", "pubmedqa"]).run()
    assert bank_ids(at) == ["medmcqa:q4", "pubmedqa:q7"]
    at.selectbox(key="cur_item").set_value("pubmedqa:q7").run()
    assert RECORDS["pubmedqa:q7"].context in texts(at)
    assert any("A\\. yes ✓" == m.value for m in at.markdown)  # the key is marked in the preview
    open_tab(at, "Import")
    assert not at.dataframe  # the bank's widgets are not drawn on another tab...
    open_tab(at, "Bank")
    assert bank_ids(at) == ["medmcqa:q4", "pubmedqa:q7"]  # ...but its filters are kept


def test_edit_keeps_the_original_and_renders_script_as_text(engine: Engine, teacher: User) -> None:
    at = app_as(teacher, PAGE).run()
    at.selectbox(key="cur_item").set_value("medqa:q1").run()
    original = RECORDS["medqa:q1"]
    at.text_area(key="cur_edit_q_medqa:q1").input("<script>alert(1)</script> Which anemia?")
    at.text_input(key="cur_edit_opt_medqa:q1_B").input("**Vitamin B12** deficiency")
    at.button(key="cur_edit_save_medqa:q1").click().run()
    assert not at.exception
    assert any("Edit saved" in s.value for s in at.success)
    shown = texts(at)
    assert "<script>alert(1)</script> Which anemia?" in shown and original.question in shown  # edit + original
    assert "B\\. \\*\\*Vitamin B12\\*\\* deficiency" in [m.value for m in at.markdown]
    assert not allows_html(at)
    assert bank_ids(at) == [r.id for r in BANK]
    assert at.dataframe[0].value.set_index("Id").loc["medqa:q1", "Status"] == "edited"

    with Session(engine) as session:
        catalog = quiz.load_catalog(session=session, bank=resources.get_bank())
    assert catalog.item("medqa:q1").question == "<script>alert(1)</script> Which anemia?"
    assert catalog.item("medqa:q1").options["B"] == "**Vitamin B12** deficiency"
    assert catalog.original("medqa:q1").question == original.question

    at.button(key="cur_item_revert").click().run()
    assert original.question in texts(at) and "<script>alert(1)</script> Which anemia?" not in texts(at)
    assert at.text_area(key="cur_edit_q_medqa:q1").value == original.question


def test_invalid_edit_is_refused_with_every_reason(engine: Engine, teacher: User) -> None:
    at = app_as(teacher, PAGE).run()
    at.selectbox(key="cur_item").set_value("medqa:q2").run()
    at.text_area(key="cur_edit_q_medqa:q2").input("   ")
    at.text_input(key="cur_edit_opt_medqa:q2_C").input("")
    at.button(key="cur_edit_save_medqa:q2").click().run()
    errors = [e.value.replace("\\", "") for e in at.error]
    assert errors == ["Not saved: question must be non-empty text; every option needs text."]
    with Session(engine) as session:
        assert quizzes.latest_overrides(session=session) == {}


def test_retire_and_restore(engine: Engine, teacher: User) -> None:
    at = app_as(teacher, PAGE).run()
    quiz_set_id = create_set(at, "Set")
    open_tab(at, "Bank")
    at.selectbox(key="cur_item").set_value("medqa:q2").run()
    at.button(key="cur_item_retire").click().run()
    assert "medqa:q2" not in bank_ids(at)
    open_tab(at, "Quiz sets")
    at.text_area(key="cur_add_ids").input("medqa:q2")
    at.button(key="cur_add_ids_button").click().run()
    assert any("Retired, not added: medqa:q2" in w.value.replace("\\", "") for w in at.warning)
    assert set_items(engine, quiz_set_id) == []
    open_tab(at, "Bank")
    at.checkbox(key="cur_show_retired").check().run()
    assert "medqa:q2" in bank_ids(at)
    at.selectbox(key="cur_item").set_value("medqa:q2").run()
    assert any("Retired" in w.value for w in at.warning)
    at.button(key="cur_item_restore").click().run()
    at.checkbox(key="cur_show_retired").uncheck().run()
    assert "medqa:q2" in bank_ids(at)


def test_import_with_errors_imports_nothing_unless_valid_only_is_chosen(engine: Engine, teacher: User) -> None:
    at = open_tab(app_as(teacher, PAGE).run(), "Import")
    at.file_uploader[0].set_value(("errors.csv", (FIXTURES / "errors.csv").read_bytes(), "text/csv"))
    at.run()
    assert not at.exception
    errors = at.dataframe[0].value
    assert list(zip(errors["Row"], errors["Field"])) == [
        (3, "question"), (4, "correct"), (5, "question"), (6, "license"), (7, "B")]
    assert any("Nothing is imported" in e.value for e in at.error)
    button = at.button(key="cur_import_button")
    assert button.label == "Import 1 item" and button.disabled  # a browser cannot press it
    with Session(engine) as session:
        assert quizzes.list_imported_items(session=session) == []

    [c for c in at.checkbox if c.label.startswith("Import only the 1 valid")][0].check().run()
    at.button(key="cur_import_button").click().run()
    assert any("Imported 1 item." in s.value.replace("\\", "") for s in at.success)
    with Session(engine) as session:
        imported = quizzes.list_imported_items(session=session)
    assert [r.record["question"] for r in imported] == ["Which electrolyte abnormality causes peaked T waves?"]
    assert not at.file_uploader[0].value  # a fresh uploader after the import
    open_tab(at, "Bank")
    at.text_input(key="cur_query").input("electrolyte abnormality").run()
    assert bank_ids(at) == [imported[0].item_id]
    assert at.dataframe[0].value["Status"][0] == "imported"


def test_clean_import_can_go_straight_into_the_current_set(engine: Engine, teacher: User) -> None:
    at = app_as(teacher, PAGE).run()
    quiz_set_id = create_set(at, "Imports")
    open_tab(at, "Import")
    items = [{"question": "Which vitamin deficiency causes scurvy? <b>bold</b>", "options": ["C", "D"],
              "correct": "A", "license": "CC BY 4.0", "subject": "Nutrition"}]
    at.file_uploader[0].set_value(("items.json", json.dumps(items).encode(), "application/json")).run()
    assert not at.error
    at.checkbox(key="cur_import_add").check()
    at.button(key="cur_import_button").click().run()
    ids = set_items(engine, quiz_set_id)
    assert len(ids) == 1 and ids[0].startswith("import:")
    open_tab(at, "Bank")
    at.selectbox(key="cur_item").set_value(ids[0]).run()
    assert "Which vitamin deficiency causes scurvy? <b>bold</b>" in texts(at)
    captions = [c.value.replace("\\", "") for c in at.caption]
    assert any("License: CC BY 4.0" in c and "attribution missing" in c for c in captions)


def test_instructors_see_only_their_own_sets(engine: Engine, teacher: User) -> None:
    other = add_user(engine, "other", "instructor")
    with Session(engine) as session:
        mine = quizzes.create_quiz_set(session=session, owner_id=teacher.id, title="Mine").id
        quizzes.create_quiz_set(session=session, owner_id=other.id, title="Theirs")
    at = app_as(teacher, PAGE).run()
    assert at.selectbox(key="cur_set").options == ["+ New quiz set", f"Mine (#{mine})"]
    assert at.selectbox(key="cur_set").value == mine  # the newest own set is opened
    admin = app_as(add_user(engine, "root", "admin"), PAGE).run()
    assert len(admin.selectbox(key="cur_set").options) == 3
    with Session(engine) as session, pytest.raises(quizzes.QuizError):
        curation.add_to_quiz_set(session=session, catalog=quiz.load_catalog(
            session=session, bank=resources.get_bank()), viewer=other,
            quiz_set_id=mine, item_ids=["medqa:q1"])
