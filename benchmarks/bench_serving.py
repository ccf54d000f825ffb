"""Serving a class: 1, 4 and 8 students generating at once, in-process vs llama.cpp's server.

Run from the project root (needs the llama-server binary: ``bash scripts/build_llama_server.sh``)::

    .venv/bin/python -m benchmarks.bench_serving                       # 3 rounds, 128 tokens
    .venv/bin/python -m benchmarks.bench_serving --rounds 5 --concurrency 1,4,8 --setups local,llamacpp-merged

Every request goes through the app's own backends (:mod:`core.serving`): the same prompt (a held-out
case, chat template and system prompt), greedy, a fixed number of new tokens (end-of-sequence off,
no forced answer, so every setup decodes the same length). ``N`` concurrent students each start one
request at the same moment, on threads, as the pages' generation threads do.

Setups (all with the embedded SmolLM2-135M-Instruct and the shipped adapter):

- ``local``: the in-process path the app uses by default (``LocalBackend``: the lean decoder, one
  generation at a time per model, ``Settings.serving_threads`` decoding threads).
- ``llamacpp-lora``: ``llama-server`` with the embedded Q4_1 GGUF and the adapter as a GGUF LoRA
  (switchable per request), ``--parallel 8`` slots, ``--threads 2``.
- ``llamacpp-merged``: ``llama-server`` with the adapter merged into a Q8_0 GGUF (one adapter per
  server), same slots and threads.

Per cell: aggregate tokens/s (all new tokens / wall time from the first request to the last reply),
p50 and p95 time to first token (from the request to its first text, waiting included), p95 and
max completion time. Rounds are interleaved (each round runs every setup and concurrency), and the
table gives the median over rounds with the range. Prints the machine, versions and command first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SETUPS = ("local", "llamacpp-lora", "llamacpp-merged")


@dataclass(frozen=True)
class Reply:
    ttft_s: float | None
    total_s: float
    tokens: int


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def run_concurrent(backend: Any, case_text: str, settings: Any, n: int) -> tuple[list[Reply], float]:
    """``n`` requests started together; their replies and the wall time from first request to last reply."""
    replies: list[Reply | None] = [None] * n
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def one(i: int) -> None:
        barrier.wait()
        t0 = time.perf_counter()
        first = None
        last = None
        try:
            for event in backend.stream(case_text, settings=settings):
                if first is None and event.kind == "text" and event.text:
                    first = time.perf_counter() - t0
                last = event
        except BaseException as exc:  # noqa: BLE001 - reported after the threads end
            errors.append(exc)
            return
        replies[i] = Reply(first, time.perf_counter() - t0, last.stats.new_tokens if last else 0)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} of {n} requests failed: {errors[0]}") from errors[0]
    return [r for r in replies if r is not None], wall


def summarise(replies: list[Reply], wall: float) -> dict[str, float]:
    ttfts = [r.ttft_s for r in replies if r.ttft_s is not None]
    totals = [r.total_s for r in replies]
    return {
        "agg_tok_s": sum(r.tokens for r in replies) / wall,
        "ttft_p50": _percentile(ttfts, 50),
        "ttft_p95": _percentile(ttfts, 95),
        "done_p95": _percentile(totals, 95),
        "done_max": max(totals),
        "tokens": statistics.median(r.tokens for r in replies),
    }


def pick_case(prepared_dir: Path, tokenizer: Any, *, lo: int = 180, hi: int = 260) -> str:
    """A held-out case whose whole prompt is ``lo``-``hi`` tokens (the issue's 215-token prompt size)."""
    from core.inference import case_text_for, load_test_cases, prompt_text

    records = load_test_cases(prepared_dir) or []
    for record in records:
        text = case_text_for(record)
        if lo <= len(tokenizer.encode(prompt_text(tokenizer, text), add_special_tokens=False)) <= hi:
            return text
    if not records:
        raise SystemExit(f"no prepared test split in {prepared_dir}: run `make prepare`")
    return case_text_for(records[0])


def local_backend(settings: Any, threads: int) -> Any:
    import torch

    from core import inference
    from core import model as model_lib
    from core.serving import LocalBackend

    torch.set_num_threads(threads)
    base = model_lib.resolve_base(settings)
    adapter_dir = model_lib.resolve_adapter(settings)
    mdl, tok, problem = model_lib.load_model_or_base(base, adapter_dir=adapter_dir, device="cpu", merge=True)
    if problem:
        raise SystemExit(f"the adapter cannot be used: {problem}")
    mdl.generation_config.eos_token_id = None  # every setup decodes the same length
    server = inference.prepare_for_serving(mdl, inference.serving_plan("cpu"), tokenizer=tok, adapter_dir=adapter_dir)
    server.set_threads(threads)
    server.warm_up()
    return LocalBackend(server, base_model=base.identity, adapter=adapter_dir.name if adapter_dir else "none",
                        engine=server.describe()), tok


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--setups", default=",".join(SETUPS))
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--server-threads", type=int, default=2)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--local-threads", type=int, default=0, help="0: the app's serving_threads")
    parser.add_argument("--json", type=Path, help="also write every cell of every round here")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    setups = [s for s in args.setups.split(",") if s]
    unknown = set(setups) - set(SETUPS)
    if unknown:
        parser.error(f"unknown setups {sorted(unknown)}; known: {', '.join(SETUPS)}")

    import torch
    import transformers

    from core import model as model_lib
    from core.gguf_export import export_merged_gguf
    from core.inference import GenerationSettings
    from core.llamacpp import LlamaServer, export_for_serving, require_llama_server
    from core.serving import OpenAIBackend
    from core.settings import load_settings

    settings = load_settings()
    local_threads = args.local_threads or settings.serving_threads
    print(f"command: {' '.join([sys.executable.split('/')[-1], '-m', 'benchmarks.bench_serving', *(argv or sys.argv[1:])])}")
    print(f"machine: {platform.node()} · {platform.processor() or '?'} · {os.cpu_count()} logical CPUs · "
          f"{platform.platform()}")
    print(f"python {platform.python_version()} · torch {torch.__version__} · transformers {transformers.__version__}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")

    base = model_lib.resolve_base(settings)
    adapter_dir = model_lib.resolve_adapter(settings)
    tokenizer = model_lib.load_tokenizer(base)
    case = pick_case(settings.prepared_dir, tokenizer)
    gen = GenerationSettings(max_new_tokens=args.new_tokens, temperature=0.0, answer_allowance=0)
    from core.inference import prompt_text

    prompt_tokens = len(tokenizer.encode(prompt_text(tokenizer, case), add_special_tokens=False))
    print(f"model: {base.identity} + adapter {adapter_dir.name if adapter_dir else 'none'} · prompt {prompt_tokens} "
          f"tokens · {args.new_tokens} new tokens, greedy, end-of-sequence off · rounds {args.rounds}")

    backends: dict[str, Any] = {}
    servers: list[Any] = []
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    try:
        if "local" in setups:
            backends["local"], _ = local_backend(settings, local_threads)
            print(f"local: in-process, {local_threads} decoding thread(s), {backends['local'].engine}")
        if any(s.startswith("llamacpp") for s in setups):
            binary = require_llama_server()
            gguf = model_lib.find_embedded_gguf()
            print(f"llama-server: {binary} · {args.slots} slots · {args.server_threads} threads")
            for setup in [s for s in setups if s.startswith("llamacpp")]:
                t0 = time.perf_counter()
                if setup == "llamacpp-lora":
                    lora = export_for_serving(adapter_dir, work, base_gguf=gguf, base_sha=model_lib.sha256_file(gguf))
                    server = LlamaServer(model=gguf, loras=[lora], port=0, parallel=args.slots,
                                         threads=args.server_threads, log_path=work / f"{setup}.log")
                    served_adapter: Path | None = adapter_dir
                else:
                    merged = work / "merged-q8_0.gguf"
                    export_merged_gguf(adapter_dir, merged, base_gguf=gguf)
                    server = LlamaServer(model=merged, port=0, parallel=args.slots, threads=args.server_threads,
                                         log_path=work / f"{setup}.log")
                    served_adapter = None  # merged in: the server's model is the adapter
                exported = time.perf_counter() - t0
                server.start(timeout_s=120)
                servers.append(server)
                backend = OpenAIBackend(url=server.openai_url, tokenizer=tokenizer, base_model=base.identity,
                                        adapter_dir=served_adapter, request_extra={"ignore_eos": True})
                info = backend.info(fresh=True)
                if served_adapter is not None and not info.adapter_served:
                    raise SystemExit(f"{setup}: the server does not apply the adapter: {info.note}")
                backends[setup] = backend
                print(f"{setup}: export {exported:.1f} s, server started ({info.engine})")

        for backend in backends.values():  # one untimed request each: page faults, caches
            run_concurrent(backend, case, gen, 1)

        cells: dict[tuple[str, int], list[dict[str, float]]] = {}
        for r in range(args.rounds):
            for setup in setups:
                for n in levels:
                    replies, wall = run_concurrent(backends[setup], case, gen, n)
                    cell = summarise(replies, wall)
                    cells.setdefault((setup, n), []).append(cell)
                    print(f"round {r + 1} {setup:16s} n={n}: " + " ".join(f"{k}={v:.2f}" for k, v in cell.items()),
                          flush=True)
        if args.json:
            args.json.write_text(json.dumps([{"setup": s, "n": n, "rounds": v} for (s, n), v in cells.items()],
                                            indent=1))

        def med(values: list[float]) -> str:
            return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"

        print()
        print("| setup | concurrent | aggregate tok/s | TTFT p50 s | TTFT p95 s | done p95 s | last done s |")
        print("|---|---|---|---|---|---|---|")
        for (setup, n), rounds in cells.items():
            print(f"| {setup} | {n} | " + " | ".join(med([c[k] for c in rounds]) for k in
                                                     ("agg_tok_s", "ttft_p50", "ttft_p95", "done_p95", "done_max"))
                  + " |")
        print(f"\nmedian (min–max) over {args.rounds} rounds")
    finally:
        for server in servers:
            server.stop()


if __name__ == "__main__":
    main()
