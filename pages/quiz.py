"""Quiz page: practise on held-out questions in tutor or exam mode, see results, review what was missed.

"Assigned to you" comes first: the student's class assignments with due dates (in the browser's time
zone), status, score and class percentile, and a join-code box. Start an assignment, a published quiz
set, an ad-hoc quiz (sources, subjects, Step, difficulty, count, unseen / missed only) or the "Due for
review" quiz (with the student's desired retention and "Optimise my schedule"); answer, flag, move
between questions; every answer is saved when it is given, so a reload (or another device) continues
the unfinished attempt. Exam mode counts down
and submits by itself when the time is up, also when the page is opened again after the deadline.

The logic is in ``services.quiz`` (a sitting, the review queue, the student's history),
``services.classes`` (assignments) and ``services.review`` (the schedule settings); this page
reads widgets, makes one call there per action and renders. Item text is shown with
``st.text`` or escaped Markdown, never as HTML.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import streamlit as st
from sqlmodel import Session

from app import auth, references, resources, saving, tabs
from core import charts, inference, quiz_text, retrieval
from core.model import ModelError
from core.quiz import (
    DIFFICULTIES, DIFFICULTY_MIN_ANSWERS, PERCENTILE_MIN_PEERS, available_filters, in_zone, remaining_s,
)
from core.review import MIN_REVIEWS_TO_OPTIMISE, RETENTION_RANGE, WORKLOAD_DAYS
from core.quiz_catalog import Catalog
from core.records import Record
from services import StorageError, classes, generation, quiz, review
from services.classes import STATUS_LABELS, ClassError
from services.quiz import AdHocSpec, AttemptError, NotEnoughItemsError, Sitting

user = auth.require_role(*auth.EVERYONE)
engine = resources.get_engine()
zone = st.context.timezone or "UTC"

st.title("Quiz")
bank = resources.bank_or_stop()

for key, default in (("quiz_attempt", None), ("quiz_flash", None), ("quiz_confirm_submit", False),
                     ("quiz_retry", None), ("quiz_resumed", False)):
    st.session_state.setdefault(key, default)

POOL_LABELS = {"all": "All questions", "unseen": "Only questions I have not seen", "missed": "Only questions I missed"}
MODE_LABELS = {"tutor": "Tutor (feedback after each answer)", "exam": "Exam (timed, feedback at the end)"}


def read(query: Callable[..., Any], **kwargs: Any) -> Any:
    """One read from ``services.quiz`` for the signed-in student, in its own session."""
    with Session(engine) as session:
        return query(session=session, user_id=user.id, **kwargs)


def load_catalog() -> Catalog:
    with Session(engine) as session:
        return quiz.load_catalog(session=session, bank=bank)


def flash(kind: str, message: str) -> None:
    st.session_state["quiz_flash"] = (kind, message)


def act(action: Callable[..., Any], *, what: str = "your answer", **kwargs: Any) -> Any:
    """Run one sitting action in its own session; a refusal or a failed write becomes a message.

    On a storage failure (disk full, read-only, database busy) the widget keeps the student's
    choice or text, so they can simply try again.
    """
    try:
        return quiz.act(action, engine=engine, bank=bank, user_id=user.id, **kwargs)
    except StorageError as exc:
        flash("error", exc.user_message(what))
        return None
    except (AttemptError, ValueError) as exc:
        flash("error", str(exc))
        return None


def open_attempt(attempt_id: int | None) -> None:
    st.session_state["quiz_attempt"] = attempt_id
    st.session_state["quiz_confirm_submit"] = False
    st.session_state["quiz_retry"] = None
    st.session_state.pop("quiz_index", None)


# -- callbacks ---------------------------------------------------------------------------------------------------


def start(starter: Callable[..., int], **kwargs: Any) -> None:
    """Start a sitting with one of ``services.quiz.start_*`` and open it; a refusal becomes a message."""
    try:
        with Session(engine) as session:
            attempt_id = starter(session=session, catalog=quiz.load_catalog(session=session, bank=bank),
                                 user_id=user.id, **kwargs)
        open_attempt(attempt_id)
    except NotEnoughItemsError as exc:
        spec = kwargs.get("spec")
        st.session_state["quiz_retry"] = (spec, exc.available) if spec is not None and exc.available else None
        flash("warning", str(exc))
    except StorageError as exc:
        flash("error", exc.user_message("the new quiz"))
    except AttemptError as exc:
        flash("error", str(exc))


def start_quiz_set(quiz_set_id: int) -> None:
    start(quiz.start_quiz_set, quiz_set_id=quiz_set_id)


def start_ad_hoc(spec: AdHocSpec) -> None:
    start(quiz.start_ad_hoc, spec=spec)


def start_review(n: int) -> None:
    start(quiz.start_review, n=n, now=quiz.current_time())


def start_assignment(assignment_id: int) -> None:
    start(classes.start_assignment, assignment_id=assignment_id, now=quiz.current_time())


def join_class() -> None:
    code = st.session_state.get("quiz_join_code", "")
    ok, joined = saving.attempt(engine, classes.join_class, what="your enrolment", refusals=(ClassError,),
                                on_error=lambda message: flash("error", message), user_id=user.id, join_code=code)
    if not ok:
        return
    st.session_state["quiz_join_code"] = ""
    flash("success", f"You joined {joined.name}.")


def save_retention() -> None:
    retention = float(st.session_state.get("quiz_retention", 0.9))
    ok, change = saving.attempt(engine, review.save_retention, what="your schedule", refusals=(ValueError,),
                                on_error=lambda message: flash("error", message), user_id=user.id,
                                desired_retention=retention, now=quiz.current_time())
    if not ok:
        return
    flash("success", f"Desired retention set to {retention:.2f}. Reviews due in the next {WORKLOAD_DAYS} days: "
                     f"{change.before} before, {change.after} now.")


def optimise_schedule() -> None:
    try:
        with Session(engine) as session:
            change = review.optimise(session=session, user_id=user.id, now=quiz.current_time())
    except review.NotEnoughReviews as exc:
        flash("warning", str(exc))
        return
    except StorageError as exc:
        flash("error", exc.user_message("your schedule"))
        return
    flash("success", f"Your schedule now uses parameters fitted to your own reviews. Reviews due in the next "
                     f"{WORKLOAD_DAYS} days: {change.before} before, {change.after} now.")


def go_to(index: int) -> None:
    st.session_state["quiz_index"] = index


def submit_choice(attempt_id: int, position: int, widget_key: str) -> None:
    choice = st.session_state.get(widget_key)
    if choice is None:
        flash("warning", "Choose an option first.")
        return
    act(quiz.choose, attempt_id=attempt_id, position=position, choice=choice)


def save_choice(attempt_id: int, position: int, widget_key: str) -> None:
    act(quiz.choose, attempt_id=attempt_id, position=position, choice=st.session_state.get(widget_key))


def save_text(attempt_id: int, position: int, widget_key: str) -> None:
    act(quiz.save_text, attempt_id=attempt_id, position=position, text=st.session_state.get(widget_key, ""))


def save_text_on_change(attempt_id: int, position: int, widget_key: str) -> None:
    """Exam mode saves a written answer when the student leaves the field (an emptied field is left alone)."""
    if str(st.session_state.get(widget_key) or "").strip():
        save_text(attempt_id, position, widget_key)


def save_grade(attempt_id: int, position: int, grade: str) -> None:
    act(quiz.self_grade, what="your grade", attempt_id=attempt_id, position=position, grade=grade)


def save_flag(attempt_id: int, position: int, widget_key: str) -> None:
    act(quiz.set_flag, what="the flag", attempt_id=attempt_id, position=position, flagged=bool(st.session_state.get(widget_key)))


def submit_quiz(attempt_id: int) -> None:
    st.session_state["quiz_confirm_submit"] = False
    phase = act(quiz.submit, what="your submission", attempt_id=attempt_id)
    if phase == "grading":
        flash("info", "Answers submitted. Grade your written answers to see your results.")


# -- the model's explanation (tutor feedback) ------------------------------------------------------------------


def explanation_panel(record: Record, state_key: str) -> None:
    """A button that streams the model's explanation, and the explanation once there is one."""
    saved = st.session_state.get(state_key)
    if saved is None:
        if st.button("Explain with the model", key=f"{state_key}_button", icon=":material/psychology:"):
            run_explanation(record, state_key)
        return
    reasoning, answer = saved
    with st.expander("The model's explanation", expanded=True):
        st.caption("Generated by a small model for study purposes: often wrong, check it against the explanation.")
        st.text(reasoning or "(no reasoning)")
        st.markdown("**Model's final answer:** " + quiz_text.md_escape(answer or "(none)"))


