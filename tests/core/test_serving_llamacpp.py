"""The OpenAI backend against a real llama.cpp server: the embedded GGUF with the shipped adapter as a LoRA.

One ``llama-server`` (built by ``scripts/build_llama_server.sh``, which ``make test`` runs) serves the
module, with 4 parallel slots. Checked through :class:`core.serving.OpenAIBackend`, the class the
pages use: the server gets the adapter applied (its greedy text differs from the base's and
matches the in-process model's first tokens), budget forcing ends every run with a final answer
within ``max_new_tokens``, Stop frees the slot for the next request, and four students at once are
decoded together (the server's slots are all busy at the same moment).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from core import llamacpp
from core import model as model_lib
from core.inference import GenerationSettings, prompt_ids
from core.model import DEFAULT_ADAPTER_DIR, find_embedded_gguf, sha256_file
from core.serving import OpenAIBackend
from core.settings import load_settings

CASE = ("A 25-year-old woman has fever, dysuria and right flank pain; urine shows nitrites and white cells. "
        "What is the most likely diagnosis?")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if llamacpp.find_llama_server() is None:
        pytest.fail("llama-server is missing: run `bash scripts/build_llama_server.sh` (make test does)")
    tmp = tmp_path_factory.mktemp("llamacpp")
    gguf = find_embedded_gguf()
    lora = llamacpp.export_for_serving(DEFAULT_ADAPTER_DIR, tmp, base_gguf=gguf, base_sha=sha256_file(gguf))
    with llamacpp.LlamaServer(model=gguf, loras=[lora], port=0, parallel=4, threads=2, ctx_per_slot=2048,
                              log_path=tmp / "llama-server.log") as srv:
        yield srv


@pytest.fixture(scope="module")
def tokenizer():
    return model_lib.load_tokenizer(model_lib.resolve_base(load_settings(env={})))


def _backend(server, tokenizer, adapter: Path | None = DEFAULT_ADAPTER_DIR, **kwargs) -> OpenAIBackend:
    return OpenAIBackend(url=server.openai_url, tokenizer=tokenizer, base_model="embedded", adapter_dir=adapter,
                         **kwargs)


def test_the_adapter_is_applied_and_agrees_with_the_in_process_model(server, tokenizer):
    import torch

    greedy = GenerationSettings(max_new_tokens=24, temperature=0.0, answer_allowance=0)
    adapted = list(_backend(server, tokenizer).stream(CASE, settings=greedy))[-1]
    base = list(_backend(server, tokenizer, adapter=None).stream(CASE, settings=greedy))[-1]
    assert adapted.text and base.text and adapted.text != base.text

    # The same adapter merged in fp32 in this process, greedy from the same prompt tokens.
    mdl, tok = model_lib.load_model(model_lib.resolve_base(load_settings(env={})), adapter_dir=DEFAULT_ADAPTER_DIR,
                                    device="cpu", merge=True)
    ids = prompt_ids(tok, CASE)
    with torch.inference_mode():
        out = mdl.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False)
    reference = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    served = tok.encode(adapted.text, add_special_tokens=False)[:8]
    # 4-bit base + LoRA in llama.cpp against fp32 merged weights: the first tokens agree.
    assert served == tok.encode(reference, add_special_tokens=False)[:8], (adapted.text, reference)


def test_every_run_ends_with_a_final_answer_within_the_budget(server, tokenizer):
    done = list(_backend(server, tokenizer).stream(CASE, settings=GenerationSettings(max_new_tokens=96,
                                                                                     temperature=0.0)))[-1]
    assert done.kind == "done" and done.has_answer and done.answer.strip()
    assert done.stats.new_tokens <= 96 and done.stats.finish_reason in ("eos", "length")
    if done.forced:
        assert done.forced in ("budget", "eos")


def test_stop_frees_the_slot_for_the_next_request(server, tokenizer):
    stop = threading.Event()
    events = []
    backend = _backend(server, tokenizer, request_extra={"ignore_eos": True})
    for event in backend.stream(CASE, settings=GenerationSettings(max_new_tokens=2000, answer_allowance=0), stop=stop):
        events.append(event)
        if len(events) == 5:
            stop.set()
    assert events[-1].stopped and events[-1].stats.new_tokens < 100
    follow = list(backend.stream(CASE, settings=GenerationSettings(max_new_tokens=8, answer_allowance=0)))[-1]
    assert follow.stats.new_tokens == 8


def test_four_students_are_decoded_together(server, tokenizer):
    backend = _backend(server, tokenizer, request_extra={"ignore_eos": True})
    settings = GenerationSettings(max_new_tokens=64, temperature=0.0, answer_allowance=0)
    busy_seen: list[int] = []
    results: list[object] = []
    done = threading.Event()

    def watch() -> None:  # the server's own view: how many slots are processing at once
        while not done.is_set():
            status, slots = llamacpp.get_json(f"{server.base_url}/slots")
            if status == 200:
                busy_seen.append(sum(1 for s in slots if s.get("is_processing")))

    def student() -> None:
        results.append(list(backend.stream(CASE, settings=settings))[-1])

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    threads = [threading.Thread(target=student) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    done.set()
    watcher.join(timeout=10)
    assert len(results) == 4 and all(r.stats.new_tokens == 64 for r in results)
    assert max(busy_seen) == 4
