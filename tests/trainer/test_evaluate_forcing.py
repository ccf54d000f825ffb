"""trainer.evaluate decodes as the app does: budget forcing, natural vs forced answers, reference passages."""

from __future__ import annotations

import json
import sys
import types

import pytest

from core import inference
from core.prompts import FINAL_ANSWER_MARKER
from trainer import evaluate
from trainer.evaluate import Generation, main, score_mcq, score_open

from .conftest import make_records


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_batched_evaluation_generates_what_the_app_streams(tiny):
    """Same prompts, same budget: the evaluation's two batched phases give the page's text and forcing."""
    model, tokenizer = tiny
    records = make_records("test", 4, 2)
    budget = 40
    outputs, stats = evaluate.generate(model, tokenizer, [evaluate.prompt_for(r) for r in records], batch_size=3,
                                       max_new_tokens=budget)
    served = inference.ModelServer(model, tokenizer)
    for rec, gen in zip(records, outputs):
        case, options = evaluate.question_text(rec), evaluate.mcq_options(rec)
        settings = inference.GenerationSettings(max_new_tokens=budget, temperature=0)
        done = list(inference.stream_case(case, served=served, options=options, settings=settings))[-1]
        assert (gen.text, gen.forced) == (done.text, done.forced), rec.id
        assert gen.new_tokens == done.stats.new_tokens <= budget
    assert stats["forced"] == sum(g.forced is not None for g in outputs) > 0  # random weights never conclude
    assert all(FINAL_ANSWER_MARKER in g.text for g in outputs if g.forced)


def _ends_its_turn_early(model_dir, tokenizer, prompt_ids, *, after: int = 6, seed: int = 1):
    """The tiny Llama's shape with its own random output head, whose <|im_end|> row is the row (scaled up)
    of a token it writes about ``after`` greedy tokens into ``prompt_ids``: it ends its turn there, unconcluded."""
    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    config.tie_word_embeddings = False  # a tied head would move the prompt's embeddings too
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.eos_token_id = None
    with torch.no_grad():
        out = model.generate(input_ids=prompt_ids, attention_mask=torch.ones_like(prompt_ids),
                             max_new_tokens=4 * after, do_sample=False, pad_token_id=0)
        new = out[0, prompt_ids.shape[1]:].tolist()
        first_new = next(i for i in range(after, len(new)) if new[i] not in new[:i])
        model.lm_head.weight[eos] = 1.5 * model.lm_head.weight[new[first_new]]
    model.generation_config.eos_token_id = eos
    return model


def test_batched_evaluation_forces_an_early_end_as_the_app_does(tiny_model_dir, tiny):
    """A model that ends its turn without a marker: the batched evaluation and the page's stream agree."""
    _, tokenizer = tiny
    records = make_records("test", 4, 2)
    first = records[0]
    ids = inference.prompt_ids(tokenizer, evaluate.question_text(first), evaluate.mcq_options(first))
    model = _ends_its_turn_early(tiny_model_dir, tokenizer, ids)
    budget = 60
    outputs, stats = evaluate.generate(model, tokenizer, [evaluate.prompt_for(r) for r in records], batch_size=3,
                                       max_new_tokens=budget)
    served = inference.ModelServer(model, tokenizer)
    for rec, gen in zip(records, outputs):
        case, options = evaluate.question_text(rec), evaluate.mcq_options(rec)
        settings = inference.GenerationSettings(max_new_tokens=budget, temperature=0)
        done = list(inference.stream_case(case, served=served, options=options, settings=settings))[-1]
        assert (gen.text, gen.forced) == (done.text, done.forced), rec.id
        assert gen.new_tokens == done.stats.new_tokens <= budget
    assert outputs[0].forced == "eos" and FINAL_ANSWER_MARKER in outputs[0].text
    assert stats["forced_eos"] == sum(g.forced == "eos" for g in outputs) >= 1
    assert stats["forced"] == sum(g.forced is not None for g in outputs)


def test_forced_answers_are_counted_by_kind_and_old_samples_still_recompute():
    recs = make_records("test", 3, 0)
    outputs = [f"Because.\n\nFinal answer: {recs[0].answer}", f"Thinking.\n\nFinal answer: {recs[1].answer}",
               f"Ended.\n\nFinal answer: {recs[2].answer}"]
    summary, rows = score_open(recs, outputs, [None, "budget", "eos"])
    assert (summary["forced"], summary["forced_eos"]) == (2, 1)
    assert summary["final_answer"]["correct"] == 3 and summary["format_adherence"]["correct"] == 1
    assert [r["forced"] for r in rows] == [None, "budget", "eos"]
    # Samples from before early ends were forced (only "budget"/None): no new key, so their eval.json matches.
    old, _ = score_open(recs, outputs, [None, "budget", None])
    assert "forced_eos" not in old and old["forced"] == 1
    settings = {"mcq_sources": [], "batch_size": 1}
    table = {label: (b, a) for label, b, a, _ in evaluate._table({"open": old}, {"open": summary}, settings)}
    label = "Final answers forced (budget or early end) (open-ended test, n=3)"
    assert table[label] == ("1 of 3", "2 of 3 (1 at the budget, 1 after an early end)")