def run_explanation(record: Record, state_key: str) -> None:
    """Stream the model's own stepwise explanation of an item (services.generation: limit, stream, count).

    The prompt is the item alone (question, options and, for PubMedQA, its abstract as context, laid
    out by ``core.prompts.build_messages``); the student's answer is never part of it.
    """
    settings = resources.get_settings()
    request = generation.Request(
        case_text=record.question, kind="quiz_explanation", options=record.options, context=record.context,
        settings=inference.GenerationSettings(max_new_tokens=min(512, settings.max_new_tokens)).clamped(
            cap=settings.max_new_tokens),
    )
    reasoning_box, answer_box = st.empty(), st.empty()
    reasoning = answer = ""
    try:
        gen = generation.start(engine, user_id=user.id, backend=resources.get_backend(), request=request,
                               limit_per_hour=settings.generations_per_hour)
        with st.spinner("The model is thinking…"):
            for event in gen.events:
                if event.kind == "waiting":
                    reasoning_box.info("Waiting for the model: someone else is using it.")
                    continue
                reasoning, answer = event.reasoning, event.answer
                reasoning_box.text(reasoning)
                if answer:
                    answer_box.markdown("**Model's final answer:** " + quiz_text.md_escape(answer))
    except generation.Refused as exc:
        st.warning(str(exc))
        return
    except (inference.GenerationError, ModelError) as exc:
        st.error(f"The model could not explain this item: {exc}")
        return
    st.session_state[state_key] = (reasoning, answer)
    st.rerun()


