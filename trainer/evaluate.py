"""Honest evaluation: the base model and base + adapter on the SAME held-out items, decoded as the app decodes.

    python -m trainer.evaluate --adapter adapters/smollm2-135m-medcot
    python -m trainer.evaluate --adapter adapters/smollm2-135m-medcot --references   # + rows with retrieved passages
    python -m trainer.evaluate --adapter RUN_DIR/adapter --limit 8          # quick CPU check
    python -m trainer.evaluate --recompute adapters/smollm2-135m-medcot    # check eval.json against its samples

Measured for each model (greedy decoding, batched with left padding):

- test loss and perplexity on the completion tokens of the test split (``test.jsonl``), and
  mean token accuracy there -- a training diagnostic (how often the next reference token is the
  model's top guess), NOT exam accuracy;
- ROUGE-L (``rouge-score``) of the generated final answer against the reference answer on the
  open-ended test items (a generation without the final-answer marker is scored as a whole);
- format adherence, twice: reasoning and a final answer the model marked on its own ("natural
  marker"), and reasoning and a final answer at all, natural or forced;
- multiple-choice accuracy on a fixed, seeded sample of the quiz bank (default 200 MedQA + 200
  MedMCQA), with letter extraction (``core.metrics.extract_choice``) and a 95% Wilson interval.

Generation follows the app's budget forcing (``core.inference``: :func:`~core.inference.answer_budget`,
:func:`~core.inference.needs_forcing`, :func:`~core.inference.answer_complete`): a first phase runs
every item to the reasoning share of ``--max_new_tokens``; items that wrote a final-answer marker go
on to the full budget, items that did not get the marker appended and at most the answer allowance
(ending at their answer paragraph's end), and are reported as forced (``"budget"``); so are items
that ended their turn in the first phase without a marker (``"eos"``: the app asks those for an
answer too, :func:`~core.inference.answer_room`). With ``--references`` two more
rows ask the same models with the top-5 reference passages (``core.retrieval``) as the prompt's context.

Writes ``eval.json`` (every number, the settings and the item ids), ``eval.md`` (the comparison
tables) and ``eval_samples.jsonl`` (each item's generation and per-item scores, one line per item
and row) into the adapter folder or ``--output``. ``--recompute DIR`` rebuilds the tables from
``eval_samples.jsonl`` (or ``eval_samples.jsonl.gz``), rescoring every generation, and exits
non-zero with the differences when they do not match ``eval.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from core.inference import (
    ANSWER_ALLOWANCE, GenerationSettings, answer_budget, answer_complete, answer_room, marker_ids, needs_forcing,
)
from core.metrics import accuracy, extract_choice, rouge_l
from core.prompts import build_messages, parse_completion
from core.records import Record
from trainer.dataset import DataError, encode_example, file_sha256, mcq_options, question_text, read_records, to_example

if TYPE_CHECKING:
    from core.model import BaseModel

DEFAULT_MCQ_SOURCES = ("medqa", "medmcqa")
SOURCE_LABELS = {"medqa": "MedQA", "medmcqa": "MedMCQA", "mmlu": "MMLU medical", "pubmedqa": "PubMedQA"}
REFERENCES_K = 5
"""Reference passages retrieved per question for the ``+references`` rows; ``core.retrieval.prompt_context``
puts the first ``core.retrieval.PROMPT_PASSAGES`` of them in the prompt, as on the case-study page."""
ROW_LABELS = {"base": "Base model", "adapter": "Fine-tuned (adapter)", "base+references": "Base + references",
              "adapter+references": "Adapter + references"}
"""Every row an evaluation can have, in report order: a model, and that model with reference passages."""
SAMPLES_FILE = "eval_samples.jsonl"


@dataclass
class EvalItems:
    """The held-out items both models see."""

    loss: list[Record] = field(default_factory=list)
    """Test records with a reference completion (loss, perplexity, token accuracy)."""
    open: list[Record] = field(default_factory=list)
    """Open-ended test records (generation: ROUGE-L and format adherence)."""
    mcq: dict[str, list[Record]] = field(default_factory=dict)
    """Source -> sampled multiple-choice bank records."""
    notes: list[str] = field(default_factory=list)


def sample_mcq(bank: Sequence[Record], sources: Sequence[str], per_source: int, seed: int) -> dict[str, list[Record]]:
    """A fixed sample per source: records sorted by id, then ``random.Random(seed).sample`` (same items every run)."""
    out: dict[str, list[Record]] = {}
    for source in sources:
        pool = sorted((r for r in bank if r.source == source and r.kind == "mcq" and r.options and r.correct),
                      key=lambda r: r.id)
        k = min(per_source, len(pool))
        out[source] = sorted(random.Random(f"{seed}:{source}").sample(pool, k), key=lambda r: r.id) if k else []
    return out


def select_items(
    test: Sequence[Record], bank: Sequence[Record], *, limit: int | None, mcq_sources: Sequence[str],
    mcq_per_source: int, seed: int,
) -> EvalItems:
    items = EvalItems()
    ordered = sorted(test, key=lambda r: r.id)
    items.loss = [r for r in ordered if to_example(r) is not None]
    items.open = [r for r in ordered if r.kind == "open" and r.answer.strip()]
    per_source = mcq_per_source if limit is None else min(mcq_per_source, limit)
    items.mcq = sample_mcq(bank, mcq_sources, per_source, seed)
    if limit is not None:
        items.loss, items.open = items.loss[:limit], items.open[:limit]
    for source, recs in items.mcq.items():
        if len(recs) < per_source:
            items.notes.append(f"bank has {len(recs)} usable {source} items (asked for {per_source})")
    return items


def ids_hash(records: Sequence[Record]) -> str:
    return hashlib.sha256("\n".join(r.id for r in records).encode()).hexdigest()[:16]


# -- measurements ------------------------------------------------------------------------------------


def completion_loss(model: Any, tokenizer: Any, records: Sequence[Record], *, batch_size: int, max_len: int) -> dict[str, Any]:
    """Token-weighted NLL, perplexity and top-1 accuracy over the completion tokens of ``records``."""
    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = [encode_example(tokenizer, to_example(r), max_len) for r in records]  # type: ignore[arg-type]
    total_nll, total_tokens, total_correct = 0.0, 0, 0
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start:start + batch_size]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (ids, lab) in enumerate(batch):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            labels[i, : len(lab)] = torch.tensor(lab)
            mask[i, : len(ids)] = 1
        input_ids, labels, mask = input_ids.to(device), labels.to(device), mask.to(device)
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1].float()
        target = labels[:, 1:]
        valid = target != -100
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1),
                                                ignore_index=-100, reduction="sum")
        total_nll += float(nll)
        total_tokens += int(valid.sum())
        total_correct += int(((logits.argmax(-1) == target) & valid).sum())
    loss = total_nll / total_tokens if total_tokens else float("nan")
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)) if total_tokens else float("nan"),
        "mean_token_accuracy": total_correct / total_tokens if total_tokens else float("nan"),
        "n_items": len(records),
        "n_tokens": total_tokens,
    }


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """End-of-turn ids: the generation config's, the tokenizer's eos, and ``<|im_end|>`` where it exists."""
    ids: list[int] = []
    gen_eos = getattr(model.generation_config, "eos_token_id", None)
    ids += gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else []
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.append(im_end)
    return list(dict.fromkeys(int(i) for i in ids))


@dataclass(frozen=True)
class Generation:
    """One item's completion as the app would produce it."""

    text: str
    forced: str | None
    """Why the final answer was forced: ``"budget"`` (no marker within the reasoning share) or ``"eos"``
    (the model ended its turn without one); None when the model wrote it itself."""
    new_tokens: int
    """Generated tokens, a stop token the row met included (the app's streamer counts it too)."""


