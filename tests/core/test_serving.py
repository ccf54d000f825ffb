"""Tests for core.serving: the OpenAI-compatible backend against a scripted server on loopback
(:mod:`tests.fake_openai`). tests/core/test_serving_llamacpp.py runs the same backend against a real
llama.cpp server.
"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from core.inference import (
    FORCED_MARKER_TEXT,
    GenerationError,
    GenerationSettings,
    answer_budget,
    marker_ids,
    prompt_ids,
    prompt_text,
)
from core.prompts import FINAL_ANSWER_MARKER
from core.serving import OpenAIBackend
from tests.fake_openai import Scripted, scripted_server
from tests.tiny import make_tiny_tokenizer

CASE = "A 54-year-old woman has fever, dysuria and flank pain. What is the most likely diagnosis?"


@pytest.fixture
def server():
    with scripted_server() as script:
        yield script


@pytest.fixture(scope="module")
def tokenizer():
    return make_tiny_tokenizer()


def _backend(script: Scripted, tokenizer: Any, *, adapter_dir: Path | None = None, **kwargs: Any) -> OpenAIBackend:
    kwargs.setdefault("poll_s", 0.05)
    return OpenAIBackend(url=script.url, tokenizer=tokenizer, base_model="tiny", adapter_dir=adapter_dir, **kwargs)


def _completions(script: Scripted) -> list[dict[str, Any]]:
    return [r["body"] for r in script.requests if r["path"] == "/v1/completions"]


def _run(backend: OpenAIBackend, settings: GenerationSettings, **kwargs: Any) -> list[Any]:
    return list(backend.stream(CASE, settings=settings, **kwargs))


def _endless(word: str = " pain") -> Callable[[dict[str, Any]], list[Any]]:
    """Reasoning without a marker up to max_tokens; the answer once the prompt ends with the marker."""

    def respond(body: dict[str, Any]) -> list[Any]:
        if body["prompt"].endswith(FORCED_MARKER_TEXT):
            return [(" B.", None), (" Antibiotics.", None), ("\n\n", None), ("More.", None), (" And more.", "length")]
        return [(word, None)] * (body["max_tokens"] - 1) + [(word, "length")]

    return respond


def test_the_server_gets_the_trained_prompt_and_a_natural_answer_is_kept(server, tokenizer):
    settings = GenerationSettings(max_new_tokens=64, temperature=0.0)
    events = _run(_backend(server, tokenizer), settings)
    (body,) = _completions(server)
    assert body["prompt"] == prompt_text(tokenizer, CASE)
    # The same tokens the in-process path decodes from (and the trainer trains on).
    assert tokenizer.encode(body["prompt"], add_special_tokens=False) == prompt_ids(tokenizer, CASE)[0].tolist()
    assert body["stream"] is True and body["max_tokens"] == 64 and body["temperature"] == 0.0 and "top_p" not in body
    assert body["lora"] == []  # llama.cpp: no LoRA loaded, none applied
    assert [e.kind for e in events][0] == "started" and events[-1].kind == "done"
    done = events[-1]
    assert done.has_answer and done.answer == "B." and done.reasoning == "Reasoning."
    assert done.forced is None and done.stats.finish_reason == "eos" and done.stats.new_tokens > 0
    assert done.stats.time_to_first_token_s is not None


def test_budget_forcing_cuts_the_reasoning_and_asks_for_the_answer(server, tokenizer):
    server.respond = _endless()
    settings = GenerationSettings(max_new_tokens=96, temperature=0.3, top_p=0.8)
    events = _run(_backend(server, tokenizer), settings)
    first, second = _completions(server)
    budget = answer_budget(96, marker_ids(tokenizer))
    assert first["max_tokens"] == 96 and first["top_p"] == 0.8
    assert second["prompt"].startswith(first["prompt"]) and second["prompt"].endswith(FORCED_MARKER_TEXT)
    reasoning_sent = second["prompt"][len(first["prompt"]):-len(FORCED_MARKER_TEXT)]
    assert len(tokenizer.encode(reasoning_sent, add_special_tokens=False)) == budget.reasoning
    assert second["max_tokens"] == budget.answer
    done = events[-1]
    assert done.forced == "budget" and done.has_answer and done.answer == "B. Antibiotics."
    assert done.stats.finish_reason == "eos" and done.stats.new_tokens <= 96
    assert "More." not in done.text  # the answer ends at its paragraph's end
    assert all(e.forced is None for e in events if FINAL_ANSWER_MARKER not in e.text)
    assert server.disconnects >= 1  # the reasoning stream was abandoned, freeing the server's slot


def test_a_model_that_ends_without_an_answer_is_asked_for_one(server, tokenizer):
    server.respond = lambda body: (
        [(" B. Antibiotics.\n\n", "stop")] if body["prompt"].endswith(FORCED_MARKER_TEXT)
        else [("Pain and fever.", None), ("\n\nNeeds more thought", "stop")])
    done = _run(_backend(server, tokenizer), GenerationSettings(max_new_tokens=200))[-1]
    assert len(_completions(server)) == 2
    assert done.forced == "eos" and done.reasoning == "Pain and fever.\n\nNeeds more thought" and done.answer == "B. Antibiotics."


def test_conclude_now_forces_the_answer_mid_reasoning(server, tokenizer):
    server.respond = _endless()
    server.chunk_delay_s = 0.01
    conclude = threading.Event()
    events = []
    for event in _backend(server, tokenizer).stream(CASE, settings=GenerationSettings(max_new_tokens=400), conclude=conclude):
        events.append(event)
        if event.kind == "text" and len(events) == 5:
            conclude.set()
    done = events[-1]
    assert done.forced == "conclude" and done.answer == "B. Antibiotics."
    assert done.stats.new_tokens < 100


def test_stop_ends_the_stream_without_an_answer(server, tokenizer):
    server.respond = _endless()
    server.chunk_delay_s = 0.01
    stop = threading.Event()
    events = []
    for event in _backend(server, tokenizer).stream(CASE, settings=GenerationSettings(max_new_tokens=400), stop=stop):
        events.append(event)
        if len(events) == 4:
            stop.set()
    done = events[-1]
    assert done.kind == "done" and done.stopped and not done.has_answer and done.forced is None
    assert len(_completions(server)) == 1


def test_a_server_that_is_down_gets_a_clear_message(tokenizer):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    backend = OpenAIBackend(url=f"http://127.0.0.1:{port}/v1", tokenizer=tokenizer, base_model="tiny", adapter_dir=None,
                            connect_timeout_s=1)
    with pytest.raises(GenerationError, match="not reachable.*make serve"):
        list(backend.stream(CASE, settings=GenerationSettings(max_new_tokens=16)))
    assert "not reachable" in backend.describe()


def test_a_silent_server_times_out_with_a_message(server, tokenizer):
    server.first_delay_s = 3
    backend = _backend(server, tokenizer, first_token_timeout_s=1)
    with pytest.raises(GenerationError, match="sent no text for"):
        list(backend.stream(CASE, settings=GenerationSettings(max_new_tokens=16)))


def test_a_stalled_stream_times_out_with_a_message(server, tokenizer):
    server.respond = _endless()
    server.chunk_delay_s = 2
    backend = _backend(server, tokenizer, stall_timeout_s=1)
    with pytest.raises(GenerationError, match="stopped sending text"):
        list(backend.stream(CASE, settings=GenerationSettings(max_new_tokens=16)))


@pytest.mark.parametrize("line", [b"data: {not json}\n\n", b"event: nonsense\n\n", b'data: {"choices": "x"}\n\n',
                                  b'data: {"choices": [{"text": 5}]}\n\n'])
def test_malformed_chunks_are_reported(server, tokenizer, line):
    server.respond = lambda body: [("Some text", None), line]
    with pytest.raises(GenerationError, match="not an OpenAI completion chunk"):
        list(_backend(server, tokenizer).stream(CASE, settings=GenerationSettings(max_new_tokens=16)))


def test_an_error_status_is_shown_with_the_servers_words(server, tokenizer):
    server.status = 500
    with pytest.raises(GenerationError, match="answered 500.*scripted server fails"):
        list(_backend(server, tokenizer).stream(CASE, settings=GenerationSettings(max_new_tokens=16)))


def test_llamacpp_applies_only_the_active_adapter(server, tokenizer, tmp_path):
    adapter = tmp_path / "medcot-run7"
    adapter.mkdir()
    server.loras = [{"id": 0, "path": "/srv/other.abc.lora.gguf", "scale": 0.0},
                    {"id": 1, "path": "/srv/medcot-run7.0123456789ab.lora.gguf", "scale": 0.0}]
    backend = _backend(server, tokenizer, adapter_dir=adapter)
    _run(backend, GenerationSettings(max_new_tokens=16))
    assert _completions(server)[0]["lora"] == [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 1.0}]
    assert backend.info().adapter_served and backend.info().note is None


def test_llamacpp_without_the_adapter_says_to_restart(server, tokenizer, tmp_path):
    adapter = tmp_path / "new-adapter"
    adapter.mkdir()
    server.loras = [{"id": 0, "path": "/srv/medcot.abc.lora.gguf", "scale": 0.0}]
    info = _backend(server, tokenizer, adapter_dir=adapter).info()
    assert not info.adapter_served and "Restart" in info.note and info.request["lora"] == [{"id": 0, "scale": 0.0}]


def test_the_serve_manifest_maps_lora_ids_to_adapter_folders(server, tokenizer, tmp_path):
    adapter = tmp_path / "renamed"
    adapter.mkdir()
    server.loras = [{"id": 0, "path": "/cache/0f0f.lora.gguf", "scale": 0.0}]
    manifest = tmp_path / "server.json"
    manifest.write_text(json.dumps({"url": server.url, "loras": [{"id": 0, "adapter_dir": str(adapter)}]}))
    assert _backend(server, tokenizer, adapter_dir=adapter, manifest_path=manifest).info().adapter_served
    manifest.write_text(json.dumps({"url": "http://elsewhere:1/v1", "loras": [{"id": 0, "adapter_dir": str(adapter)}]}))
    assert not _backend(server, tokenizer, adapter_dir=adapter, manifest_path=manifest).info().adapter_served


def test_vllm_loads_the_adapter_at_run_time_and_serves_it_by_name(server, tokenizer, tmp_path):
    server.owned_by = "vllm"
    adapter = tmp_path / "medcot"
    adapter.mkdir()
    backend = _backend(server, tokenizer, adapter_dir=adapter)
    _run(backend, GenerationSettings(max_new_tokens=16))
    load, completion = server.requests[0], _completions(server)[0]
    assert load["path"] == "/v1/load_lora_adapter" and load["body"] == {"lora_name": "medcot", "lora_path": str(adapter)}
    assert completion["model"] == "medcot" and "lora" not in completion


def test_vllm_refusing_the_adapter_says_how_to_serve_it(server, tokenizer, tmp_path):
    server.owned_by, server.load_status = "vllm", 400
    adapter = tmp_path / "medcot"
    adapter.mkdir()
    info = _backend(server, tokenizer, adapter_dir=adapter).info()
    assert not info.adapter_served and info.model == "smollm2" and "VLLM_ALLOW_RUNTIME_LORA_UPDATING" in info.note


def test_the_api_key_comes_from_the_named_environment_variable(server, tokenizer, monkeypatch):
    monkeypatch.setenv("MY_KEY_VAR", "sekrit")
    _run(_backend(server, tokenizer, api_key_env="MY_KEY_VAR"), GenerationSettings(max_new_tokens=8))
    monkeypatch.delenv("MY_KEY_VAR")
    _run(_backend(server, tokenizer, api_key_env="MY_KEY_VAR"), GenerationSettings(max_new_tokens=8))
    with_key, without = [r["auth"] for r in server.requests]
    assert with_key == "Bearer sekrit" and without is None


def test_concurrent_streams_are_sent_at_once_not_queued(server, tokenizer):
    server.gate = threading.Barrier(4)
    backend = _backend(server, tokenizer)
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(_run(backend, GenerationSettings(max_new_tokens=8))[-1]))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(results) == 4 and all(r.has_answer for r in results)
    assert server.most_streaming == 4  # all four were open at the server at once: the client queues nothing
