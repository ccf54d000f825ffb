"""Case study page: a student enters a clinical case and watches the model reason, then answer,
beside the reference passages retrieved for the case.

Thin view over :mod:`core.inference` (streaming, parsing, timings), :mod:`core.retrieval` (reference
passages) and :mod:`core.safety` (input checks, identifier warning, safe rendering). Model output and
passages are only ever rendered as escaped markdown or text, never as HTML.

A generation runs on a thread of its own (:class:`_Job`) and the page follows it: a click (Stop,
Conclude now, or any other widget) ends the page's script run but not the generation, and the next
run follows it again. That is what lets "Conclude now" reach a model that is still writing.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import streamlit as st
from sqlmodel import Session

from app import auth, references, resources, saving
from core import inference, metrics, retrieval, safety, serving
from core.model import ModelError
from core.records import Record
from services import accounts, generation

user = auth.require_role("student", "instructor", "admin")

DISCLAIMER = (
    "**Educational use only — not for patient care.** The embedded model is small and often wrong: "
    "check every step and answer against trusted sources."
)
NOTICE = (
    "#### Before you start\n"
    "This page lets you practise clinical reasoning with a small language model. It is a study aid, "
    "**not a medical device**: do not use it for decisions about real patients.\n\n"
    "- The model is small and **often wrong**, sometimes confidently.\n"
    "- Do not enter information that identifies a real patient (names, dates of birth, phone "
    "numbers, e-mails, record numbers). Use invented or published teaching cases.\n"
    "- Your cases and the model's answers are saved to your history."
)
NO_ANSWER = (
    "The model gave no marked final answer (no line starting with 'Final answer:'). "
    "Read its reasoning above critically."
)
FORCED = {
    "budget": "Final answer forced at the token budget: the model had not concluded when its reasoning "
              "tokens ran out, so it was made to answer.",
    "conclude": "Concluded early at your request — the model did not finish reasoning.",
    "eos": "The model ended without a final answer, so it was asked for one.",
}
REFERENCES_SHOWN = 5
LIVE_POLL_S = 0.2
"""How often the page looks at a running generation (and so how soon a click is noticed)."""

# -- session state ------------------------------------------------------------------------------

settings = resources.get_settings()
_cap = settings.max_new_tokens
_defaults = inference.GenerationSettings().clamped(cap=_cap)
for key, value in {
    "cs_ack": user.acknowledged_disclaimer_at is not None,  # stored once per account
    "cs_case": "",
    "cs_example": None,  # dict of the test-split Record the case came from
    "cs_notice": None,
    "cs_run_requested": False,
    "cs_phi_ok_for": None,  # digest of the text whose identifier warning the student confirmed
    "cs_job": None,  # the _Job of the generation in progress
    "cs_stop": None,  # threading.Event: stop the generation in progress
    "cs_conclude": None,  # threading.Event: make the generation in progress write its final answer now
    "cs_result": None,  # the last finished CaseRun
    "cs_references_problem": None,  # why the last run had no references to search, if it had none
    "cs_save_error": None,  # why the last finished run could not be saved to the history
    "cs_show_reference": False,
    "cs_use_refs_choice": True,  # the student's choice, kept while the index is unavailable
    "cs_max_new_tokens": _defaults.max_new_tokens,
    "cs_temperature": _defaults.temperature,
    "cs_top_p": _defaults.top_p,
}.items():
    st.session_state.setdefault(key, value)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class _Job:
    """One generation, consumed on a thread of its own so that no rerun of the page cuts it short.

    The page reads ``event`` (replaced whole, never changed in place) and ``done``; Stop and Conclude
    now reach the generation through the ``stop`` and ``conclude`` events. A student who leaves the
    page leaves the thread to finish (at most ``max_new_tokens``), which frees the model. The run is
    recorded by :mod:`services.generation` when the stream ends; ``generation.outcome`` says how.
    """

    case_text: str
    references: list[retrieval.Passage]
    references_problem: str | None
    use_references: bool
    stop: threading.Event = field(default_factory=threading.Event)
    conclude: threading.Event = field(default_factory=threading.Event)
    generation: generation.Generation | None = None
    event: inference.StreamEvent = field(default_factory=lambda: inference.StreamEvent("started"))
    error: inference.GenerationError | None = None
    crash: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def consume(self, events: Iterator[inference.StreamEvent]) -> None:
        try:
            with contextlib.closing(events):
                for event in events:
                    self.event = event
        except inference.GenerationError as exc:
            self.error = exc
        except BaseException as exc:  # noqa: BLE001 - raised again on the page's thread, where Streamlit shows it
            self.crash = exc
        finally:
            self.done.set()


# -- callbacks ----------------------------------------------------------------------------------


def _acknowledge() -> None:
    with saving.saving("your acknowledgement") as outcome, Session(resources.get_engine()) as session:
        accounts.acknowledge_disclaimer(session=session, user_id=user.id)
    if outcome.ok:
        st.session_state.cs_ack = True


def _pick_example() -> None:
    records = inference.load_test_cases(settings.prepared_dir)
    if not records:
        st.session_state.cs_notice = "The data is not prepared yet (no test split): run `make prepare` first."
        return
    record = random.choice(records)
    st.session_state.cs_case = inference.case_text_for(record)
    st.session_state.cs_example = record.to_dict()
    st.session_state.cs_result = None
    st.session_state.cs_show_reference = False


def _on_case_edit() -> None:
    example = st.session_state.cs_example
    if example and st.session_state.cs_case != inference.case_text_for(Record.from_dict(example)):
        st.session_state.cs_example = None


def _request_run() -> None:
    st.session_state.cs_run_requested = True
    st.session_state.cs_show_reference = False


def _confirm_phi(digest: str) -> None:
    st.session_state.cs_phi_ok_for = digest
    st.session_state.cs_run_requested = True


def _stop() -> None:
    event = st.session_state.cs_stop
    if event is not None:
        event.set()


def _conclude() -> None:
    event = st.session_state.cs_conclude
    if event is not None:
        event.set()


def _remember_use_refs() -> None:
    st.session_state.cs_use_refs_choice = st.session_state.cs_use_refs


def _toggle_reference() -> None:
    st.session_state.cs_show_reference = not st.session_state.cs_show_reference


# -- helpers ------------------------------------------------------------------------------------


def _stats_line(stats: dict[str, Any]) -> str:
    parts = [f"{stats.get('new_tokens', 0)} tokens"]
    if stats.get("time_to_first_token_s") is not None:
        parts.append(f"first token after {stats['time_to_first_token_s']:.2f} s")
    if stats.get("tokens_per_s") is not None:
        parts.append(f"{stats['tokens_per_s']:.1f} tokens/s")
    if stats.get("waited_s", 0) >= 0.5:
        parts.append(f"waited {stats['waited_s']:.1f} s for the model")
    return " · ".join(parts)


def _show_references(passages: list[retrieval.Passage], query: str, *, problem: str | None, used: bool) -> None:
    """The reference passages found for ``query``, each credited; why there are none when there are none."""
    st.markdown("#### References")
    if problem is not None:
        st.info(safety.markdown_text(problem), icon=":material/menu_book:")
        return
    if not passages:
        st.info("No matching references for this case.", icon=":material/search_off:")
        return
    if used:
        shown = min(len(passages), retrieval.PROMPT_PASSAGES)
        st.caption(f"The model was given the first {shown} with the case. Check its answer against them.")
    else:
        st.caption("Not given to the model (\"Use references\" is off): for you to check its answer against.")
    for passage in passages:
        references.show_passage(passage, query)


def _retrieve(text: str) -> tuple[list[retrieval.Passage], str | None]:
    """The top passages for ``text``, or none and why the index could not be searched."""
    if reference_index is None:
        return [], reference_problem
    try:
        return reference_index.search(text, k=REFERENCES_SHOWN), None
    except retrieval.RetrievalUnavailable as exc:
        return [], str(exc)


def _start(backend: serving.Backend, text: str) -> bool:
    """Retrieve the references and start generating on the job's thread (:func:`_follow` shows it);
    False, with the reason shown, when the student's hourly limit is reached."""
    gen_settings = inference.GenerationSettings(
        max_new_tokens=st.session_state.cs_max_new_tokens,
        temperature=st.session_state.cs_temperature,
        top_p=st.session_state.cs_top_p,
    ).clamped(cap=_cap)
    example = st.session_state.cs_example
    passages, problem = _retrieve(text)
    use = bool(st.session_state.cs_use_refs) and reference_index is not None
    job = _Job(case_text=text, references=passages, references_problem=problem, use_references=use)
    request = generation.Request(
        case_text=text,
        settings=gen_settings,
        context=retrieval.prompt_context(passages) if use and passages else "",
        references=[p.to_dict() for p in passages],
        example_id=example["id"] if example else None,
        # Whether the model saw the references belongs with the run: the same case reads differently without.
        run_settings={"use_references": use},
    )
    try:
        job.generation = generation.start(resources.get_engine(), user_id=user.id, backend=backend, request=request,
                                          limit_per_hour=settings.generations_per_hour, stop=job.stop,
                                          conclude=job.conclude)
    except generation.Refused as exc:
        st.warning(str(exc), icon=":material/timer:")
        return False
    threading.Thread(target=job.consume, args=(job.generation.events,), name="case-study-generation",
                     daemon=True).start()
    st.session_state.update(cs_job=job, cs_stop=job.stop, cs_conclude=job.conclude, cs_result=None)
    return True


