"""Tests for core.inference: streaming, parsing while streaming, stop, the model lock, serving plans, adapters.

Models are tiny Llamas built from a config in code, with a byte-level BPE tokenizer trained in
code on a few sentences (no hub, no network). A "scripted" model replays fixed token ids through
the real streamer, to test parsing on text we choose.
"""

from __future__ import annotations

import json
import threading
import types
from pathlib import Path

import pytest
import torch

from core import inference
from core.inference import GenerationError, GenerationSettings, ServingPlan, StreamEvent
from core.prompts import FINAL_ANSWER_MARKER, PROMPT_FORMAT_VERSION
from core.records import Record, write_jsonl
from tests.tiny import make_tiny_tokenizer

@pytest.fixture(scope="module")
def tokenizer():
    return make_tiny_tokenizer()


def _tiny_model(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).eval()
    # Random weights may emit the end-of-turn token at any step; without an EOS the stream always
    # runs to max_new_tokens, which keeps these tests deterministic.
    model.generation_config.eos_token_id = None
    return model


def Served(model, tokenizer) -> inference.ModelServer:  # noqa: N802 - reads like the object it returns
    """``model`` served with ``tokenizer``: the server that prepare_for_serving made (its decoder kept), or a
    plain one for a model served as loaded."""
    if isinstance(model, inference.ModelServer):
        model.tokenizer = tokenizer
        return model
    return inference.ModelServer(model, tokenizer)


class ScriptedModel:
    """Replays ``token_ids`` through the streamer like ``generate`` does (prompt first, then one token a step).

    With ``eos`` the script may end its turn: that id is the model's end-of-sequence token (a script
    ends with it; only stopping criteria end a replay early).
    """

    def __init__(self, token_ids: list[int], *, fail_at: int | None = None, eos: int | None = None):
        self.token_ids = token_ids
        self.fail_at = fail_at
        self.calls: list[dict] = []
        if eos is not None:
            self.generation_config = types.SimpleNamespace(eos_token_id=eos)

    def parameters(self):
        yield torch.zeros(1)

    def generate(self, *, input_ids, streamer, stopping_criteria, max_new_tokens, **kwargs):
        self.calls.append({"max_new_tokens": max_new_tokens, "input_ids": input_ids[0].tolist(), **kwargs})
        streamer.put(input_ids)
        ids = input_ids
        for i, token in enumerate(self.token_ids[:max_new_tokens]):
            if i == self.fail_at:
                raise RuntimeError("simulated kernel failure")
            step = torch.tensor([[token]])
            ids = torch.cat([ids, step], dim=1)
            streamer.put(step[0])
            if any(bool(criterion(ids, None).all()) for criterion in stopping_criteria):
                break
        streamer.end()
        return ids


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return _tiny_model(len(tokenizer))


# -- settings and small helpers ------------------------------------------------------------------


def test_settings_are_clamped_to_the_cap_and_valid_ranges():
    s = GenerationSettings(max_new_tokens=5000, temperature=-1, top_p=3).clamped(cap=768)
    assert (s.max_new_tokens, s.temperature, s.top_p) == (768, 0.0, 1.0)
    assert GenerationSettings(max_new_tokens=0).clamped(cap=768).max_new_tokens == 1
    assert GenerationSettings(max_new_tokens=100).clamped(cap=768).max_new_tokens == 100


def test_test_cases_absent_then_read(tmp_path):
    assert inference.load_test_cases(tmp_path) is None
    rec = Record(id="x:1", source="x", license="MIT", question="Which?", kind="mcq", options={"A": "a", "B": "b"})
    write_jsonl(tmp_path / "test.jsonl", [rec, Record(id="x:2", source="x", license="MIT", question="  ")])
    cases = inference.load_test_cases(tmp_path)
    assert [c.id for c in cases] == ["x:1"]
    text = inference.case_text_for(cases[0])
    assert text.startswith("Which?") and "A. a\nB. b" in text


# -- parsing while streaming -------------------------------------------------------------------------


def _scripted(tokenizer, completion: str, **kwargs) -> tuple[Served, ScriptedModel]:
    ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    model = ScriptedModel(ids, **kwargs)
    return Served(model, tokenizer), model


