"""Quiz page (AppTest): tutor mode, exam mode with time-out, flag and review, resume after a reload,
open-ended items, the review queue, the model-explanation seam, escaping and attribution."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select
from streamlit.testing.v1 import AppTest

from core import inference, prompts
from core.metrics import rouge_l
from core.records import Record
from services import quiz as quiz_service
from storage import attempts, quizzes, reviews
from storage.models import Attempt, GenerationEvent, User
from tests.pages.auth_harness import add_user, allows_html, app_as, app_environment
from tests.pages.quiz_harness import BANK, quiz_environment, texts

PAGE = "pages/quiz.py"
RECORDS = {r.id: r for r in BANK}


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Engine]:
    yield from quiz_environment(monkeypatch, tmp_path)


@pytest.fixture
def student(engine: Engine) -> User:
    return add_user(engine, "stu")


def publish(engine: Engine, item_ids: list[str], *, mode: str = "tutor", time_limit_s: int | None = None,
            passing_score: float | None = None, title: str = "Cardio set", attempts_allowed: int | None = None) -> int:
    owner = add_user(engine, f"teacher{len(item_ids)}{mode}{time_limit_s}", "instructor")
    with Session(engine) as session:
        qs = quizzes.create_quiz_set(session=session, owner_id=owner.id, title=title, mode=mode,
                                     time_limit_s=time_limit_s, passing_score=passing_score,
                                     attempts_allowed=attempts_allowed)
        quizzes.set_quiz_set_items(session=session, quiz_set_id=qs.id, item_ids=item_ids)
        quizzes.set_published(session=session, quiz_set_id=qs.id, published=True)
        return qs.id


def shown(at: AppTest) -> Record:
    """The bank record whose question the page shows now."""
    found = [RECORDS[i] for i in RECORDS if RECORDS[i].question in texts(at)]
    assert len(found) == 1, texts(at)
    return found[0]


def by_prefix(elements: Any, prefix: str) -> Any:
    matching = [e for e in elements if e.key and e.key.startswith(prefix)]
    assert matching, f"no element with a key starting {prefix!r}"
    return matching[0]


def answer(at: AppTest, letter: str) -> AppTest:
    """Choose ``letter``; in tutor mode also press "Submit answer"."""
    by_prefix(at.radio, "quiz_choice_").set_value(letter)
    at.run()
    submit = [b for b in at.button if b.key and b.key.startswith("quiz_submit_answer_")]
    if submit:
        submit[0].click().run()
    return at


def wrong_letter(record: Record) -> str:
    return next(k for k in record.options or {} if k != record.correct)


def open_tab(at: AppTest, label: str) -> AppTest:
    """Switch the start screen's tabs (only the open tab's content runs)."""
    at.session_state["quiz_tab"] = label
    return at.run()


def start_ad_hoc(at: AppTest, *, n: int, mode: str = "tutor", sources: list[str] | None = None,
                 kinds: list[str] | None = None, minutes: int | None = None, pool: str | None = None) -> AppTest:
    open_tab(at, "Build your own")
    if sources:
        at.multiselect(key="quiz_sources").set_value(sources)
    if kinds:
        at.multiselect(key="quiz_kinds").set_value(kinds)
    if pool:
        at.radio(key="quiz_pool").set_value(pool)
    if minutes is not None:
        at.number_input(key="quiz_minutes").set_value(minutes)
    at.number_input(key="quiz_n").set_value(n)
    at.radio(key="quiz_mode").set_value(mode)
    at.button(key="quiz_adhoc_start").click().run()
    assert not at.exception, at.exception
    return at


def stored(engine: Engine, attempt_id: int) -> tuple[Attempt, list]:
    with Session(engine) as session:
        return session.get(Attempt, attempt_id), attempts.attempt_items(session=session, attempt_id=attempt_id)


def test_without_prepared_data_the_page_says_what_to_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for engine in app_environment(monkeypatch, tmp_path):
        at = app_as(add_user(engine, "stu"), PAGE).run()
        assert not at.exception
        assert any("python -m core.data prepare" in w.value for w in at.warning)
        assert not at.tabs


def test_tutor_mode_gives_feedback_after_each_answer(engine: Engine, student: User) -> None:
    at = start_ad_hoc(app_as(student, PAGE).run(), n=3, sources=["medqa"])
    attempt_id = at.session_state["quiz_attempt"]
    first = shown(at)
    assert not at.success and not at.error  # nothing before answering
    answer(at, wrong_letter(first))
    assert not at.exception
    correct_text = f"{first.correct}\\. {first.options[first.correct]}"
    assert any(correct_text in e.value for e in at.error), [e.value for e in at.error]
    if first.explanation:  # where the source has one
        assert first.explanation in texts(at)
    else:
        assert any("no explanation" in c.value for c in at.caption)
    assert by_prefix(at.radio, "quiz_choice_").disabled  # tutor mode: an answer is final once seen
    assert any(f"License: {first.license}" in c.value.replace("\\", "") for c in at.caption)

    at.button(key="quiz_next").click().run()
    second = shown(at)
    assert second.id != first.id
    answer(at, second.correct)
    assert any("Correct" in s.value for s in at.success)

    _, rows = stored(engine, attempt_id)
    saved = {r.item_id: r for r in rows}
    assert (saved[first.id].chosen, saved[first.id].correct) == (wrong_letter(first), False)
    assert (saved[second.id].chosen, saved[second.id].correct) == (second.correct, True)
    assert saved[first.id].answered_at is not None

    at.button(key="quiz_submit").click().run()  # one question left unanswered: asks first
    assert any("not answered yet" in w.value for w in at.warning)
    at.button(key="quiz_submit_yes").click().run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Score"] == "33%" and metrics["Correct"] == "1 of 3"
    attempt, _ = stored(engine, attempt_id)
    assert attempt.status == "submitted" and attempt.score == pytest.approx(1 / 3)
    assert len(at.get("plotly_chart")) == 2  # by subject and by source
    review_labels = [e.label for e in at.expander]
    assert sum("missed" in label or "not answered" in label for label in review_labels) == 2


def test_exam_mode_hides_feedback_and_submits_at_time_out(engine: Engine, student: User,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    quiz_set_id = publish(engine, ["medqa:q1", "medqa:q2", "medqa:q3"], mode="exam", time_limit_s=60,
                          passing_score=0.5)
    at = app_as(student, PAGE).run()
    at.button(key=f"quiz_start_set_{quiz_set_id}").click().run()
    attempt_id = at.session_state["quiz_attempt"]
    assert any("left" in m.value and ":material/timer:" in m.value for m in at.markdown)
    first = shown(at)
    answer(at, first.correct)  # saved on change, no "Submit answer" button in exam mode
    assert not at.success and not at.error and first.explanation not in texts(at)
    assert not by_prefix(at.radio, "quiz_choice_").disabled  # answers stay changeable until submission
    _, rows = stored(engine, attempt_id)
    assert [r.chosen for r in rows if r.item_id == first.id] == [first.correct]

    later = datetime.now(UTC) + timedelta(minutes=2)
    monkeypatch.setattr(quiz_service, "current_time", lambda: later)
    at.run()
    assert not at.exception
    assert any("Time ran out" in w.value for w in at.warning)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Score"] == "33%" and metrics["Time"] == "1:00" and metrics["Result"] == "Not passed"
    attempt, _ = stored(engine, attempt_id)
    assert attempt.status == "timed_out"


def test_exam_reopened_after_the_deadline_is_submitted_on_load(engine: Engine, student: User,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    quiz_set_id = publish(engine, ["medqa:q1", "medqa:q2"], mode="exam", time_limit_s=300)
    at = app_as(student, PAGE).run()
    at.button(key=f"quiz_start_set_{quiz_set_id}").click().run()
    attempt_id = at.session_state["quiz_attempt"]
    answer(at, shown(at).correct)

    later = datetime.now(UTC) + timedelta(hours=1)
    monkeypatch.setattr(quiz_service, "current_time", lambda: later)
    reloaded = app_as(student, PAGE).run()  # a new browser session: nothing in session state
    assert not reloaded.exception
    assert any("Time is up" in w.value for w in reloaded.warning)
    assert {m.label: m.value for m in reloaded.metric}["Score"] == "50%"
    attempt, _ = stored(engine, attempt_id)
    assert attempt.status == "timed_out" and attempt.score == pytest.approx(0.5)


def test_flag_move_and_review_feed_the_review_queue(engine: Engine, student: User,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    at = start_ad_hoc(app_as(student, PAGE).run(), n=3, sources=["medqa"])
    attempt_id = at.session_state["quiz_attempt"]
    order = []
    for index in range(3):
        at.selectbox(key="quiz_index").set_value(index).run()
        order.append(shown(at))
    at.selectbox(key="quiz_index").set_value(1).run()
    by_prefix(at.checkbox, "quiz_flag_").check().run()
    assert any(b.label == "⚑ Q2" for b in at.button)
    at.button(key="quiz_next").click().run()
    assert shown(at).id == order[2].id
    at.button(key="quiz_goto_flagged_1").click().run()  # the flagged list jumps back
    assert shown(at).id == order[1].id and at.selectbox(key="quiz_index").value == 1

    for index, record in enumerate(order):  # first wrong, the flagged one right, the last right
        at.selectbox(key="quiz_index").set_value(index).run()
        answer(at, wrong_letter(record) if index == 0 else record.correct)
        if index == 0:
            assert "Not answered yet: Q2, Q3" in [c.value for c in at.caption]
    at.button(key="quiz_submit").click().run()
    assert not at.exception
    labels = [e.label for e in at.expander]
    assert any("missed" in label for label in labels) and any("flagged" in label for label in labels)

    with Session(engine) as session:
        cards = {c.item_id: c for c in reviews.due_review_cards(session=session, user_id=student.id,
                                                                now=datetime.now(UTC) + timedelta(days=365))}
    assert set(cards) == {order[0].id, order[1].id}  # missed + flagged; the plain right answer stays out
    assert all(c.due > datetime.now(UTC) for c in cards.values())

    monkeypatch.setattr(quiz_service, "current_time", lambda: datetime.now(UTC) + timedelta(days=60))
    at.button(key="quiz_back").click().run()
    assert [b for b in at.button if b.key == "quiz_adhoc_start"]  # back on the tab the quiz started from
    open_tab(at, "Due for review")
    assert any("2** questions are due" in m.value for m in at.markdown)
    at.button(key="quiz_review_start").click().run()
    assert not at.exception
    review_id = at.session_state["quiz_attempt"]
    assert review_id != attempt_id
    with Session(engine) as session:
        review_attempt = session.get(Attempt, review_id)
        ids = {i.item_id for i in attempts.attempt_items(session=session, attempt_id=review_id)}
    assert review_attempt.config["kind"] == "review" and ids == set(cards)


def test_resume_after_reload_continues_the_attempt(engine: Engine, student: User) -> None:
    at = start_ad_hoc(app_as(student, PAGE).run(), n=3, mode="exam", sources=["medqa"], minutes=30)
    attempt_id = at.session_state["quiz_attempt"]
    first = shown(at)
    answer(at, wrong_letter(first))
    at.button(key="quiz_next").click().run()
    second = shown(at)
    by_prefix(at.checkbox, "quiz_flag_").check().run()

    again = app_as(student, PAGE).run()  # reload: a new session on the same database
    assert not again.exception
    assert again.session_state["quiz_attempt"] == attempt_id
    assert any("Welcome back" in i.value for i in again.info)
    assert shown(again).id == second.id  # the first unanswered question
    assert by_prefix(again.checkbox, "quiz_flag_").value is True
    again.selectbox(key="quiz_index").set_value(0).run()
    assert shown(again).id == first.id
    assert by_prefix(again.radio, "quiz_choice_").value == wrong_letter(first)  # the saved answer
    by_prefix(again.radio, "quiz_choice_").set_value(first.correct)  # exam mode: still changeable
    again.run()
    for index in (1, 2):
        again.selectbox(key="quiz_index").set_value(index).run()
        answer(again, shown(again).correct)
    again.button(key="quiz_submit").click().run()
    assert {m.label: m.value for m in again.metric}["Score"] == "100%"
    attempt, _ = stored(engine, attempt_id)
    assert attempt.status == "submitted" and attempt.score == 1.0


def test_open_ended_item_shows_reference_rouge_and_self_grade(engine: Engine, student: User) -> None:
    at = start_ad_hoc(app_as(student, PAGE).run(), n=1, kinds=["open"])
    attempt_id = at.session_state["quiz_attempt"]
    record = RECORDS["medical-o1:o1"]
    assert shown(at).id == record.id and not at.radio
    by_prefix(at.text_area, "quiz_text_").input("Hyperkalemia, from potassium excess")
    by_prefix(at.button, "quiz_save_text_").click().run()
    assert not at.exception
    assert record.answer in texts(at) and record.reasoning in texts(at)
    expected = rouge_l("Hyperkalemia, from potassium excess", record.answer)
    assert 0 < expected < 1
    assert {m.label: m.value for m in at.metric}["ROUGE-L similarity to the reference"] == f"{expected:.2f}"
    at.button(key=f"quiz_grade_{attempt_id}_0_partly").click().run()
    _, rows = stored(engine, attempt_id)
    assert rows[0].self_grade == "partly" and rows[0].rouge_l == pytest.approx(expected)
    at.button(key="quiz_submit").click().run()
    assert {m.label: m.value for m in at.metric}["Score"] == "50%"


def test_exam_with_written_answers_is_graded_after_submission(engine: Engine, student: User) -> None:
    at = start_ad_hoc(app_as(student, PAGE).run(), n=1, kinds=["open"], mode="exam", minutes=10)
    attempt_id = at.session_state["quiz_attempt"]
    by_prefix(at.text_area, "quiz_text_").input("Hyperkalemia").run()  # saved on leaving the field
    assert stored(engine, attempt_id)[1][0].free_text == "Hyperkalemia"
    assert "Saved. You can change it until you submit." in [c.value for c in at.caption]
    assert RECORDS["medical-o1:o1"].answer not in texts(at)  # no reference before submission
    at.button(key="quiz_submit").click().run()
    assert any("Grade your written answers" in i.value for i in at.info)
    assert RECORDS["medical-o1:o1"].answer in texts(at)
    assert stored(engine, attempt_id)[0].status == "in_progress"
    at.button(key=f"quiz_grade_{attempt_id}_0_correct").click().run()
    assert {m.label: m.value for m in at.metric}["Score"] == "100%"
    assert stored(engine, attempt_id)[0].status == "submitted"


def test_items_show_attribution_and_ocr_notice(engine: Engine, student: User) -> None:
    quiz_set_id = publish(engine, ["casimedicos:q6", "medmcqa:q5"])
    at = app_as(student, PAGE).run()
    at.button(key=f"quiz_start_set_{quiz_set_id}").click().run()
    captions = [c.value.replace("\\", "") for c in at.caption]
    assert any("License: CC BY 4.0" in c and "CasiMedicos-Arg by IXA/HiTZ" in c for c in captions)
    assert not any("OCR" in c for c in captions)
    at.button(key="quiz_next").click().run()
    assert any("OCR errors" in c.value.replace("\\", "") for c in at.caption)


def test_stored_script_renders_as_text(engine: Engine, student: User) -> None:
    teacher = add_user(engine, "teach", "instructor")
    with Session(engine) as session:
        quizzes.add_override(session=session, item_id="medqa:q2", editor_id=teacher.id,
                             question="<script>alert('x')</script> Which drug?",
                             options={"A": "<b>Diphenhydramine</b>", "B": "Epinephrine", "C": "Prednisone",
                                      "D": "Albuterol"},
                             explanation="<img src=x onerror=alert(1)>")
    quiz_set_id = publish(engine, ["medqa:q2"])
    at = app_as(student, PAGE).run()
    at.button(key=f"quiz_start_set_{quiz_set_id}").click().run()
    assert "<script>alert('x')</script> Which drug?" in texts(at)
    radio = by_prefix(at.radio, "quiz_choice_")
    assert radio.options[0] == "A\\. \\<b\\>Diphenhydramine\\</b\\>"  # escaped Markdown: shows the tags as text
    answer(at, "B")
    assert "<img src=x onerror=alert(1)>" in texts(at)
    assert not allows_html(at)
    assert "<script>" not in "".join(m.value for m in at.markdown)


def test_attempts_allowed_and_unpublished_sets(engine: Engine, student: User) -> None:
    quiz_set_id = publish(engine, ["medqa:q1"], attempts_allowed=1, title="Once only")
    at = app_as(student, PAGE).run()
    at.button(key=f"quiz_start_set_{quiz_set_id}").click().run()
    answer(at, "A")
    at.button(key="quiz_submit").click().run()
    at.button(key="quiz_back").click().run()
    assert at.button(key=f"quiz_start_set_{quiz_set_id}").disabled
    assert any("attempts: 1 of 1" in c.value for c in at.caption)
    with Session(engine) as session:
        quizzes.set_published(session=session, quiz_set_id=quiz_set_id, published=False)
    at.run()
    assert not [b for b in at.button if b.key == f"quiz_start_set_{quiz_set_id}"]
    assert any("No quizzes are published yet" in i.value for i in at.info)


def test_not_enough_items_offers_the_ones_that_match(engine: Engine, student: User) -> None:
    at = start_ad_hoc(app_as(student, PAGE).run(), n=50, sources=["medqa"])
    assert at.session_state["quiz_attempt"] is None
    assert any("Only 3 item(s) match" in w.value.replace("\\", "") for w in at.warning)
    at.button(key="quiz_retry_button").click().run()
    assert at.session_state["quiz_attempt"] is not None
    _, rows = stored(engine, at.session_state["quiz_attempt"])
    assert sorted(r.item_id for r in rows) == ["medqa:q1", "medqa:q2", "medqa:q3"]


def test_history_tab_lists_attempts_with_a_trend(engine: Engine, student: User) -> None:
    quiz_set_id = publish(engine, ["medqa:q1", "medqa:q2"], title="Trend <i>set</i>")
    at = app_as(student, PAGE).run()
    for letters in (("A", "A"), ("A", "B")):  # 50%, then 100%
        at.button(key=f"quiz_start_set_{quiz_set_id}").click().run()
        for index, letter in enumerate(letters):
            at.selectbox(key="quiz_index").set_value(index).run()
            answer(at, letter)
        at.button(key="quiz_submit").click().run()
        at.button(key="quiz_back").click().run()
    open_tab(at, "My results")
    table = at.dataframe[0].value
    assert list(table["Score"]) == ["100%", "50%"] and list(table["Quiz"]) == ["Trend <i>set</i>"] * 2
    trend = at.get("plotly_chart")[0].proto.spec
    assert '"y":[50.0,100.0]' in trend.replace(" ", "")
    at.selectbox(key="quiz_history_open").select_index(1).run()
    at.button(key="quiz_history_show").click().run()
    assert {m.label: m.value for m in at.metric}["Score"] == "50%"


class FakeStream:
    """Stands in for ``core.inference.stream_case``: records each call and streams a canned explanation."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple, dict]] = []

    def __call__(self, case_text: str, *, served: Any, settings: Any, stop: Any = None, conclude: Any = None,
                 options: dict[str, str] | None = None, context: str = "") -> Iterator[Any]:
        self.calls.append(((case_text,), {"options": options, "context": context, "served": served}))
        yield inference.StreamEvent("started")
        yield inference.StreamEvent("text", "Step 1: survival <b>improved</b>.", "", False, "")
        yield inference.StreamEvent("done", "Step 1: survival <b>improved</b>.", "A. yes", True, "")