def test_phase_two_continues_natural_answers_and_forces_the_rest(monkeypatch, tiny):
    """The decision between the phases, with scripted phase outputs (no model)."""
    _, tokenizer = tiny
    marker = inference.marker_ids(tokenizer)
    enc = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    budget = inference.answer_budget(100, marker)
    natural = enc("Pain.\n\nFinal answer: B") + enc(" x") * 60
    thinking = enc(" fever") * 80
    short = enc("Short.\n\nFinal answer: B")
    # Rows that met a stop token come back without it (and with True).
    phase1 = {0: (natural[: budget.reasoning], False), 1: (thinking[: budget.reasoning], False),
              2: (short, True), 3: (enc("Fever."), True)}
    calls = []

    def fake_rows(model, tok, inputs, *, limits, answer_rows, batch_size, stops):
        calls.append({"inputs": [list(i) for i in inputs], "limits": list(limits), "answer_rows": list(answer_rows)})
        if len(calls) == 1:
            return [phase1[i] for i in range(len(inputs))]
        return [(enc(" more"), False), (enc(" B. Protamine.\n\n"), False), (enc(" Pyelonephritis."), True)]

    monkeypatch.setattr(evaluate, "_generate_rows", fake_rows)
    monkeypatch.setattr(evaluate, "stop_token_ids", lambda m, t: [2])
    outputs, stats = evaluate.generate(None, tokenizer, [[{"role": "user", "content": f"q{i}"}] for i in range(4)],
                                       batch_size=8, max_new_tokens=100)
    first, second = calls
    assert first["limits"] == [budget.reasoning] * 4 and not any(first["answer_rows"])
    prompts = first["inputs"]
    # Row 0 wrote its own marker: on to the full budget, no marker appended, no paragraph stop.
    assert second["inputs"][0] == prompts[0] + natural[: budget.reasoning]
    assert second["limits"][0] == budget.total - budget.reasoning and second["answer_rows"][0] is False
    # Row 1 did not: the marker is appended and it gets the answer allowance, ending at its paragraph.
    assert second["inputs"][1] == prompts[1] + thinking[: budget.reasoning] + marker
    assert second["limits"][1] == budget.answer and second["answer_rows"][1] is True
    # Row 3 ended its turn without a marker: the marker is appended (its stop token left out), the allowance.
    assert second["inputs"][2] == prompts[3] + enc("Fever.") + marker
    assert second["limits"][2] == budget.answer and second["answer_rows"][2] is True
    assert [g.forced for g in outputs] == [None, "budget", None, "eos"]
    assert (stats["forced"], stats["forced_eos"]) == (2, 1)
    assert outputs[1].text.endswith(FINAL_ANSWER_MARKER + " B. Protamine.\n\n")
    # Ended in phase 1 with its own answer: no second phase; the stop token is counted, as the app counts it.
    assert outputs[2] == Generation("Short.\n\nFinal answer: B", None, len(short) + 1)
    assert outputs[3] == Generation("Fever.\n\n" + FINAL_ANSWER_MARKER + " Pyelonephritis.", "eos",
                                    len(enc("Fever.")) + 1 + len(marker) + len(enc(" Pyelonephritis.")) + 1)


def test_row_ends_stops_each_row_at_its_limit_or_its_answer_paragraph(tiny):
    import torch

    _, tokenizer = tiny
    enc = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    answer = enc(" B. Protamine.\n\nMore")
    ends = evaluate._row_ends(2, [len(answer), 3, 50], [True, False, True], tokenizer, {2})
    for n in range(1, len(answer) + 1):
        rows = [[7, 7] + answer[:n], [7, 7] + answer[:n], [7, 7] + [2] + answer[: n - 1]]
        ends(torch.tensor(rows), None)
    complete = next(n for n in range(1, len(answer) + 1) if inference.answer_complete(tokenizer.decode(answer[:n])))
    # row 0 at its paragraph's end, row 1 at its limit, row 2 met a stop token (cut later) and never ends here
    assert ends.cut == [complete, 3, None]


def test_natural_and_forced_answers_are_counted_apart():
    recs = make_records("test", 3, 0)
    outputs = [f"Because.\n\nFinal answer: {recs[0].answer}", f"Thinking.\n\nFinal answer: {recs[1].answer}",
               "Thinking"]
    summary, rows = score_open(recs, outputs, [None, "budget", None])
    assert summary["format_adherence"]["correct"] == 1  # natural marker only
    assert summary["final_answer"]["correct"] == 2  # natural or forced
    assert summary["forced"] == 1 and [r["forced"] for r in rows] == [None, "budget", None]
    mcq = make_records("bank", 0, 2)
    summary, rows = score_mcq(mcq, ["Heparin.\n\nFinal answer: B", "Hmm.\n\nFinal answer: C"], ["budget", None])
    natural, either = summary["format_adherence"]["correct"], summary["final_answer"]["correct"]
    assert (summary["correct"], summary["forced"], natural, either) == (2, 1, 1, 2)
    assert rows[0]["options"] == mcq[0].options and rows[0]["reference"] == "B"