def test_stream_splits_reasoning_and_answer_and_never_leaks_a_partial_marker(tokenizer):
    completion = "Fever and flank pain suggest infection.\nThe differential includes renal colic.\n\nFinal answer: acute pyelonephritis"
    served, _ = _scripted(tokenizer, completion)
    events = list(inference.stream_case("case", served=served, settings=GenerationSettings(max_new_tokens=500)))
    kinds = [e.kind for e in events]
    assert kinds[0] == "started" and kinds[-1] == "done" and kinds.count("done") == 1
    texts = [e for e in events if e.kind == "text"]
    assert len(texts) > 3
    for e in texts:
        assert "Final" not in e.reasoning, e.reasoning  # a partial marker is held back, never shown as reasoning
        if not e.has_answer:
            assert e.answer == ""
    assert any(not e.has_answer for e in texts) and any(e.has_answer for e in texts)
    done = events[-1]
    assert done.reasoning == "Fever and flank pain suggest infection.\nThe differential includes renal colic."
    assert done.answer == "acute pyelonephritis" and done.has_answer
    assert done.text == completion
    assert done.stats.finish_reason == "eos"
    assert done.stats.new_tokens == len(tokenizer(completion, add_special_tokens=False)["input_ids"])
    assert done.stats.prompt_tokens > 10
    assert done.stats.time_to_first_token_s is not None and done.stats.time_to_first_token_s >= 0
    assert not served.lock.locked()


def test_no_marker_means_everything_is_reasoning(tokenizer):
    served, _ = _scripted(tokenizer, "It is probably an infection. Final thoughts: unsure")
    done = list(inference.stream_case("case", served=served, settings=GenerationSettings()))[-1]
    assert not done.has_answer and done.answer == ""
    assert done.reasoning == "It is probably an infection. Final thoughts: unsure"


def test_greedy_and_sampling_arguments_reach_generate(tokenizer):
    served, model = _scripted(tokenizer, "x")
    list(inference.stream_case("c", served=served, settings=GenerationSettings(max_new_tokens=7, temperature=0)))
    list(inference.stream_case("c", served=served, settings=GenerationSettings(temperature=0.5, top_p=0.8)))
    greedy, sampled = model.calls
    assert greedy["do_sample"] is False and greedy["max_new_tokens"] == 7 and "temperature" not in greedy
    assert sampled["do_sample"] is True and sampled["temperature"] == 0.5 and sampled["top_p"] == 0.8


def test_generation_error_is_reported_and_the_model_is_freed(tokenizer):
    served, _ = _scripted(tokenizer, "one two three four five six", fail_at=2)
    with pytest.raises(GenerationError, match="simulated kernel failure"):
        list(inference.stream_case("case", served=served, settings=GenerationSettings()))
    assert not served.lock.locked()
    # and the model is usable again
    served.model.fail_at = None
    assert list(inference.stream_case("case", served=served, settings=GenerationSettings()))[-1].kind == "done"


# -- a real (tiny) model: lengths, stop, lock ---------------------------------------------------------


def test_real_generation_runs_to_max_new_tokens(tiny, tokenizer):
    served = Served(tiny, tokenizer)
    events = list(inference.stream_case("A case.", served=served, settings=GenerationSettings(max_new_tokens=12, temperature=0)))
    done = events[-1]
    assert done.kind == "done" and done.stats.finish_reason == "length"
    assert done.stats.new_tokens == 12
    assert done.stats.tokens_per_s is not None and done.stats.tokens_per_s > 0
    # greedy decoding is deterministic
    again = list(inference.stream_case("A case.", served=served, settings=GenerationSettings(max_new_tokens=12, temperature=0)))
    assert again[-1].text == done.text


def test_stop_event_ends_generation_early(tiny, tokenizer):
    served = Served(tiny, tokenizer)
    stop = threading.Event()
    events = []
    for event in inference.stream_case("A case.", served=served, settings=GenerationSettings(max_new_tokens=400), stop=stop):
        events.append(event)
        if event.kind == "started":
            stop.set()
    done = events[-1]
    assert done.kind == "done" and done.stopped
    assert done.stats.new_tokens < 400
    assert not served.lock.locked()


def test_closing_the_stream_stops_the_worker_and_frees_the_model(tiny, tokenizer):
    served = Served(tiny, tokenizer)
    stop = threading.Event()
    stream = inference.stream_case("A case.", served=served, settings=GenerationSettings(max_new_tokens=400), stop=stop)
    assert next(stream).kind == "started"
    assert served.lock.locked()
    stream.close()  # what happens when a page rerun abandons the loop
    assert stop.is_set()
    assert not served.lock.locked()
    # the worker really finished: a new generation gets the model at once
    first = next(inference.stream_case("A case.", served=served, settings=GenerationSettings(max_new_tokens=2)))
    assert first.kind == "started"


def test_second_caller_waits_for_the_model_instead_of_failing(tiny, tokenizer):
    served = Served(tiny, tokenizer)
    served.lock.acquire()  # another student's generation holds the model
    stream = inference.stream_case("A case.", served=served, settings=GenerationSettings(max_new_tokens=3), poll_s=0.01)
    assert next(stream).kind == "waiting"
    assert next(stream).kind == "waiting"
    served.lock.release()
    rest = list(stream)
    assert [e.kind for e in rest if e.kind != "waiting"][0] == "started"
    assert rest[-1].kind == "done" and rest[-1].stats.new_tokens == 3
    assert rest[-1].stats.waited_s > 0
    assert not served.lock.locked()


