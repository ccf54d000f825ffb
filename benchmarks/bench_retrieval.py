"""Benchmark: reference retrieval quality, query latency and build cost (BM25, dense, hybrid).

Run:  .venv/bin/python -m benchmarks.bench_retrieval [--runs 3] [--items 400] [--latency-queries 200] [--out DIR]

Needs the prepared data (``python -m core.data prepare``) and the raw MedQuAD folder. Prints
markdown tables and, with ``--out``, writes ``results.json`` (every number, the machine, library
versions, the command) and ``report.md`` (the printed tables) there.

**The labelled set** (held-out items only: the prepared bank and test split; nothing from them is
in the index). An item is labelled with the MedQuAD documents whose Focus, or one of its MedlinePlus
synonyms, appears as whole words in the item's *correct option* text, so the reference a student
would want for the right answer is known. To keep labels specific:

- multiple-choice items only (the correct option is short and names the answer), and not those
  asking for the odd one out ("all of the following EXCEPT", "which is NOT", "false", "least"),
  whose correct option is what the case is not about,
- terms of 4+ characters that occur in under 1% of all held-out questions and options (drops
  "blood", "pain", "surgery" and similar synonyms that label nothing in particular),
- a matched term inside a longer matched term is dropped ("carcinoma" within "papillary carcinoma"),
- items whose terms point at 1-10 documents.

A deterministic sample (lowest SHA-256 of the item id) of ``--items`` is kept. Two query forms are
scored: the question with its options (what a quiz item sends) and the question alone (a case
typed without options, where the answer's name is usually absent: much harder).

**Metrics**: hit@5 = share of items with a relevant document among the top 5 passages; recall@5 =
share of an item's relevant documents among them, averaged; MRR@10 = mean reciprocal rank of the
first relevant passage (0 beyond 10). Worked-case passages are never labelled relevant.
**Latency** is one ``ReferenceIndex.search`` call (k=5), query embedding included, after one
warm-up query; the encoder's one-time load is reported separately. **Build** runs in a child
process so its peak RSS is its own; a dense build with an empty embedding cache is estimated from
the measured encoding rate (the precise run would take minutes per representation).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from core import retrieval
from core.datasets import medquad
from core.records import Record

LONG_QUERY_CHARS = 6000
TERM_MAX_ITEM_SHARE = 0.01
MAX_RELEVANT_DOCS = 10
MIN_TERM_CHARS = 4
MAX_TERM_WORDS = 8
_TERM_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_NEGATED = re.compile(r"\b(?:except|not|false|incorrect|untrue|least|wrong)\b", re.I)


@dataclass(frozen=True)
class LabelledItem:
    id: str
    source: str
    query_with_options: str
    query_question: str
    terms: tuple[str, ...]
    relevant: frozenset[str]
    """MedQuAD document ids (``<source>-<file>``, as in passage ids)."""


def _term_key(text: str) -> str:
    return " ".join(_TERM_WORD.findall(text.lower()))


def _ngrams(text: str) -> set[str]:
    words = _TERM_WORD.findall(text.lower())
    return {" ".join(words[i : i + n]) for n in range(1, MAX_TERM_WORDS + 1) for i in range(len(words) - n + 1)}


def _item_text(record: Record) -> str:
    options = "\n".join(f"{k}. {v}" for k, v in (record.options or {}).items())
    return f"{record.question}\n{options}"


def labelled_items(pairs: Sequence[medquad.QAPair], held_out: Sequence[Record], *, limit: int) -> tuple[list[LabelledItem], dict[str, Any]]:
    """The labelled evaluation set (see the module docstring) and counts describing how it was built."""
    docs_by_term: dict[str, set[str]] = {}
    for pair in pairs:
        for name in (pair.focus, *pair.synonyms):
            key = _term_key(name)
            if len(key) >= MIN_TERM_CHARS and len(key.split()) <= MAX_TERM_WORDS:
                docs_by_term.setdefault(key, set()).add(pair.doc_id)
    item_grams = [_ngrams(_item_text(r)) for r in held_out]
    frequency: Counter[str] = Counter(g for grams in item_grams for g in grams if g in docs_by_term)
    too_common = {t for t, n in frequency.items() if n >= TERM_MAX_ITEM_SHARE * len(held_out)}
    items: list[LabelledItem] = []
    for record in held_out:
        if record.kind != "mcq" or not record.options or record.correct not in record.options:
            continue
        if _NEGATED.search(record.question):
            continue
        found = {g for g in _ngrams(record.options[record.correct]) if g in docs_by_term and g not in too_common}
        found = {t for t in found if not any(t != u and f" {t} " in f" {u} " for u in found)}
        relevant = set().union(*(docs_by_term[t] for t in found)) if found else set()
        if not 1 <= len(relevant) <= MAX_RELEVANT_DOCS:
            continue
        items.append(LabelledItem(
            id=record.id, source=record.source, query_with_options=_item_text(record), query_question=record.question,
            terms=tuple(sorted(found)), relevant=frozenset(relevant),
        ))
    eligible = len(items)
    items.sort(key=lambda it: hashlib.sha256(it.id.encode()).hexdigest())
    items = items[:limit]
    info = {
        "held_out_records": len(held_out),
        "eligible_items": eligible,
        "sampled_items": len(items),
        "by_source": dict(sorted(Counter(it.source for it in items).items())),
        "terms_too_common": len(too_common),
        "mean_relevant_docs": round(statistics.mean(len(it.relevant) for it in items), 2) if items else 0,
        "examples": [{"id": it.id, "terms": list(it.terms), "relevant": sorted(it.relevant)[:3]} for it in items[:8]],
    }
    return items, info


def _doc_of(passage_id: str) -> str | None:
    kind, _, rest = passage_id.partition(":")
    return rest.split(":")[0] if kind == "medquad" else None


class MemoEncoder:
    """The index's encoder with query vectors remembered: quality scoring embeds the same 800 queries
    for every dense configuration, and the vectors do not depend on it. Never used for latency."""

    def __init__(self, encoder: retrieval.Encoder) -> None:
        self.encoder = encoder
        self.memo: dict[tuple[str, int], Any] = {}

    def encode(self, texts: Sequence[str], *, max_tokens: int, batch_size: int = 64) -> Any:
        import numpy as np

        missing = [t for t in texts if (t, max_tokens) not in self.memo]
        if missing:
            for text, vector in zip(missing, self.encoder.encode(missing, max_tokens=max_tokens, batch_size=batch_size)):
                self.memo[(text, max_tokens)] = vector
        return np.stack([self.memo[(t, max_tokens)] for t in texts])


def score(index: retrieval.ReferenceIndex, items: Sequence[LabelledItem], *, method: str, field: str) -> dict[str, float]:
    hits, recalls, rr = [], [], []
    for item in items:
        found = index.search(getattr(item, field), k=10, method=method)
        docs = [_doc_of(p.id) for p in found]
        top5 = {d for d in docs[:5] if d}
        hits.append(bool(top5 & item.relevant))
        recalls.append(len(top5 & item.relevant) / len(item.relevant))
        rank = next((n for n, d in enumerate(docs, start=1) if d in item.relevant), None)
        rr.append(1 / rank if rank else 0.0)
    n = len(items) or 1
    return {"hit@5": round(sum(hits) / n, 4), "recall@5": round(sum(recalls) / n, 4), "mrr@10": round(sum(rr) / n, 4)}


def latencies(index: retrieval.ReferenceIndex, queries: Sequence[str], *, method: str) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU milliseconds of each query (CPU time is what a busy neighbour does
    not inflate; with two encoder threads it can exceed wall time)."""
    index.search(queries[0], k=5, method=method)  # warm-up (caches, first-call allocations)
    wall, cpu = [], []
    for query in queries:
        start, start_cpu = time.perf_counter(), time.process_time()
        index.search(query, k=5, method=method)
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    return wall, cpu


