"""A lean Llama decoder for serving: a prefill and one-token steps over a preallocated KV cache.

Why it exists: batch-1 decoding of a small model is bound by per-token overhead, not arithmetic.
Through transformers' ``generate`` every token pays for generic module code (cache objects, mask
builders, hooks, logits processors) and seven separate projections per layer. This module runs the
same Llama computation with the layer's q/k/v and gate/up projections fused into one matrix each,
a plain tensor KV cache and nothing else (measured in docs/BENCHMARKS.md against ``generate``):

- On CPU it decodes eagerly. When the base weights already lie on a 4-bit grid (the embedded model
  is a dequantised GGUF Q4_1), :func:`native_int4` recovers those codes from the merged weights and
  decoding reads them (``_weight_int4pack_mm_for_cpu``: half the bytes of int8, a smaller error) plus
  the adapter's LoRA factors, unmerged; otherwise it uses the serving plan's int8 weights (one
  ``_weight_int8pack_mm`` per fused projection). The prompt pass uses the bf16 copies.
- On CUDA the one-token step has fixed shapes (the cache is used whole, with a mask) and is compiled
  with ``torch.compile(mode="reduce-overhead")``, i.e. replayed as one CUDA graph per token; the
  prompt runs eagerly.

It is not a second model: :func:`build_decoder` takes a merged, serving-prepared
``LlamaForCausalLM`` and shares its weights. The fused matrices are new tensors and the
transformers modules' own weights become views into them, so nothing is stored twice and the
transformers model stays usable (``generate`` remains the fallback). Before it is used, the decoder's
logits are compared with the transformers model's on a probe sequence (prefill and incremental
steps); a model that is not a plain Llama, or any mismatch, gives ``None`` and the caller keeps
``generate``. Sampling follows ``generate``'s order: temperature, top-k (the generation config's,
default 50), top-p.
"""

from __future__ import annotations

import functools
import json
import math
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import torch

PROBE_TOKENS = 12
"""Prompt length of the build-time check; a few incremental steps follow it."""
PROBE_STEPS = 4
MIN_COSINE = 0.99
"""Smallest cosine similarity the check accepts between the decoder's logits (its decoding weights) and
the transformers model's on the same tokens (its prefill weights: bf16). A wiring mistake gives far less."""
GROUP = 32
"""Inputs per 4-bit group: the block size of GGUF's 4-bit formats (Q4_0/Q4_1), so their grids carry over."""
GRID_TOLERANCE = 0.01
"""How far (in steps) a weight may sit from its group's 4-bit grid for the base to count as 4-bit native."""

_UNSUPPORTED_SAMPLING = {  # generation-config fields the lean loop does not implement, with their neutral values
    "repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "min_p": (None,),
    "typical_p": (None, 1.0),
    "epsilon_cutoff": (None, 0.0),
    "eta_cutoff": (None, 0.0),
    "encoder_repetition_penalty": (None, 1.0),
    "bad_words_ids": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "sequence_bias": (None,),
}


def unsupported_reason(model: Any) -> str | None:
    """Why ``model`` cannot be served by the lean decoder, or None when it can."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) != "llama":
        return f"model type {getattr(cfg, 'model_type', None)!r} is not 'llama'"
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        return "biases in attention or MLP"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"activation {cfg.hidden_act!r}"
    if getattr(cfg, "pretraining_tp", 1) not in (None, 1):
        return "pretraining_tp > 1"
    gen = getattr(model, "generation_config", None)
    for name, neutral in _UNSUPPORTED_SAMPLING.items():
        value = getattr(gen, name, None)
        if value not in neutral:
            return f"generation config sets {name}={value!r}"
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(inner, "rotary_emb"):
        return "not a LlamaForCausalLM layout"
    return None


@dataclass(frozen=True)
class Grid:
    """One linear layer's base weight as 4-bit codes on its own grid, plus its LoRA factors (if any)."""

    codes: "torch.Tensor"
    """uint8 (out, in), values 0..15."""
    scale_zero: "torch.Tensor"
    """bf16 (in / GROUP, out, 2): per group of GROUP inputs, the step and the value of code 8."""
    lora_a: "torch.Tensor | None" = None
    """(r, in) fp32."""
    lora_b: "torch.Tensor | None" = None
    """(out, r) fp32, the adapter's scaling folded in."""