def _live_label(job: _Job) -> str:
    if job.stop.is_set():
        return "Reasoning… (stopping)"
    if job.conclude.is_set():
        return "Reasoning… (concluding at your request)"
    return "Reasoning…"


def _follow(job: _Job) -> None:
    """Show the job's progress until it ends, then keep its result (and rerun to show it).

    A click ends this script run at the next Streamlit call in the loop below; the generation goes
    on, and the click's run follows it from where it has got to.
    """
    left, right = st.columns([3, 2], gap="large")
    with right:
        _show_references(job.references, job.case_text, problem=job.references_problem, used=job.use_references)
    with left:
        with st.container(horizontal=True):
            st.button("Stop", key="cs_stop_button", on_click=_stop, icon=":material/stop_circle:",
                      disabled=job.stop.is_set())
            st.button("Conclude now", key="cs_conclude_button", on_click=_conclude, icon=":material/flag:",
                      disabled=job.stop.is_set() or job.conclude.is_set(),
                      help="Stop reasoning and make the model give its final answer now.")
        status = st.status(_live_label(job), expanded=True)
        reasoning_box = status.empty()
        answer_box = st.empty()
        forced_box = st.empty()
        stats_box = st.empty()
    shown: inference.StreamEvent | None = None
    while True:
        ended = job.done.wait(LIVE_POLL_S)
        event = job.event
        stats = event.stats
        if event is not shown and event.kind != "waiting":
            reasoning_box.markdown(safety.markdown_text(event.reasoning) or "…")
            if event.has_answer:
                answer_box.success(f"**Final answer:** {safety.markdown_text(event.answer)}")
            if stats.forced:
                forced_box.caption(f":material/warning: {FORCED[stats.forced]}")
        shown = event
        # Drawn on every poll, changed or not: a Streamlit call is where a click's rerun ends this run.
        if event.kind == "waiting":
            stats_box.info(
                f"Waiting for the model: another case is being generated "
                f"({stats.waited_s:.0f} s). Yours starts as soon as it is free.",
                icon=":material/hourglass_top:",
            )
        else:
            stats_box.caption(_stats_line(stats.to_dict()))
        if ended:
            break
    st.session_state.update(cs_job=None, cs_stop=None, cs_conclude=None)
    if job.crash is not None:
        raise job.crash
    if job.error is not None:
        status.update(label="Reasoning (generation failed)", state="error", expanded=False)
        st.error(f"{job.error}\n\nThe app is still working: you can edit the case and try again.")
        outcome = job.generation.outcome
        if outcome.save_error is not None:
            st.error(outcome.save_error.user_message("the partial text to your history"), icon=":material/sd_card_alert:")
        elif outcome.saved_id is not None:  # what was written before the failure is kept, marked as failed
            st.session_state.cs_last_saved = outcome.saved_id
            st.caption("The partial text is saved to your history, marked as failed.")
        return
    _finish(job)
    st.rerun()