# -- "Read more": reference passages on an answered item (tutor mode) -------------------------------------------

READ_MORE_PASSAGES = 3
def read_more(record: Record) -> None:
    """The reference passages that best match the item's question, each credited, in an expander.

    Only called for an item whose answer is saved (the sitting read from the database says so), so
    the passages never give an answer away before it is given.
    """
    try:
        index = resources.get_reference_index()
    except retrieval.RetrievalUnavailable as exc:
        st.caption(f":material/menu_book: Read more is unavailable. {quiz_text.md_escape(str(exc))}")
        return
    passages = index.search(record.question, k=READ_MORE_PASSAGES)
    with st.expander("Read more", icon=":material/menu_book:"):
        if not passages:
            st.caption("No matching references for this question.")
        for passage in passages:
            references.show_passage(passage, record.question)


# -- showing one item -------------------------------------------------------------------------------------------


def item_header(record: Record) -> None:
    st.caption(quiz_text.md_escape(quiz_text.credit_line(record)))
    for notice in quiz_text.notices(record):
        st.caption(":material/warning: " + quiz_text.md_escape(notice))
    if record.context:
        with st.expander("Abstract", expanded=True):
            st.text(record.context)
    with st.container(border=True):
        st.text(record.question)


def mcq_feedback(record: Record, chosen: str | None) -> None:
    options = record.options or {}
    correct_text = quiz_text.md_escape(f"{record.correct}. {options.get(record.correct or '', '')}")
    if chosen is None:
        st.warning(f"Not answered. The answer is **{correct_text}**")
    elif chosen == record.correct:
        st.success(f"Correct: **{correct_text}**")
    else:
        st.error(f"Incorrect. You chose {quiz_text.md_escape(chosen)}; the answer is **{correct_text}**")
    if record.explanation:
        st.markdown("**Explanation**")
        st.text(record.explanation)
    else:
        st.caption("The source has no explanation for this item.")


def open_feedback(sitting: Sitting, index: int) -> None:
    item = sitting.items[index]
    record = item.record
    st.markdown("**Reference answer**")
    st.text(record.answer)
    if record.reasoning:
        with st.expander("Reference reasoning"):
            st.text(record.reasoning)
    if item.rouge_l is not None:
        st.metric("ROUGE-L similarity to the reference", f"{item.rouge_l:.2f}",
                  help="Word overlap (longest common subsequence) with the reference answer, 0 to 1. "
                       "A rough guide only: grade yourself on the content.")
    if sitting.can_self_grade(index):
        st.markdown("**How did you do?**")
        cols = st.columns(3)
        for col, (grade, label) in zip(cols, quiz_text.SELF_GRADE_LABELS.items()):
            col.button(label, key=f"quiz_grade_{sitting.attempt_id}_{item.position}_{grade}",
                       type="primary" if item.answer.self_grade == grade else "secondary",
                       on_click=save_grade, args=(sitting.attempt_id, item.position, grade))
    if item.answer.self_grade:
        st.caption(f"Your grade: {quiz_text.SELF_GRADE_LABELS[item.answer.self_grade]}")


