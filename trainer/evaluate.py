"""Honest evaluation: the base model and base + adapter on the SAME held-out items.

    python -m trainer.evaluate --adapter adapters/smollm2-135m-medcot
    python -m trainer.evaluate --adapter RUN_DIR/adapter --limit 8          # quick CPU check

Measured for each model (greedy decoding, batched with left padding):

- test loss and perplexity on the completion tokens of the test split (``test.jsonl``), and
  mean token accuracy there -- a training diagnostic (how often the next reference token is the
  model's top guess), NOT exam accuracy;
- ROUGE-L (``rouge-score``) of the generated final answer against the reference answer on the
  open-ended test items (a generation without the final-answer marker is scored as a whole);
- format adherence: reasoning AND a final answer present (``core.prompts.parse_completion``);
- multiple-choice accuracy on a fixed, seeded sample of the quiz bank (default 200 MedQA + 200
  MedMCQA), with letter extraction (``core.metrics.extract_choice``) and a 95% Wilson interval.

Writes ``eval.json`` (every number, the settings and the item ids), ``eval.md`` (the comparison
table) and ``eval_samples.jsonl`` (each item's generations) into the adapter folder or ``--output``.
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

from core.metrics import accuracy, extract_choice, rouge_l
from core.prompts import parse_completion
from core.records import Record
from trainer.dataset import DataError, encode_example, file_sha256, prompt_messages, read_records, to_example

if TYPE_CHECKING:
    from core.model import BaseModel

DEFAULT_MCQ_SOURCES = ("medqa", "medmcqa")
SOURCE_LABELS = {"medqa": "MedQA", "medmcqa": "MedMCQA", "mmlu": "MMLU medical", "pubmedqa": "PubMedQA"}


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


def generate(model: Any, tokenizer: Any, records: Sequence[Record], *, batch_size: int, max_new_tokens: int) -> tuple[list[str], dict[str, float]]:
    """Greedy completions for ``records`` in their order; batches of similar prompt length, left-padded."""
    import torch
    from transformers import GenerationConfig

    from trainer.dataset import chat_ids

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    gen_cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop_token_ids(model, tokenizer),
                               pad_token_id=pad)
    prompts = [chat_ids(tokenizer, prompt_messages(r), generation_prompt=True) for r in records]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
    outputs: list[str] = [""] * len(prompts)
    new_tokens, t0 = 0, time.perf_counter()
    stops = set(gen_cfg.eos_token_id)
    # Every batch runs until its longest answer ends, so equal-sized batches beat a full one plus a small tail.
    n_batches = max(1, math.ceil(len(order) / batch_size))
    size = max(1, math.ceil(len(order) / n_batches))
    for start in range(0, len(order), size):
        idx = order[start:start + size]
        width = max(len(prompts[i]) for i in idx)
        input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids = prompts[i]
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            mask[row, width - len(ids):] = 1
        with torch.no_grad():
            out = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), generation_config=gen_cfg)
        for row, i in enumerate(idx):
            seq = out[row, width:].tolist()
            cut = next((k for k, tok in enumerate(seq) if tok in stops), len(seq))
            new_tokens += cut
            outputs[i] = tokenizer.decode(seq[:cut], skip_special_tokens=True)
    seconds = time.perf_counter() - t0
    return outputs, {"new_tokens": new_tokens, "seconds": seconds, "tokens_per_s": new_tokens / seconds if seconds else 0.0}


def score_open(records: Sequence[Record], outputs: Sequence[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rows, rouges, formed = [], [], []
    for rec, text in zip(records, outputs):
        parsed = parse_completion(text)
        predicted = parsed.answer if parsed.has_answer and parsed.answer else text
        score = rouge_l(predicted, rec.answer)
        rouges.append(score)
        formed.append(parsed.well_formed)
        rows.append({"id": rec.id, "kind": "open", "output": text, "answer": parsed.answer, "reference": rec.answer,
                     "well_formed": parsed.well_formed, "rouge_l": score})
    fmt = accuracy(formed)
    summary = {"n": len(rouges), "rouge_l": sum(rouges) / len(rouges) if rouges else None,
               "format_adherence": fmt.to_dict()}
    return summary, rows


def score_mcq(records: Sequence[Record], outputs: Sequence[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rows, outcomes, formed, unparsed = [], [], [], 0
    for rec, text in zip(records, outputs):
        letter = extract_choice(text, list(rec.options or {}), options=rec.options)
        unparsed += letter is None
        ok = letter is not None and letter == (rec.correct or "").upper()
        outcomes.append(ok)
        formed.append(parse_completion(text).well_formed)
        rows.append({"id": rec.id, "kind": "mcq", "source": rec.source, "output": text, "choice": letter,
                     "correct": rec.correct, "is_correct": ok})
    acc = accuracy(outcomes)
    return {**acc.to_dict(), "unparsed": unparsed, "format_adherence": accuracy(formed).to_dict()}, rows


def evaluate_model(
    model: Any, tokenizer: Any, items: EvalItems, *, batch_size: int, max_new_tokens: int, max_len: int,
    progress=print,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every measurement for one model; generation runs over all open-ended and MCQ items in one pool."""
    results: dict[str, Any] = {}
    samples: list[dict[str, Any]] = []
    if items.loss:
        progress(f"  loss on {len(items.loss)} test items")
        # Full-vocabulary fp32 logits for long sequences are large: score the loss in small batches.
        results["test_loss"] = completion_loss(model, tokenizer, items.loss, batch_size=min(batch_size, 8),
                                               max_len=max_len)
    groups = [("open", items.open)] + [(source, recs) for source, recs in items.mcq.items() if recs]
    pool = [r for _, recs in groups for r in recs]
    if not pool:
        return results, samples
    progress(f"  generating {len(pool)} answers ({', '.join(f'{len(r)} {g}' for g, r in groups if r)})")
    outputs, stats = generate(model, tokenizer, pool, batch_size=batch_size, max_new_tokens=max_new_tokens)
    results["generation"] = stats
    start, mcq, every, every_out = 0, {}, [], []
    for group, recs in groups:
        out = outputs[start:start + len(recs)]
        start += len(recs)
        if group == "open":
            if recs:
                results["open"], rows = score_open(recs, out)
                samples += rows
            continue
        mcq[group], rows = score_mcq(recs, out)
        samples += rows
        every += recs
        every_out += out
    if every:
        mcq["all"], _ = score_mcq(every, every_out)
        results["mcq"] = mcq
    return results, samples


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