def _finish(job: _Job) -> None:
    st.session_state.cs_references_problem = job.references_problem
    outcome = job.generation.outcome
    if outcome.run is None:
        st.session_state.cs_result = None
        st.session_state.cs_notice = "Stopped before the model produced any text; nothing was saved."
        return
    st.session_state.cs_result = outcome.run
    st.session_state.cs_save_error = (
        outcome.save_error.user_message("this run to your history") if outcome.save_error is not None else None)
    if outcome.saved_id is not None:
        st.session_state.cs_last_saved = outcome.saved_id


def _show_result(run: inference.CaseRun) -> None:
    if st.session_state.cs_save_error:
        st.error(st.session_state.cs_save_error, icon=":material/sd_card_alert:")
    left, right = st.columns([3, 2], gap="large")
    with right:
        _show_references([retrieval.Passage.from_dict(d) for d in run.references], run.case_text,
                         problem=st.session_state.cs_references_problem,
                         used=bool(run.settings.get("use_references")))
    with left:
        label = "Reasoning (stopped)" if run.stopped else "Reasoning"
        with st.status(label, state="complete", expanded=False):
            st.markdown(safety.markdown_text(run.reasoning) or "_(no reasoning text)_")
        if run.stopped:
            st.info("Generation was stopped; the output above is partial.", icon=":material/stop_circle:")
        if run.has_answer and run.answer:
            st.success(f"**Final answer:** {safety.markdown_text(run.answer)}")
        else:
            st.warning(NO_ANSWER)
        if run.forced:
            st.caption(f":material/warning: {FORCED[run.forced]}")
        served_by = f" · {run.settings['engine']}" if run.settings.get("engine") else ""
        st.caption(f"{run.base_model} · adapter: {run.adapter} · {_stats_line(run.stats)}{served_by}")

    example = st.session_state.cs_example
    if example and example["id"] == run.example_id:
        shown = st.session_state.cs_show_reference
        st.button(
            "Hide the reference" if shown else "Reveal the reference reasoning and answer",
            key="cs_reference_button",
            on_click=_toggle_reference,
        )
        if shown:
            record = Record.from_dict(example)
            reference_answer = (
                f"{record.correct}. {record.answer}" if record.correct and record.answer else record.answer
            )
            with st.container(border=True):
                cols = st.columns(2)
                cols[0].metric("ROUGE-L, reasoning", f"{metrics.rouge_l(run.reasoning, record.reasoning):.3f}")
                cols[1].metric("ROUGE-L, final answer", f"{metrics.rouge_l(run.answer, record.answer):.3f}")
                st.markdown("**Reference reasoning**")
                st.markdown(safety.markdown_text(record.reasoning) or "_(none)_")
                st.markdown(f"**Reference answer:** {safety.markdown_text(reference_answer)}")
                if record.attribution or record.license:
                    st.caption(f"Source: {record.source} · {record.license} · {record.attribution}".rstrip(" ·"))