def _pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def long_query(held_out: Sequence[Record]) -> str:
    """6,000 characters of real case text: held-out questions joined until the length is reached."""
    text = ""
    for record in sorted(held_out, key=lambda r: r.id):
        text += record.question + "\n"
        if len(text) >= LONG_QUERY_CHARS:
            break
    return text[:LONG_QUERY_CHARS]


# -- build measurements (child process) ---------------------------------------------------------------------


def _build_child(out: str, *, dense: bool, cache: str | None) -> None:
    from core.data import load_split
    from core.settings import load_settings

    settings = load_settings()
    train = load_split(settings, "train")
    start = time.perf_counter()
    section = retrieval.build_index(Path(out) / retrieval.INDEX_DIRNAME, medquad_dir=settings.data_dir / medquad.FOLDER,
                                    train=train, dense=dense, cache_dir=Path(cache) if cache else None)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "max_rss_mb": peak_rss_mb(),
                      "section": section}))


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not getrusage: on Linux ru_maxrss carries over a
    fork and exec, so a child would report its parent's peak whenever that was larger."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load_child(prepared: str, *, dense: bool) -> None:
    start = time.perf_counter()
    index = retrieval.load_index(Path(prepared))
    loaded = time.perf_counter() - start
    index.search("gout and uric acid", k=5)
    out: dict[str, Any] = {"load_s": loaded, "rss_mb_index": peak_rss_mb()}
    if dense:
        start = time.perf_counter()
        index.search("gout and uric acid", k=5, method="hybrid")  # the first dense query loads the encoder
        out["first_dense_query_s"] = time.perf_counter() - start
        out["rss_mb_with_encoder"] = peak_rss_mb()
    print(json.dumps(out))