def render_markdown(report: dict[str, Any]) -> str:
    """The comparison table (measured numbers only; n/a where a part was not measured)."""
    base, ad = report["results"]["base"], report["results"]["adapter"]
    s = report["settings"]
    rows: list[tuple[str, str, str, str]] = []
    bl, al = base.get("test_loss"), ad.get("test_loss")
    if bl and al:
        n = f"n={bl['n_items']} items, {bl['n_tokens']:,} tokens"
        rows.append((f"Test loss on reference completions ({n})", _num(bl["loss"]), _num(al["loss"]),
                     _delta(bl["loss"], al["loss"])))
        rows.append(("Test perplexity", _num(bl["perplexity"], 2), _num(al["perplexity"], 2),
                     _delta(bl["perplexity"], al["perplexity"], 2)))
        rows.append(("Mean token accuracy (training diagnostic, not exam accuracy)",
                     _num(bl["mean_token_accuracy"]), _num(al["mean_token_accuracy"]),
                     _delta(bl["mean_token_accuracy"], al["mean_token_accuracy"])))
    bo, ao = base.get("open"), ad.get("open")
    if bo and ao:
        rows.append((f"ROUGE-L, final answer vs reference (open-ended test, n={bo['n']})", _num(bo["rouge_l"]),
                     _num(ao["rouge_l"]), _delta(bo["rouge_l"], ao["rouge_l"])))
        rows.append((f"Format adherence: reasoning + final answer (open-ended test, n={bo['n']})",
                     _pct(bo["format_adherence"]), _pct(ao["format_adherence"]),
                     _delta(bo["format_adherence"]["accuracy"], ao["format_adherence"]["accuracy"], 1, 100, " pts")))
    bm, am = base.get("mcq", {}), ad.get("mcq", {})
    for source in [*report["settings"]["mcq_sources"], "all"]:
        if source in bm and source in am:
            label = "all sampled" if source == "all" else SOURCE_LABELS.get(source, source)
            rows.append((f"MCQ accuracy, {label} (n={bm[source]['n']}, 95% CI)", _pct(bm[source]), _pct(am[source]),
                         _delta(bm[source]["accuracy"], am[source]["accuracy"], 1, 100, " pts")))
    if "all" in bm and "all" in am:
        rows.append(("MCQ answers with no extractable letter", f"{bm['all']['unparsed']}", f"{am['all']['unparsed']}",
                     ""))
        rows.append(("Format adherence on MCQ answers", _pct(bm["all"]["format_adherence"]),
                     _pct(am["all"]["format_adherence"]), ""))
    bg, ag = base.get("generation"), ad.get("generation")
    if bg and ag:
        rows.append((f"Generation speed, batched greedy (new tokens/s, batch {s['batch_size']})",
                     f"{bg['tokens_per_s']:.1f}", f"{ag['tokens_per_s']:.1f}", ""))
    lines = [
        "# Evaluation: base model vs fine-tuned adapter",
        "",
        f"Base model `{report['base_model']}`; adapter `{report['adapter_name']}`. Both models answered the same "
        f"held-out items with greedy decoding (max {s['max_new_tokens']} new tokens), on {report['hardware']['device_name']} "
        f"({report['hardware']['device']}, {s['dtype']}), in {report['wall_time_s']:.0f} s"
        + (f" (results for {' and '.join(report['from_cache'])} reused from an earlier run with identical items, "
           "settings and weights)." if report.get("from_cache") else "."),
        "",
        "| Metric | Base model | Fine-tuned (adapter) | Change |",
        "| --- | --- | --- | --- |",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
        "Notes: loss, perplexity and token accuracy are over the completion tokens (reasoning + final answer) of "
        "the test split; ROUGE-L compares the generated final-answer line with the reference answer (a generation "
        "without a final-answer line is scored as a whole); MCQ items are a fixed sample of the quiz bank "
        f"(seed {s['seed']}), letters extracted by `core.metrics.extract_choice`, intervals are 95% Wilson intervals.",
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
    p.add_argument("--adapter", type=Path, required=True, help="Adapter folder (with adapter_card.json).")
    p.add_argument("--base", default="", help="Base model: 'embedded', hub id or folder (default: the one the "
                   "adapter card names, else the app setting).")
    p.add_argument("--work_dir", default="", help="Working dir with data/ (default: the app setting).")
    p.add_argument("--test_file", type=Path, default=None, help="Records for loss/ROUGE-L (default <work_dir>/data/test.jsonl).")
    p.add_argument("--bank_file", type=Path, default=None, help="MCQ bank (default <work_dir>/data/bank.jsonl).")
    p.add_argument("--limit", type=int, default=None, help="At most N items per part (quick CPU check).")
    p.add_argument("--mcq_per_source", type=int, default=200, help="MCQ items sampled per source.")
    p.add_argument("--mcq_sources", default=",".join(DEFAULT_MCQ_SOURCES), help="Bank sources to sample, comma-separated.")
    p.add_argument("--seed", type=int, default=0, help="Seed of the MCQ sample.")
    p.add_argument("--max_new_tokens", type=int, default=1024,
                   help="Generation budget per item (the trained answers run to ~800 tokens; a smaller budget "
                   "cuts answers before their final-answer line).")
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
    return p


def _problems(args: argparse.Namespace) -> list[str]:
    problems = []
    if not (args.adapter / "adapter_config.json").is_file():
        problems.append(f"--adapter: {args.adapter} is not an adapter folder (no adapter_config.json)")
    if args.limit is not None and args.limit < 1:
        problems.append(f"--limit: must be >= 1, got {args.limit}")
    if args.mcq_per_source < 0:
        problems.append(f"--mcq_per_source: must be >= 0, got {args.mcq_per_source}")
    if args.max_new_tokens < 1:
        problems.append(f"--max_new_tokens: must be >= 1, got {args.max_new_tokens}")
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
    key_parts = {"items": [r.id for r in items.loss] + ["|"] + [r.id for r in items.open]
                 + [r.id for recs in items.mcq.values() for r in recs],
                 "max_new_tokens": args.max_new_tokens, "max_seq_len": args.max_seq_len, "dtype": dtype_name,
                 "device": device, "base": base.identity, "base_location_sha": card.get("base_model_sha256"),
                 "files": [file_sha256(f) for f in (test_file, bank_file) if f.is_file()]}
    results: dict[str, Any] = {}
    samples: dict[str, list[dict[str, Any]]] = {}
    cached: list[str] = []
    for name, adapter_dir in (("base", None), ("adapter", args.adapter)):
        extra = {"adapter_sha": [file_sha256(f) for f in sorted(args.adapter.glob("adapter_model.*"))]} if adapter_dir else {}
        cache = cache_path(work, name, {**key_parts, **extra})
        hit = read_cache(cache)
        if hit is not None:
            print(f"[evaluate] {name}: results from an earlier run with the same items and settings ({cache})")
            results[name], samples[name] = hit["results"], hit["samples"]
            cached.append(name)
            continue
        if name not in wanted:
            continue
        print(f"[evaluate] {name}: loading", flush=True)
        model, tokenizer = load_model(base, adapter_dir=adapter_dir, device=device, dtype=getattr(torch, dtype_name))
        results[name], samples[name] = evaluate_model(
            model, tokenizer, items, batch_size=batch_size, max_new_tokens=args.max_new_tokens,
            max_len=args.max_seq_len, progress=lambda m: print(f"[evaluate] {m}", flush=True))
        write_cache(cache, {"results": results[name], "samples": samples[name]})
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
                     "seed": args.seed, "max_new_tokens": args.max_new_tokens, "max_seq_len": args.max_seq_len,
                     "batch_size": batch_size, "dtype": dtype_name, "decoding": "greedy",
                     "test_file": str(test_file), "bank_file": str(bank_file)},
        "items": {"test_loss": len(items.loss), "open": len(items.open),
                  "mcq": {s: len(r) for s, r in items.mcq.items()},
                  "ids_sha256": {"test_loss": ids_hash(items.loss), "open": ids_hash(items.open),
                                 **{f"mcq_{s}": ids_hash(r) for s, r in items.mcq.items()}},
                  "ids": {"test_loss": [r.id for r in items.loss], "open": [r.id for r in items.open],
                          **{f"mcq_{s}": [r.id for r in recs] for s, recs in items.mcq.items()}}},
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
    with (output / "eval_samples.jsonl").open("w", encoding="utf-8") as fh:
        for model_name, rows in samples.items():
            for row in rows:
                fh.write(json.dumps({"model": model_name, **row}, ensure_ascii=False) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    problems = _problems(args)
    if problems:
        print("[evaluate] invalid arguments:\n" + "\n".join(f"  - {p}" for p in problems), file=sys.stderr)
        return 2
    import shlex

    from core.model import ModelError
    from core.settings import SettingsError

    try:
        report = run_evaluation(args, command=shlex.join(["python", "-m", "trainer.evaluate", *argv]))
    except (DataError, ModelError, SettingsError) as exc:
        print(f"[evaluate] error: {exc}", file=sys.stderr)
        return 2
    missing = [m for m in ("base", "adapter") if m not in report["results"]]
    if missing:
        print(f"[evaluate] partial: results for {', '.join(missing)} are still missing; run the same command with "
              f"--models {','.join(missing)} (the finished part is cached), and the report is written then")
        return 0
    output = args.output or args.adapter
    write_report(report, output)
    print(render_markdown(report))
    print(f"[evaluate] wrote {output / 'eval.json'}, {output / 'eval.md'} and {output / 'eval_samples.jsonl'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