# -- page ---------------------------------------------------------------------------------------

st.title("Case study")
st.warning(DISCLAIMER, icon=":material/school:")

if not st.session_state.cs_ack:
    with st.container(border=True):
        st.markdown(NOTICE)
        st.button("I understand — continue", key="cs_ack_button", type="primary", on_click=_acknowledge)
    st.stop()

try:
    with st.status("Loading the model…", expanded=True) as loading:
        # The first start converts the embedded GGUF (about 20 s); its progress lines show here.
        backend = resources.get_backend(_progress=loading.write)
        loading.update(label="Model ready", state="complete", expanded=False)
except ModelError as exc:
    st.error(f"The model could not be loaded.\n\n{exc}")
    st.stop()
except OSError as exc:  # e.g. the first start's model cache conversion on a full or read-only disk
    message = saving.message_for(exc, "the converted model cache")
    if message is None:
        raise
    st.error(f"The model could not be loaded. {message}")
    st.stop()
if isinstance(backend, serving.LocalBackend) and backend.adapter_problem:
    st.warning(
        f"**Adapter `{backend.requested_adapter}` cannot be used, so the app is serving the base model without it.** "
        f"{safety.markdown_text(backend.adapter_problem)}\n\nAn administrator can activate another adapter on the "
        "Admin page. Runs made now are saved with no adapter.",
        icon=":material/warning:",
    )