def prompt_for(rec: Record, context: str = "") -> list[dict[str, str]]:
    """System + user messages for ``rec``, with ``context`` (reference passages) in the user turn."""
    return build_messages(question_text(rec), mcq_options(rec), context=context)


def _row_ends(start: int, limits: Sequence[int], answer_rows: Sequence[bool], tokenizer: Any, stops: set[int]) -> Any:
    """Per-row stopping for a batch: row i ends after ``limits[i]`` new tokens, and an answer row (a
    forced answer) also after the token that completes its answer paragraph (as the app stops it).
    Records in ``cut`` how many new tokens each row kept, for trimming the batch's padded output."""
    import torch
    from transformers import StoppingCriteria

    class RowEnds(StoppingCriteria):
        def __init__(self) -> None:
            self.cut: list[int | None] = [None] * len(limits)

        def __call__(self, input_ids: "torch.LongTensor", scores: Any, **kwargs: Any) -> "torch.BoolTensor":
            n = int(input_ids.shape[1]) - start
            open_answers = [r for r, c in enumerate(self.cut) if c is None and answer_rows[r]]
            new = input_ids[:, start:].tolist() if open_answers else None  # one device transfer per step
            for row, cut in enumerate(self.cut):
                if cut is not None:
                    continue
                if n >= limits[row]:
                    self.cut[row] = n
                elif new is not None and answer_rows[row] and not stops.intersection(new[row]):
                    if answer_complete(tokenizer.decode(new[row], skip_special_tokens=True)):
                        self.cut[row] = n
            return torch.tensor([c is not None for c in self.cut], dtype=torch.bool, device=input_ids.device)

    return RowEnds()


def _generate_rows(
    model: Any, tokenizer: Any, inputs: Sequence[list[int]], *, limits: Sequence[int], answer_rows: Sequence[bool],
    batch_size: int, stops: set[int],
) -> list[tuple[list[int], bool]]:
    """Greedy continuations of ``inputs`` (token ids) in batches of similar length, left-padded.

    Row i gets at most ``limits[i]`` new tokens (see :func:`_row_ends` for ``answer_rows``). Returns each
    row's new tokens up to its first stop token (left out) and whether it met one.
    """
    import torch
    from transformers import GenerationConfig, StoppingCriteriaList

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]), reverse=True)
    out: list[tuple[list[int], bool]] = [([], False)] * len(inputs)
    # Every batch runs until its longest answer ends, so equal-sized batches beat a full one plus a small tail.
    n_batches = max(1, math.ceil(len(order) / batch_size))
    size = max(1, math.ceil(len(order) / n_batches))
    for first in range(0, len(order), size):
        idx = order[first:first + size]
        width = max(len(inputs[i]) for i in idx)
        input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids = inputs[i]
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            mask[row, width - len(ids):] = 1
        ends = _row_ends(width, [limits[i] for i in idx], [answer_rows[i] for i in idx], tokenizer, stops)
        cfg = GenerationConfig(max_new_tokens=max(limits[i] for i in idx), do_sample=False, eos_token_id=sorted(stops),
                               pad_token_id=pad)
        with torch.no_grad():
            seq = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), generation_config=cfg,
                                 stopping_criteria=StoppingCriteriaList([ends]))
        rows = seq[:, width:].tolist()
        for row, i in enumerate(idx):
            new = rows[row][: ends.cut[row]] if ends.cut[row] is not None else rows[row]
            stop_at = next((k for k, tok in enumerate(new) if tok in stops), None)
            out[i] = (new[:stop_at], True) if stop_at is not None else (new, False)
    return out