def show_item(sitting: Sitting, index: int) -> None:
    item = sitting.items[index]
    record = item.record
    aid, pos = sitting.attempt_id, item.position
    now = quiz.current_time()
    locked = sitting.locked(index, now)
    item_header(record)
    if record.kind == "mcq":
        widget = f"quiz_choice_{aid}_{pos}"
        st.session_state.setdefault(widget, item.answer.choice)
        if locked:
            st.session_state[widget] = item.answer.choice
        options = record.options or {}
        exam_answering = sitting.mode == "exam" and not locked
        st.radio("Your answer", list(options), index=None, key=widget,
                 format_func=lambda k: quiz_text.option_label(k, options[k]), disabled=locked,
                 on_change=save_choice if exam_answering else None,
                 args=(aid, pos, widget) if exam_answering else None)
        if sitting.mode == "tutor" and not locked:
            st.button("Submit answer", key=f"quiz_submit_answer_{aid}_{pos}", type="primary",
                      on_click=submit_choice, args=(aid, pos, widget))
        if sitting.feedback_visible(index):
            mcq_feedback(record, item.answer.choice)
    else:
        widget = f"quiz_text_{aid}_{pos}"
        st.session_state.setdefault(widget, item.answer.text)
        exam_answering = sitting.mode == "exam" and not locked
        st.text_area("Your answer", key=widget, disabled=locked, height=150,
                     placeholder="Reason it through, then give your answer.",
                     on_change=save_text_on_change if exam_answering else None,
                     args=(aid, pos, widget) if exam_answering else None)
        if not locked:
            st.button("Check answer" if sitting.mode == "tutor" else "Save answer", key=f"quiz_save_text_{aid}_{pos}",
                      type="primary", on_click=save_text, args=(aid, pos, widget))
        if exam_answering and item.answered:
            st.caption("Saved. You can change it until you submit.")
        if sitting.feedback_visible(index) and item.answered:
            open_feedback(sitting, index)
    if sitting.mode == "tutor" and item.answered and sitting.feedback_visible(index):
        read_more(record)
    if sitting.mode == "tutor" and sitting.feedback_visible(index):
        explanation_panel(record, f"quiz_explain_{aid}_{pos}")
    if sitting.phase == "answering":
        flag = f"quiz_flag_{aid}_{pos}"
        st.session_state.setdefault(flag, item.answer.flagged)
        st.checkbox("Flag for review", key=flag, on_change=save_flag, args=(aid, pos, flag))


# -- the running sitting -----------------------------------------------------------------------------------------


@st.fragment(run_every=1)
def countdown(started_at: Any, time_limit_s: int) -> None:
    """The exam clock; when it reaches zero the whole page reruns, which submits the exam."""
    left = remaining_s(started_at, time_limit_s, quiz.current_time())
    if left is not None and left <= 0:
        st.rerun(scope="app")
    st.markdown(f":material/timer: **{quiz_text.format_duration(left)}** left")


def question_list(indexes: list[int], limit: int = 15) -> str:
    shown = ", ".join(f"Q{i + 1}" for i in indexes[:limit])
    return shown + (f" and {len(indexes) - limit} more" if len(indexes) > limit else "")


