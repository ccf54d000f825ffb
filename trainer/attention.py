"""Varlen attention for padding-free batches: torch's own FlashAttention varlen kernel (issue 21).

A padding-free batch is one flattened row of several examples; TRL's collator (``padding_free``) gives their
boundaries as ``cu_seq_lens_q/k`` (cumulative lengths) and ``max_length_q/k``, and transformers hands those to
the attention function as keyword arguments. FlashAttention's varlen kernel takes exactly that and attends
causally within each example, so no mask is built: sdpa would need a dense mask quadratic in the row's tokens,
and FlexAttention compiles a Triton kernel per shape (317-341 s cold on the H100, docs/BENCHMARKS.md).

The flash-attn package has no wheel on PyPI and flash-attn-4 would not import on the GPU machine, but torch
(>= 2.9) ships the FlashAttention-2 varlen kernel as ``torch.nn.attention.varlen.varlen_attn``, with a backward
and a fake implementation for torch.compile. :func:`register` adds it to transformers' attention registry as
``torch_varlen`` (``attn_implementation: torch_varlen`` in the trainer's config).

A batch without the boundaries (a padded batch, e.g. an evaluation loop outside TRL) falls back to sdpa with a
causal mask and no padding mask (transformers builds none for a registered function); that is right for
right-padded rows (real tokens never see the padding after them), which is what the trainer's collators produce,
and a row whose positions restart without boundaries is refused. Sliding-window, soft-capped and sink attention
are refused too. FlashAttention needs fp16/bf16 and an Ampere or newer CUDA GPU.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

NAME = "torch_varlen"
"""The ``attn_implementation`` name this module registers with transformers."""


def unavailable_reason() -> str | None:
    """Why the kernel cannot train here (no CUDA, a torch without ``varlen_attn``), or None when it can."""
    import torch

    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return f"torch {torch.__version__} has no torch.nn.attention.varlen (torch >= 2.9 has it)"
    if not torch.cuda.is_available():
        return "it is a CUDA kernel (FlashAttention) and there is no CUDA device"
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) < (8, 0):
        return f"FlashAttention needs an Ampere or newer GPU (compute capability 8.0); this one is {major}.{minor}"
    return None


def _kernel_arguments(scaling: float | None, head_dim: int, gqa: bool) -> dict[str, Any]:
    """Keyword arguments for this torch's ``varlen_attn``: its signature changed between torch 2.9 and 2.13.

    The first releases take ``is_causal`` (and no scale: the kernel's default 1/sqrt(head_dim)); later ones, 2.11
    (on the GPU machine) among them, take a ``window_size`` ((-1, 0) is causal), ``scale`` and, in 2.13,
    ``enable_gqa``. Grouped-query heads are native to the FlashAttention kernel in all of them.
    """
    from torch.nn.attention.varlen import varlen_attn

    params = inspect.signature(varlen_attn).parameters
    kwargs: dict[str, Any] = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    if "scale" in params:
        kwargs["scale"] = scaling
    elif scaling is not None and abs(scaling - head_dim ** -0.5) > 1e-9:
        raise ValueError(f"attention scaling {scaling} is not 1/sqrt(head_dim); this torch's varlen_attn has no "
                         "scale argument")
    if gqa and "enable_gqa" in params:
        kwargs["enable_gqa"] = True
    return kwargs


def varlen_attention_forward(
    module: "torch.nn.Module",
    query: "torch.Tensor",
    key: "torch.Tensor",
    value: "torch.Tensor",
    attention_mask: "torch.Tensor | None",
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: "torch.Tensor | None" = None,
    cu_seq_lens_k: "torch.Tensor | None" = None,
    max_length_q: int | None = None,
    max_length_k: int | None = None,
    **kwargs: Any,
) -> tuple["torch.Tensor", None]:
    """transformers' attention-function contract: (batch, heads, tokens, head_dim) in, (batch, tokens, heads,
    head_dim) out. Padding-free rows (batch 1 with boundaries) go to the varlen kernel, anything else to sdpa."""
    # Variants this call does not implement are refused rather than computed as plain causal attention.
    unsupported = [name for name in ("sliding_window", "softcap", "s_aux") if kwargs.get(name) is not None]
    if unsupported:
        raise ValueError(f"{NAME}: {', '.join(unsupported)} attention is not supported; use sdpa for this model")
    if cu_seq_lens_q is None:
        position_ids = kwargs.get("position_ids")
        if query.shape[2] > 1 and position_ids is not None and bool((position_ids[..., 1:] == 0).any()):
            # A row of several examples (positions restart) without their boundaries: causal attention over the whole
            # row would let each example see the ones before it.
            raise ValueError(f"{NAME}: a packed row came without cu_seq_lens; use TRL's padding-free collator")
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if max_length_q is None:
        max_length_q = int(cu_seq_lens_q.diff().max())
    if query.shape[0] != 1:
        raise ValueError(f"{NAME}: a padding-free batch is one flattened row, got {query.shape[0]} rows")
    if dropout:
        raise ValueError(f"{NAME}: attention dropout is not supported (the kernel is called without it)")
    from torch.nn.attention.varlen import varlen_attn

    import torch

    # (1, heads, tokens, dim) -> (tokens, heads, dim): the transpose undoes the model's, so no copy is made.
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))
    dtype = query.dtype
    if dtype not in (torch.float16, torch.bfloat16):
        # FlashAttention computes in half precision only. An fp32 residual stream (peft's upcast, which fp16 training
        # needs) reaches it in fp32: cast to the autocast dtype, as transformers' flash path does, and back after.
        half = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else torch.bfloat16
        q, k, v = q.to(half), k.to(half), v.to(half)
    out = varlen_attn(q, k, v, cu_seq_lens_q, cu_seq_lens_k if cu_seq_lens_k is not None else cu_seq_lens_q,
                      max_length_q, max_length_k if max_length_k is not None else max_length_q,
                      **_kernel_arguments(scaling, query.shape[-1], query.shape[1] != key.shape[1]))
    return out.to(dtype).unsqueeze(0), None


def register() -> str:
    """Add ``torch_varlen`` to transformers' attention registry (idempotent); returns the name."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, varlen_attention_forward)
    return NAME
