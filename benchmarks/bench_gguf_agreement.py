"""GGUF exports against transformers: do llama.cpp's greedy tokens follow the fp32 merged adapter?

Run from the project root (needs the llama-server binary: ``bash scripts/build_llama_server.sh``)::

    .venv/bin/python -m benchmarks.bench_gguf_agreement              # 5 held-out prompts, 32 tokens, 2 threads
    .venv/bin/python -m benchmarks.bench_gguf_agreement --prompts 10 --threads 1

Both exports of the shipped adapter (``core.gguf_export``: the LoRA as a GGUF adapter on the embedded Q4_1
base, and the merged Q8_0 file) are served by ``llama-server`` (one slot); each generates greedily from the
first ``--prompts`` prompts of the held-out test split (the app's chat template). The reference is
transformers with the adapter merged into fp32 weights. Two measures per prompt:

- teacher-forced next-token agreement: transformers, fed the server's own tokens, picks the same next
  token at each of the positions (one near-tie does not derail the rest of the comparison);
- the exact greedy prefix: how many first tokens are identical before the two diverge.

Prints the machine, versions and command, a line per export, and the single-stream decode speed the server
reports (3 requests of 128 tokens, end-of-sequence off).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def teacher_forced_agreement(model: Any, prompt: list[int], tokens: list[int]) -> float:
    """Share of ``tokens`` that ``model`` ranks first given the prompt and the tokens before them."""
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([prompt + tokens])).logits[0]
    picks = logits[len(prompt) - 1: len(prompt) - 1 + len(tokens)].argmax(-1).tolist()
    return sum(p == t for p, t in zip(picks, tokens)) / len(tokens)


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many first items ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch
    import transformers

    from core import gguf_export
    from core.inference import case_text_for, load_test_cases, prompt_ids
    from core.llamacpp import LlamaServer, require_llama_server
    from core.model import DEFAULT_ADAPTER_DIR, find_embedded_gguf, load_model, resolve_base
    from core.settings import load_settings

    print(f"command: python -m benchmarks.bench_gguf_agreement {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"machine: {platform.node()} · {os.cpu_count()} logical CPUs · {platform.platform()} · load {os.getloadavg()}")
    print(f"python {platform.python_version()} · torch {torch.__version__} · transformers {transformers.__version__} · "
          f"llama-server {require_llama_server()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    settings = load_settings()
    work = Path(tempfile.mkdtemp(prefix="bench-gguf-"))
    base = find_embedded_gguf()
    lora = gguf_export.export_lora_gguf(DEFAULT_ADAPTER_DIR, work / "medcot.lora.gguf", base_gguf=base)
    merged = gguf_export.export_merged_gguf(DEFAULT_ADAPTER_DIR, work / "medcot.q8_0.gguf", base_gguf=base)
    print(f"exports: LoRA {lora.seconds:.1f} s, merged Q8_0 {merged.seconds:.1f} s (one process)")
    model, tok = load_model(resolve_base(settings), adapter_dir=DEFAULT_ADAPTER_DIR, device="cpu", merge=True)
    records = (load_test_cases(settings.prepared_dir) or [])[: args.prompts]
    if not records:
        raise SystemExit("no prepared test split: run `make prepare`")
    prompts = [prompt_ids(tok, case_text_for(r))[0].tolist() for r in records]
    with torch.no_grad():
        reference = [model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                    max_new_tokens=args.tokens, do_sample=False,
                                    pad_token_id=tok.pad_token_id)[0, len(p):].tolist() for p in prompts]
    print(f"model: {DEFAULT_ADAPTER_DIR.name} on the embedded SmolLM2-135M-Instruct · prompts of "
          f"{[len(p) for p in prompts]} tokens · {args.tokens} greedy tokens · reference: transformers fp32 merged")
    for label, model_path, loras, scales in (
        ("LoRA GGUF (Q4_1 base + F32 LoRA at scale 1)", base, [lora.path], {0: 1.0}),
        ("merged Q8_0 GGUF", merged.path, [], None),
    ):
        with LlamaServer(model=model_path, loras=loras, port=0, parallel=1, threads=args.threads, ctx_per_slot=2048,
                         log_path=work / "server.log") as server:
            tokens = [server.complete(p, n_predict=args.tokens, lora=scales)["tokens"] for p in prompts]
            forced = [teacher_forced_agreement(model, p, t) for p, t in zip(prompts, tokens)]
            prefix = [common_prefix(t, r) for t, r in zip(tokens, reference)]
            speeds = [server.complete(prompts[0], n_predict=128, lora=scales, ignore_eos=True)["timings"]
                      for _ in range(3)]
        print(f"{label}: teacher-forced agreement {[round(f, 3) for f in forced]}, mean {statistics.mean(forced):.3f}; "
              f"exact greedy prefix {prefix} ({sum(prefix)}/{args.tokens * len(prompts)}); decode tok/s "
              f"{[round(s['predicted_per_second'], 1) for s in speeds]} (--threads {args.threads}, 1 slot)")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
