"""Case study page: a student enters a clinical case and watches the model reason, then answer.

Thin view over :mod:`core.inference` (streaming, parsing, timings) and :mod:`core.safety`
(input checks, identifier warning, safe rendering). Model output is only ever rendered as
escaped markdown, never as HTML.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import threading
from typing import Any

import streamlit as st
from sqlmodel import Session

from app import auth, resources, saving
from core import inference, metrics, safety
from core.model import ModelError
from core.records import Record
from storage import accounts, history, rate_limit

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
    "cs_stop": None,  # threading.Event of the generation in progress
    "cs_partial": None,  # the stream's latest state while generating (recovered if the run is interrupted)
    "cs_result": None,  # the last finished CaseRun
    "cs_save_error": None,  # why the last finished run could not be saved to the history
    "cs_show_reference": False,
    "cs_max_new_tokens": _defaults.max_new_tokens,
    "cs_temperature": _defaults.temperature,
    "cs_top_p": _defaults.top_p,
}.items():
    st.session_state.setdefault(key, value)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


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


def _save_run(run: inference.CaseRun) -> None:
    """Save a finished or stopped run to the student's history (it also counts toward the hourly limit).

    When the disk or the database refuses, the run stays on the page and the reason is shown with it.
    """
    st.session_state.cs_save_error = None
    with saving.saving("this run to your history", show=False) as outcome, Session(resources.get_engine()) as session:
        saved = history.save_case_run(session=session, user_id=user.id, **run.history_fields())
        st.session_state.cs_last_saved = saved.id
    if outcome.error is not None:
        st.session_state.cs_save_error = outcome.error.user_message("this run to your history")


def _finish(event: inference.StreamEvent, partial: dict[str, Any], *, stopped: bool | None = None) -> None:
    st.session_state.update(cs_partial=None, cs_stop=None)
    if not event.text and (stopped or event.stopped):
        st.session_state.cs_result = None
        st.session_state.cs_notice = "Stopped before the model produced any text; nothing was saved."
        return
    run = inference.case_run(
        event,
        case_text=partial["case_text"],
        base_model=partial["base_model"],
        adapter=partial["adapter"],
        settings=partial["settings"],
        example_id=partial["example_id"],
        stopped=stopped,
    )
    st.session_state.cs_result = run
    _save_run(run)


def _generate(served: resources.ServedModel, text: str) -> None:
    """Stream one generation into the page; on success the page reruns to show the finished result."""
    gen_settings = inference.GenerationSettings(
        max_new_tokens=st.session_state.cs_max_new_tokens,
        temperature=st.session_state.cs_temperature,
        top_p=st.session_state.cs_top_p,
    ).clamped(cap=_cap)
    example = st.session_state.cs_example
    stop = threading.Event()
    partial: dict[str, Any] = {
        "case_text": text,
        "base_model": served.base.identity,
        "adapter": served.adapter_name,
        "settings": gen_settings,
        "example_id": example["id"] if example else None,
        "event": inference.StreamEvent("started"),
    }
    st.session_state.update(cs_stop=stop, cs_partial=partial, cs_result=None)

    st.button("Stop", key="cs_stop_button", on_click=_stop, icon=":material/stop_circle:")
    status = st.status("Reasoning…", expanded=True)
    reasoning_box = status.empty()
    answer_box = st.empty()
    stats_box = st.empty()
    # closing(): when a click interrupts this run mid-stream, the stream is closed, which stops the
    # worker and frees the model; the next run finds `cs_partial` and finishes it as stopped.
    try:
        with contextlib.closing(inference.stream_case(text, served=served, settings=gen_settings, stop=stop)) as events:
            for event in events:
                if event.kind == "waiting":
                    stats_box.info(
                        f"Waiting for the model: another case is being generated "
                        f"({event.stats.waited_s:.0f} s). Yours starts as soon as it is free.",
                        icon=":material/hourglass_top:",
                    )
                    continue
                partial["event"] = event
                reasoning_box.markdown(safety.markdown_text(event.reasoning) or "…")
                if event.has_answer:
                    answer_box.success(f"**Final answer:** {safety.markdown_text(event.answer)}")
                stats_box.caption(_stats_line(event.stats.to_dict()))
    except inference.GenerationError as exc:
        st.session_state.update(cs_partial=None, cs_stop=None)
        status.update(label="Reasoning (generation failed)", state="error", expanded=False)
        st.error(f"{exc}\n\nThe app is still working: you can edit the case and try again.")
        return
    _finish(partial["event"], partial)
    st.rerun()


def _show_result(run: inference.CaseRun) -> None:
    if st.session_state.cs_save_error:
        st.error(st.session_state.cs_save_error, icon=":material/sd_card_alert:")
    label = "Reasoning (stopped)" if run.stopped else "Reasoning"
    with st.status(label, state="complete", expanded=False):
        st.markdown(safety.markdown_text(run.reasoning) or "_(no reasoning text)_")
    if run.stopped:
        st.info("Generation was stopped; the output above is partial.", icon=":material/stop_circle:")
    if run.has_answer and run.answer:
        st.success(f"**Final answer:** {safety.markdown_text(run.answer)}")
    else:
        st.warning(NO_ANSWER)
    st.caption(f"{run.base_model} · adapter: {run.adapter} · {_stats_line(run.stats)}")

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
        served = resources.get_served_model(
            settings.base_model, resources.active_adapter_path(), settings.device, _progress=loading.write
        )
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
if adapter_problem := served.adapter_problem:
    st.warning(
        f"**Adapter `{served.requested_adapter}` cannot be used, so the app is serving the base model without it.** "
        f"{safety.markdown_text(adapter_problem)}\n\nAn administrator can activate another adapter on the "
        "Admin page. Runs made now are saved with no adapter.",
        icon=":material/warning:",
    )
plan = inference.describe_served(served.model, served.plan)
st.caption(f"Base model: `{served.base.identity}` · adapter: `{served.adapter_name}` · {served.device}, {plan}")

if st.session_state.cs_partial is not None:
    # The previous run was interrupted mid-stream (Stop, or another click): keep what it produced.
    _partial = st.session_state.cs_partial
    _finish(_partial["event"], _partial, stopped=True)

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

st.button("Generate", key="cs_generate", type="primary", on_click=_request_run, icon=":material/play_arrow:")

if st.session_state.cs_run_requested:
    st.session_state.cs_run_requested = False
    check = safety.check_case_text(st.session_state.cs_case, max_chars=settings.max_input_chars)
    for note in check.notes:
        st.info(note)
    for problem in check.problems:
        st.error(problem)
    if check.ok:
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
            with Session(resources.get_engine()) as session:
                allowed, message = rate_limit.check_generation_allowed(
                    session=session, user_id=user.id, limit_per_hour=settings.generations_per_hour
                )
            if not allowed:
                st.warning(message, icon=":material/timer:")
            else:
                if check.notes:
                    st.session_state.cs_notice = " ".join(check.notes)  # shown again after the run's rerun
                _generate(served, check.text)
elif st.session_state.cs_result is not None:
    _show_result(st.session_state.cs_result)