def generate(
    model: Any, tokenizer: Any, prompts: Sequence[list[dict[str, str]]], *, batch_size: int, max_new_tokens: int,
    answer_allowance: int = ANSWER_ALLOWANCE,
) -> tuple[list[Generation], dict[str, float]]:
    """Greedy completions of ``prompts`` (chat messages), in their order, with the app's budget forcing.

    Phase 1 runs every prompt to the reasoning share of the budget. A row that ended there (a stop
    token) with a final-answer marker is done; one that ended without it is forced (``"eos"``). A
    row that wrote a marker continues to the full budget (as the app lets it); one that did not is
    forced (``"budget"``). Forced rows get the marker appended and at most the answer allowance,
    ending at their answer paragraph's end. Phase 2 re-runs prompt + phase-1 tokens (+ marker; the
    stop token left out), the app's second phase too.
    """
    from trainer.dataset import chat_ids

    t0 = time.perf_counter()
    stops = set(stop_token_ids(model, tokenizer))
    budget = answer_budget(max_new_tokens, marker_ids(tokenizer), allowance=answer_allowance)
    inputs = [chat_ids(tokenizer, m, generation_prompt=True) for m in prompts]
    first_len = budget.reasoning if budget.can_force else budget.total
    phase1 = _generate_rows(model, tokenizer, inputs, limits=[first_len] * len(inputs),
                            answer_rows=[False] * len(inputs), batch_size=batch_size, stops=stops)
    done: dict[int, Generation] = {}
    jobs: list[tuple[int, list[int], int, str | None]] = []  # item, phase-2 input, new-token limit, forced
    for i, (ids, ended) in enumerate(phase1):
        text = tokenizer.decode(ids, skip_special_tokens=True)
        generated = len(ids) + ended  # the stop token was decoded too: it counts against the budget
        if ended and needs_forcing(text, generated, budget, ended=True) and answer_room(budget, generated):
            jobs.append((i, inputs[i] + ids + list(budget.marker), answer_room(budget, generated), "eos"))
        elif ended or len(ids) >= budget.total:
            done[i] = Generation(text, None, generated)
        elif needs_forcing(text, len(ids), budget):
            jobs.append((i, inputs[i] + ids + list(budget.marker), answer_room(budget, len(ids)), "budget"))
        else:  # a natural final answer: on to the full budget
            jobs.append((i, inputs[i] + ids, budget.total - len(ids), None))
    if jobs:
        phase2 = _generate_rows(model, tokenizer, [j[1] for j in jobs], limits=[j[2] for j in jobs],
                                answer_rows=[j[3] is not None for j in jobs], batch_size=batch_size, stops=stops)
        for (i, _, _, forced), (more, ended) in zip(jobs, phase2):
            first, first_ended = phase1[i]
            ids = first + (list(budget.marker) if forced else []) + more
            text = tokenizer.decode(ids, skip_special_tokens=True)
            done[i] = Generation(text, forced, len(ids) + first_ended + ended)
    outputs = [done[i] for i in range(len(inputs))]
    seconds = time.perf_counter() - t0
    new_tokens = sum(g.new_tokens for g in outputs)
    return outputs, {"new_tokens": new_tokens, "seconds": seconds,
                     "tokens_per_s": new_tokens / seconds if seconds else 0.0,
                     "forced": sum(g.forced is not None for g in outputs),
                     "forced_eos": sum(g.forced == "eos" for g in outputs)}


# -- scoring: one function per item, one per summary (evaluation and --recompute share them) ----------


def sample_row(rec: Record, gen: Generation, *, row: str, context_ids: list[Any] | None = None) -> dict[str, Any]:
    """The ``eval_samples.jsonl`` line for one item of one row: what was asked, generated and scored."""
    sample: dict[str, Any] = {"row": row, "id": rec.id, "source": rec.source, "kind": rec.kind,
                              "context_ids": context_ids, "output": gen.text, "forced": gen.forced}
    if rec.kind == "mcq":
        sample.update(options=dict(rec.options or {}), reference=(rec.correct or "").upper())
    else:
        sample["reference"] = rec.answer
    return {**sample, **item_scores(sample)}


def item_scores(sample: dict[str, Any]) -> dict[str, Any]:
    """Per-item values derived from a sample's generated text: parsed answer, format, and ROUGE-L
    (open-ended) or the extracted letter and correctness (multiple choice)."""
    text = sample["output"]
    parsed = parse_completion(text)
    scores: dict[str, Any] = {"answer": parsed.answer, "well_formed": parsed.well_formed}
    if sample["kind"] == "mcq":
        options = sample["options"]
        letter = extract_choice(text, list(options), options=options)
        scores.update(choice=letter, is_correct=letter is not None and letter == sample["reference"])
    else:
        # A generation without the final-answer marker is scored as a whole.
        scores["rouge_l"] = rouge_l(parsed.answer if parsed.has_answer and parsed.answer else text, sample["reference"])
    return scores


def _formats(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        # reasoning and a final answer the model marked on its own
        "format_adherence": accuracy(s["well_formed"] and not s["forced"] for s in samples).to_dict(),
        # reasoning and a final answer at all, natural or forced
        "final_answer": accuracy(s["well_formed"] for s in samples).to_dict(),
        # forced for either reason (at the budget, or after the model ended its turn without an answer)
        "forced": sum(bool(s["forced"]) for s in samples),
        # Only present when some answer was forced after an early end: reports from before that was
        # forced hold no such key, and --recompute of their samples (forced "budget"/None) still matches.
        **({"forced_eos": n} if (n := sum(s["forced"] == "eos" for s in samples)) else {}),
    }