def test_stop_while_waiting_ends_without_generating(tiny, tokenizer):
    served = Served(tiny, tokenizer)
    served.lock.acquire()
    stop = threading.Event()
    stream = inference.stream_case("A case.", served=served, settings=GenerationSettings(), stop=stop, poll_s=0.01)
    assert next(stream).kind == "waiting"
    stop.set()
    rest = list(stream)
    assert rest[-1].kind == "done" and rest[-1].stopped and rest[-1].stats.new_tokens == 0
    assert served.lock.locked()  # still the other caller's
    served.lock.release()


def test_case_run_records_everything_history_needs():
    event = StreamEvent(
        "done",
        text="Reasoning here.\nFinal answer: B",
        stats=inference.GenerationStats(prompt_tokens=9, new_tokens=8, time_to_first_token_s=0.1, tokens_per_s=30.0, finish_reason="eos"),
    )
    settings = GenerationSettings(max_new_tokens=64, temperature=0.2, top_p=0.9)
    run = inference.case_run(event, case_text="case", base_model="base-id", adapter="none", settings=settings, example_id="x:1")
    d = run.to_dict()
    assert d["reasoning"] == "Reasoning here." and d["answer"] == "B" and d["has_answer"]
    assert d["settings"] == {"max_new_tokens": 64, "temperature": 0.2, "top_p": 0.9, "answer_allowance": 64}
    assert d["stats"]["tokens_per_s"] == 30.0 and d["stats"]["finish_reason"] == "eos"
    assert (d["base_model"], d["adapter"], d["example_id"], d["stopped"]) == ("base-id", "none", "x:1", False)
    stopped = inference.case_run(event, case_text="c", base_model="b", adapter="a", settings=settings, stopped=True)
    assert stopped.stopped and stopped.stats["finish_reason"] == "stopped"
    json.dumps(d)  # storable as JSON


def test_case_run_carries_forcing_and_references_into_history():
    event = StreamEvent(
        "done",
        text="Reasoning.\n\nFinal answer: B",
        stats=inference.GenerationStats(new_tokens=20, finish_reason="eos", forced="budget"),
    )
    refs = [{"id": "ref:1", "title": "Heparin", "text": "Protamine reverses heparin.", "score": 3.5}]
    run = inference.case_run(event, case_text="c", base_model="b", adapter="a", settings=GenerationSettings(),
                             references=refs)
    fields = run.history_fields()
    assert run.forced == event.forced == "budget"
    assert fields["timings"]["forced"] == "budget" and fields["references"] == refs
    plain = inference.case_run(StreamEvent("done", text="x", stats=inference.GenerationStats(finish_reason="eos")),
                               case_text="c", base_model="b", adapter="a", settings=GenerationSettings())
    assert plain.history_fields()["timings"]["forced"] is None and plain.history_fields()["references"] == []
    json.dumps(fields)


# -- budget forcing ----------------------------------------------------------------------------------


def test_default_budget_fits_the_app_cap_and_splits_into_reasoning_and_answer(tokenizer):
    from core.settings import Settings

    default = GenerationSettings()
    assert default.max_new_tokens == 768 <= Settings().max_new_tokens
    assert default.clamped(cap=Settings().max_new_tokens) == default
    marker = inference.marker_ids(tokenizer)
    assert tokenizer.decode(marker) == "\n\n" + FINAL_ANSWER_MARKER
    budget = inference.answer_budget(768, marker)
    allowance = inference.ANSWER_ALLOWANCE
    assert (budget.reasoning, budget.answer) == (768 - allowance, allowance - len(marker))
    assert budget.reasoning + len(marker) + budget.answer == 768
    small = inference.answer_budget(20, marker)  # at most half of a small budget is kept for the answer
    assert (small.reasoning, small.answer) == (10, 10 - len(marker))
    assert not inference.answer_budget(8, marker).can_force  # no room for an answer after the marker
    assert not inference.answer_budget(768, marker, allowance=0).can_force
    assert inference.answer_budget(8, marker).reasoning == 8


def test_forcing_decisions_are_pure_functions_of_text_and_count(tokenizer):
    budget = inference.answer_budget(100, inference.marker_ids(tokenizer))
    assert budget.reasoning == 50
    assert not inference.needs_forcing("thinking", 49, budget)
    assert inference.needs_forcing("thinking", 50, budget)
    assert not inference.needs_forcing("thinking.\n\nFinal answer: B", 50, budget)
    assert not inference.answer_complete(" B. Protamine")
    assert not inference.answer_complete("\n\n B. Protamine\n")  # blank lines before the text do not end it
    assert inference.answer_complete(" B. Protamine sulfate.\n\nBecause")
    assert inference.answer_complete(" B.  \n \n")