def show_sitting(sitting: Sitting) -> None:
    n = len(sitting.items)
    aid = sitting.attempt_id
    head, clock = st.columns([3, 1])
    head.subheader(quiz_text.md_escape(sitting.title))
    head.caption(f"{sitting.mode.capitalize()} mode · {n} question{'s' if n != 1 else ''} · "
                 f"{n - len(sitting.unanswered)} answered")
    if sitting.mode == "exam" and sitting.time_limit_s:
        with clock:
            countdown(sitting.started_at, sitting.time_limit_s)
    if sitting.unavailable:
        st.caption(f"{len(sitting.unavailable)} question(s) of this quiz are no longer in the bank and are left out.")
    if not isinstance(st.session_state.get("quiz_index"), int):
        st.session_state["quiz_index"] = sitting.resume_index()
    st.session_state["quiz_index"] = min(max(st.session_state["quiz_index"], 0), n - 1)
    # Labels stay the same from run to run: the browser hands a selectbox's choice back by its label.
    index = st.selectbox("Go to question", list(range(n)), key="quiz_index", format_func=lambda i: f"Question {i + 1}")
    if sitting.unanswered and len(sitting.unanswered) < n:
        st.caption(f"Not answered yet: {question_list(sitting.unanswered)}")
    if sitting.flagged:
        st.caption("Flagged for review:")
        cols = st.columns(min(len(sitting.flagged), 8))
        for col_index, flagged_index in enumerate(sitting.flagged):
            cols[col_index % len(cols)].button(f"⚑ Q{flagged_index + 1}", key=f"quiz_goto_flagged_{flagged_index}",
                                              on_click=go_to, args=(flagged_index,))
    st.divider()
    show_item(sitting, index)
    st.divider()
    prev_col, next_col, submit_col = st.columns(3)
    prev_col.button("Previous", key="quiz_prev", disabled=index == 0, on_click=go_to, args=(index - 1,),
                    icon=":material/arrow_back:")
    next_col.button("Next", key="quiz_next", disabled=index >= n - 1, on_click=go_to, args=(index + 1,),
                    icon=":material/arrow_forward:")
    unanswered = len(sitting.unanswered)
    label = "Submit exam" if sitting.mode == "exam" else "Finish quiz"
    if not st.session_state["quiz_confirm_submit"]:
        if submit_col.button(label, key="quiz_submit", type="primary"):
            if unanswered:
                st.session_state["quiz_confirm_submit"] = True
                st.rerun()
            submit_quiz(aid)
            st.rerun()
    else:
        st.warning(f"{unanswered} question{'s are' if unanswered != 1 else ' is'} not answered yet "
                   "(unanswered questions count as wrong). Submit anyway?")
        yes_col, no_col = st.columns(2)
        yes_col.button("Yes, submit", key="quiz_submit_yes", type="primary", on_click=submit_quiz, args=(aid,))
        no_col.button("Keep answering", key="quiz_submit_no",
                      on_click=lambda: st.session_state.update(quiz_confirm_submit=False))


def show_grading(sitting: Sitting) -> None:
    st.subheader(quiz_text.md_escape(sitting.title))
    st.info("Your answers are closed. Compare each written answer with the reference and grade it; "
            "your results follow.")
    for index in sitting.to_grade:
        st.markdown(f"#### Question {index + 1}")
        item_header(sitting.items[index].record)
        st.markdown("**Your answer**")
        st.text(sitting.items[index].answer.text)
        open_feedback(sitting, index)
        st.divider()


# -- results -----------------------------------------------------------------------------------------------------


def show_results(sitting: Sitting) -> None:
    result = sitting.result()
    st.subheader(f"Results: {quiz_text.md_escape(sitting.title)}")
    if sitting.submission == "late":
        st.warning("Submitted after the due date: your instructor sees it marked late.")
    elif sitting.submission == "refused":
        st.error("Submitted after the due date, and this assignment refuses late work: your answers are kept "
                 "but do not count.")
    if sitting.status == "timed_out":
        st.warning("Time ran out: the exam was submitted automatically with the answers given so far.")
    cols = st.columns(4)
    cols[0].metric("Score", f"{result.percent:.0f}%")
    cols[1].metric("Correct", f"{sum(1 for r in result.items if r.is_correct)} of {result.n_items}")
    cols[2].metric("Time", quiz_text.format_duration(result.time_taken_s))
    if result.passed is not None:
        cols[3].metric("Result", "Passed" if result.passed else "Not passed",
                       help=f"Pass mark {result.passing_score:.0f}%")
    chart_subject, chart_source = st.columns(2)
    chart_subject.plotly_chart(charts.score_by_subject_figure(result), key="quiz_chart_subject")
    chart_source.plotly_chart(charts.score_by_source_figure(result), key="quiz_chart_source")
    if sitting.unavailable:
        st.caption(f"{len(sitting.unavailable)} question(s) are no longer in the bank and were left out of the score.")

    st.markdown("### Review")
    wrong = {r.item_id for r in result.wrong}
    flagged = {r.item_id for r in result.items if r.flagged}
    if not wrong and not flagged:
        st.success("Every answer was right.")
    for index, item in enumerate(sitting.items):
        if item.record.id not in wrong and item.record.id not in flagged:
            continue
        marks = []
        if item.record.id in wrong:
            marks.append("not answered" if not item.answered else "missed")
        if item.record.id in flagged:
            marks.append("⚑ flagged")
        label = f"Question {index + 1} · {', '.join(marks)} · {quiz_text.preview(item.record.question, 60)}"
        with st.expander(quiz_text.md_escape(label)):
            item_header(item.record)
            if item.record.kind == "mcq":
                for key, text in (item.record.options or {}).items():
                    st.markdown(quiz_text.option_label(key, text))
                mcq_feedback(item.record, item.answer.choice)
            else:
                st.markdown("**Your answer**")
                st.text(item.answer.text or "(no answer)")
                open_feedback(sitting, index)
            explanation_panel(item.record, f"quiz_explain_{sitting.attempt_id}_{item.position}")
    if wrong or flagged:
        st.caption("Missed and flagged questions are added to your review queue (spaced repetition).")
    st.button("Back to quizzes", key="quiz_back", type="primary", on_click=open_attempt, args=(None,))