def summarize_open(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    rouges = [s["rouge_l"] for s in samples]
    return {"n": len(samples), "rouge_l": sum(rouges) / len(rouges) if rouges else None, **_formats(samples)}


def summarize_mcq(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {**accuracy(s["is_correct"] for s in samples).to_dict(),
            "unparsed": sum(s["choice"] is None for s in samples), **_formats(samples)}


def _generations(outputs: Sequence[str | Generation], forced: Sequence[str | None] | None) -> list[Generation]:
    forced = forced or [None] * len(outputs)
    return [o if isinstance(o, Generation) else Generation(o, f, 0) for o, f in zip(outputs, forced)]


def score_open(
    records: Sequence[Record], outputs: Sequence[str | Generation], forced: Sequence[str | None] | None = None,
    *, row: str = "",
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rows = [sample_row(r, g, row=row) for r, g in zip(records, _generations(outputs, forced))]
    return summarize_open(rows), rows


def score_mcq(
    records: Sequence[Record], outputs: Sequence[str | Generation], forced: Sequence[str | None] | None = None,
    *, row: str = "",
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rows = [sample_row(r, g, row=row) for r, g in zip(records, _generations(outputs, forced))]
    return summarize_mcq(rows), rows


def summarize(samples: Sequence[dict[str, Any]], mcq_sources: Sequence[str]) -> dict[str, Any]:
    """The generation parts of one row's results (``open``, ``mcq``) from its sample lines."""
    out: dict[str, Any] = {}
    open_rows = [s for s in samples if s["kind"] != "mcq"]
    if open_rows:
        out["open"] = summarize_open(open_rows)
    mcq: dict[str, Any] = {}
    every: list[dict[str, Any]] = []
    for source in mcq_sources:
        rows = [s for s in samples if s["kind"] == "mcq" and s["source"] == source]
        if rows:
            mcq[source] = summarize_mcq(rows)
            every += rows
    if every:
        mcq["all"] = summarize_mcq(every)
        out["mcq"] = mcq
    return out


@dataclass(frozen=True)
class Decoding:
    """How one row generates (stated in the report for every row)."""

    max_new_tokens: int
    answer_allowance: int
    references_k: int | None = None
    """Passages retrieved per question, or None for the plain prompt."""
    references_in_prompt: int | None = None
    """How many of them the prompt's context holds (at most)."""

    def to_dict(self) -> dict[str, Any]:
        return {"decoding": "greedy", "max_new_tokens": self.max_new_tokens, "answer_allowance": self.answer_allowance,
                "references_k": self.references_k, "references_in_prompt": self.references_in_prompt}


def evaluate_model(
    model: Any, tokenizer: Any, items: EvalItems, *, row: str, batch_size: int, decoding: Decoding, max_len: int,
    contexts: dict[str, tuple[str, list[Any]]] | None = None, progress=print,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every measurement for one row; generation runs over all open-ended and MCQ items in one pool.

    ``contexts`` (item id -> prompt context, passage ids) gives the ``+references`` rows their context;
    those rows measure generation only (the test loss is the plain prompt's, in the model's own row).
    """
    results: dict[str, Any] = {"decoding": decoding.to_dict()}
    if items.loss and contexts is None:
        progress(f"  loss on {len(items.loss)} test items")
        # Full-vocabulary fp32 logits for long sequences are large: score the loss in small batches.
        results["test_loss"] = completion_loss(model, tokenizer, items.loss, batch_size=min(batch_size, 8),
                                               max_len=max_len)
    groups = [("open", items.open)] + [(source, recs) for source, recs in items.mcq.items() if recs]
    pool = [r for _, recs in groups for r in recs]
    if not pool:
        return results, []
    progress(f"  {row}: generating {len(pool)} answers ({', '.join(f'{len(r)} {g}' for g, r in groups if r)})")
    prompts = [prompt_for(r, contexts[r.id][0] if contexts else "") for r in pool]
    outputs, stats = generate(model, tokenizer, prompts, batch_size=batch_size, max_new_tokens=decoding.max_new_tokens,
                              answer_allowance=decoding.answer_allowance)
    results["generation"] = stats
    samples = [sample_row(r, g, row=row, context_ids=contexts[r.id][1] if contexts else None)
               for r, g in zip(pool, outputs)]
    results.update(summarize(samples, list(items.mcq)))
    return results, samples


def reference_contexts(
    records: Sequence[Record], prepared_dir: Path, *, k: int = REFERENCES_K
) -> dict[str, tuple[str, list[Any]]]:
    """Item id -> (prompt context from the top-``k`` reference passages for its question, the ids of the
    passages in that context)."""
    from core.retrieval import PROMPT_PASSAGES, RetrievalUnavailable, load_index, prompt_context

    try:
        index = load_index(prepared_dir)
    except RetrievalUnavailable as exc:
        raise DataError(f"--references: the reference index cannot be used: {exc}") from exc
    out: dict[str, tuple[str, list[Any]]] = {}
    for rec in records:
        passages = index.search(question_text(rec), k=k)
        out[rec.id] = (prompt_context(passages), [p.id for p in passages[:PROMPT_PASSAGES]])
    return out


# -- report ------------------------------------------------------------------------------------------


def _num(v: Any, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _pct(d: dict[str, Any] | None) -> str:
    if not d or not d.get("n"):
        return "n/a"
    lo, hi = d["ci95"]
    return f"{100 * d['accuracy']:.1f}% [{100 * lo:.1f}-{100 * hi:.1f}]"


def _delta(a: Any, b: Any, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
    if a is None or b is None or any(isinstance(x, float) and math.isnan(x) for x in (a, b)):
        return ""
    return f"{(b - a) * scale:+.{digits}f}{unit}"


def _count(d: dict[str, Any] | None, key: str = "forced") -> str:
    return "n/a" if not d or d.get(key) is None else f"{d[key]} of {d['n']}"


def _forced(d: dict[str, Any] | None) -> str:
    """Forced answers, with how many followed an early end when any did."""
    early = (d or {}).get("forced_eos")
    if not early:
        return _count(d)
    return f"{_count(d)} ({d['forced'] - early} at the budget, {early} after an early end)"


def _table(first: dict[str, Any], second: dict[str, Any], settings: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Metric rows comparing two rows' results (parts either lacks are left out)."""
    rows: list[tuple[str, str, str, str]] = []
    bl, al = first.get("test_loss"), second.get("test_loss")
    if bl and al:
        n = f"n={bl['n_items']} items, {bl['n_tokens']:,} tokens"
        rows.append((f"Test loss on reference completions ({n})", _num(bl["loss"]), _num(al["loss"]),
                     _delta(bl["loss"], al["loss"])))
        rows.append(("Test perplexity", _num(bl["perplexity"], 2), _num(al["perplexity"], 2),
                     _delta(bl["perplexity"], al["perplexity"], 2)))
        rows.append(("Mean token accuracy (training diagnostic, not exam accuracy)",
                     _num(bl["mean_token_accuracy"]), _num(al["mean_token_accuracy"]),
                     _delta(bl["mean_token_accuracy"], al["mean_token_accuracy"])))

    def formats(b: dict[str, Any], a: dict[str, Any], what: str) -> None:
        if "final_answer" not in b or "final_answer" not in a:  # a report from before budget forcing
            rows.append((f"Format adherence: reasoning + final answer ({what})", _pct(b.get("format_adherence")),
                         _pct(a.get("format_adherence")), ""))
            return
        rows.append((f"Format adherence, natural marker: reasoning + a final answer the model marked itself ({what})",
                     _pct(b["format_adherence"]), _pct(a["format_adherence"]),
                     _delta(b["format_adherence"]["accuracy"], a["format_adherence"]["accuracy"], 1, 100, " pts")))
        rows.append((f"Final answer %, natural or forced ({what})", _pct(b["final_answer"]), _pct(a["final_answer"]),
                     _delta(b["final_answer"]["accuracy"], a["final_answer"]["accuracy"], 1, 100, " pts")))
        rows.append((f"Final answers forced (budget or early end) ({what})", _forced(b), _forced(a), ""))

    bo, ao = first.get("open"), second.get("open")
    if bo and ao:
        rows.append((f"ROUGE-L, final answer vs reference (open-ended test, n={bo['n']})", _num(bo["rouge_l"]),
                     _num(ao["rouge_l"]), _delta(bo["rouge_l"], ao["rouge_l"])))
        formats(bo, ao, f"open-ended test, n={bo['n']}")
    bm, am = first.get("mcq", {}), second.get("mcq", {})
    for source in [*settings["mcq_sources"], "all"]:
        if source in bm and source in am:
            label = "all sampled" if source == "all" else SOURCE_LABELS.get(source, source)
            rows.append((f"MCQ accuracy, {label} (n={bm[source]['n']}, 95% CI)", _pct(bm[source]), _pct(am[source]),
                         _delta(bm[source]["accuracy"], am[source]["accuracy"], 1, 100, " pts")))
    if "all" in bm and "all" in am:
        rows.append(("MCQ answers with no extractable letter", f"{bm['all']['unparsed']}", f"{am['all']['unparsed']}",
                     ""))
        formats(bm["all"], am["all"], "MCQ answers")
    bg, ag = first.get("generation"), second.get("generation")
    if bg and ag:
        rows.append((f"Generation speed, batched greedy (new tokens/s, batch {settings['batch_size']})",
                     f"{bg['tokens_per_s']:.1f}", f"{ag['tokens_per_s']:.1f}", ""))
    return rows


def describe_decoding(decoding: dict[str, Any] | None) -> str:
    """One row's decoding settings in words (eval.md)."""
    if not decoding:
        return "not recorded"
    total, allowance = decoding["max_new_tokens"], decoding.get("answer_allowance") or 0
    kept = min(allowance, total // 2)
    forcing = (f"answer allowance {allowance} tokens (a final answer is forced when none was written in the first "
               f"{total - kept} tokens)" if kept else "no answer forcing")
    refs, shown = decoding.get("references_k"), decoding.get("references_in_prompt")
    context = f"the top {shown} of {refs} retrieved reference passages in the prompt" if refs else "plain prompt"
    return f"{decoding['decoding']}, max {total} new tokens, {forcing}; {context}"


def render_markdown(report: dict[str, Any]) -> str:
    """The comparison tables (measured numbers only; n/a where a part was not measured)."""
    results = report["results"]
    s = report["settings"]
    pairs = [("base", "adapter")]
    if "base+references" in results and "adapter+references" in results:
        pairs.append(("base+references", "adapter+references"))
    lines = [
        "# Evaluation: base model vs fine-tuned adapter",
        "",
        f"Base model `{report['base_model']}`; adapter `{report['adapter_name']}`. Both models answered the same "
        f"held-out items with greedy decoding (max {s['max_new_tokens']} new tokens, the app's budget forcing), on "
        f"{report['hardware']['device_name']} ({report['hardware']['device']}, {s['dtype']}), in "
        f"{report['wall_time_s']:.0f} s"
        + (f" (results for {' and '.join(report['from_cache'])} reused from an earlier run with identical items, "
           "settings and weights)." if report.get("from_cache") else "."),
    ]
    for first, second in pairs:
        if first != "base":
            lines += ["", f"## With reference passages ({describe_decoding(results[first].get('decoding'))})"]
        lines += [
            "",
            f"| Metric | {ROW_LABELS[first]} | {ROW_LABELS[second]} | Change |",
            "| --- | --- | --- | --- |",
            *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in _table(results[first], results[second], s)],
        ]
    lines += ["", "Decoding, per row:", ""]
    lines += [f"- {ROW_LABELS[row]}: {describe_decoding(results[row].get('decoding'))}" for row in ROW_LABELS
              if row in results]
    lines += [
        "",
        "Notes: loss, perplexity and token accuracy are over the completion tokens (reasoning + final answer) of "
        "the test split; ROUGE-L compares the generated final-answer line with the reference answer (a generation "
        "without a final-answer line is scored as a whole); \"natural marker\" counts answers the model marked "
        "itself, \"natural or forced\" also those whose marker was appended at the budget or after the model ended "
        "without one (as the app does); MCQ "
        f"items are a fixed sample of the quiz bank (seed {s['seed']}), letters extracted by "
        "`core.metrics.extract_choice`, intervals are 95% Wilson intervals. Every number above except loss and "
        f"speed is recomputed from `{SAMPLES_FILE}` by `python -m trainer.evaluate --recompute <folder>`.",
    ]
    if report.get("notes"):
        lines += ["", *[f"- {n}" for n in report["notes"]]]
    lines.append("")
    lines.append(f"Command: `{report['command']}`")
    lines.append("")
    return "\n".join(lines)


# -- command line ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--adapter", type=Path, default=None, help="Adapter folder (with adapter_card.json); required "
                   "unless --recompute.")
    p.add_argument("--base", default="", help="Base model: 'embedded', hub id or folder (default: the one the "
                   "adapter card names, else the app setting).")
    p.add_argument("--work_dir", default="", help="Working dir with data/ (default: the app setting).")
    p.add_argument("--test_file", type=Path, default=None, help="Records for loss/ROUGE-L (default <work_dir>/data/test.jsonl).")
    p.add_argument("--bank_file", type=Path, default=None, help="MCQ bank (default <work_dir>/data/bank.jsonl).")
    p.add_argument("--limit", type=int, default=None, help="At most N items per part (quick CPU check).")
    p.add_argument("--mcq_per_source", type=int, default=200, help="MCQ items sampled per source.")
    p.add_argument("--mcq_sources", default=",".join(DEFAULT_MCQ_SOURCES), help="Bank sources to sample, comma-separated.")
    p.add_argument("--seed", type=int, default=0, help="Seed of the MCQ sample.")
    p.add_argument("--max_new_tokens", type=int, default=GenerationSettings.max_new_tokens,
                   help="Generation budget per item, reasoning and final answer together (default: the app's, so "
                   "the numbers describe what the page serves).")
    p.add_argument("--answer_allowance", type=int, default=ANSWER_ALLOWANCE,
                   help="Tokens of the budget kept for a final answer forced when the reasoning has not written "
                   "one (core.inference.ANSWER_ALLOWANCE, as the app); 0 never forces.")
    p.add_argument("--references", action="store_true",
                   help=f"Also evaluate base and adapter with the top {REFERENCES_K} reference passages per question "
                   "(core.retrieval's index of the prepared data) in the prompt: rows 'base+references' and "
                   "'adapter+references'.")
    p.add_argument("--max_seq_len", type=int, default=2048, help="Test examples are cut to this many tokens for the loss.")
    p.add_argument("--batch_size", type=int, default=0, help="Generation batch size (0: 256 on CUDA, 4 on CPU); "
                   "the loss uses at most 8.")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"),
                   help="Weights for evaluation (auto: bfloat16 on CUDA, float32 on CPU).")
    p.add_argument("--output", type=Path, default=None, help="Folder for eval.json/eval.md (default: the adapter folder).")
    p.add_argument("--models", default="base,adapter",
                   help="Which models to run now (base, adapter or both). Each model's results are cached in "
                   "<work_dir>/eval_cache for the same items and settings, so a long evaluation can be split over "
                   "several runs; the report is written once both are there.")
    p.add_argument("--recompute", type=Path, default=None, metavar="DIR",
                   help=f"Recompute the tables of DIR/eval.json from DIR/{SAMPLES_FILE}[.gz] (rescoring every "
                   "generation) and exit non-zero with the differences if they do not match; evaluates nothing.")
    return p


def _problems(args: argparse.Namespace) -> list[str]:
    problems = []
    if args.recompute is not None:
        return problems
    if args.adapter is None:
        problems.append("--adapter: required (an adapter folder), unless --recompute")
    elif not (args.adapter / "adapter_config.json").is_file():
        problems.append(f"--adapter: {args.adapter} is not an adapter folder (no adapter_config.json)")
    if args.limit is not None and args.limit < 1:
        problems.append(f"--limit: must be >= 1, got {args.limit}")
    if args.mcq_per_source < 0:
        problems.append(f"--mcq_per_source: must be >= 0, got {args.mcq_per_source}")
    if args.max_new_tokens < 1:
        problems.append(f"--max_new_tokens: must be >= 1, got {args.max_new_tokens}")
    if args.answer_allowance < 0:
        problems.append(f"--answer_allowance: must be >= 0, got {args.answer_allowance}")
    if args.batch_size < 0:
        problems.append(f"--batch_size: must be >= 0, got {args.batch_size}")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or set(models) - {"base", "adapter"}:
        problems.append(f"--models: a comma-separated subset of base,adapter; got {args.models!r}")
    return problems


def _resolve_base(args: argparse.Namespace, card: dict[str, Any]) -> "BaseModel":
    """The base to compare against: ``--base``, else what the card's config trained on (if it is here),
    else ``embedded`` for an embedded-model adapter, else the app setting."""
    from core.model import EMBEDDED_BASE_ID
    from core.settings import EMBEDDED_MODEL
    from trainer.modeling import resolve_base_model

    spec = args.base
    if not spec:
        trained_on = str((card.get("config") or {}).get("model_name") or "")
        if trained_on and (trained_on == EMBEDDED_MODEL or Path(trained_on).expanduser().exists()):
            spec = trained_on
        elif card.get("base_model") == EMBEDDED_BASE_ID:
            spec = EMBEDDED_MODEL
        else:
            spec = trained_on or card.get("base_model") or EMBEDDED_MODEL
    work_dir = Path(args.work_dir).expanduser().resolve() if args.work_dir else None
    return resolve_base_model(spec, work_dir=work_dir, progress=lambda m: print(f"[evaluate] {m}", flush=True))


def cache_path(work_dir: Path, name: str, key: dict[str, Any]) -> Path:
    """Where one model's results for these exact items and settings are kept (in the git-ignored work dir)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return work_dir / "eval_cache" / f"{name}-{digest}.json"


def read_cache(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and "results" in data and "samples" in data else None


def write_cache(path: Path, data: dict[str, Any]) -> None:
    """Atomic write, so an evaluation killed mid-way (e.g. by a time limit) is resumed at the next model."""
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, ensure_ascii=False)
    os.replace(tmp, path)


def run_evaluation(args: argparse.Namespace, *, command: str = "") -> dict[str, Any]:
    import gc

    import torch

    from core.model import load_model, pick_device, read_adapter_card
    from core.settings import load_settings

    t0 = time.perf_counter()
    card = read_adapter_card(args.adapter)
    base = _resolve_base(args, card)
    work = Path(args.work_dir).expanduser().resolve() if args.work_dir else load_settings().work_dir
    test_file = args.test_file or work / "data" / "test.jsonl"
    bank_file = args.bank_file or work / "data" / "bank.jsonl"
    notes: list[str] = []
    test = read_records(test_file) if test_file.is_file() else []
    bank = read_records(bank_file) if bank_file.is_file() and args.mcq_per_source > 0 else []
    if not test_file.is_file():
        notes.append(f"no test file at {test_file}: loss and ROUGE-L not measured")
    if args.mcq_per_source > 0 and not bank_file.is_file():
        notes.append(f"no bank file at {bank_file}: MCQ accuracy not measured")
    sources = [s.strip() for s in args.mcq_sources.split(",") if s.strip()]
    items = select_items(test, bank, limit=args.limit, mcq_sources=sources, mcq_per_source=args.mcq_per_source,
                         seed=args.seed)
    notes += items.notes
    if not (items.loss or items.open or any(items.mcq.values())):
        raise DataError(f"nothing to evaluate: no usable items in {test_file} or {bank_file}")

    device = pick_device(args.device)
    dtype_name = args.dtype if args.dtype != "auto" else ("bfloat16" if device == "cuda" else "float32")
    batch_size = args.batch_size or (256 if device == "cuda" else 4)
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    contexts, in_prompt = None, None
    if args.references:
        from core.retrieval import PROMPT_PASSAGES

        # The same passages for both models: retrieved once, from the index of the prepared data
        # (Settings.prepared_dir of this work dir).
        contexts = reference_contexts([*items.open, *(r for recs in items.mcq.values() for r in recs)], work / "data")
        in_prompt = PROMPT_PASSAGES
    key_parts = {"items": [r.id for r in items.loss] + ["|"] + [r.id for r in items.open]
                 + [r.id for recs in items.mcq.values() for r in recs],
                 "max_new_tokens": args.max_new_tokens, "answer_allowance": args.answer_allowance,
                 "max_seq_len": args.max_seq_len, "dtype": dtype_name,
                 "device": device, "base": base.identity, "base_location_sha": card.get("base_model_sha256"),
                 "files": [file_sha256(f) for f in (test_file, bank_file) if f.is_file()]}
    results: dict[str, Any] = {}
    samples: dict[str, list[dict[str, Any]]] = {}
    cached: list[str] = []
    for name, adapter_dir in (("base", None), ("adapter", args.adapter)):
        extra = {"adapter_sha": [file_sha256(f) for f in sorted(args.adapter.glob("adapter_model.*"))]} if adapter_dir else {}
        pending: list[tuple[str, Path]] = []
        for row in [name] + ([f"{name}+references"] if contexts is not None else []):
            refs = {"contexts": hashlib.sha256(json.dumps(contexts, sort_keys=True).encode()).hexdigest()} \
                if row != name else {}
            cache = cache_path(work, row, {**key_parts, **extra, **refs})
            hit = read_cache(cache)
            if hit is not None:
                print(f"[evaluate] {row}: results from an earlier run with the same items and settings ({cache})")
                results[row], samples[row] = hit["results"], hit["samples"]
                cached.append(row)
            else:
                pending.append((row, cache))
        if not pending or name not in wanted:
            continue
        print(f"[evaluate] {name}: loading", flush=True)
        model, tokenizer = load_model(base, adapter_dir=adapter_dir, device=device, dtype=getattr(torch, dtype_name))
        for row, cache in pending:
            with_refs = row != name
            decoding = Decoding(args.max_new_tokens, args.answer_allowance, REFERENCES_K if with_refs else None,
                                in_prompt if with_refs else None)
            results[row], samples[row] = evaluate_model(
                model, tokenizer, items, row=row, batch_size=batch_size, decoding=decoding, max_len=args.max_seq_len,
                contexts=contexts if with_refs else None, progress=lambda m: print(f"[evaluate] {m}", flush=True))
            write_cache(cache, {"results": results[row], "samples": samples[row]})
        del model
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()

    from trainer.card import library_versions
    from trainer.modeling import cpu_name

    return {
        "base_model": base.identity,
        "adapter": str(args.adapter),
        "adapter_name": Path(args.adapter).resolve().name,
        "adapter_card": {k: card.get(k) for k in ("base_model", "prompt_format", "trainable_params", "training",
                                                   "created_at")},
        "settings": {"limit": args.limit, "mcq_per_source": args.mcq_per_source, "mcq_sources": sources,
                     "seed": args.seed, "max_new_tokens": args.max_new_tokens,
                     "answer_allowance": args.answer_allowance, "references": bool(args.references),
                     "references_k": REFERENCES_K if args.references else None, "references_in_prompt": in_prompt,
                     "max_seq_len": args.max_seq_len,
                     "batch_size": batch_size, "dtype": dtype_name, "decoding": "greedy",
                     "test_file": str(test_file), "bank_file": str(bank_file)},
        "items": {"test_loss": len(items.loss), "open": len(items.open),
                  "mcq": {s: len(r) for s, r in items.mcq.items()},
                  "ids_sha256": {"test_loss": ids_hash(items.loss), "open": ids_hash(items.open),
                                 **{f"mcq_{s}": ids_hash(r) for s, r in items.mcq.items()}},
                  "ids": {"test_loss": [r.id for r in items.loss], "open": [r.id for r in items.open],
                          **{f"mcq_{s}": [r.id for r in recs] for s, recs in items.mcq.items()}}},
        "rows": [row for row in ROW_LABELS if args.references or "+" not in row],
        "results": results,
        "samples": samples,
        "from_cache": cached,
        "hardware": {"device": device, "device_name": torch.cuda.get_device_name(0) if device == "cuda" else cpu_name(),
                     "libraries": library_versions()},
        "notes": notes,
        "wall_time_s": time.perf_counter() - t0,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command or "python -m trainer.evaluate",
    }


def write_report(report: dict[str, Any], output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    samples = report.pop("samples", {})
    (output / "eval.json").write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n",
                                      encoding="utf-8")
    (output / "eval.md").write_text(render_markdown(report), encoding="utf-8")
    with (output / SAMPLES_FILE).open("w", encoding="utf-8") as fh:
        for row in report.get("rows") or list(samples):
            for sample in samples.get(row, []):
                fh.write(json.dumps(sample, ensure_ascii=False) + "\n")


# -- recompute ---------------------------------------------------------------------------------------


def read_samples(folder: Path) -> list[dict[str, Any]]:
    """The sample lines of an evaluation folder (``eval_samples.jsonl``, else ``eval_samples.jsonl.gz``); a
    missing file or a line that is not JSON is a :class:`DataError` (recomputing needs every line)."""
    from trainer.launch import eval_samples_text

    text = eval_samples_text(folder)
    if text is None:
        raise DataError(f"no {SAMPLES_FILE} or {SAMPLES_FILE}.gz in {folder}")
    try:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise DataError(f"{folder}: a sample line is not JSON: {exc}") from exc


def _differences(path: str, stored: Any, recomputed: Any) -> list[str]:
    """Where ``stored`` (eval.json) and ``recomputed`` differ; floats agree to 1e-9 (relative)."""
    if isinstance(recomputed, dict):
        if not isinstance(stored, dict):
            return [f"{path}: eval.json has {stored!r}, recomputed a table"]
        return [d for key, value in recomputed.items() for d in _differences(f"{path}.{key}", stored.get(key), value)]
    if isinstance(recomputed, list) and isinstance(stored, list) and len(stored) == len(recomputed):
        return [d for i, (a, b) in enumerate(zip(stored, recomputed)) for d in _differences(f"{path}[{i}]", a, b)]
    if isinstance(recomputed, float) and isinstance(stored, (int, float)) and not isinstance(stored, bool):
        same = math.isclose(stored, recomputed, rel_tol=1e-9, abs_tol=1e-12)
    else:
        same = stored == recomputed
    return [] if same else [f"{path}: eval.json has {stored!r}, the samples give {recomputed!r}"]


def recompute(folder: Path) -> list[str]:
    """Rebuild the tables of ``folder/eval.json`` from its samples; the differences (empty: they agree).

    Every sample is rescored from its generated text (:func:`item_scores`), so a changed generation
    or a changed per-item value shows up, and then summarised per row as the evaluation does.
    """
    try:
        report = json.loads((folder / "eval.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {folder / 'eval.json'}: {exc}") from exc
    problems: list[str] = []
    by_row: dict[str, list[dict[str, Any]]] = {}
    for number, sample in enumerate(read_samples(folder), start=1):
        try:
            scores = item_scores(sample)
            row = sample["row"]
        except (KeyError, TypeError, AttributeError) as exc:
            problems.append(f"sample line {number}: not a sample ({type(exc).__name__}: {exc})")
            continue
        for key, value in scores.items():
            problems += _differences(f"{row} {sample.get('id')} {key}", sample.get(key), value)
        by_row.setdefault(row, []).append({**sample, **scores})
    results = report.get("results") or {}
    sources = (report.get("settings") or {}).get("mcq_sources") or []
    ids = (report.get("items") or {}).get("ids") or {}
    expected_ids = [*ids.get("open", []), *(i for s in sources for i in ids.get(f"mcq_{s}", []))]
    for row in sorted(set(results) | set(by_row)):
        if row not in by_row:
            problems.append(f"{row}: in eval.json, but no samples")
            continue
        if row not in results:
            problems.append(f"{row}: samples, but no results in eval.json")
            continue
        got_ids = [s.get("id") for s in by_row[row]]
        if expected_ids and got_ids != expected_ids:
            problems.append(f"{row}: the samples' items differ from eval.json's item ids "
                            f"({len(got_ids)} samples, {len(expected_ids)} ids)")
        table = summarize(by_row[row], sources)
        for part in ("open", "mcq"):
            if (part in table) != (part in results[row]):
                where = "only in eval.json" if part in results[row] else "only in the samples"
                problems.append(f"{row}.{part}: {where}")
        problems += _differences(row, results[row], table)
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    problems = _problems(args)
    if problems:
        print("[evaluate] invalid arguments:\n" + "\n".join(f"  - {p}" for p in problems), file=sys.stderr)
        return 2
    if args.recompute is not None:
        try:
            differences = recompute(args.recompute)
        except DataError as exc:
            print(f"[evaluate] error: {exc}", file=sys.stderr)
            return 2
        if differences:
            print(f"[evaluate] {args.recompute / 'eval.json'} does not match its samples ({len(differences)} "
                  "differences):\n" + "\n".join(f"  - {d}" for d in differences), file=sys.stderr)
            return 1
        print(f"[evaluate] {args.recompute / 'eval.json'} matches its samples")
        return 0
    import shlex

    from core.model import ModelError
    from core.settings import SettingsError

    try:
        report = run_evaluation(args, command=shlex.join(["python", "-m", "trainer.evaluate", *argv]))
    except (DataError, ModelError, SettingsError) as exc:
        print(f"[evaluate] error: {exc}", file=sys.stderr)
        return 2
    missing = [row for row in report["rows"] if row not in report["results"]]
    if missing:
        models = sorted({row.split("+")[0] for row in missing}, key=["base", "adapter"].index)
        print(f"[evaluate] partial: results for {', '.join(missing)} are still missing; run the same command with "
              f"--models {','.join(models)} (the finished part is cached), and the report is written then")
        return 0
    output = args.output or args.adapter
    write_report(report, output)
    print(render_markdown(report))
    print(f"[evaluate] wrote {output / 'eval.json'}, {output / 'eval.md'} and {output / SAMPLES_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
