"""History page (AppTest): own entries only, filters, detail view, delete with confirmation, export buttons."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from storage import attempts, history, quizzes
from tests.pages.auth_harness import add_user, allows_html, app_as, app_environment, rendered_text

PAGE = "pages/history.py"


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Engine]:
    yield from app_environment(monkeypatch, tmp_path)


def _case(engine: Engine, user_id: int, text: str, *, answer: str = "Answer", adapter: str = "adapters/a",
          days_ago: int = 0) -> int:
    with Session(engine) as session:
        run = history.save_case_run(
            session=session, user_id=user_id, case_text=text, reasoning=f"Reasoning about {text}", answer=answer,
            base_model="embedded", adapter=adapter, settings={"temperature": 0.3},
            timings={"ttft_s": 0.42, "tokens": 88, "tokens_per_s": 30.5, "total_s": 3.1},
        )
        run.created_at = datetime.now(UTC) - timedelta(days=days_ago)
        session.add(run)
        session.commit()
        return run.id


@pytest.fixture
def people(engine: Engine):
    admin = add_user(engine, "root", "admin")
    s1, s2 = add_user(engine, "stu1"), add_user(engine, "stu2")
    teacher = add_user(engine, "teach", "instructor")
    with Session(engine) as session:
        quiz = quizzes.create_quiz_set(session=session, owner_id=teacher.id, title="Cardio quiz")
        attempt = attempts.start_attempt(session=session, user_id=s2.id, item_ids=["medqa:1", "medqa:2"],
                                         quiz_set_id=quiz.id)
        attempts.record_answer(session=session, attempt_id=attempt.id, user_id=s2.id, position=0, chosen="B",
                               correct=True)
        attempts.finish_attempt(session=session, attempt_id=attempt.id, user_id=s2.id)
    runs = {
        "fever": _case(engine, s1.id, "Fever and rash <script>alert(1)</script>", answer="**Measles**", days_ago=3),
        "chest": _case(engine, s1.id, "Chest pain on exertion", answer="Angina", adapter="adapters/b", days_ago=1),
        "other": _case(engine, s2.id, "Secret case of stu2", answer="Private answer"),
    }
    return dict(admin=admin, s1=s1, s2=s2, teacher=teacher, runs=runs, attempt=attempt.id)


def _titles(at) -> list[str]:
    return list(at.dataframe[0].value["Title"]) if at.dataframe else []


def test_student_sees_only_their_entries_newest_first(engine: Engine, people) -> None:
    at = app_as(people["s1"], PAGE).run()
    assert not at.exception
    assert _titles(at) == ["Chest pain on exertion", "Fever and rash <script>alert(1)</script>"]
    assert "Secret case" not in rendered_text(at) and "Cardio quiz" not in rendered_text(at)
    assert len(at.selectbox(key="history_open").options) == 2
    assert "User" not in at.dataframe[0].value.columns
    assert [b.label for b in at.get("download_button")] == ["Export CSV", "Export JSON"]


def test_detail_view_shows_everything_as_text(engine: Engine, people) -> None:
    at = app_as(people["s1"], PAGE).run()
    at.selectbox(key="history_open").set_value(f"case:{people['runs']['fever']}")
    at.run()
    assert not at.exception
    assert at.code[0].value == "Fever and rash <script>alert(1)</script>"
    markdown = [m.value for m in at.markdown]
    # Model text goes through safety.markdown_text: tags shown literally (escaped), never as HTML.
    assert r"Reasoning about Fever and rash \<script\>alert(1)\</script\>" in markdown and "**Measles**" in markdown
    assert not any("<script>" in m for m in markdown)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Time to first token": "0.42 s", "Tokens": "88", "Tokens/s": "30.5", "Total time": "3.1 s"}
    assert json.loads(at.json[0].value) == {
        "settings": {"temperature": 0.3}, "timings": {"ttft_s": 0.42, "tokens": 88, "tokens_per_s": 30.5, "total_s": 3.1}
    }
    assert not allows_html(at)


def test_filters(engine: Engine, people) -> None:
    at = app_as(people["s1"], PAGE).run()
    at.text_input(key="history_search").input("angina")
    at.run()
    assert _titles(at) == ["Chest pain on exertion"]
    at.text_input(key="history_search").input("")
    at.selectbox(key="history_adapter").set_value("adapters/a")
    at.run()
    assert _titles(at) == ["Fever and rash <script>alert(1)</script>"]
    at.selectbox(key="history_adapter").set_value("Any")
    today = datetime.now(UTC).date()
    at.date_input(key="history_from").set_value(today - timedelta(days=2))
    at.run()
    assert _titles(at) == ["Chest pain on exertion"]
    at.date_input(key="history_from").set_value(None)
    at.selectbox(key="history_kind").set_value("Quiz attempts")
    at.run()
    assert _titles(at) == [] and at.info[0].value == "No entries match these filters."


def test_instructor_sees_attempts_at_their_quiz_but_cannot_delete_them(engine: Engine, people) -> None:
    at = app_as(people["teacher"], PAGE).run()
    assert _titles(at) == ["Cardio quiz"]
    assert list(at.dataframe[0].value["User"]) == ["stu2"]
    at.selectbox(key="history_open").set_value(f"quiz:{people['attempt']}")
    at.run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Score"] == "50%" and metrics["Questions"] == "2"
    assert "history_delete" not in [b.key for b in at.button]


def test_admin_sees_everything(engine: Engine, people) -> None:
    at = app_as(people["admin"], PAGE).run()
    assert len(_titles(at)) == 4
    assert set(at.dataframe[0].value["User"]) == {"stu1", "stu2"}


def test_delete_needs_confirmation(engine: Engine, people) -> None:
    at = app_as(people["s1"], PAGE).run()
    at.selectbox(key="history_open").set_value(f"case:{people['runs']['chest']}")
    at.run()
    at.button(key="history_delete").click()
    at.run()
    assert at.warning[0].value.startswith("Delete this entry for good?")
    at.button(key="history_delete_no").click()
    at.run()
    assert len(_titles(at)) == 2
    at.button(key="history_delete").click()
    at.run()
    at.button(key="history_delete_yes").click()
    at.run()
    assert not at.exception
    assert [s.value for s in at.success] == ["Entry deleted."]
    assert _titles(at) == ["Fever and rash <script>alert(1)</script>"]
    with Session(engine) as session:
        assert history.get_case_run(session=session, run_id=people["runs"]["chest"]) is None
        assert history.get_case_run(session=session, run_id=people["runs"]["other"]) is not None


def test_another_users_entry_cannot_be_opened_even_by_forging_state(engine: Engine, people) -> None:
    at = app_as(people["s1"], PAGE, history_open=f"case:{people['runs']['other']}").run()
    assert not at.exception
    assert "Secret case of stu2" not in rendered_text(at) and "Private answer" not in rendered_text(at)
    at = app_as(people["s1"], PAGE, history_confirm_delete=f"case:{people['runs']['other']}").run()
    assert "history_delete_yes" not in [b.key for b in at.button]
    with Session(engine) as session:
        assert history.get_case_run(session=session, run_id=people["runs"]["other"]) is not None


def test_empty_history(engine: Engine) -> None:
    student = add_user(engine, "newbie")
    at = app_as(student, PAGE).run()
    assert [i.value for i in at.info] == ["Nothing here yet."]


def test_case_detail_shows_its_references_as_text(engine: Engine) -> None:
    student = add_user(engine, "stu1")
    passages = [
        {"id": "medquad:k", "title": "Kidney Infection (Pyelonephritis)", "focus": "Kidney Infection",
         "question": "What is it?", "text": "A kidney infection brings fever and flank pain.", "site": "NIDDK",
         "url": "https://www.niddk.nih.gov/kidney-infection", "license": "CC BY 4.0",
         "attribution": "MedQuAD by Asma Ben Abacha and Dina Demner-Fushman", "score": 9.5},
        {"id": "medquad:x", "title": "<b>Bold</b> [x](javascript:alert(1))", "focus": "", "question": "",
         "text": "<img src=x onerror=alert(1)> flank", "site": "CDC", "url": "javascript:alert(1)",
         "license": "CC BY 4.0", "attribution": "", "score": 1.0},
    ]
    with Session(engine) as session:
        run = history.save_case_run(
            session=session, user_id=student.id, case_text="Fever and flank pain", reasoning="r", answer="a",
            base_model="embedded", adapter="a", settings={"use_references": True},
            timings={"tokens": 8, "forced": "conclude"}, references=passages)
    at = app_as(student, PAGE).run()
    at.selectbox(key="history_open").set_value(f"case:{run.id}").run()
    assert not at.exception
    (expander,) = [e for e in at.expander if e.label.startswith("References")]
    assert expander.label == "References (2)"
    bodies = [m.value for m in expander.markdown]
    assert "**Kidney Infection \\(Pyelonephritis\\)**" in bodies
    assert "NIDDK · https\\://www\\.niddk\\.nih\\.gov/kidney\\-infection" in bodies  # site and URL, as text
    assert any("**fever**" in b and "**flank**" in b and "**pain**" in b for b in bodies)  # the case's words
    assert any("CC BY 4\\.0 — MedQuAD by Asma Ben Abacha" in c.value for c in expander.caption)
    assert any("Given to the model" in c.value for c in expander.caption)
    # The odd one: its title, URL and text show as typed, never as a tag or a link.
    assert "**\\<b\\>Bold\\</b\\> \\[x\\]\\(javascript\\:alert\\(1\\)\\)**" in bodies
    assert all("](" not in b for b in bodies) and any("\\<img" in b for b in bodies)
    assert not allows_html(at)
    assert any("concluded early at the student's request" in c.value for c in at.caption)


def test_case_without_references_has_no_references_section(engine: Engine, people) -> None:
    at = app_as(people["s1"], PAGE).run()
    at.selectbox(key="history_open").set_value(f"case:{people['runs']['chest']}").run()
    assert not at.exception
    assert not [e for e in at.expander if e.label.startswith("References")]
