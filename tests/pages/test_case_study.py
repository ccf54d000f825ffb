"""AppTest tests of the case study page, with the model and the generator replaced by fakes.

A fake ``core.inference.stream_case`` yields scripted events; the page consumes them on its job
thread and follows them. ``pause_after`` reproduces a click arriving mid-stream: once the page has
shown the paused event, the fake ends the page's script run (what a click's rerun does) and waits,
still "generating", until the page sets the stop or conclude event, as the real stream would.

Reference passages come from a real index built by ``core.retrieval.build_index`` from a few
MedQuAD-format documents written by :func:`build_reference_index`.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx
from streamlit.testing.v1 import AppTest

from app import resources
from core import inference, retrieval
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
STOP_WORDS_ONLY = "What is it? Why and how would it be so?"

KIDNEY_URL = "https://www.niddk.nih.gov/health-information/kidney-disease/kidney-infection-pyelonephritis"
ODD_URL = "https://example.org/a)[x](javascript:alert(1)"
REFERENCE_DOCS = [
    # (subset folder, file stem, source, url, focus, question, answer)
    ("5_NIDDK_QA", "0000001", "NIDDK", KIDNEY_URL, "Kidney Infection (Pyelonephritis)",
     "What are the symptoms of Kidney Infection (Pyelonephritis)?",
     "Symptoms of a kidney infection include fever, chills, back or flank pain, and dysuria (painful urination). "
     "A kidney infection usually starts as a bladder infection that ascends to the kidneys."),
    ("4_MPlus_Health_Topics_QA", "0000002", "MPlusHealthTopics", "https://medlineplus.gov/asthma.html", "Asthma",
     "What is Asthma?", "Asthma is a chronic disease of the airways that causes wheezing and shortness of breath."),
    ("9_CDC_QA", "0000003", "CDC", ODD_URL, "<b>Flank</b> **pain** [x](javascript:alert(1))",
     "What causes flank pain with fever?",
     "Flank pain with fever can come from an infection of the kidney. <img src=x onerror=alert(1)> See a doctor."),
]


def build_reference_index(prepared_dir: Path, docs=REFERENCE_DOCS) -> Path:
    """A real reference index in ``prepared_dir/references`` from a few MedQuAD-format XML documents."""
    from xml.sax.saxutils import escape, quoteattr

    raw = prepared_dir.parent / "medquad-raw"
    for folder, stem, source, url, focus, question, answer in docs:
        path = raw / folder / f"{stem}.xml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Document id="{stem}" source="{source}" url={quoteattr(url)}>'
            f"<Focus>{escape(focus)}</Focus><QAPairs><QAPair pid=\"1\">"
            f'<Question qid="{stem}-1" qtype="information">{escape(question)}</Question>'
            f"<Answer>{escape(answer)}</Answer></QAPair></QAPairs></Document>\n",
            encoding="utf-8",
        )
    retrieval.build_index(prepared_dir / retrieval.INDEX_DIRNAME, medquad_dir=raw, train=[])
    return prepared_dir / retrieval.INDEX_DIRNAME


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

    def describe(self) -> str:
        return self.plan.describe()


class _WatchedEvent(StreamEvent):
    """A StreamEvent that reports each time the page reads its ``stats`` (the last thing it renders)."""

    def __getattribute__(self, name: str) -> Any:
        if name == "stats":
            hook = object.__getattribute__(self, "__dict__").get("_on_stats")
            if hook is not None:
                hook()
        return super().__getattribute__(name)


class FakeStream:
    """Stands in for ``inference.stream_case``: streams ``completion`` in chunks, records its calls.

    ``pause_after`` (a chunk index, or -1 for the waiting phase) pauses there like a click would:
    the page's run ends once it has shown that event, and the stream then ends as the page asks:
    stopped (``stop``), with a forced answer (``conclude``), or goes on when ``release`` is set.
    ``forced`` marks the finished answer as forced (e.g. ``"budget"``). ``hold_conclude`` pauses once
    more after Conclude now, before the forced answer, until ``release`` is set.
    """

    CONCLUDED = "\n\nFinal answer: acute pyelonephritis"

    def __init__(self, completion: str = COMPLETION, *, chunks: int = 6, pause_after: int | None = None,
                 error_after: int | None = None, waiting: int = 0, forced: str | None = None,
                 hold_conclude: bool = False):
        self.completion = completion
        self.chunks = chunks
        self.pause_after = pause_after
        self.error_after = error_after
        self.waiting = waiting
        self.forced = forced
        self.hold_conclude = hold_conclude
        self.calls: list[dict[str, Any]] = []
        self.closed = 0
        self.release = threading.Event()
        self.paused = threading.Event()

    def __call__(self, case_text, *, served, settings, stop=None, conclude=None, options=None, context=""):
        self.calls.append({"case_text": case_text, "served": served, "settings": settings, "stop": stop,
                           "conclude": conclude, "context": context})
        self._stop, self._conclude = stop, conclude
        return self._events()

    def _pause(self, event: StreamEvent) -> StreamEvent:
        """``event``, watched: after the page has shown it (and looked again), end the page's run, then wait."""
        reads = []

        def on_stats() -> None:
            reads.append(1)
            if len(reads) == 2:  # the second look is a poll after the whole event was drawn
                get_script_run_ctx().script_requests.request_stop()  # called on the page's script thread
                self.paused.set()

        watched = _WatchedEvent(event.kind, event.reasoning, event.answer, event.has_answer, event.text, event.stats)
        object.__setattr__(watched, "_on_stats", on_stats)
        return watched

    def _wait(self, *, release_only: bool = False) -> str:
        deadline = time.monotonic() + 30
        flags = [("release", self.release)] if release_only else [
            ("stop", self._stop), ("conclude", self._conclude), ("release", self.release)]
        while time.monotonic() < deadline:
            for name, flag in flags:
                if flag is not None and flag.is_set():
                    return name
            time.sleep(0.01)
        raise AssertionError("FakeStream paused for 30 s: the page never asked it to stop or conclude")

    def _events(self):
        try:
            for i in range(self.waiting):
                event = StreamEvent("waiting", stats=GenerationStats(waited_s=1.0 + i))
                if self.pause_after == -1 and i == self.waiting - 1:
                    yield self._pause(event)
                    if self._wait() == "stop":
                        yield StreamEvent("done", stats=GenerationStats(waited_s=2.0, finish_reason="stopped"))
                        return
                else:
                    yield event
            yield StreamEvent("started")
            step = max(1, len(self.completion) // self.chunks)
            cuts = list(range(step, len(self.completion), step)) + [len(self.completion)]
            text = ""
            for i, cut in enumerate(cuts):
                text = self.completion[:cut]
                parsed = parse_completion(text)
                stats = GenerationStats(prompt_tokens=50, new_tokens=i + 1, time_to_first_token_s=0.21,
                                        tokens_per_s=31.5 if i else None)
                event = StreamEvent("text", parsed.reasoning, parsed.answer, parsed.has_answer, text, stats)
                if i == self.error_after:
                    yield event
                    raise GenerationError("Generation failed: RuntimeError: out of memory")
                if i != self.pause_after:
                    yield event
                    continue
                yield self._pause(event)
                outcome = self._wait()
                if outcome == "stop":
                    yield StreamEvent("done", parsed.reasoning, parsed.answer, parsed.has_answer, text,
                                      GenerationStats(prompt_tokens=50, new_tokens=i + 1, time_to_first_token_s=0.21,
                                                      tokens_per_s=31.5, elapsed_s=1.0, finish_reason="stopped"))
                    return
                if outcome == "conclude":  # the real stream appends the marker and lets the model answer
                    if self.hold_conclude:
                        self.paused.clear()
                        yield self._pause(StreamEvent("text", parsed.reasoning, parsed.answer, parsed.has_answer,
                                                      text, stats))
                        self._wait(release_only=True)
                    text = self.completion[:cut] + self.CONCLUDED
                    parsed = parse_completion(text)
                    yield StreamEvent("done", parsed.reasoning, parsed.answer, parsed.has_answer, text,
                                      GenerationStats(prompt_tokens=50, new_tokens=i + 9, time_to_first_token_s=0.21,
                                                      tokens_per_s=31.5, elapsed_s=1.0, finish_reason="eos",
                                                      forced="conclude"))
                    return
            parsed = parse_completion(self.completion)
            yield StreamEvent("done", parsed.reasoning, parsed.answer, parsed.has_answer, self.completion,
                              GenerationStats(prompt_tokens=50, new_tokens=len(cuts), time_to_first_token_s=0.21,
                                              tokens_per_s=31.5, elapsed_s=1.0, finish_reason="eos",
                                              forced=self.forced))
        finally:
            self.closed += 1


@pytest.fixture()
def env(monkeypatch, tmp_path):
    """A signed-in student, a throwaway database, and a fake model; returns a function installing a
    FakeStream and returning a fresh AppTest of the page. No reference index unless a test builds one."""
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


@pytest.fixture()
def indexed(env):
    """``env`` with a real reference index in the prepared data folder."""
    build_reference_index(env.settings.prepared_dir)
    return env


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


def _blocks(node: Any):
    for child in getattr(node, "children", {}).values():
        if type(child).__name__ in ("Block", "Column"):
            yield child
        yield from _blocks(child)


def _direct(block: Any, kind: str) -> list[str]:
    return [c.value for c in block.children.values() if getattr(c, "type", None) == kind]


def reference_cards(at: AppTest) -> list[str]:
    """The text of each reference card (title, source line, credit, passage), in page order."""
    return ["\n".join(_direct(b, "markdown") + _direct(b, "caption")) for b in _blocks(at._tree)
            if any("CC BY 4" in c for c in _direct(b, "caption")) and len(_direct(b, "markdown")) >= 3]


def card(at: AppTest, title_word: str) -> str:
    (found,) = [c for c in reference_cards(at) if title_word in c.split("\n")[0]]
    return found


def columns_holding(at: AppTest, text: str) -> list[Any]:
    """The page's column blocks whose direct markdown, success or caption elements contain ``text``."""
    return [b for b in _blocks(at._tree) if type(b).__name__ == "Column"
            and any(text in v for kind in ("markdown", "success", "caption") for v in _direct(b, kind))]


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
    assert isinstance(fake.calls[0]["conclude"], threading.Event)
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
    assert "forced" not in caption and "Concluded early" not in caption  # the model concluded by itself
    saved = saved_run(at, env)
    assert saved["case_text"] == CASE
    assert saved["reasoning"].startswith("Fever with flank pain") and saved["answer"] == "acute pyelonephritis"
    assert saved["base_model"] == "fake-base-id" and saved["adapter"] == "fake-adapter"
    assert {k: saved["settings"][k] for k in ("max_new_tokens", "temperature", "top_p")} == {
        "max_new_tokens": 64, "temperature": 0.3, "top_p": 0.9}
    assert saved["settings"]["use_references"] is False  # no index in this test
    assert saved["timings"]["tokens_per_s"] == 31.5 and saved["timings"]["ttft_s"] == 0.21
    assert saved["timings"]["forced"] is None
    assert saved["status"] == "completed" and saved["references"] == []
    assert fake.closed == 1
    assert at.session_state["cs_job"] is None


def test_mid_stream_state_then_stop_keeps_and_saves_the_partial_run(env):
    at, fake = env(FakeStream(chunks=8, pause_after=6))
    _generate(_acknowledged(at), CASE)
    assert not at.exception and fake.paused.is_set()
    # The run was cut while streaming: reasoning and the beginning of the answer, in separate places.
    status = reasoning_status(at)
    assert status.label == "Reasoning…"
    assert "ascending infection" in " ".join(_texts(status.markdown))
    (answer,) = at.success
    assert "Final answer:" in answer.value
    assert "Final answer" not in " ".join(_texts(status.markdown))
    assert {b.key for b in at.button} >= {"cs_stop_button", "cs_conclude_button"}
    # The click ended the page's run, not the generation: it is still going, nothing saved yet.
    assert fake.closed == 0 and not fake.calls[0]["stop"].is_set()
    assert "cs_last_saved" not in at.session_state

    at.button(key="cs_stop_button").click().run()
    assert not at.exception
    assert fake.calls[0]["stop"].is_set() and not fake.calls[0]["conclude"].is_set()
    status = reasoning_status(at)
    assert status.label == "Reasoning (stopped)"
    assert any("stopped" in i for i in _texts(at.info))
    saved = saved_run(at, env)
    assert saved["status"] == "stopped" and saved["timings"]["finish_reason"] == "stopped"
    assert saved["reasoning"].startswith("Fever with flank pain") and saved["answer"]
    assert len(fake.calls) == 1  # stopping does not start another generation
    assert fake.closed == 1


def test_another_click_mid_stream_does_not_stop_the_generation(env):
    at, fake = env(FakeStream(chunks=8, pause_after=2))
    _generate(_acknowledged(at), CASE)
    assert fake.paused.is_set()
    fake.release.set()  # the model goes on; the student's click (a settings change) reruns the page
    at.slider(key="cs_temperature").set_value(0.5).run()
    assert not at.exception
    assert not fake.calls[0]["stop"].is_set()
    saved = saved_run(at, env)
    assert saved["status"] == "completed" and saved["answer"] == "acute pyelonephritis"
    assert saved["settings"]["temperature"] == 0.3  # the run keeps the settings it started with
    assert len(fake.calls) == 1


def test_conclude_now_sets_the_conclude_event_and_marks_the_answer(env):
    at, fake = env(FakeStream(chunks=8, pause_after=2))
    _generate(_acknowledged(at), CASE)
    assert fake.paused.is_set() and not at.success  # still reasoning: no final answer yet
    conclude = at.button(key="cs_conclude_button")
    assert conclude.label == "Conclude now" and not conclude.disabled
    conclude.click().run()
    assert not at.exception
    assert fake.calls[0]["conclude"].is_set() and not fake.calls[0]["stop"].is_set()
    (answer,) = at.success
    assert "acute pyelonephritis" in answer.value
    captions = " ".join(_texts(at.caption))
    assert "Concluded early at your request — the model did not finish reasoning." in captions
    assert "fake-base-id" in captions and "fake-adapter" in captions  # still says what served it
    assert reasoning_status(at).label == "Reasoning"  # concluded, not stopped
    saved = saved_run(at, env)
    assert saved["status"] == "completed" and saved["timings"]["forced"] == "conclude"
    assert saved["answer"] == "acute pyelonephritis"


def test_conclude_during_the_run_shows_concluding_until_the_answer_comes(env):
    at, fake = env(FakeStream(chunks=8, pause_after=2, hold_conclude=True))
    _generate(_acknowledged(at), CASE)
    at.button(key="cs_conclude_button").click().run()
    assert not at.exception and fake.paused.is_set()
    assert reasoning_status(at).label == "Reasoning… (concluding at your request)"
    assert at.button(key="cs_conclude_button").disabled and not at.button(key="cs_stop_button").disabled
    assert "cs_last_saved" not in at.session_state
    fake.release.set()
    at.run()
    assert saved_run(at, env)["timings"]["forced"] == "conclude"


def test_an_answer_forced_at_the_token_budget_says_so(env):
    at, fake = env(FakeStream(forced="budget"))
    _generate(_acknowledged(at), CASE)
    assert not at.exception
    captions = " ".join(_texts(at.caption))
    assert "Final answer forced at the token budget" in captions
    assert "fake-adapter" in captions
    assert saved_run(at, env)["timings"]["forced"] == "budget"


def test_second_user_sees_waiting_for_the_model(env):
    at, fake = env(FakeStream(waiting=2, pause_after=-1))
    _generate(_acknowledged(at), CASE)
    assert not at.exception
    assert any("Waiting for the model" in i for i in _texts(at.info))
    at.button(key="cs_stop_button").click().run()  # stopped before any text: nothing to keep
    assert "cs_last_saved" not in at.session_state
    assert any("Stopped before the model produced any text" in i for i in _texts(at.info))


def test_generation_error_is_a_message_and_the_app_keeps_working(env, monkeypatch):
    at, fake = env(FakeStream(error_after=2))
    _generate(_acknowledged(at), CASE)
    assert not at.exception
    (error,) = at.error
    assert "out of memory" in error.value and "still working" in error.value
    assert at.text_area(key="cs_case").value == CASE  # nothing lost
    failed = saved_run(at, env)  # the text written before the failure is kept, marked as failed
    assert failed["status"] == "error" and failed["reasoning"] and failed["case_text"] == CASE
    assert any("saved to your history, marked as failed" in c for c in _texts(at.caption))
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


# -- references ------------------------------------------------------------------------------------


def test_references_are_shown_beside_the_answer_given_to_the_model_and_saved(indexed):
    at, fake = indexed()
    _acknowledged(at)
    toggle = at.toggle(key="cs_use_refs")
    assert toggle.value is True and not toggle.disabled  # on by default when the index loads
    _generate(at, CASE)
    assert not at.exception
    context = fake.calls[0]["context"]
    assert context.startswith("[1] ") and "Kidney Infection (Pyelonephritis)" in context
    assert "fever, chills, back or flank pain" in context

    cards = reference_cards(at)
    assert len(cards) == 2  # the asthma page does not match
    kidney = card(at, "Kidney")
    assert kidney.startswith("**Kidney Infection \\(Pyelonephritis\\)**")  # the title, as text
    assert f"NIDDK · [{retrieval_url_text(KIDNEY_URL)}]({KIDNEY_URL})" in kidney  # site and a checked link
    assert "CC BY 4\\.0 — MedQuAD by Asma Ben Abacha and Dina Demner" in kidney  # license and attribution
    assert "**fever**" in kidney and "**flank**" in kidney and "**pain**" in kidney  # the case's words in bold
    assert "**chills**" not in kidney and "chills" in kidney  # words not in the case stay plain
    captions = " ".join(_texts(at.caption))
    assert "The model was given the first 2 with the case" in captions

    # The references stand beside the reasoning and the answer: two columns of one row.
    (answer_column,) = columns_holding(at, "acute pyelonephritis")
    (references_column,) = columns_holding(at, "#### References")
    (row,) = [b for b in _blocks(at._tree) if answer_column in b.children.values()]
    assert references_column in row.children.values() and answer_column is not references_column

    saved = saved_run(at, indexed)
    titles = [r["title"] for r in saved["references"]]  # best first, as shown
    assert sorted(titles) == ["<b>Flank</b> **pain** [x](javascript:alert(1))", "Kidney Infection (Pyelonephritis)"]
    assert [c.split("\n")[0].startswith("**Kidney") for c in cards] == [t.startswith("Kidney") for t in titles]
    (kidney_saved,) = [r for r in saved["references"] if r["title"].startswith("Kidney")]
    assert kidney_saved["url"] == KIDNEY_URL and kidney_saved["license"] == "CC BY 4.0"
    assert kidney_saved["site"] == "NIDDK" and "fever" in kidney_saved["text"] and kidney_saved["score"] > 0
    assert saved["settings"]["use_references"] is True

    at.run()  # the finished result keeps showing them
    assert len(reference_cards(at)) == 2


def retrieval_url_text(url: str) -> str:
    from core.quiz_text import md_escape

    return md_escape(url)


def test_references_text_is_escaped_and_odd_urls_are_not_links(indexed):
    at, fake = indexed()
    _generate(_acknowledged(at), CASE)
    odd = card(at, "Flank")
    assert "\\<b\\>Flank\\</b\\>" in odd and "\\*\\*pain\\*\\*" in odd  # the title shows as typed
    assert "](" not in odd.split("\n")[1]  # not linked: shown as plain text
    assert "javascript" in odd and "\\<img" in odd
    for m in at.markdown:
        assert not m.proto.allow_html
        assert "](javascript" not in m.value


def test_toggle_off_keeps_the_references_on_the_page_but_out_of_the_prompt(indexed):
    at, fake = indexed()
    _acknowledged(at)
    at.toggle(key="cs_use_refs").set_value(False).run()
    _generate(at, CASE)
    assert not at.exception
    assert fake.calls[0]["context"] == ""
    assert len(reference_cards(at)) == 2
    assert any("Not given to the model" in c for c in _texts(at.caption))
    saved = saved_run(at, indexed)
    assert saved["settings"]["use_references"] is False and len(saved["references"]) == 2
    assert at.toggle(key="cs_use_refs").value is False  # the choice stays


def test_missing_index_disables_the_toggle_says_why_and_still_answers(env):
    at, fake = env()
    _acknowledged(at)
    toggle = at.toggle(key="cs_use_refs")
    assert toggle.disabled and toggle.value is False
    assert any("there is no reference index yet" in c and "answers without them" in c for c in _texts(at.caption))
    _generate(at, CASE)
    assert not at.exception
    assert fake.calls[0]["context"] == ""
    assert any("acute pyelonephritis" in s.value for s in at.success)
    assert any("no reference index yet" in i for i in _texts(at.info))  # in the References column
    saved = saved_run(at, env)
    assert saved["references"] == [] and saved["answer"] == "acute pyelonephritis"


def test_a_damaged_index_is_refused_with_its_reason_and_a_rebuilt_one_is_picked_up(indexed):
    folder = indexed.settings.prepared_dir / retrieval.INDEX_DIRNAME
    (folder / retrieval.PASSAGES_FILE).write_text("{}", encoding="utf-8")  # garbled after the build
    at, fake = indexed()
    _acknowledged(at)
    assert at.toggle(key="cs_use_refs").disabled
    assert any("damaged" in c for c in _texts(at.caption))
    build_reference_index(indexed.settings.prepared_dir)  # rebuilt: a new manifest
    at.run()
    assert not at.toggle(key="cs_use_refs").disabled and at.toggle(key="cs_use_refs").value is True
    _generate(at, CASE)
    assert "Kidney Infection" in fake.calls[0]["context"]


def test_a_case_of_stop_words_only_has_no_matching_references(indexed):
    at, fake = indexed()
    _generate(_acknowledged(at), STOP_WORDS_ONLY)
    assert not at.exception
    assert any("No matching references" in i for i in _texts(at.info))
    assert not at.error
    assert fake.calls[0]["context"] == ""
    assert saved_run(at, indexed)["references"] == []


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