@dataclass(frozen=True)
class Int4:
    """A fused projection's packed 4-bit base and LoRA factors, ready for the CPU kernel."""

    packed: "torch.Tensor"
    scale_zero: "torch.Tensor"
    lora_a: "torch.Tensor | None"
    """(in, r) fp32: the fused A factors, transposed."""
    lora_b: "torch.Tensor | None"
    """(r, out) fp32: the block-diagonal scaled B factors, transposed."""


NativeInt4 = dict[str, Grid]
"""Module name (``model.layers.3.mlp.gate_proj``) to its grid."""


def lora_factors(adapter_dir: Path) -> dict[str, tuple["torch.Tensor", "torch.Tensor"]] | None:
    """``{module name: (A, scaling * B)}`` of a plain LoRA adapter folder (fp32), or None for any other kind.

    Plain means: peft LORA without DoRA, biases, extra trained modules or per-module rank/alpha.
    """
    import torch
    from safetensors.torch import load_file

    try:
        cfg = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
        tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    except (OSError, ValueError):
        return None
    plain = (
        cfg.get("peft_type") == "LORA" and not cfg.get("use_dora") and not cfg.get("modules_to_save")
        and not cfg.get("rank_pattern") and not cfg.get("alpha_pattern") and cfg.get("bias", "none") == "none"
        and not cfg.get("lora_bias") and not cfg.get("fan_in_fan_out")
    )
    if not plain or not cfg.get("r"):
        return None
    r, alpha = float(cfg["r"]), float(cfg.get("lora_alpha") or cfg["r"])
    scaling = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key, a in tensors.items():
        if not key.endswith(".lora_A.weight"):
            continue
        name = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
        b = tensors.get(key.replace(".lora_A.weight", ".lora_B.weight"))
        if b is None:
            return None
        out[name] = (a.float(), b.float() * scaling)
    return out


