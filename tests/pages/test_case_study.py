"""AppTest tests of the case study page, with the model and the generator replaced by fakes.

A fake ``core.inference.stream_case`` yields scripted events. Calling ``st.stop()`` inside it
reproduces what happens when a click interrupts a run mid-stream: the run ends with the page in
its streaming state, and the next run (the Stop button's) has to finish the partial result.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from app import resources
from core import inference
from core.inference import GenerationError, GenerationStats, ServingPlan, StreamEvent
from core.model import BaseModel, ModelError
from core.prompts import parse_completion
from core.records import Record, write_jsonl
from sqlmodel import Session

from storage import history
from tests.pages.auth_harness import add_user, app_as, app_environment

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "case_study.py")
CASE = "A 54-year-old woman has fever, dysuria and right flank pain. What is the most likely diagnosis?"
COMPLETION = "Fever with flank pain points to the kidney.\nDysuria suggests an ascending infection.\n\nFinal answer: acute pyelonephritis"


@dataclass
class FakeServed:
    base: BaseModel = BaseModel(identity="fake-base-id", location="nowhere")
    adapter_name: str = "fake-adapter"
    device: str = "cpu"
    plan: ServingPlan = ServingPlan("int8")
    model: Any = None
    tokenizer: Any = None
    adapter_problem: str | None = None
    requested_adapter: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeStream:
    """Stands in for ``inference.stream_case``: streams ``completion`` in chunks, records its calls."""

    def __init__(self, completion: str = COMPLETION, *, chunks: int = 6, interrupt_after: int | None = None,
                 error_after: int | None = None, waiting: int = 0):
        self.completion = completion
        self.chunks = chunks
        self.interrupt_after = interrupt_after
        self.error_after = error_after
        self.waiting = waiting
        self.calls: list[dict[str, Any]] = []
        self.closed = 0

    def __call__(self, case_text, *, served, settings, stop, options=None, context=""):
        self.calls.append({"case_text": case_text, "served": served, "settings": settings, "stop": stop})
        return self._events()

    def _events(self):
        try:
            for i in range(self.waiting):
                yield StreamEvent("waiting", stats=GenerationStats(waited_s=1.0 + i))
                if self.interrupt_after == -1:
                    st.stop()
            yield StreamEvent("started")
            step = max(1, len(self.completion) // self.chunks)
            cuts = list(range(step, len(self.completion), step)) + [len(self.completion)]
            for i, cut in enumerate(cuts):
                text = self.completion[:cut]
                parsed = parse_completion(text)
                stats = GenerationStats(prompt_tokens=50, new_tokens=i + 1, time_to_first_token_s=0.21,
                                        tokens_per_s=31.5 if i else None)
                yield StreamEvent("text", parsed.reasoning, parsed.answer, parsed.has_answer, text, stats)
                if i == self.error_after:
                    raise GenerationError("Generation failed: RuntimeError: out of memory")
                if i == self.interrupt_after:
                    st.stop()  # a click interrupts the run here
            parsed = parse_completion(self.completion)
            yield StreamEvent("done", parsed.reasoning, parsed.answer, parsed.has_answer, self.completion,
                              GenerationStats(prompt_tokens=50, new_tokens=len(cuts), time_to_first_token_s=0.21,
                                              tokens_per_s=31.5, elapsed_s=1.0, finish_reason="eos"))
        finally:
            self.closed += 1


@pytest.fixture()
def env(monkeypatch, tmp_path):
    """A signed-in student, a throwaway database, and a fake model; returns a function installing a
    FakeStream and returning a fresh AppTest of the page."""
    engine_gen = app_environment(monkeypatch, tmp_path, max_input_chars="500", max_new_tokens="64")
    engine = next(engine_gen)
    student = add_user(engine, "sam")
    served = FakeServed()
    loads: list[tuple] = []

    def get_served_model(*args, **_kwargs):
        loads.append(args)
        return served

    monkeypatch.setattr(resources, "get_served_model", get_served_model)

    def make(fake: FakeStream | None = None) -> tuple[AppTest, FakeStream]:
        fake = fake or FakeStream()
        monkeypatch.setattr(inference, "stream_case", fake)
        return app_as(student, PAGE), fake

    make.settings = resources.get_settings()
    make.loads = loads
    make.engine = engine
    make.user = student
    yield make
    next(engine_gen, None)


def saved_run(at: AppTest, env) -> dict[str, Any]:
    """The history row the page saved last, as a dict (fails when nothing was saved)."""
    run_id = at.session_state["cs_last_saved"]
    with Session(env.engine) as session:
        row = history.get_case_run(session=session, run_id=run_id)
        assert row is not None and row.user_id == env.user.id
        return row.model_dump()


def _acknowledged(at: AppTest) -> AppTest:
    at.run()
    at.button(key="cs_ack_button").click().run()
    return at


def _generate(at: AppTest, text: str) -> AppTest:
    at.text_area(key="cs_case").set_value(text)
    at.button(key="cs_generate").click().run()
    return at


def reasoning_status(at: AppTest):
    """The one "Reasoning…" status block (the page also has a "Model ready" one)."""
    (status,) = [s for s in at.status if s.label.startswith("Reasoning")]
    return status


def _texts(elements) -> list[str]:
    return [e.value for e in elements]


# -- notice and disclaimers ------------------------------------------------------------------------


def test_notice_is_acknowledged_once_and_disclaimer_stays(env):
    at, _ = env()
    at.run()
    assert not at.exception
    assert len(at.text_area) == 0  # nothing to type into before acknowledging
    assert any("not a medical device" in m for m in _texts(at.markdown))
    assert env.loads == []  # the model is not even loaded yet
    at.button(key="cs_ack_button").click().run()
    assert len(at.text_area) == 1
    assert any(b.key == "cs_generate" for b in at.button)
    at.run()  # later reruns do not ask again
    assert len(at.text_area) == 1
    assert not any(b.key == "cs_ack_button" for b in at.button)
    warning = " ".join(_texts(at.warning))
    assert "Educational use only" in warning and "small and often wrong" in warning
    caption = " ".join(_texts(at.caption))
    assert "fake-base-id" in caption and "fake-adapter" in caption


# -- streaming, result, save hook --------------------------------------------------------------------


def test_generation_streams_then_shows_reasoning_and_answer_separately_and_saves(env):
    at, fake = env()
    _generate(_acknowledged(at), CASE)
    assert not at.exception
    assert len(fake.calls) == 1 and fake.calls[0]["case_text"] == CASE
    assert isinstance(fake.calls[0]["stop"], threading.Event)
    status = reasoning_status(at)
    assert status.label == "Reasoning"
    assert status.proto.expanded is False  # collapsed once finished
    reasoning = " ".join(_texts(status.markdown))
    assert "Dysuria suggests an ascending infection." in reasoning
    assert "pyelonephritis" not in reasoning and "Final answer" not in reasoning
    (answer,) = at.success
    assert "Final answer:" in answer.value and "acute pyelonephritis" in answer.value
    caption = " ".join(_texts(at.caption))
    assert "31.5 tokens/s" in caption and "fake-base-id" in caption and "fake-adapter" in caption
    saved = saved_run(at, env)
    assert saved["case_text"] == CASE
    assert saved["reasoning"].startswith("Fever with flank pain") and saved["answer"] == "acute pyelonephritis"
    assert saved["base_model"] == "fake-base-id" and saved["adapter"] == "fake-adapter"
    assert saved["settings"] == {"max_new_tokens": 64, "temperature": 0.3, "top_p": 0.9}
    assert saved["timings"]["tokens_per_s"] == 31.5 and saved["timings"]["ttft_s"] == 0.21
    assert saved["status"] == "completed"
    assert fake.closed == 1


def test_mid_stream_state_then_stop_keeps_and_saves_the_partial_run(env):
    at, fake = env(FakeStream(chunks=8, interrupt_after=6))
    _generate(_acknowledged(at), CASE)
    assert not at.exception
    # The run was cut while streaming: reasoning and the beginning of the answer, in separate places.
    status = reasoning_status(at)
    assert status.label == "Reasoning…"
    assert "ascending infection" in " ".join(_texts(status.markdown))
    (answer,) = at.success
    assert "Final answer:" in answer.value
    assert "Final answer" not in " ".join(_texts(status.markdown))
    assert fake.closed == 1  # the page closed the stream (that is what stops the worker and frees the model)
    assert "cs_last_saved" not in at.session_state

    at.button(key="cs_stop_button").click().run()
    assert not at.exception
    assert fake.calls[0]["stop"].is_set()
    status = reasoning_status(at)
    assert status.label == "Reasoning (stopped)"
    assert any("stopped" in i for i in _texts(at.info))
    saved = saved_run(at, env)
    assert saved["status"] == "stopped" and saved["timings"]["finish_reason"] == "stopped"
    assert saved["reasoning"].startswith("Fever with flank pain") and saved["answer"]
    assert len(fake.calls) == 1  # stopping does not start another generation


def test_second_user_sees_waiting_for_the_model(env):
    at, fake = env(FakeStream(waiting=2, interrupt_after=-1))
    _generate(_acknowledged(at), CASE)
    assert not at.exception
    assert any("Waiting for the model" in i for i in _texts(at.info))
    at.run()  # interrupted before any text: nothing to keep
    assert "cs_last_saved" not in at.session_state
    assert any("Stopped before the model produced any text" in i for i in _texts(at.info))


def test_generation_error_is_a_message_and_the_app_keeps_working(env, monkeypatch):
    at, fake = env(FakeStream(error_after=2))
    _generate(_acknowledged(at), CASE)
    assert not at.exception
    (error,) = at.error
    assert "out of memory" in error.value and "still working" in error.value
    assert at.text_area(key="cs_case").value == CASE  # nothing lost
    assert "cs_last_saved" not in at.session_state
    monkeypatch.setattr(inference, "stream_case", FakeStream())
    at.button(key="cs_generate").click().run()
    assert not at.exception and len(at.error) == 0
    assert saved_run(at, env)["answer"] == "acute pyelonephritis"


def test_model_output_is_never_rendered_as_html(env):
    evil = "<img src=x onerror=alert(1)> Think <b>carefully</b> ![t](http://evil.example/t.png)\nFinal answer: <i>B</i>"
    at, _ = env(FakeStream(evil))
    _generate(_acknowledged(at), CASE)
    assert not at.exception
    bodies = [m.proto.body for m in reasoning_status(at).markdown] + [at.success[0].proto.body]
    joined = " ".join(bodies)
    assert re.search(r"(?<!\\)<", joined) is None  # every "<" is escaped: shown as text, never a tag
    assert "![" not in joined  # no image is fetched
    assert "\\<b\\>carefully" in joined
    assert all(not m.proto.allow_html for m in at.markdown)


# -- input limits and identifier warning -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "empty"), ("   \n\t ", "empty"), ("x" * 501, "the limit is 500")],
)
def test_empty_and_oversized_input_are_refused_before_generation(env, text, message):
    at, fake = env()
    _generate(_acknowledged(at), text)
    assert not at.exception
    assert any(message in e for e in _texts(at.error))
    assert fake.calls == []
    assert at.text_area(key="cs_case").value == text  # nothing lost


def test_control_characters_are_removed_with_a_note(env):
    at, fake = env()
    _generate(_acknowledged(at), "Fever\x00 and\x07 dysuria.")
    assert fake.calls[0]["case_text"] == "Fever and dysuria."
    assert any("Removed 2 invisible control characters" in i for i in _texts(at.info))


def test_identifiers_need_confirmation_for_that_exact_text(env):
    at, fake = env()
    text = "Mr. John Smith, DOB: 03/04/1961, has chest pain radiating to the left arm."
    _generate(_acknowledged(at), text)
    assert fake.calls == []
    warning = " ".join(_texts(at.warning))
    assert "a name with a title and a date of birth" in warning
    assert any("Mr. John Smith" in m for m in _texts(at.markdown))
    at.button(key="cs_phi_confirm").click().run()
    assert len(fake.calls) == 1 and fake.calls[0]["case_text"] == text
    # a different text with identifiers asks again
    _generate(at, text + " Phone 555-123-4567.")
    assert len(fake.calls) == 1
    assert "a phone number" in " ".join(_texts(at.warning))


def test_max_new_tokens_is_capped_by_the_setting(env):
    at, fake = env()
    _acknowledged(at)
    assert at.number_input(key="cs_max_new_tokens").max == 64
    at.number_input(key="cs_max_new_tokens").set_value(32)
    at.slider(key="cs_temperature").set_value(0.0)
    _generate(at, CASE)
    sent = fake.calls[0]["settings"]
    assert sent.max_new_tokens == 32 and sent.temperature == 0.0


def test_model_load_failure_is_a_message(env, monkeypatch):
    at, fake = env()

    def broken(*args, **kwargs):
        raise ModelError("Adapter x was trained on base model 'a', but the app is set to 'b'.")

    monkeypatch.setattr(resources, "get_served_model", broken)
    _acknowledged(at)
    assert not at.exception
    assert any("could not be loaded" in e and "trained on base model" in e for e in _texts(at.error))


# -- examples from the test split and the reference --------------------------------------------------


def test_example_picker_says_when_data_is_not_prepared(env):
    at, _ = env()
    _acknowledged(at)
    assert at.button(key="cs_example_button").disabled
    assert any("not there yet" in c for c in _texts(at.caption))


def test_example_picker_fills_the_case_and_reveals_the_reference_with_rouge(env):
    record = Record(
        id="medical-o1:abc", source="medical-o1", license="Apache-2.0", question=CASE,
        reasoning="Flank pain and fever point to the kidney, and dysuria suggests an infection.",
        answer="acute pyelonephritis",
    )
    write_jsonl(env.settings.prepared_dir / "test.jsonl", [record])
    at, fake = env()
    _acknowledged(at)
    at.button(key="cs_example_button").click().run()
    assert at.text_area(key="cs_case").value == CASE
    at.button(key="cs_generate").click().run()
    assert saved_run(at, env)["source_item_id"] == "medical-o1:abc"
    assert not any("Reference reasoning" in m for m in _texts(at.markdown))  # only on request
    at.button(key="cs_reference_button").click().run()
    assert not at.exception
    metrics = {m.label: float(m.value) for m in at.metric}
    assert metrics["ROUGE-L, final answer"] == pytest.approx(1.0)
    assert 0.5 < metrics["ROUGE-L, reasoning"] < 1.0
    assert any("Reference reasoning" in m for m in _texts(at.markdown))
    assert any("acute pyelonephritis" in m for m in _texts(at.markdown))


def test_editing_the_example_drops_the_reference(env):
    record = Record(id="s:1", source="s", license="MIT", question=CASE, reasoning="r", answer="a")
    write_jsonl(env.settings.prepared_dir / "test.jsonl", [record])
    at, _ = env()
    _acknowledged(at)
    at.button(key="cs_example_button").click().run()
    _generate(at, CASE + " She is pregnant.")
    assert saved_run(at, env)["source_item_id"] is None
    assert not any(b.key == "cs_reference_button" for b in at.button)


# -- stored acknowledgement and rate limit -----------------------------------------------------------


def test_acknowledgement_is_stored_with_the_account(env):
    at, _ = env()
    _acknowledged(at)
    with Session(env.engine) as session:
        from storage import accounts

        assert accounts.get_user(session=session, user_id=env.user.id).acknowledged_disclaimer_at is not None
    fresh, _ = env()  # a new browser session of the same student
    fresh.run()
    assert not any(b.key == "cs_ack_button" for b in fresh.button)
    assert len(fresh.text_area) == 1


def test_generation_refused_with_a_message_when_the_hourly_limit_is_reached(env, monkeypatch):
    from storage import rate_limit

    with Session(env.engine) as session:
        for _ in range(3):
            rate_limit.record_generation(session=session, user_id=env.user.id)
    monkeypatch.setenv("MEDSTUDY_GENERATIONS_PER_HOUR", "3")
    st.cache_resource.clear()
    at, fake = env()
    _generate(_acknowledged(at), CASE)
    assert not at.exception
    assert fake.calls == []  # the model was never asked
    assert any("limit" in w.value.lower() for w in at.warning)
    assert "cs_last_saved" not in at.session_state