# -- starting a quiz --------------------------------------------------------------------------------------------


def local(moment: Any) -> str:
    return f"{in_zone(moment, zone):%Y-%m-%d %H:%M}"


def assigned_section() -> None:
    """"Assigned to you": the student's class assignments, open ones first by due date, and joining a class."""
    work = read(classes.assigned_to, now=quiz.current_time())
    if work:
        st.subheader("Assigned to you")
        for entry in work:
            a = entry.assignment
            with st.container(border=True, key=f"quiz_assigned_{a.id}"):
                head, action = st.columns([4, 1])
                head.markdown(f"**{quiz_text.md_escape(a.title)}** · {quiz_text.md_escape(entry.class_name)}")
                facts = [f"due {local(a.due_at)} ({quiz_text.md_escape(zone)})",
                         f"status: {STATUS_LABELS[entry.status]}", f"{entry.n_items} questions", f"{a.mode} mode"]
                if entry.score_percent is not None:
                    facts.append(f"score {entry.score_percent:.0f}%")
                if entry.percentile is not None:
                    facts.append(f"percentile {100 * entry.percentile:.0f} in your class")
                head.caption(" · ".join(facts))
                if entry.why_not:
                    head.caption(entry.why_not)
                if entry.status in ("submitted", "late") and entry.percentile is None:
                    head.caption(f"Your percentile appears once {PERCENTILE_MIN_PEERS} classmates have submitted.")
                if entry.can_start:
                    label = "Continue" if entry.open_attempt_id else ("Start" if entry.attempts_used == 0 else "Retake")
                    action.button(label, key=f"quiz_start_assignment_{a.id}", type="primary",
                                  on_click=start_assignment, args=(a.id,))
    with st.expander("Join a class"):
        st.text_input("Join code", key="quiz_join_code", max_chars=32, placeholder="e.g. K7MPQ2XA")
        st.button("Join", key="quiz_join", on_click=join_class)


def schedule_panel() -> None:
    """Desired retention and "optimise my schedule", with the coming week's workload before and after."""
    with Session(engine) as session:
        settings = review.schedule_settings(session=session, user_id=user.id)
    with st.expander("My review schedule"):
        low, high = RETENTION_RANGE
        st.session_state.setdefault("quiz_retention", settings.desired_retention)
        retention = st.slider("Desired retention", min_value=low, max_value=high, step=0.01, key="quiz_retention",
                              help="The chance you still remember a question when it comes back. Higher means "
                                   "more reviews.")
        with Session(engine) as session:
            change = review.preview(session=session, user_id=user.id, desired_retention=float(retention),
                                    now=quiz.current_time())
        st.caption(f"Reviews due in the next {WORKLOAD_DAYS} days: {change.before} now, {change.after} with "
                   f"retention {retention:.2f}.")
        st.button("Save retention", key="quiz_retention_save", on_click=save_retention)
        st.divider()
        if settings.optimised:
            st.caption(f"Optimised {local(settings.optimised_at)} on {settings.reviews_fitted} reviews.")
        st.caption(f"Optimising fits the scheduler to your own answers; it needs {MIN_REVIEWS_TO_OPTIMISE} reviews "
                   f"made a day or more apart (you have {settings.usable_reviews}).")
        st.button("Optimise my schedule", key="quiz_optimise", on_click=optimise_schedule,
                  disabled=not settings.can_optimise)