def test_the_gate_ignores_conclude_once_the_model_wrote_its_own_marker(tokenizer):
    budget = inference.answer_budget(100, inference.marker_ids(tokenizer))
    conclude = threading.Event()
    conclude.set()
    natural = tokenizer.encode("Pain.\n\nFinal answer: B", add_special_tokens=False)
    gate = inference._ReasoningGate(tokenizer, budget, stop=threading.Event(), conclude=conclude)
    assert not gate.ends(len(natural), lambda: natural) and gate.forced is None
    assert not gate.ends(99, lambda: natural)  # and not at the budget either: it runs to the full budget
    thinking = tokenizer.encode("Pain and fever", add_special_tokens=False)
    gate = inference._ReasoningGate(tokenizer, budget, stop=threading.Event(), conclude=conclude)
    assert gate.ends(len(thinking), lambda: thinking) and gate.forced == "conclude"


def _tokens(tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False))


def _lean(tokenizer, seed: int = 0):
    plan = ServingPlan("fp32", max_cache_len=512, decoder=True)
    server = inference.prepare_for_serving(_tiny_model(len(tokenizer), seed=seed), plan, tokenizer=tokenizer)
    assert server.decoder is not None
    return server


@pytest.mark.parametrize("path", ["generate", "decoder"])
def test_a_model_that_never_concludes_gets_a_forced_final_answer_within_the_budget(tiny, tokenizer, path):
    model = tiny if path == "generate" else _lean(tokenizer)
    assert (Served(model, tokenizer).decoder is not None) == (path == "decoder")
    settings = GenerationSettings(max_new_tokens=90, temperature=0)
    budget = inference.answer_budget(90, inference.marker_ids(tokenizer))
    events = list(inference.stream_case("A case.", served=Served(model, tokenizer), settings=settings))
    done = events[-1]
    assert done.forced == "budget" and done.has_answer and done.stats.forced == "budget"
    assert done.stats.new_tokens <= 90
    reasoning_text, _, _ = done.text.rpartition("\n\n" + FINAL_ANSWER_MARKER)
    assert _tokens(tokenizer, reasoning_text) <= budget.reasoning + 1  # + 1: a token may re-merge at the cut
    assert done.stats.finish_reason in ("eos", "length")
    # The page saw the reasoning unforced, then the marker arrive with the forced flag.
    texts = [e for e in events if e.kind == "text"]
    assert any(e.forced is None and not e.has_answer for e in texts)
    assert all(e.forced == "budget" for e in texts if FINAL_ANSWER_MARKER in e.text)
    assert not Served(model, tokenizer).lock.locked()


def test_both_paths_force_the_same_greedy_answer(tiny, tokenizer):
    settings = GenerationSettings(max_new_tokens=90, temperature=0)
    plain, lean = (
        list(inference.stream_case("A case.", served=Served(model, tokenizer), settings=settings))[-1]
        for model in (_tiny_model(len(tokenizer), seed=4), _lean(tokenizer, seed=4))
    )
    assert plain.forced == lean.forced == "budget" and plain.text == lean.text


def test_no_allowance_means_no_forcing(tiny, tokenizer):
    settings = GenerationSettings(max_new_tokens=40, temperature=0, answer_allowance=0)
    done = list(inference.stream_case("A case.", served=Served(tiny, tokenizer), settings=settings))[-1]
    assert done.forced is None and FINAL_ANSWER_MARKER not in done.text and done.stats.new_tokens == 40


@pytest.mark.parametrize("path", ["generate", "decoder"])
def test_conclude_forces_the_answer_at_once(tiny, tokenizer, path):
    model = tiny if path == "generate" else _lean(tokenizer)
    conclude = threading.Event()
    events = []
    settings = GenerationSettings(max_new_tokens=400, temperature=0)
    served = Served(model, tokenizer)
    for event in inference.stream_case("A case.", served=served, settings=settings, conclude=conclude):
        events.append(event)
        if event.kind == "started":
            conclude.set()
    done = events[-1]
    budget = inference.answer_budget(400, inference.marker_ids(tokenizer))
    assert done.forced == "conclude" and done.has_answer and not done.stopped
    # Far short of the reasoning budget: the reasoning ended when the button was pressed.
    assert done.stats.new_tokens < budget.reasoning
    assert done.stats.new_tokens <= 400


def test_a_natural_marker_runs_on_to_the_full_budget_unforced(tokenizer):
    completion = "Fever.\n\nFinal answer: B. " + " ".join(["Start antibiotics."] * 30)
    served, model = _scripted(tokenizer, completion)
    n = _tokens(tokenizer, completion)
    budget_tokens = n - 5  # the marker comes well before the reasoning budget; the answer runs past it
    budget = inference.answer_budget(budget_tokens, inference.marker_ids(tokenizer))
    assert budget.reasoning > _tokens(tokenizer, "Fever.\n\nFinal answer:")
    events = list(inference.stream_case("c", served=served, settings=GenerationSettings(max_new_tokens=budget_tokens)))
    done = events[-1]
    assert done.forced is None and all(e.forced is None for e in events)
    assert done.stats.new_tokens == budget_tokens and done.stats.finish_reason == "length"
    assert len(model.calls) == 1  # one phase only