elif adapter_note := backend.adapter_note():
    st.warning(f"**The inference server does not serve the active adapter.** {safety.markdown_text(adapter_note)}",
               icon=":material/warning:")
st.caption(f"Base model: `{backend.base_model}` · adapter: `{backend.adapter}` · "
           f"served by {safety.markdown_text(backend.describe())}")

reference_index: retrieval.ReferenceIndex | None = None
reference_problem: str | None = None
try:
    reference_index = resources.get_reference_index()
except retrieval.RetrievalUnavailable as exc:  # the model still answers, without references
    reference_problem = str(exc)

has_test_split = (settings.prepared_dir / "test.jsonl").is_file()
st.button(
    "Random case from the held-out test split",
    key="cs_example_button",
    on_click=_pick_example,
    disabled=not has_test_split,
    icon=":material/casino:",
)
if not has_test_split:
    st.caption("Examples need the prepared data, which is not there yet: run `make prepare`.")
if st.session_state.cs_notice:
    st.info(st.session_state.cs_notice)
    st.session_state.cs_notice = None

st.text_area(
    "Clinical case",
    key="cs_case",
    height=220,
    on_change=_on_case_edit,
    placeholder="A 54-year-old woman presents with … What is the most likely diagnosis?",
)
st.caption(f"{len(st.session_state.cs_case):,} / {settings.max_input_chars:,} characters")

with st.expander("Generation settings"):
    st.number_input("Max new tokens", min_value=1, max_value=_cap, step=16, key="cs_max_new_tokens")
    st.slider("Temperature (0 = always the most likely token)", 0.0, 1.5, step=0.05, key="cs_temperature")
    st.slider("Top-p", 0.05, 1.0, step=0.05, key="cs_top_p")

# Off and disabled while there is no index; the student's own choice comes back with the index.
st.session_state.cs_use_refs = st.session_state.cs_use_refs_choice and reference_index is not None
st.toggle(
    "Use references",
    key="cs_use_refs",
    on_change=_remember_use_refs,
    disabled=reference_index is None,
    help=f"Give the model the {retrieval.PROMPT_PASSAGES} best-matching reference passages with the case. "
    "The references are shown beside the answer either way.",
)
if reference_problem is not None:
    st.caption(f"{safety.markdown_text(reference_problem)} The model answers without them.")

st.button("Generate", key="cs_generate", type="primary", on_click=_request_run, icon=":material/play_arrow:")

requested = st.session_state.cs_run_requested
if requested:
    st.session_state.cs_run_requested = False
    check = safety.check_case_text(st.session_state.cs_case, max_chars=settings.max_input_chars)
    for note in check.notes:
        st.info(note)
    for problem in check.problems:
        st.error(problem)
    if st.session_state.cs_job is not None:
        st.info("The model is still working on your last case: wait for it, or press Stop.")
    elif check.ok:
        findings = safety.find_phi(check.text)
        if findings and st.session_state.cs_phi_ok_for != _digest(check.text):
            with st.container(border=True):
                st.warning(
                    f"This text looks like it contains {safety.describe_phi(findings)} of a real patient. "
                    "Remove identifiers before generating. If the case is invented or published, you can go on.",
                    icon=":material/privacy_tip:",
                )
                st.markdown("\n".join(f"- {f.label}: `{f.text.replace('`', '')}`" for f in findings))
                st.button(
                    "The case has no real patient's identifiers — generate anyway",
                    key="cs_phi_confirm",
                    on_click=_confirm_phi,
                    args=(_digest(check.text),),
                )
        else:
            if _start(backend, check.text) and check.notes:
                st.session_state.cs_notice = " ".join(check.notes)  # shown again after the run's rerun
if st.session_state.cs_job is not None:
    _follow(st.session_state.cs_job)
elif not requested and st.session_state.cs_result is not None:
    _show_result(st.session_state.cs_result)