def published_tab() -> None:
    published = read(quiz.published_quizzes)
    if not published:
        st.info("No quizzes are published yet. Build your own in the next tab.")
        return
    for entry in published:
        qs = entry.quiz_set
        with st.container(border=True):
            st.markdown(f"**{quiz_text.md_escape(qs.title)}**")
            if qs.description:
                st.text(qs.description)
            facts = [f"{entry.n_items} questions", f"{qs.mode} mode"]
            if qs.mode == "exam" and qs.time_limit_s:
                facts.append(f"time limit {quiz_text.format_duration(qs.time_limit_s)}")
            if qs.passing_score is not None:
                facts.append(f"pass mark {100 * qs.passing_score:.0f}%")
            facts.append(f"attempts: {entry.attempts_used}" + (f" of {qs.attempts_allowed}" if qs.attempts_allowed else ""))
            st.caption(" · ".join(facts))
            st.button("Start", key=f"quiz_start_set_{qs.id}", on_click=start_quiz_set, args=(qs.id,),
                      disabled=not entry.can_start, type="primary")


def counts_help(counts: dict[str, int], label: Callable[[str], str] = str, limit: int = 25) -> str:
    """Item counts per value, for a widget's help tooltip."""
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:limit]
    return "Questions available: " + ", ".join(f"{quiz_text.md_escape(label(k))} {n}" for k, n in top)


def read_difficulty_counts(catalog: Catalog) -> dict[str, int]:
    with Session(engine) as session:
        return quiz.difficulty_counts(session=session, catalog=catalog)


def ad_hoc_tab(catalog: Catalog) -> None:
    options = available_filters(catalog.items())
    st.caption(f"{options.total} questions available ({options.flagged} more flagged for quality).")
    with st.form("quiz_adhoc"):
        left, right = st.columns(2)
        # Option labels never change from run to run (the browser hands choices back by their label), so the
        # item counts go in the help text rather than in the labels.
        sources = left.multiselect("Sources", list(options.sources), key="quiz_sources", placeholder="All sources",
                                   help=counts_help(options.sources))
        subjects = left.multiselect("Subjects", list(options.subjects), key="quiz_subjects",
                                    placeholder="All subjects", format_func=quiz_text.subject_label,
                                    help=counts_help(options.subjects, quiz_text.subject_label))
        steps = left.multiselect("USMLE Step", list(options.steps), key="quiz_steps", placeholder="Any",
                                 format_func=quiz_text.step_label,
                                 help=counts_help(options.steps, quiz_text.step_label))
        kinds = left.multiselect("Question types", list(options.kinds), key="quiz_kinds", placeholder="All types",
                                 format_func=quiz_text.kind_label,
                                 help=counts_help(options.kinds, quiz_text.kind_label))
        difficulties = left.multiselect(
            "Difficulty", list(DIFFICULTIES), key="quiz_difficulty", placeholder="Any", format_func=str.capitalize,
            help=counts_help(read_difficulty_counts(catalog), str.capitalize) + f". Difficulty is the share of correct "
                 f"first answers across all users, known once {DIFFICULTY_MIN_ANSWERS} users have answered; choosing "
                 "one leaves out questions without enough answers.")
        n = right.number_input("Number of questions", min_value=1, max_value=quiz.MAX_QUESTIONS, value=10,
                               step=1, key="quiz_n")
        pool = right.radio("Questions", list(POOL_LABELS), format_func=POOL_LABELS.get, key="quiz_pool")
        mode = right.radio("Mode", list(MODE_LABELS), format_func=MODE_LABELS.get, key="quiz_mode")
        minutes = right.number_input("Time limit in minutes (exam mode; 0 = untimed)", min_value=0, max_value=600,
                                     value=15, step=1, key="quiz_minutes")
        include_flagged = right.checkbox(
            "Include flagged items", key="quiz_include_flagged",
            help=f"{options.flagged} questions are flagged: possible OCR damage, duplicates or conflicting keys.")
        submitted = st.form_submit_button("Start quiz", type="primary", key="quiz_adhoc_start")
    if submitted:
        spec = AdHocSpec(
            n=int(n), mode=mode, sources=sources or None, subjects=subjects or None, steps=steps or None,
            kinds=kinds or None, difficulties=difficulties or None, pool=pool, include_flagged=include_flagged,
            time_limit_s=int(minutes) * 60 if mode == "exam" and minutes else None,
        )
        start_ad_hoc(spec)
        st.rerun()
    retry = st.session_state.get("quiz_retry")
    if retry:
        spec, available = retry
        st.button(f"Start with the {available} that match", key="quiz_retry_button", on_click=start_ad_hoc,
                  args=(dataclasses.replace(spec, n=available),))