def measure_load(prepared: Path, *, dense: bool = False) -> dict[str, Any]:
    """Load time and peak RSS of a fresh process that loads the index (and, with ``dense``, the encoder)."""
    command = [sys.executable, "-m", "benchmarks.bench_retrieval", "--load-child", str(prepared)]
    if dense:
        command.append("--dense")
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_build(out: Path, *, dense: bool = False, cache: Path | None = None) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.bench_retrieval", "--build-child", str(out)]
    if dense:
        command.append("--dense")
    if cache:
        command += ["--cache", str(cache)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- machine description ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import bm25s
    import numpy
    import scipy
    import Stemmer
    import torch
    import transformers

    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
        "python": platform.python_version(), "bm25s": bm25s.__version__, "numpy": numpy.__version__,
        "scipy": scipy.__version__, "PyStemmer": getattr(Stemmer, "__version__", "?"), "torch": torch.__version__,
        "transformers": transformers.__version__, "git_commit": commit,
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.bench_retrieval", *sys.argv[1:]]),
    }


# -- the benchmark ---------------------------------------------------------------------------------------


def _median_range(values: Sequence[float], digits: int = 1) -> str:
    if not values:
        return "n/a"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="repeats of the build and latency measurements")
    parser.add_argument("--items", type=int, default=400, help="labelled items to sample")
    parser.add_argument("--latency-queries", type=int, default=200, help="queries timed per run and method")
    parser.add_argument("--out", type=Path, help="folder for results.json and report.md")
    parser.add_argument("--cache", type=Path, help="embedding cache (default: <work_dir>/cache/retrieval-embeddings)")
    parser.add_argument("--build-child", help=argparse.SUPPRESS)
    parser.add_argument("--load-child", help=argparse.SUPPRESS)
    parser.add_argument("--dense", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load_child:
        _load_child(args.load_child, dense=args.dense)
        return 0
    if args.build_child:
        _build_child(args.build_child, dense=args.dense, cache=str(args.cache) if args.cache else None)
        return 0
    run(args)
    return 0


def run(args: argparse.Namespace) -> None:
    import numpy as np

    from core.data import load_split
    from core.settings import load_settings

    settings = load_settings()
    cache = args.cache or settings.work_dir / "cache" / "retrieval-embeddings"
    results: dict[str, Any] = {"machine": machine(), "load_average_start": os.getloadavg(), "runs": args.runs}
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    say(f"machine: {results['machine']['cpu']} cores={results['machine']['cores']} python={results['machine']['python']} "
        f"bm25s={results['machine']['bm25s']} torch={results['machine']['torch']} transformers={results['machine']['transformers']}")
    say(f"command: {results['machine']['command']}; load average at start {os.getloadavg()[0]:.2f}")

    # Builds: the default (BM25 only) cold, and a dense build with a warm embedding cache.
    builds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.runs):
            builds.append(measure_build(Path(tmp) / f"bm25-{n}"))
        dense_warm = measure_build(Path(tmp) / "dense", dense=True, cache=cache)
        index = retrieval.load_index(Path(tmp) / "dense")
        loads = [measure_load(Path(tmp) / "bm25-0") for _ in range(args.runs)]
        dense_loads = [measure_load(Path(tmp) / "dense", dense=True) for _ in range(args.runs)]
    results["build"] = {"bm25": builds, "dense_warm_cache": dense_warm, "load": loads, "load_dense": dense_loads}
    section = builds[0]["section"]
    say()
    say(f"corpus: {section['passages']:,} passages from {section['documents']:,} documents; "
        f"MedQuAD {section['medquad']['qa_pairs']:,} QA pairs kept, dropped {section['medquad']['dropped']}")

    # Dense representations: the index's passages, each representation embedded (through the cache).
    pairs = medquad.read_medquad(settings.data_dir / medquad.FOLDER).pairs
    train = load_split(settings, "train")
    docs, rows = retrieval.corpus_from(pairs, train)
    assert [r[0] for r in rows] == [r[0] for r in index._rows], "the bench's corpus must be the index's"
    encoder = retrieval.Encoder()
    representations: dict[str, Any] = {}
    for name in retrieval.DENSE_REPRESENTATIONS:
        texts = retrieval.dense_texts(docs, rows, name)
        unique = list(dict.fromkeys(texts))
        sample = [unique[i] for i in np.random.default_rng(0).choice(len(unique), size=min(512, len(unique)), replace=False)]
        encoder.encode(sample[:32], max_tokens=retrieval.PASSAGE_MAX_TOKENS)
        start = time.perf_counter()
        encoder.encode(sample, max_tokens=retrieval.PASSAGE_MAX_TOKENS)
        rate = len(sample) / (time.perf_counter() - start)
        start = time.perf_counter()
        matrix, computed = retrieval.embed_cached(texts, max_tokens=retrieval.PASSAGE_MAX_TOKENS, cache_dir=cache, encoder=encoder)
        representations[name] = {
            "matrix": matrix.astype(np.float32), "unique_texts": len(unique), "texts_per_s": round(rate, 1),
            "cold_embed_s_estimate": round(len(unique) / rate, 1), "computed_now": computed,
            "computed_now_s": round(time.perf_counter() - start, 1),
        }
    memo = MemoEncoder(encoder)

    held_out = load_split(settings, "bank") + load_split(settings, "test")
    items, label_info = labelled_items(pairs, held_out, limit=args.items)
    results["labels"] = label_info
    say(f"labelled set: {label_info['sampled_items']} of {label_info['eligible_items']} eligible held-out items "
        f"{label_info['by_source']}, {label_info['mean_relevant_docs']} relevant documents each on average")

    configs: list[tuple[str, str, str | None]] = [("bm25", "bm25", None)]
    for name in retrieval.DENSE_REPRESENTATIONS:
        configs += [(f"dense[{name}]", "dense", name), (f"hybrid[{name}]", "hybrid", name)]
    queries = [it.query_with_options for it in items][: args.latency_queries]
    long = long_query(held_out)
    quality: dict[str, Any] = {}
    timing: dict[str, Any] = {}
    for label, method, rep in configs:
        if rep is not None:
            index._dense = representations[rep]["matrix"]
        index._encoder = memo  # type: ignore[assignment]
        quality[label] = {"with_options": score(index, items, method=method, field="query_with_options"),
                          "question_only": score(index, items, method=method, field="query_question")}
        index._encoder = encoder  # latency: every query embedded
        measured = [latencies(index, queries, method=method) for _ in range(args.runs)]
        per_run = [wall for wall, _ in measured]
        cpu_runs = [cpu for _, cpu in measured]
        long_ms = []
        for _ in range(max(5, args.runs)):
            start = time.perf_counter()
            found = index.search(long, k=5, method=method)
            long_ms.append((time.perf_counter() - start) * 1000)
        timing[label] = {
            "p50_ms": [round(_pct(r, 50), 2) for r in per_run], "p95_ms": [round(_pct(r, 95), 2) for r in per_run],
            "cpu_p50_ms": [round(_pct(r, 50), 2) for r in cpu_runs], "cpu_p95_ms": [round(_pct(r, 95), 2) for r in cpu_runs],
            "long_query_ms": [round(v, 2) for v in long_ms], "long_query_results": len(found),
        }
    results["quality"] = quality
    results["latency"] = timing
    results["representations"] = {k: {kk: vv for kk, vv in v.items() if kk != "matrix"} for k, v in representations.items()}

    say()
    say(f"Quality on {len(items)} labelled held-out items (deterministic; hit@5 / recall@5 / MRR@10)")
    say()
    say("| method | with options: hit@5 | recall@5 | MRR@10 | question only: hit@5 | recall@5 | MRR@10 |")
    say("| --- | --- | --- | --- | --- | --- | --- |")
    for label, _, _ in configs:
        a, b = quality[label]["with_options"], quality[label]["question_only"]
        say(f"| {label} | {a['hit@5']:.3f} | {a['recall@5']:.3f} | {a['mrr@10']:.3f} | {b['hit@5']:.3f} | "
            f"{b['recall@5']:.3f} | {b['mrr@10']:.3f} |")
    say()
    say(f"Latency per query, ms, k=5, query embedding included (median of {args.runs} runs, range); "
        f"{len(queries)} queries (question + options); {LONG_QUERY_CHARS:,}-character case text")
    say()
    say("| method | p50 | p95 | CPU p50 | CPU p95 | 6,000-char query |")
    say("| --- | --- | --- | --- | --- | --- |")
    for label, _, _ in configs:
        t = timing[label]
        say(f"| {label} | {_median_range(t['p50_ms'], 2)} | {_median_range(t['p95_ms'], 2)} | "
            f"{_median_range(t['cpu_p50_ms'], 2)} | {_median_range(t['cpu_p95_ms'], 2)} | {_median_range(t['long_query_ms'], 1)} |")
    say()
    say("Build and load (seconds; peak RSS of the build process in MB)")
    say()
    say("| step | seconds | peak RSS MB |")
    say("| --- | --- | --- |")
    say(f"| build, BM25 only (default), {args.runs} runs | {_median_range([b['seconds'] for b in builds])} | "
        f"{_median_range([b['max_rss_mb'] for b in builds], 0)} |")
    say(f"| build with dense [{retrieval.DENSE_REPRESENTATION}], embedding cache warm | {dense_warm['seconds']:.1f} | "
        f"{dense_warm['max_rss_mb']:.0f} |")
    for name, rep in results["representations"].items():
        say(f"| dense [{name}] embeddings, empty cache: {rep['unique_texts']:,} texts at {rep['texts_per_s']} texts/s "
            f"(estimate) | {rep['cold_embed_s_estimate']:.0f} | |")
    say(f"| load_index, BM25 index (default), fresh process, {args.runs} runs | "
        f"{_median_range([r['load_s'] for r in loads], 2)} | {_median_range([r['rss_mb_index'] for r in loads], 0)} |")
    say(f"| load_index with dense, fresh process, {args.runs} runs | "
        f"{_median_range([r['load_s'] for r in dense_loads], 2)} | {_median_range([r['rss_mb_index'] for r in dense_loads], 0)} |")
    say(f"| first dense query (loads torch and the encoder), {args.runs} runs | "
        f"{_median_range([r['first_dense_query_s'] for r in dense_loads], 1)} | "
        f"{_median_range([r['rss_mb_with_encoder'] for r in dense_loads], 0)} |")
    say()
    say(f"default method: {retrieval.DEFAULT_METHOD}; dense representation built with --dense: {retrieval.DENSE_REPRESENTATION}")
    results["load_average_end"] = os.getloadavg()
    say()
    say(f"load average at end {os.getloadavg()[0]:.2f} (other processes share this machine; latencies are wall-clock)")

    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2, default=list) + "\n", encoding="utf-8")
        (args.out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
