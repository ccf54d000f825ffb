"""Packed-row attention on the GPU (issue 21, lever 2): flash-attn-4's varlen kernel against FlexAttention.

Run on the GPU machine with flash-attn-4 on the path (``scripts/gpu/unsloth.sh fa4`` installs it)::

    PYTHONPATH=/tmp/site-fa4:/tmp/site-fa4/nvidia_cutlass_dsl/dsl_packages python3 -m benchmarks.attention_kernels

Our packed recipes flatten 16 best-fit rows of ≤ 1,024 tokens into one row with position ids restarting at every
example; transformers then runs FlexAttention with a per-example causal block mask (the 2026-12-06 profile: 37.6 ms
of a bf16 step). flash-attn-4 (CUTE DSL, Hopper/Blackwell) has a varlen kernel that takes the examples' boundaries
(``cu_seqlens``) directly. Three checks, each printing its exact error if it fails:

1. the kernel: forward + backward of one layer's attention (Llama-3.2-1B: 32 query heads, 8 KV heads, head dim 64)
   over ≈ 16 k packed tokens, FA4 varlen vs compiled FlexAttention with the document mask, and the largest
   difference of their outputs against per-example SDPA;
2. the model: one forward + backward of the Llama-3.2-1B architecture (random weights, frozen, input gradients on)
   over the same packed row with ``attn_implementation`` ``flash_attention_4`` vs ``flex_attention``;
3. the versions of what was imported.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
import traceback
from typing import Any, Callable

HEADS, KV_HEADS, HEAD_DIM, LAYERS = 32, 8, 64, 16


def example_lengths(total: int = 16_384, seed: int = 0) -> list[int]:
    """Example lengths like the training split's (mean ≈ 600 tokens, 150…1,024) until ``total`` tokens."""
    rng = random.Random(seed)
    lengths: list[int] = []
    while sum(lengths) < total:
        lengths.append(min(1024, max(150, int(rng.lognormvariate(6.3, 0.4)))))
    lengths[-1] -= sum(lengths) - total
    return [n for n in lengths if n > 0]