def test_forced_answer_phase_reruns_prompt_reasoning_and_marker_and_stops_at_a_blank_line(tokenizer):
    # The scripted model replays the same tokens in both phases: its "answer" is the script's start.
    completion = "Pain and fever.\n\nNeeds more thought about infection and the differential of colic " * 4
    served, model = _scripted(tokenizer, completion)
    marker = inference.marker_ids(tokenizer)
    settings = GenerationSettings(max_new_tokens=60, temperature=0)
    budget = inference.answer_budget(60, marker)
    done = list(inference.stream_case("c", served=served, settings=settings))[-1]
    assert done.forced == "budget" and len(model.calls) == 2
    first, second = model.calls
    prompt = first["input_ids"]
    assert first["max_new_tokens"] == 60 and second["max_new_tokens"] == budget.answer
    script = tokenizer.encode(completion, add_special_tokens=False)
    assert second["input_ids"] == prompt + script[: budget.reasoning] + marker
    # The answer phase stopped after its first paragraph ("Pain and fever." then a blank line).
    assert done.answer == "Pain and fever." and done.stats.finish_reason == "eos"
    assert done.stats.new_tokens == budget.reasoning + len(marker) + _tokens(tokenizer, "Pain and fever.\n\n")


def test_stop_still_ends_without_a_forced_answer(tiny, tokenizer):
    stop, conclude = threading.Event(), threading.Event()
    events = []
    settings = GenerationSettings(max_new_tokens=400, temperature=0)
    for event in inference.stream_case("A case.", served=Served(tiny, tokenizer), settings=settings, stop=stop,
                                       conclude=conclude):
        events.append(event)
        if event.kind == "started":
            stop.set()
            conclude.set()  # stop wins over conclude
    done = events[-1]
    assert done.stopped and done.forced is None and not done.has_answer and FINAL_ANSWER_MARKER not in done.text


# -- a model that ends its turn without concluding ---------------------------------------------------


def test_an_early_end_without_a_marker_is_forced_and_the_answer_keeps_to_the_budget(tokenizer):
    budget = inference.answer_budget(100, inference.marker_ids(tokenizer))
    assert inference.needs_forcing("thinking", 3, budget, ended=True)  # long before the reasoning share
    assert not inference.needs_forcing("thinking", 3, budget)  # still reasoning: not yet
    assert not inference.needs_forcing("thinking.\n\nFinal answer: B", 3, budget, ended=True)  # it concluded
    never = inference.answer_budget(100, inference.marker_ids(tokenizer), allowance=0)
    assert not inference.needs_forcing("thinking", 3, never, ended=True)  # allowance 0 never forces
    assert inference.answer_room(budget, 3) == inference.answer_room(budget, budget.reasoning) == budget.answer
    assert budget.reasoning + len(budget.marker) + inference.answer_room(budget, budget.reasoning) == budget.total
    assert inference.answer_room(budget, budget.total - len(budget.marker) - 2) == 2  # never past the total
    assert inference.answer_room(budget, budget.total) == 0 and inference.answer_room(never, 3) == 0


def _eos_id(tokenizer) -> int:
    return tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_a_model_that_ends_its_turn_without_concluding_is_asked_for_an_answer(tokenizer):
    # The scripted model replays the same tokens in both phases: its "answer" is the script's start.
    eos = _eos_id(tokenizer)
    script = tokenizer.encode("Pain and fever.\n\nNeeds more thought", add_special_tokens=False) + [eos]
    model = ScriptedModel(script, eos=eos)
    marker = inference.marker_ids(tokenizer)
    budget = inference.answer_budget(200, marker)
    events = list(inference.stream_case("c", served=Served(model, tokenizer),
                                        settings=GenerationSettings(max_new_tokens=200, temperature=0)))
    done = events[-1]
    assert done.forced == done.stats.forced == "eos" and done.has_answer and not done.stopped
    first, second = model.calls
    # Phase 2 continues the reasoning (the end-of-turn token left out) after the marker, within the allowance.
    assert second["input_ids"] == first["input_ids"] + script[:-1] + marker
    assert second["max_new_tokens"] == budget.answer
    assert done.reasoning == "Pain and fever.\n\nNeeds more thought" and done.answer == "Pain and fever."
    assert done.text == "Pain and fever.\n\nNeeds more thought\n\n" + FINAL_ANSWER_MARKER + "Pain and fever.\n\n"
    # The end-of-turn token was decoded: it counts.
    assert done.stats.new_tokens == len(script) + len(marker) + _tokens(tokenizer, "Pain and fever.\n\n") <= 200
    assert done.stats.finish_reason == "eos"
    texts = [e for e in events if e.kind == "text"]
    assert any(e.forced is None and not e.has_answer for e in texts)
    assert all(e.forced == "eos" for e in texts if FINAL_ANSWER_MARKER in e.text)
    run = inference.case_run(done, case_text="c", base_model="b", adapter="a", settings=GenerationSettings())
    assert run.forced == run.history_fields()["timings"]["forced"] == "eos"


