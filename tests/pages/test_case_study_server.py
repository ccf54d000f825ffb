"""The case-study page on the ``openai`` backend (AppTest), against the scripted server of :mod:`tests.fake_openai`.

The page loads only the embedded model's tokenizer (no weights) and streams from the server: it says
who served the answer, saves the run with its backend and engine, and turns a server that is down,
silent, or sends malformed chunks into a message, keeping what was written as a failed history row.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session, select

from core.model import resolve_base
from core.prompts import FINAL_ANSWER_MARKER
from core.settings import load_settings
from storage import accounts
from storage.models import CaseRun
from tests.fake_openai import scripted_server
from tests.pages.auth_harness import add_user, app_as, app_environment

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "case_study.py")
CASE = "A 54-year-old woman has fever, dysuria and right flank pain. What is the most likely diagnosis?"


@pytest.fixture()
def page(monkeypatch, tmp_path):
    """Returns ``open(url)``: a fresh AppTest of the page for a signed-in student, the backend at ``url``."""
    default = load_settings(env={})
    resolve_base(default)  # converted once into the project's model cache, which every test shares
    cache = default.model_cache_dir

    def open_page(url: str, **settings: str):
        gen = app_environment(monkeypatch, tmp_path, serving_backend="openai", serving_url=url, max_new_tokens="64",
                              model_cache=str(cache), **settings)
        engine = next(gen)
        student = add_user(engine, "sam")
        with Session(engine) as session:
            accounts.acknowledge_disclaimer(session=session, user_id=student.id)
        at = app_as(student, PAGE)
        at.run()
        open_page.engine = engine
        return at

    yield open_page


def _generate(at, text: str = CASE):
    at.text_area(key="cs_case").set_value(text)
    at.button(key="cs_generate").click().run()
    return at


def _runs(engine) -> list[CaseRun]:
    with Session(engine) as session:
        return list(session.exec(select(CaseRun)).all())


def test_a_served_answer_is_shown_and_saved_with_its_backend(page):
    with scripted_server() as server:
        server.respond = lambda body: [("Flank pain and fever point to the kidney.", None),
                                       ("\n\n" + FINAL_ANSWER_MARKER + " Acute pyelonephritis.", "stop")]
        at = page(server.url)
        assert not at.exception
        assert any("served by llamacpp server at" in c.value for c in at.caption)
        _generate(at)
        assert not at.exception and not at.error
        assert any("Acute pyelonephritis" in s.value for s in at.success)
        (run,) = _runs(page.engine)
    assert run.status == "completed" and run.answer == "Acute pyelonephritis."
    assert run.settings["backend"] == "openai" and run.settings["engine"] == "llamacpp server"
    assert run.adapter == "smollm2-135m-medcot"


def test_a_server_that_is_down_is_a_message_and_nothing_is_lost(page):
    with scripted_server() as server:
        url = server.url
    at = page(url)  # the server has gone: the page still opens and says so
    assert not at.exception
    assert any("not reachable now" in c.value for c in at.caption)
    _generate(at)
    assert not at.exception
    (error,) = at.error
    assert "not reachable" in error.value and "make serve" in error.value and "still working" in error.value
    assert at.text_area(key="cs_case").value == CASE
    assert _runs(page.engine) == []  # nothing was written, so there is nothing to keep


def test_a_malformed_stream_keeps_the_partial_text_as_a_failed_run(page):
    with scripted_server() as server:
        server.respond = lambda body: [("The kidney is involved.", None), b"data: {broken\n\n"]
        at = page(server.url)
        _generate(at)
        assert not at.exception
        (error,) = at.error
        assert "not an OpenAI completion chunk" in error.value
        (run,) = _runs(page.engine)
    assert run.status == "error" and "The kidney is involved." in run.reasoning


def test_a_silent_server_times_out_with_a_message(page):
    with scripted_server() as server:
        server.first_delay_s = 4
        at = page(server.url, serving_first_token_timeout_s="1")
        _generate(at)
        assert not at.exception
        (error,) = at.error
        assert "sent no text for" in error.value