def test_no_allowance_never_forces(tiny):
    model, tokenizer = tiny
    records = make_records("test", 2, 0)
    outputs, stats = evaluate.generate(model, tokenizer, [evaluate.prompt_for(r) for r in records], batch_size=2,
                                       max_new_tokens=20, answer_allowance=0)
    assert stats["forced"] == 0 and all(FINAL_ANSWER_MARKER not in g.text for g in outputs)


# -- reference passages -------------------------------------------------------------------------------


class _Passage:
    def __init__(self, n: int, query: str) -> None:
        self.n, self.query, self.id = n, query, f"ref:{n}"

    def to_dict(self) -> dict:
        return {"id": f"ref:{self.n}", "title": f"Ref {self.n}", "text": self.query[:20]}


def _fake_retrieval(monkeypatch, *, unavailable: bool = False) -> list:
    """A stand-in for core.retrieval: load_index, ReferenceIndex.search, prompt_context, RetrievalUnavailable."""
    searched: list = []
    module = types.ModuleType("core.retrieval")

    class RetrievalUnavailable(RuntimeError):
        pass

    class Index:
        def search(self, query: str, *, k: int = 5) -> list:
            searched.append((query, k))
            return [_Passage(n, query) for n in range(k)]

    def load_index(prepared_dir):
        if unavailable:
            raise RetrievalUnavailable("no index built; run the data preparation")
        searched.append(("dir", prepared_dir))
        return Index()

    module.RetrievalUnavailable = RetrievalUnavailable
    module.PROMPT_PASSAGES = 3
    module.load_index = load_index
    module.prompt_context = lambda passages: "\n".join(f"[{p.n}] REFERENCE {p.n}" for p in passages[:3])
    monkeypatch.setitem(sys.modules, "core.retrieval", module)
    return searched


def test_references_mode_adds_two_rows_with_the_passages_in_the_prompt(
    monkeypatch, trained_run, tiny_model_dir, data_dir, tmp_path
):
    result, _ = trained_run
    searched = _fake_retrieval(monkeypatch)
    prompts: list = []
    original = evaluate.generate
    monkeypatch.setattr(evaluate, "generate", lambda m, t, p, **kw: prompts.append(p) or original(m, t, p, **kw))
    out = tmp_path / "eval"
    rc = main(["--adapter", str(result.adapter_dir), "--base", str(tiny_model_dir), "--work_dir", str(data_dir.parent),
               "--limit", "2", "--max_new_tokens", "12", "--references", "--output", str(out)])
    assert rc == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["rows"] == ["base", "adapter", "base+references", "adapter+references"]
    assert set(report["results"]) == set(report["rows"])
    assert searched[0] == ("dir", data_dir)
    assert all(k == 5 for q, k in searched[1:]) and len(searched) == 1 + 2 + 4  # once per item, for both models
    refs = report["results"]["adapter+references"]
    assert refs["decoding"]["references_k"] == 5 and refs["decoding"]["references_in_prompt"] == 3
    assert "test_loss" not in refs and refs["open"]["n"] == 2
    # The context went through the prompt builder: in the user turn of the +references rows only.
    assert len(prompts) == 4
    plain, with_refs = prompts[0], prompts[1]  # base, then base + references (one model load for both)
    assert "REFERENCE 0" not in plain[0][1]["content"] and "REFERENCE 3" not in with_refs[0][1]["content"]
    assert with_refs[0][1]["content"].startswith("Context:\n[0] REFERENCE 0")
    samples = [json.loads(line) for line in (out / "eval_samples.jsonl").read_text().splitlines()]
    assert {s["row"] for s in samples} == set(report["rows"])
    # the ids of the passages in the prompt (the first 3 of the 5 retrieved)
    assert all(s["context_ids"] == ["ref:0", "ref:1", "ref:2"] for s in samples if s["row"].endswith("+references"))
    md = (out / "eval.md").read_text()
    assert "## With reference passages (greedy, max 12 new tokens" in md
    assert "| Metric | Base + references | Adapter + references | Change |" in md
    assert "- Adapter + references: greedy, max 12 new tokens" in md
    assert "the top 3 of 5 retrieved reference passages in the prompt" in md
    assert evaluate.recompute(out) == []


def test_references_mode_without_an_index_is_a_clear_error(monkeypatch, trained_run, tiny_model_dir, data_dir, capsys):
    result, _ = trained_run
    _fake_retrieval(monkeypatch, unavailable=True)
    rc = main(["--adapter", str(result.adapter_dir), "--base", str(tiny_model_dir), "--work_dir", str(data_dir.parent),
               "--limit", "1", "--max_new_tokens", "4", "--references", "--output", str(data_dir.parent / "x")])
    assert rc == 2 and "no index built" in capsys.readouterr().err