def timed(fn: Callable[[], Any], *, warmup: int = 3, iters: int = 15) -> float:
    """Median milliseconds of ``fn`` on the GPU (CUDA events)."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def kernel_check(lengths: list[int]) -> None:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    total = sum(lengths)
    torch.manual_seed(0)
    q = torch.randn(total, HEADS, HEAD_DIM, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(total, KV_HEADS, HEAD_DIM, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(total, KV_HEADS, HEAD_DIM, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    grad = torch.randn(total, HEADS, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    bounds = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], device="cuda", dtype=torch.int32)
    doc = torch.repeat_interleave(torch.arange(len(lengths), device="cuda"), torch.tensor(lengths, device="cuda"))

    # Reference: SDPA one example at a time (exact causal attention within each example).
    outs = []
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        outs.append(F.scaled_dot_product_attention(q[a:b].transpose(0, 1)[None], k[a:b].transpose(0, 1)[None],
                                                   v[a:b].transpose(0, 1)[None], is_causal=True,
                                                   enable_gqa=True)[0].transpose(0, 1))
    ref = torch.cat(outs)

    def mask_mod(b, h, q_idx, kv_idx):
        return (doc[q_idx] == doc[kv_idx]) & (q_idx >= kv_idx)

    block_mask = create_block_mask(mask_mod, 1, None, total, total, device="cuda")
    flex = torch.compile(flex_attention)

    def run_flex():
        out = flex(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], block_mask=block_mask,
                   enable_gqa=True)[0].transpose(0, 1)
        out.backward(grad)
        return out

    out_flex = run_flex()
    flex_ms = timed(run_flex)
    print(f"kernel: {len(lengths)} examples, {total:,} tokens, {HEADS}/{KV_HEADS} heads x {HEAD_DIM}; "
          f"FlexAttention (compiled, document block mask) fwd+bwd {flex_ms:.2f} ms per layer, "
          f"{flex_ms * LAYERS:.1f} ms per 16-layer step; max |flex - sdpa| {(out_flex - ref).abs().max().item():.4f}",
          flush=True)
    try:
        from flash_attn.cute import flash_attn_varlen_func

        def run_fa4():
            out = flash_attn_varlen_func(q, k, v, cu_seqlens_q=bounds, cu_seqlens_k=bounds, max_seqlen_q=max(lengths),
                                         max_seqlen_k=max(lengths), causal=True)
            out = out[0] if isinstance(out, tuple) else out
            out.backward(grad)
            return out

        t0 = time.perf_counter()
        out_fa4 = run_fa4()
        torch.cuda.synchronize()
        first = time.perf_counter() - t0
        fa4_ms = timed(run_fa4)
        print(f"kernel: flash-attn-4 varlen fwd+bwd {fa4_ms:.2f} ms per layer, {fa4_ms * LAYERS:.1f} ms per step "
              f"({flex_ms / fa4_ms:.2f}× FlexAttention); first call (JIT compile) {first:.1f} s; "
              f"max |fa4 - sdpa| {(out_fa4 - ref).abs().max().item():.4f}", flush=True)
    except Exception as exc:  # the exact error is the result
        traceback.print_exc()
        print(f"kernel: flash-attn-4 failed: {type(exc).__name__}: {exc}", flush=True)


def model_check(lengths: list[int], impls: tuple[str, ...] = ("flex_attention", "flash_attention_4")) -> None:
    import torch
    from transformers import LlamaForCausalLM

    from benchmarks.archs import llama_1b_config

    total = sum(lengths)
    ids = torch.randint(3, 49152, (1, total), device="cuda")
    pos = torch.cat([torch.arange(n, device="cuda") for n in lengths])[None]
    for impl in impls:
        try:
            torch.manual_seed(0)
            with torch.device("cuda"):
                model = LlamaForCausalLM._from_config(llama_1b_config(smollm2_tokens=True), dtype=torch.bfloat16,
                                                      attn_implementation=impl)
            model.requires_grad_(False)
            model.enable_input_require_grads()
            model.config.use_cache = False

            def step():
                out = model(input_ids=ids, position_ids=pos, labels=ids)
                out.loss.backward()
                return out.loss

            t0 = time.perf_counter()
            loss = step()
            torch.cuda.synchronize()
            first = time.perf_counter() - t0
            ms = timed(step, warmup=2, iters=8)
            print(f"model: {impl}: fwd+bwd {ms:.1f} ms for {total:,} packed tokens ({total / ms * 1000:,.0f} tok/s, "
                  f"frozen base, no LoRA, no optimiser); first call {first:.1f} s; loss {loss.item():.4f}", flush=True)
            del model
            torch.cuda.empty_cache()
        except Exception as exc:
            traceback.print_exc()
            print(f"model: {impl} failed: {type(exc).__name__}: {exc}", flush=True)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import importlib.metadata as md

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impls", default="flex_attention,flash_attention_4",
                        help="attn_implementation values for the model check (the first flex_attention call compiles "
                             "for ~150 s on an H100: leave it out when its figure is known)")
    args = parser.parse_args(argv)
    import torch

    names = ("torch", "transformers", "flash-attn-4", "nvidia-cutlass-dsl", "nvidia-cutlass-dsl-libs-cu13", "quack-kernels",
             "apache-tvm-ffi", "torch-c-dlpack-ext")
    versions = []
    for name in names:
        try:
            versions.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    print(" · ".join(versions), f"· gpu {torch.cuda.get_device_name(0)} · CUDA {torch.version.cuda}", flush=True)
    try:
        import flash_attn.cute  # noqa: F401

        print("import flash_attn.cute: ok", flush=True)
    except Exception as exc:
        traceback.print_exc()
        print(f"import flash_attn.cute failed: {type(exc).__name__}: {exc}", flush=True)
    lengths = example_lengths()
    kernel_check(lengths)
    model_check(lengths, tuple(i for i in args.impls.split(",") if i))
    return 0


if __name__ == "__main__":
    sys.exit(main())