def review_tab(catalog: Catalog) -> None:
    due = read(quiz.due_item_ids, catalog=catalog, now=quiz.current_time())
    st.caption("Questions you missed or flagged come back here on a spaced-repetition schedule (FSRS).")
    schedule_panel()
    if not due:
        st.info("Nothing is due for review right now.")
        return
    st.markdown(f"**{len(due)}** question{'s are' if len(due) != 1 else ' is'} due for review.")
    n = st.number_input("How many now", min_value=1, max_value=len(due), value=min(len(due), 10), key="quiz_review_n")
    st.button("Start review", key="quiz_review_start", type="primary", on_click=start_review, args=(int(n),))


def results_tab() -> None:
    rows = read(quiz.student_history)
    if not rows:
        st.info("Your finished quizzes will appear here.")
        return
    st.plotly_chart(charts.score_trend_figure(quiz.trend_points(rows)), key="quiz_trend")
    st.dataframe(
        [{"Finished (UTC)": f"{r.finished_at:%Y-%m-%d %H:%M}" if r.finished_at else "", "Quiz": r.title,
          "Mode": r.mode, "Score": f"{r.percent:.0f}%",
          "Result": "" if r.passed is None else ("passed" if r.passed else "not passed"),
          "Status": r.status.replace("_", " ")} for r in rows],
        hide_index=True, key="quiz_history_table",
    )
    by_id = {r.attempt_id: r for r in rows}
    chosen = st.selectbox("Open the results of", list(by_id), index=None, key="quiz_history_open",
                          format_func=lambda i: f"{by_id[i].finished_at:%Y-%m-%d %H:%M} · {by_id[i].title} · "
                                                f"{by_id[i].percent:.0f}%", placeholder="Choose an attempt")
    if chosen is not None:
        st.button("Show results", key="quiz_history_show", on_click=open_attempt, args=(chosen,))


# -- the page ----------------------------------------------------------------------------------------------------

if st.session_state["quiz_attempt"] is None:
    resumable = read(quiz.resume_id)
    if resumable is not None:
        open_attempt(resumable)
        st.session_state["quiz_resumed"] = True

catalog = load_catalog()
sitting: Sitting | None = None
if st.session_state["quiz_attempt"] is not None:
    sitting, timed_out = read(quiz.open_sitting, catalog=catalog, attempt_id=st.session_state["quiz_attempt"],
                              now=quiz.current_time())
    if timed_out:
        flash("warning", "Time is up: your exam was submitted automatically.")
    if sitting is None or not sitting.items:
        open_attempt(None)
        sitting = None

if st.session_state["quiz_flash"]:
    kind, message = st.session_state["quiz_flash"]
    st.session_state["quiz_flash"] = None
    getattr(st, kind)(quiz_text.md_escape(message))

if sitting is not None:
    if st.session_state["quiz_resumed"] and sitting.phase != "finished":
        st.info(f"Welcome back: you are continuing {quiz_text.md_escape(sitting.title)}, "
                f"started {sitting.started_at:%Y-%m-%d %H:%M} UTC. Your answers so far were saved.")
        st.session_state["quiz_resumed"] = False
    if sitting.phase == "answering":
        show_sitting(sitting)
    elif sitting.phase == "grading":
        show_grading(sitting)
    else:
        show_results(sitting)
    st.stop()

assigned_section()

# Stateful tabs: the open tab survives reruns (a finished quiz returns to it), and only its content runs.
tabs.show_tabs({
    "Published quizzes": published_tab,
    "Build your own": lambda: ad_hoc_tab(catalog),
    "Due for review": lambda: review_tab(catalog),
    "My results": results_tab,
}, key="quiz_tab")