def test_an_early_end_at_the_edge_of_the_reasoning_share_stays_within_max_new_tokens(tokenizer):
    eos = _eos_id(tokenizer)
    marker = inference.marker_ids(tokenizer)
    budget = inference.answer_budget(60, marker)
    words = tokenizer.encode(" infection and colic" * 40, add_special_tokens=False)
    script = words[: budget.reasoning - 1] + [eos]  # the turn ends on the last token of the reasoning share
    model = ScriptedModel(script, eos=eos)
    done = list(inference.stream_case("c", served=Served(model, tokenizer),
                                      settings=GenerationSettings(max_new_tokens=60, temperature=0)))[-1]
    assert done.forced == "eos" and model.calls[1]["max_new_tokens"] == budget.answer
    # No blank line in the replayed answer: it runs to its room, and reasoning + marker + answer is the budget.
    assert done.stats.new_tokens == 60 and done.stats.finish_reason == "length"


def test_an_early_end_after_a_natural_answer_or_without_an_allowance_is_left_alone(tokenizer):
    eos = _eos_id(tokenizer)
    natural = ScriptedModel(tokenizer.encode("Pain.\n\nFinal answer: B", add_special_tokens=False) + [eos], eos=eos)
    done = list(inference.stream_case("c", served=Served(natural, tokenizer), settings=GenerationSettings()))[-1]
    assert done.forced is None and done.answer == "B" and len(natural.calls) == 1
    thinking = tokenizer.encode("Pain and fever", add_special_tokens=False) + [eos]
    never = ScriptedModel(thinking, eos=eos)
    done = list(inference.stream_case("c", served=Served(never, tokenizer),
                                      settings=GenerationSettings(answer_allowance=0)))[-1]
    assert done.forced is None and not done.has_answer and len(never.calls) == 1
    tiny_budget = ScriptedModel(thinking, eos=eos)  # 8 tokens cannot hold the marker and an answer
    done = list(inference.stream_case("c", served=Served(tiny_budget, tokenizer),
                                      settings=GenerationSettings(max_new_tokens=8)))[-1]
    assert done.forced is None and not done.has_answer and len(tiny_budget.calls) == 1