def int4_grid(weight: "torch.Tensor") -> Grid | None:
    """``weight`` (out, in) as 4-bit codes with a step and offset per group of GROUP inputs, when it already
    lies on such a grid (a model converted from a 4-bit GGUF: the codes then reproduce it up to the bf16
    rounding of step and offset); None when it does not."""
    import torch

    out_f, in_f = weight.shape
    if in_f % GROUP:
        return None
    groups = weight.float().reshape(out_f, in_f // GROUP, GROUP)
    low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    step = ((high - low) / 15).clamp(min=torch.finfo(torch.float32).tiny)
    codes = (groups - low) / step
    if float((codes - codes.round()).abs().max()) > GRID_TOLERANCE:
        return None
    scale_zero = torch.cat([step, low + 8 * step], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)
    return Grid(codes.round().clamp(0, 15).to(torch.uint8).reshape(out_f, in_f), scale_zero)


def native_int4(model: Any, adapter_dir: Path | None) -> tuple[NativeInt4 | None, str]:
    """4-bit grids of every decoder-layer linear of a merged fp32 ``model`` whose base is 4-bit native.

    The adapter (plain LoRA, read from ``adapter_dir``) is taken back out of the merged weights, so what
    is left is the base; if every base matrix lies on a 4-bit grid, decoding can read half the bytes of
    int8 and apply the adapter unmerged, with a smaller error than int8 (the grid is the base's own).
    Returns the grids, or None and the reason.
    """
    import torch
    from torch import nn

    if not torch.cuda.is_available() and not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
        return None, "this torch has no CPU 4-bit kernel"
    factors = lora_factors(adapter_dir) if adapter_dir is not None else {}
    if factors is None:
        return None, "the adapter is not a plain LoRA adapter"
    grids: NativeInt4 = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if not (isinstance(module, nn.Linear) and name.startswith("model.layers.")):
                continue
            weight = module.weight.detach().float()
            a = b = None
            if name in factors:
                a, b = factors[name]
                weight = weight - b @ a
            grid = int4_grid(weight)
            if grid is None:
                return None, f"{name}: the base weights are not on a 4-bit grid"
            grids[name] = Grid(grid.codes, grid.scale_zero, a, b)
    if not grids or set(factors) - set(grids):
        return None, "the adapter targets modules outside the decoder layers' linears"
    return grids, f"{len(grids)} base matrices on a 4-bit grid"


def _pack(grids: list[Grid]) -> Int4:
    """Row-concatenate ``grids`` into one packed 4-bit matrix, with block-diagonal LoRA factors."""
    import torch

    codes = torch.cat([g.codes for g in grids]).to(torch.int32)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
    scale_zero = torch.cat([g.scale_zero for g in grids], dim=1).contiguous()
    if all(g.lora_a is None for g in grids):
        return Int4(packed, scale_zero, None, None)
    in_f = grids[0].codes.shape[1]
    a_parts, b_parts = [], []
    for g in grids:
        if g.lora_a is None:
            a_parts.append(torch.zeros(0, in_f))
            b_parts.append(torch.zeros(g.codes.shape[0], 0))
        else:
            a_parts.append(g.lora_a)
            b_parts.append(g.lora_b)
    # Stored transposed and contiguous, in fp32: x (1, in) @ A^T (in, r) @ B^T (r, out).
    lora_a = torch.cat(a_parts).t().contiguous().float()
    lora_b = torch.block_diag(*b_parts).t().contiguous().float()
    return Int4(packed, scale_zero, lora_a, lora_b)


def _cudagraph_thread_state() -> None:
    """Give this thread the per-thread state torch.compile's CUDA graphs need (torch 2.11 asserts otherwise).

    torch's CUDA-graph trees keep per-thread state that only the thread importing them (and autograd's
    threads) receive in torch 2.11; the app decodes on a worker thread of its own. Newer torch (2.13)
    sets the state up on first use in any thread, which is what this does for older versions.
    """
    from torch._inductor import cudagraph_trees

    local = getattr(cudagraph_trees, "local", None)
    if local is not None and not hasattr(local, "tree_manager_containers") and hasattr(cudagraph_trees, "_initialize_tls"):
        cudagraph_trees._initialize_tls(local)


@functools.cache
def _module_class() -> Any:
    """The decoder's ``nn.Module`` class, built lazily (this module imports without torch)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Proj(nn.Module):
        """A (possibly fused) projection. Prefill uses ``weight`` (bf16 or fp32); decoding uses, when present,
        the packed 4-bit base plus the unmerged LoRA factors, else the int8 rows and scales, else ``weight``."""

        def __init__(self, weight: torch.Tensor, int8: torch.Tensor | None = None, scale: torch.Tensor | None = None,
                     int4: Int4 | None = None) -> None:
            super().__init__()
            self.register_buffer("weight", weight, persistent=False)
            self.register_buffer("int8", int8, persistent=False)
            self.register_buffer("scale", scale, persistent=False)
            self.register_buffer("int4", None if int4 is None else int4.packed, persistent=False)
            self.register_buffer("scale_zero", None if int4 is None else int4.scale_zero, persistent=False)
            self.register_buffer("lora_a", None if int4 is None else int4.lora_a, persistent=False)
            self.register_buffer("lora_b", None if int4 is None else int4.lora_b, persistent=False)

        def forward(self, x: torch.Tensor, *, decode: bool) -> torch.Tensor:
            if decode and self.int4 is not None:
                out = torch.ops.aten._weight_int4pack_mm_for_cpu(x.to(torch.bfloat16), self.int4, GROUP, self.scale_zero)
                if self.lora_a is not None:  # fp32: for these thin products ~4x faster than bf16 here
                    out = out + torch.mm(torch.mm(x.float(), self.lora_a), self.lora_b).to(out.dtype)
                return out.to(x.dtype)
            if decode and self.int8 is not None:
                return torch.ops.aten._weight_int8pack_mm(x, self.int8, self.scale)
            return F.linear(x, self.weight)

    class Layer(nn.Module):
        def __init__(self, ln1: torch.Tensor, qkv: Proj, o: Proj, ln2: torch.Tensor, gate_up: Proj, down: Proj) -> None:
            super().__init__()
            self.register_buffer("ln1", ln1, persistent=False)
            self.register_buffer("ln2", ln2, persistent=False)
            self.qkv, self.o, self.gate_up, self.down = qkv, o, gate_up, down

    class LlamaDecoder(nn.Module):
        """Prefill + one-token steps of a Llama model over its own KV cache (see the module docstring)."""

        def __init__(self, model: Any, *, max_len: int, compile_step: bool, native: NativeInt4 | None = None) -> None:
            super().__init__()
            cfg = model.config
            inner = model.model
            self.n_heads = int(cfg.num_attention_heads)
            self.n_kv = int(cfg.num_key_value_heads or cfg.num_attention_heads)
            self.head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
            self.hidden = int(cfg.hidden_size)
            self.eps = float(cfg.rms_norm_eps)
            self.max_len = int(max_len)
            embed = inner.embed_tokens.weight
            self.device, self.dtype = embed.device, embed.dtype
            self.register_buffer("embed", embed, persistent=False)
            self.register_buffer("norm", inner.norm.weight, persistent=False)
            def fused(i: int, names: list[str]) -> Proj:
                block = inner.layers[i]
                mods = [block.get_submodule(n) for n in names]
                return _fused(mods, None if native is None else [native[f"model.layers.{i}.{n}"] for n in names])

            self.layers = nn.ModuleList(
                Layer(
                    block.input_layernorm.weight,
                    fused(i, ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
                    fused(i, ["self_attn.o_proj"]),
                    block.post_attention_layernorm.weight,
                    fused(i, ["mlp.gate_proj", "mlp.up_proj"]),
                    fused(i, ["mlp.down_proj"]),
                )
                for i, block in enumerate(inner.layers)
            )
            self.head = _fused([model.get_output_embeddings()], None)
            positions = torch.arange(self.max_len, device=self.device)[None]
            with torch.no_grad():
                cos, sin = inner.rotary_emb(torch.zeros(1, device=self.device, dtype=self.dtype), positions)
            self.register_buffer("cos", cos[0].contiguous(), persistent=False)  # (max_len, head_dim)
            self.register_buffer("sin", sin[0].contiguous(), persistent=False)
            # One cache buffer per layer (a write into a view of one shared buffer makes the compiled step
            # copy the whole buffer: measured 1 ms per token on the 1B model). fp32 on CPU: the single-query
            # attention's products are faster there (see _attend_one).
            shape = (1, self.n_kv, self.max_len, self.head_dim)
            cache_dtype = torch.float32 if self.device.type == "cpu" else self.dtype
            for layer in self.layers:
                layer.register_buffer("k_cache", torch.zeros(shape, device=self.device, dtype=cache_dtype), persistent=False)
                layer.register_buffer("v_cache", torch.zeros(shape, device=self.device, dtype=cache_dtype), persistent=False)
            self.register_buffer("slots", torch.arange(self.max_len, device=self.device), persistent=False)
            # The compiled step's inputs live in fixed buffers: a CUDA graph replays reading these addresses.
            self.register_buffer("step_ids", torch.zeros((1, 1), dtype=torch.long, device=self.device), persistent=False)
            self.register_buffer("step_pos", torch.zeros((1,), dtype=torch.long, device=self.device), persistent=False)
            self.compiled = compile_step
            if compile_step:  # the cache is mutated in place by every replay: keep it at fixed addresses
                for layer in self.layers:
                    torch._dynamo.mark_static_address(layer.k_cache)
                    torch._dynamo.mark_static_address(layer.v_cache)
            self._step: Callable[..., torch.Tensor] = (
                torch.compile(self._static_step, mode="reduce-overhead", fullgraph=True) if compile_step else self._static_step
            )

        # -- the Llama computation ---------------------------------------------------------------

        def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
            # As transformers' LlamaRMSNorm: the statistic in fp32, the product in the weights' dtype.
            xf = x.float()
            xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
            return weight * xf.to(x.dtype)

        @staticmethod
        def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
            half = x.shape[-1] // 2
            rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
            return x * cos + rotated * sin

        def _forward(self, ids: torch.Tensor, pos: torch.Tensor, *, decode: bool, length: int | None) -> torch.Tensor:
            """Logits (1, vocab, fp32) after the last of ``ids`` (1, T) at cache positions ``pos`` (T,).

            Prefill (``decode=False``) starts at position 0 and is causal. A decode step attends to
            ``length`` cached positions when given (eager), else to the whole cache under a mask
            (fixed shapes, for the compiled step).
            """
            t = ids.shape[1]
            h_q, h_kv, d = self.n_heads, self.n_kv, self.head_dim
            x = torch.nn.functional.embedding(ids, self.embed)  # (1, T, D)
            cos, sin = self.cos[pos][None, None], self.sin[pos][None, None]  # (1, 1, T, d)
            mask = None
            if decode and length is None:
                mask = self.slots <= pos[-1]
            for layer in self.layers:
                h = self._rms(x, layer.ln1).view(t, self.hidden)
                q, k, v = layer.qkv(h, decode=decode).split((h_q * d, h_kv * d, h_kv * d), dim=-1)
                q = self._rope(q.view(1, t, h_q, d).transpose(1, 2), cos, sin)
                k = self._rope(k.view(1, t, h_kv, d).transpose(1, 2), cos, sin)
                v = v.view(1, t, h_kv, d).transpose(1, 2)
                layer.k_cache[:, :, pos] = k.to(layer.k_cache.dtype)
                layer.v_cache[:, :, pos] = v.to(layer.v_cache.dtype)
                if not decode:
                    att = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1, enable_gqa=h_q != h_kv)
                elif length is not None:
                    att = self._attend_one(q, layer.k_cache[:, :, :length], layer.v_cache[:, :, :length])
                else:
                    att = self._attend_one(q, layer.k_cache, layer.v_cache, mask=mask)
                x = x + layer.o(att.transpose(1, 2).reshape(t, h_q * d), decode=decode).view(1, t, self.hidden)
                h = self._rms(x, layer.ln2).view(t, self.hidden)
                gate, up = layer.gate_up(h, decode=decode).chunk(2, dim=-1)
                x = x + layer.down(F.silu(gate) * up, decode=decode).view(1, t, self.hidden)
            last = self._rms(x[:, -1], self.norm)  # (1, D)
            return self.head(last, decode=decode).float()

        def _attend_one(
            self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, *, mask: torch.Tensor | None = None
        ) -> torch.Tensor:
            """Attention of one query token over ``keys``/``values`` (1, kv heads, L, d), grouped-query;
            ``mask`` (L,) bool leaves out the positions where it is False (the compiled step's whole cache).

            Two small matrix products and a softmax: on CPU, SDPA's kernel costs about 6x this for a single
            query row (measured 317 µs vs 54 µs per layer at 300 cached tokens, SmolLM2's shapes).
            """
            h_q, h_kv, d = self.n_heads, self.n_kv, self.head_dim
            # Query heads of one kv head are consecutive; in the cache's dtype (fp32 on CPU, where these
            # thin products are about twice as fast as in bf16).
            grouped = q.reshape(h_kv, h_q // h_kv, d).to(keys.dtype)
            scores = torch.bmm(grouped, keys[0].transpose(1, 2))
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            probs = torch.softmax(scores * (d**-0.5), dim=-1, dtype=torch.float32).to(values.dtype)
            return torch.bmm(probs, values[0]).reshape(1, h_q, 1, d).to(q.dtype)

        def _static_step(self) -> torch.Tensor:
            return self._forward(self.step_ids, self.step_pos, decode=True, length=None)

        # -- public steps ------------------------------------------------------------------------

        def prefill(self, ids: torch.Tensor) -> torch.Tensor:
            """Run the prompt ``ids`` (1, T) from position 0; logits after its last token."""
            t = ids.shape[1]
            if t > self.max_len:
                raise ValueError(f"prompt of {t} tokens exceeds the decoder's cache of {self.max_len}")
            return self._forward(ids, torch.arange(t, device=self.device), decode=False, length=None)

        def step(self, token: torch.Tensor, position: int) -> torch.Tensor:
            """Logits after ``token`` (shape (1,) or (1, 1), on the device) placed at ``position``."""
            if self.compiled:
                _cudagraph_thread_state()
                self.step_ids.copy_(token.view(1, 1))
                self.step_pos.fill_(position)
                return self._step().clone()  # the CUDA graph's output is overwritten by the next replay
            ids = token.view(1, 1)
            pos = torch.full((1,), position, dtype=torch.long, device=self.device)
            return self._forward(ids, pos, decode=True, length=position + 1)

    def _rows_as_views(mods: list[Any], name: str, wrap: Callable[[torch.Tensor], Any] | None = None) -> torch.Tensor:
        """Attribute ``name`` of ``mods`` concatenated by rows; each module's attribute becomes a view into it."""
        parts = [getattr(m, name).detach() for m in mods]
        if len(parts) == 1:
            return parts[0]
        fused = torch.cat(parts)
        row = 0
        for m, part in zip(mods, parts):
            view = fused[row : row + part.shape[0]]
            setattr(m, name, wrap(view) if wrap else view)
            row += part.shape[0]
        return fused

    def _fused(mods: list[Any], grids: list[Grid] | None) -> Proj:
        """One projection for ``mods`` (row-concatenated); each module's weights become views into it.

        ``grids`` (one per module) adds the 4-bit base and LoRA factors that decoding uses instead.
        """
        int4 = None if grids is None else _pack(grids)
        if all(hasattr(m, "weight_int8") for m in mods):  # int8 linears of the CPU serving plan
            weight = _rows_as_views(mods, "weight_bf16")
            if int4 is not None:  # decoding reads the 4-bit codes; the int8 rows stay the fallback's only
                return Proj(weight, int4=int4)
            return Proj(weight, _rows_as_views(mods, "weight_int8"), _rows_as_views(mods, "scale"))
        weight = _rows_as_views(mods, "weight", wrap=lambda view: nn.Parameter(view, requires_grad=False))
        return Proj(weight, int4=int4)

    return LlamaDecoder


def _sample(logits: "torch.Tensor", *, temperature: float, top_k: int | None, top_p: float) -> "torch.Tensor":
    """Next token (shape (1,)) from ``logits`` (1, vocab): greedy at temperature 0, else as ``generate`` samples."""
    import torch

    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the tokens ranked above it already hold top_p of the mass (the first always stays).
        drop = (probs.cumsum(dim=-1) - probs) >= top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(dim=-1), 1)[:, 0]


class Decoder:
    """A built decoder plus the loop that streams tokens (one user at a time: the caller holds the model lock)."""

    def __init__(self, module: Any, *, top_k: int | None) -> None:
        self.module = module
        self.top_k = top_k
        self._lock = threading.Lock()  # defensive: a decoder has one cache

    @property
    def max_len(self) -> int:
        return int(self.module.max_len)

    @property
    def decoding_weights(self) -> str:
        """What the decoding steps read: the 4-bit native base with the LoRA unmerged, int8, or the weights' dtype."""
        first = self.module.layers[0].qkv
        if first.int4 is not None:
            return "4-bit native base + unmerged LoRA"
        if first.int8 is not None:
            return "int8"
        return str(first.weight.dtype).removeprefix("torch.")

    def fits(self, prompt_tokens: int, max_new_tokens: int) -> bool:
        return prompt_tokens + max_new_tokens <= self.max_len

    def generate(
        self,
        input_ids: "torch.Tensor",
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        should_stop: Callable[[], bool],
        on_token: Callable[[int], None],
        eos: set[int],
    ) -> int:
        """Decode up to ``max_new_tokens`` after ``input_ids`` (1, T), calling ``on_token`` for each; returns the count.

        Ends early at an end-of-sequence token (one of ``eos``) or when ``should_stop()`` turns true
        (checked before each step).
        """
        import torch

        prompt_len = int(input_ids.shape[1])
        if not self.fits(prompt_len, max_new_tokens):
            raise ValueError(f"{prompt_len} + {max_new_tokens} tokens exceed the decoder's cache of {self.max_len}")
        with self._lock, torch.inference_mode():
            logits = self.module.prefill(input_ids.to(self.module.device))
            count = 0
            while True:
                token = _sample(logits, temperature=temperature, top_k=self.top_k, top_p=top_p)
                value = int(token.item())
                count += 1
                on_token(value)
                if value in eos or count >= max_new_tokens or should_stop():
                    return count
                logits = self.module.step(token, prompt_len + count - 1)


def check_against(decoder: Decoder, model: Any) -> float:
    """Smallest cosine similarity of decoder vs transformers logits on a probe (prefill, then incremental steps).

    The reference is one teacher-forced forward pass of the transformers model over the whole probe.
    """
    import torch

    vocab = int(model.config.vocab_size)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (1, PROBE_TOKENS + PROBE_STEPS), generator=gen).to(decoder.module.device)
    worst = 1.0
    with torch.inference_mode():
        logits = model(input_ids=ids[:, : PROBE_TOKENS + PROBE_STEPS - 1]).logits[0].float()
        refs = [logits[i : i + 1] for i in range(PROBE_TOKENS - 1, PROBE_TOKENS + PROBE_STEPS - 1)]
        got = [decoder.module.prefill(ids[:, :PROBE_TOKENS])]
        for i in range(PROBE_TOKENS, PROBE_TOKENS + PROBE_STEPS - 1):
            got.append(decoder.module.step(ids[:, i], i))
        for ref, mine in zip(refs, got):
            cos = torch.nn.functional.cosine_similarity(ref, mine.to(ref.device), dim=-1).min().item()
            worst = min(worst, cos)
    return worst


def build_decoder(
    model: Any,
    *,
    max_len: int,
    compile_step: bool = False,
    native: NativeInt4 | None = None,
    log: Callable[[str], None] | None = None,
) -> Decoder | None:
    """A checked :class:`Decoder` sharing ``model``'s weights, or None (with the reason logged) when it can't serve it.

    ``model`` must already be merged and prepared for serving (its weights in their serving format);
    its fused projections' weights become views, so build once, before the model is shared.
    """
    say = log or (lambda _m: None)
    reason = unsupported_reason(model)
    if reason is not None:
        say(f"lean decoder not used: {reason}")
        return None
    max_len = min(int(max_len), int(getattr(model.config, "max_position_embeddings", max_len) or max_len))
    try:
        module = _module_class()(model, max_len=max_len, compile_step=compile_step, native=native)
        top_k = getattr(model.generation_config, "top_k", None)
        decoder = Decoder(module, top_k=int(top_k) if top_k else None)
        cosine = check_against(decoder, model)
    except Exception as exc:  # noqa: BLE001 - any failure means: keep generate
        say(f"lean decoder not used: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-8)}")
        return None
    if cosine < MIN_COSINE:
        say(f"lean decoder not used: its logits differ from the model's (cosine {cosine:.5f} < {MIN_COSINE})")
        return None
    say(f"lean decoder ready (decoding weights: {decoder.decoding_weights}, cache {max_len} tokens, compiled step: {compile_step}, "
        f"probe cosine {cosine:.6f})")
    return decoder