def test_model_explanation_streams_from_inference_without_the_students_answer(
    engine: Engine, student: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeStream()
    monkeypatch.setattr(inference, "stream_case", fake)
    quiz_set_id = publish(engine, ["pubmedqa:q7"])
    at = app_as(student, PAGE).run()
    at.button(key=f"quiz_start_set_{quiz_set_id}").click().run()
    record = RECORDS["pubmedqa:q7"]
    assert record.context in texts(at)  # the abstract is shown with the question
    assert not [b for b in at.button if b.label == "Explain with the model"]  # only once answered
    answer(at, "C")  # "maybe": wrong
    at.button(key=f"quiz_explain_{at.session_state['quiz_attempt']}_0_button").click().run()
    assert not at.exception, at.exception
    assert "Step 1: survival <b>improved</b>." in texts(at)
    assert any("A\\. yes" in m.value for m in at.markdown)

    (case_text,), kwargs = fake.calls[0]
    assert case_text == record.question and kwargs["options"] == record.options
    assert kwargs["context"] == record.context
    sent = prompts.build_messages(case_text, kwargs["options"], context=kwargs["context"])
    assert sent == prompts.build_messages(record.question, record.options, context=record.context)
    assert "You chose" not in str(sent) and "maybe" in str(sent)  # options yes, the student's choice no
    with Session(engine) as session:
        events = session.exec(select(GenerationEvent).where(GenerationEvent.user_id == student.id)).all()
    assert [e.kind for e in events] == ["quiz_explanation"]
    at.run()  # the explanation stays without generating again
    assert len(fake.calls) == 1 and "Step 1: survival <b>improved</b>." in texts(at)




# -- "Read more" (tutor mode) -------------------------------------------------------------------------------------

IRON_DOCS = [
    ("4_MPlus_Health_Topics_QA", "0000101", "MPlusHealthTopics", "https://medlineplus.gov/irondeficiencyanemia.html",
     "Iron-Deficiency Anemia", "What are the symptoms of Iron-Deficiency Anemia?",
     "Iron deficiency anemia causes fatigue and weakness. Blood tests show a low MCV and low ferritin."),
    ("4_MPlus_Health_Topics_QA", "0000102", "MPlusHealthTopics", "https://medlineplus.gov/anaphylaxis.html",
     "Anaphylaxis", "What is the treatment for Anaphylaxis?",
     "Anaphylaxis is treated first with an injection of epinephrine (adrenaline) into the thigh muscle."),
]


def read_more_expanders(at: AppTest) -> list[Any]:
    return [e for e in at.expander if e.label == "Read more"]


def test_read_more_shows_references_only_after_the_item_is_answered(engine: Engine, student: User) -> None:
    from core import retrieval
    from tests.pages.test_case_study import build_reference_index

    build_reference_index(prepared_dir(), IRON_DOCS)
    quiz_set_id = publish(engine, ["medqa:q1", "medqa:q2"])
    at = app_as(student, PAGE).run()
    at.button(key=f"quiz_start_set_{quiz_set_id}").click().run()
    assert shown(at).id == "medqa:q1"
    by_prefix(at.radio, "quiz_choice_").set_value("A")
    at.run()  # chosen but not submitted: not answered yet
    assert read_more_expanders(at) == []
    assert not any("ferritin" in m.value for m in at.markdown)

    at.button(key=f"quiz_submit_answer_{at.session_state['quiz_attempt']}_0").click().run()
    assert not at.exception
    (expander,) = read_more_expanders(at)
    bodies = [m.value for m in expander.markdown]
    assert bodies[0] == "**Iron\\-Deficiency Anemia**"  # the title as text; the best match first
    assert "MedlinePlus · [https\\://medlineplus\\.gov/irondeficiencyanemia\\.html]" \
           "(https://medlineplus.gov/irondeficiencyanemia.html)" in bodies
    assert any("**fatigue**" in b and "**ferritin**" in b for b in bodies)  # the question's words in bold
    assert any("CC BY 4\\.0 — MedQuAD" in c.value for c in expander.caption)
    assert len(expander.get("flex_container")) <= retrieval.PROMPT_PASSAGES
    assert not allows_html(at)

    at.button(key="quiz_next").click().run()  # the next item is not answered: no Read more
    assert shown(at).id == "medqa:q2" and read_more_expanders(at) == []


def test_read_more_says_in_one_line_when_there_is_no_index(engine: Engine, student: User) -> None:
    quiz_set_id = publish(engine, ["medqa:q1"])
    at = app_as(student, PAGE).run()
    at.button(key=f"quiz_start_set_{quiz_set_id}").click().run()
    answer(at, "A")
    assert not at.exception
    assert read_more_expanders(at) == []
    (line,) = [c.value for c in at.caption if "Read more is unavailable" in c.value]
    assert "no reference index yet" in line
    assert any("Correct" in s.value for s in at.success)  # the rest of the feedback is there


def test_exam_mode_has_no_read_more(engine: Engine, student: User) -> None:
    from tests.pages.test_case_study import build_reference_index

    build_reference_index(prepared_dir(), IRON_DOCS)
    quiz_set_id = publish(engine, ["medqa:q1"], mode="exam")
    at = app_as(student, PAGE).run()
    at.button(key=f"quiz_start_set_{quiz_set_id}").click().run()
    by_prefix(at.radio, "quiz_choice_").set_value("A")
    at.run()
    assert read_more_expanders(at) == [] and not any("Read more" in c.value for c in at.caption)


def prepared_dir() -> Path:
    """The prepared data folder of the quiz environment (where the reference index belongs)."""
    from app import resources

    return resources.get_settings().prepared_dir