def _ends_its_turn_early(tokenizer, *, seed: int = 1, after: int = 6, lean: bool = False):
    """A tiny Llama (own output head) that ends its turn after about ``after`` greedy tokens of "A case.",
    with no marker: its output row for <|im_end|> is the row, scaled up, of a token it writes there."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         tie_word_embeddings=False)  # a tied head would move the prompt's embeddings too
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = None
    ids = inference.prompt_ids(tokenizer, "A case.")
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4 * after,
                             do_sample=False, pad_token_id=0)
        new = out[0, ids.shape[1]:].tolist()
        first_new = next(i for i in range(after, len(new)) if new[i] not in new[:i])
        model.lm_head.weight[_eos_id(tokenizer)] = 1.5 * model.lm_head.weight[new[first_new]]
    model.generation_config.eos_token_id = _eos_id(tokenizer)
    if lean:
        server = inference.prepare_for_serving(model, ServingPlan("fp32", max_cache_len=512, decoder=True))
        assert server.decoder is not None
        return server
    return model


@pytest.mark.parametrize("path", ["generate", "decoder"])
def test_a_real_model_that_ends_early_gets_a_final_answer_on_both_paths(tokenizer, path):
    model = _ends_its_turn_early(tokenizer, lean=path == "decoder")
    settings = GenerationSettings(max_new_tokens=90, temperature=0)
    budget = inference.answer_budget(90, inference.marker_ids(tokenizer))
    done = list(inference.stream_case("A case.", served=Served(model, tokenizer), settings=settings))[-1]
    assert done.forced == "eos" and done.has_answer and done.answer.strip() and not done.stopped
    assert done.stats.new_tokens <= 90
    reasoning_text, _, _ = done.text.rpartition("\n\n" + FINAL_ANSWER_MARKER)
    assert 0 < _tokens(tokenizer, reasoning_text) < budget.reasoning  # it ended long before the budget
    # Without an allowance the same model just ends: the forcing above is what gave it an answer.
    bare = list(inference.stream_case("A case.", served=Served(model, tokenizer),
                                      settings=GenerationSettings(max_new_tokens=90, temperature=0,
                                                                  answer_allowance=0)))[-1]
    assert bare.forced is None and not bare.has_answer and bare.stats.finish_reason == "eos"
    assert bare.text == reasoning_text


def test_both_paths_force_the_same_answer_after_an_early_end(tokenizer):
    settings = GenerationSettings(max_new_tokens=90, temperature=0)
    plain, lean = (
        list(inference.stream_case("A case.", served=Served(model, tokenizer), settings=settings))[-1]
        for model in (_ends_its_turn_early(tokenizer, seed=2), _ends_its_turn_early(tokenizer, seed=2, lean=True))
    )
    assert plain.forced == lean.forced == "eos" and plain.text == lean.text
    assert plain.stats.new_tokens == lean.stats.new_tokens


# -- serving plans ---------------------------------------------------------------------------------


def test_int8_linear_matches_the_fp32_linear_on_both_paths():
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 160, bias=True)
    holder = torch.nn.Sequential(linear)
    assert inference.quantize_linears_int8(holder) == 1
    module = holder[0]
    assert not isinstance(module, torch.nn.Linear) and module.weight_int8.dtype == torch.int8
    for rows in (1, inference.DECODE_ROWS, 37):  # int8 kernel (decoding) and bf16 weight (prefill)
        x = torch.randn(rows, 96)
        got = module(x.to(torch.bfloat16)).float()
        want = torch.nn.functional.linear(x, linear.weight, linear.bias)
        assert got.shape == (rows, 160)
        assert torch.linalg.norm(got - want) / torch.linalg.norm(want) < 0.02
    # the decoding path really is the int8 weight: it equals the dequantised matrix product
    x = torch.randn(1, 96).to(torch.bfloat16)
    dequantised = module.weight_int8.float() * module.scale.float()[:, None]
    want = x.float() @ dequantised.T + linear.bias
    assert torch.allclose(module(x).float(), want, rtol=0.02, atol=0.02)


@pytest.mark.parametrize("plan", [ServingPlan("bf16"), ServingPlan("int8"), ServingPlan("bf16", static_cache=True, max_cache_len=256)])
def test_serving_plans_keep_the_model_close_to_fp32(tokenizer, plan):
    reference = _tiny_model(len(tokenizer), seed=1)
    served = _tiny_model(len(tokenizer), seed=1)
    inference.prepare_for_serving(served, plan)
    ids = tokenizer("Fever and flank pain suggest infection.", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        want = reference(input_ids=ids).logits.float()
        got = served(input_ids=ids).logits.float()
        # one decoding step on top of the prompt's cache (the path that uses int8 weights)
        step_want = reference(input_ids=ids[:, -1:], past_key_values=reference(input_ids=ids[:, :-1]).past_key_values).logits
        step_got = served(input_ids=ids[:, -1:], past_key_values=served(input_ids=ids[:, :-1]).past_key_values).logits
    assert torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0) > 0.99
    assert torch.nn.functional.cosine_similarity(step_got.float().flatten(), step_want.float().flatten(), dim=0) > 0.99
    assert served.model.embed_tokens.weight.dtype == torch.bfloat16
    linears = [m for m in served.modules() if isinstance(m, torch.nn.Linear)]
    if plan.weights == "int8":
        assert linears == []  # every projection and the output head
        assert served.lm_head.weight_int8.dtype == torch.int8
    else:
        assert served.lm_head.weight.data_ptr() == served.model.embed_tokens.weight.data_ptr()  # still tied
    if plan.static_cache:
        assert served.generation_config.cache_implementation == "static"
        assert served.generation_config.max_cache_len == 256


def test_static_cache_plan_generates_what_the_dynamic_cache_does(tokenizer):
    # The CUDA plan (static KV cache; compilation only happens on CUDA) must not change the output.
    dynamic = inference.prepare_for_serving(_tiny_model(len(tokenizer), seed=3), ServingPlan("bf16"))
    static = inference.prepare_for_serving(
        _tiny_model(len(tokenizer), seed=3), ServingPlan("bf16", static_cache=True, max_cache_len=256)
    )
    greedy = GenerationSettings(max_new_tokens=10, temperature=0)
    texts = [
        list(inference.stream_case("A case.", served=Served(m, tokenizer), settings=greedy))[-1].text
        for m in (dynamic, static)
    ]
    assert texts[0] == texts[1] and len(texts[0]) > 0


def test_default_plans_per_device():
    cpu = inference.serving_plan("cpu")
    assert cpu.weights == "int8" and cpu.decoder and cpu.int4_native and not cpu.compile_decoder
    cuda = inference.serving_plan("cuda", max_cache_len=2048)
    assert cuda.weights == "bf16" and cuda.decoder and cuda.compile_decoder and cuda.max_cache_len == 2048
    assert not cuda.int4_native  # the 4-bit kernel used for it is a CPU one


# -- served model with and without an adapter (app.resources) -----------------------------------------


@pytest.fixture()
def base_and_adapter(tmp_path, tokenizer):
    from peft import LoraConfig, get_peft_model

    base_dir = tmp_path / "tiny-base"
    base = _tiny_model(len(tokenizer), seed=2)
    base.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    peft_model = get_peft_model(
        _tiny_model(len(tokenizer), seed=2),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False),
    )
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)
    (adapter_dir / "adapter_card.json").write_text(
        json.dumps({"base_model": "tiny-base", "prompt_format": PROMPT_FORMAT_VERSION})
    )
    return base_dir, adapter_dir, peft_model.eval()


@pytest.fixture()
def resources_with(monkeypatch, tmp_path):
    from app import resources
    from core.settings import Settings

    def use(**overrides):
        settings = Settings(work_dir=tmp_path / "work", device="cpu", **overrides)
        monkeypatch.setattr(resources, "get_settings", lambda: settings)
        return settings

    yield resources, use
    resources.get_served_model.clear()
    resources.get_base_model.clear()


def test_served_model_merges_the_adapter_and_applies_the_cpu_plan(base_and_adapter, resources_with, tokenizer):
    base_dir, adapter_dir, peft_reference = base_and_adapter
    resources, use = resources_with
    settings = use(base_model=str(base_dir), adapter=str(adapter_dir))
    served = resources.get_served_model(settings.base_model, settings.adapter, "cpu")
    assert served.adapter_dir == adapter_dir and served.adapter_card["base_model"] == "tiny-base"
    assert served.adapter_name == "adapter" and served.plan == inference.serving_plan("cpu")
    assert served.decoder is not None  # the lean decoder serves it
    assert not any("lora" in name for name, _ in served.model.named_modules())  # merged, not wrapped

    ids = tokenizer("Fever and flank pain suggest infection.", return_tensors="pt")["input_ids"]
    bare = _tiny_model(len(tokenizer), seed=2)
    with torch.inference_mode():
        want = peft_reference(input_ids=ids).logits.float()
        got = served.model(input_ids=ids).logits.float()
        without = bare(input_ids=ids).logits.float()
    # served ~= base + adapter, and the adapter really changes the output
    assert torch.linalg.norm(got - want) < 0.2 * torch.linalg.norm(without - want)

    events = list(inference.stream_case("A case.", served=served, settings=GenerationSettings(max_new_tokens=4)))
    assert events[-1].kind == "done" and events[-1].stats.new_tokens <= 4


def test_served_model_without_adapter(base_and_adapter, resources_with):
    base_dir, _, _ = base_and_adapter
    resources, use = resources_with
    settings = use(base_model=str(base_dir), adapter="none")
    served = resources.get_served_model(settings.base_model, settings.adapter, "cpu")
    assert served.adapter_dir is None and served.adapter_card is None
    assert served.adapter_name == "none (base model)"
    assert served.base.identity == "tiny-base"


def test_adapter_for_another_base_is_refused_and_the_base_is_served(base_and_adapter, resources_with):
    base_dir, adapter_dir, _ = base_and_adapter
    (adapter_dir / "adapter_card.json").write_text(json.dumps({"base_model": "other", "prompt_format": PROMPT_FORMAT_VERSION}))
    resources, use = resources_with
    settings = use(base_model=str(base_dir), adapter=str(adapter_dir))
    served = resources.get_served_model(settings.base_model, settings.adapter, "cpu")
    assert served.adapter_dir is None and "other" in served.adapter_problem  # the page shows it in a banner
    assert not any("lora_" in name for name, _ in served.model.named_parameters())


def test_no_streamlit_or_storage_in_core_modules():
    for name in ("inference", "safety"):
        source = (Path(inference.__file__).parent / f"{name}.py").read_text()
        assert "import streamlit" not in source and "from storage" not in source and "import storage" not in source


def test_cpu_serving_uses_the_thread_setting(base_and_adapter, resources_with, monkeypatch):
    """torch_threads sets torch's (process-wide) thread count for serving; 0 picks cores - 1 within 1..4."""
    from core.settings import Settings

    base_dir, adapter_dir, _ = base_and_adapter
    resources, use = resources_with
    before = torch.get_num_threads()
    try:
        settings = use(base_model=str(base_dir), adapter=str(adapter_dir), torch_threads=3)
        resources.get_served_model(settings.base_model, settings.adapter, "cpu")
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    for cores, expected in ((1, 1), (2, 1), (4, 3), (64, 4)):
        monkeypatch.setattr("os.cpu_count", lambda cores=cores: cores)
        assert Settings().serving_threads == expected
    assert Settings(torch_threads=6).serving_threads == 6


def test_decode_threads_are_set_in_the_thread_that_decodes(tokenizer):
    server = inference.prepare_for_serving(_tiny_model(len(tokenizer), seed=5), inference.serving_plan("cpu"))
    worker = server.worker
    before = torch.get_num_threads()
    try:
        server.set_threads(1)
        assert worker.submit(torch.get_num_threads).result() == 1
        server.set_threads(2)
        assert worker.submit(torch.get_num_threads).result() == 2
        server.set_threads(0)  # nonsense is clamped to one thread
        assert worker.submit(torch.get_num_threads).result() == 1
    finally:
        torch.set_num_threads(before)
