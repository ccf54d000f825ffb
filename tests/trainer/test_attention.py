"""trainer.attention: the torch_varlen attention function on padding-free batches.

On CPU torch's varlen kernel does not run (it is FlashAttention), so the glue -- registration, the boundaries
reaching the function through transformers, the layout, grouped-query heads, the two signatures of
``varlen_attn`` -- is checked with a stand-in kernel that keeps the kernel's documented contract (per-example
causal SDPA over (tokens, heads, dim) slices). The CUDA test runs the real kernel against sdpa on the padded batch.
"""

from __future__ import annotations

import pytest
import torch

from trainer import attention

LENGTHS = (7, 12, 5, 9)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _tiny_llama(attn: str, dtype=torch.float32):
    from transformers import LlamaConfig, LlamaForCausalLM

    if attn == attention.NAME:
        attention.register()
    # 4 query heads on 2 key/value heads: grouped-query attention, as in Llama-3.2 and SmolLM2.
    config = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                         use_cache=False, attn_implementation=attn)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(dtype).train()


def _examples(seed: int = 2) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for n in LENGTHS:
        ids = torch.randint(3, 300, (n,), generator=gen).tolist()
        out.append({"input_ids": ids, "labels": [-100] * 3 + ids[3:]})
    return out


def _reference_kernel(calls: list[dict]):
    """A stand-in for varlen_attn with torch 2.13's signature: causal SDPA within each example, nothing across."""

    def varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None,
                    window_size=(-1, -1), enable_gqa=False, seqused_k=None, block_table=None, num_splits=None):
        calls.append({"window_size": window_size, "enable_gqa": enable_gqa, "scale": scale, "max_q": max_q,
                      "cu_seq_q": cu_seq_q.tolist(), "shape": tuple(query.shape)})
        assert window_size == (-1, 0), "the trainer must ask for causal attention"
        assert int(cu_seq_q.diff().max()) <= max_q
        outs = []
        for start, end in zip(cu_seq_q.tolist(), cu_seq_q.tolist()[1:]):
            q, k, v = (t[start:end].transpose(0, 1) for t in (query, key, value))
            o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale,
                                                                 enable_gqa=enable_gqa)
            outs.append(o.transpose(0, 1))
        return torch.cat(outs)

    return varlen_attn


def _loss_and_grads(model, batch):
    loss = model(**batch).loss
    loss.backward()
    return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def _batches():
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    examples = _examples()
    padded = DataCollatorForLanguageModeling(pad_token_id=0)(examples)
    flat = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(examples)
    return padded, flat


def test_padding_free_row_through_the_varlen_function_trains_like_the_padded_batch(monkeypatch):
    import torch.nn.attention.varlen as varlen

    calls: list[dict] = []
    monkeypatch.setattr(varlen, "varlen_attn", _reference_kernel(calls))
    padded, flat = _batches()
    assert "cu_seq_lens_q" in flat and "attention_mask" not in flat
    loss_ref, grads_ref = _loss_and_grads(_tiny_llama("sdpa"), padded)
    loss, grads = _loss_and_grads(_tiny_llama(attention.NAME), flat)
    # The fp32 model's attention runs in bf16 (FlashAttention's precision); attending across examples would move
    # the loss by ~1e-1 (the control below).
    assert loss == pytest.approx(loss_ref, abs=1e-3)
    assert torch.nn.functional.cosine_similarity(grads, grads_ref, dim=0).item() > 0.999
    # The kernel got every example's boundaries, one flattened row of (tokens, heads, dim), grouped-query heads.
    assert len(calls) == 2  # one per layer
    assert calls[0]["cu_seq_q"] == [0, 7, 19, 24, 33] and calls[0]["shape"] == (sum(LENGTHS), 4, 16)
    assert calls[0]["enable_gqa"] is True and calls[0]["scale"] == pytest.approx(16 ** -0.5)


def test_boundaries_matter_a_row_without_them_is_a_different_computation(monkeypatch):
    """Control: one boundary list for the whole row lets later examples see earlier ones, which changes the loss."""
    import torch.nn.attention.varlen as varlen

    monkeypatch.setattr(varlen, "varlen_attn", _reference_kernel([]))
    _, flat = _batches()
    loss, _ = _loss_and_grads(_tiny_llama(attention.NAME), flat)
    merged = dict(flat, cu_seq_lens_q=torch.tensor([0, sum(LENGTHS)], dtype=torch.int32),
                  cu_seq_lens_k=torch.tensor([0, sum(LENGTHS)], dtype=torch.int32),
                  max_length_q=sum(LENGTHS), max_length_k=sum(LENGTHS))
    leaked, _ = _loss_and_grads(_tiny_llama(attention.NAME), merged)
    assert abs(leaked - loss) > 1e-3


def test_older_torch_signature_gets_is_causal_and_refuses_a_scale_it_cannot_pass(monkeypatch):
    import torch.nn.attention.varlen as varlen

    seen = {}

    def old_varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, is_causal=False, return_aux=None):
        seen["is_causal"] = is_causal
        return query

    monkeypatch.setattr(varlen, "varlen_attn", old_varlen_attn)
    assert attention._kernel_arguments(16 ** -0.5, 16, gqa=True) == {"is_causal": True}
    with pytest.raises(ValueError, match="not 1/sqrt"):
        attention._kernel_arguments(0.5, 16, gqa=False)
    q = torch.zeros(1, 4, 5, 16)
    out, _ = attention.varlen_attention_forward(torch.nn.Module(), q, q, q, None, scaling=0.25,
                                                cu_seq_lens_q=torch.tensor([0, 5]), max_length_q=5)
    assert seen == {"is_causal": True} and out.shape == (1, 5, 4, 16)


def test_fp32_inputs_reach_the_kernel_in_half_precision_and_come_back_in_fp32(monkeypatch):
    """peft's fp32 upcast (fp16 training) gives the attention fp32 tensors; FlashAttention takes fp16/bf16 only."""
    import torch.nn.attention.varlen as varlen

    seen = []

    def half_only(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, **kwargs):
        seen.append(query.dtype)
        assert query.dtype in (torch.float16, torch.bfloat16) and key.dtype == value.dtype == query.dtype
        return query * 2

    monkeypatch.setattr(varlen, "varlen_attn", half_only)
    q = torch.randn(1, 4, 5, 16)
    out, _ = attention.varlen_attention_forward(torch.nn.Module(), q, q, q, None, cu_seq_lens_q=torch.tensor([0, 5]),
                                                max_length_q=5)
    assert seen == [torch.bfloat16] and out.dtype == torch.float32
    assert torch.allclose(out[0], 2 * q[0].transpose(0, 1), atol=2e-2)


def test_a_padded_batch_falls_back_to_causal_sdpa_and_two_rows_are_refused(monkeypatch):
    import torch.nn.attention.varlen as varlen

    def must_not_run(*args, **kwargs):
        raise AssertionError("a batch without boundaries must not reach the varlen kernel")

    monkeypatch.setattr(varlen, "varlen_attn", must_not_run)
    padded, _ = _batches()
    # transformers builds no padding mask for a registered function: right padding is still exact under causality
    # for every real token, so the loss over the labels equals sdpa's with its mask.
    loss_ref, _ = _loss_and_grads(_tiny_llama("sdpa"), padded)
    loss, _ = _loss_and_grads(_tiny_llama(attention.NAME), {k: v for k, v in padded.items() if k != "attention_mask"})
    assert loss == pytest.approx(loss_ref, abs=1e-5)
    q = torch.zeros(2, 4, 5, 16)
    with pytest.raises(ValueError, match="one flattened row, got 2 rows"):
        attention.varlen_attention_forward(torch.nn.Module(), q, q, q, None, cu_seq_lens_q=torch.tensor([0, 5]),
                                           max_length_q=5)


def test_rows_the_call_cannot_compute_correctly_are_refused(monkeypatch):
    import torch.nn.attention.varlen as varlen

    monkeypatch.setattr(varlen, "varlen_attn", _reference_kernel([]))
    q = torch.zeros(1, 4, 6, 16)
    # Positions restart inside the row but no boundaries came: plain causal attention would leak across examples.
    with pytest.raises(ValueError, match="packed row came without cu_seq_lens"):
        attention.varlen_attention_forward(torch.nn.Module(), q, q, q, None,
                                           position_ids=torch.tensor([[0, 1, 2, 0, 1, 2]]))
    for name, value in (("sliding_window", 4096), ("softcap", 50.0)):
        with pytest.raises(ValueError, match=f"{name} attention is not supported"):
            attention.varlen_attention_forward(torch.nn.Module(), q, q, q, None, cu_seq_lens_q=torch.tensor([0, 6]),
                                               max_length_q=6, **{name: value})
    # Boundaries without their longest length: computed from them.
    out, _ = attention.varlen_attention_forward(torch.nn.Module(), q, q, q, None, cu_seq_lens_q=torch.tensor([0, 2, 6]))
    assert out.shape == (1, 6, 4, 16)


def test_a_gpu_older_than_ampere_has_no_varlen_kernel(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))  # a T4
    assert "Ampere or newer" in attention.unavailable_reason() and "7.5" in attention.unavailable_reason()
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    assert attention.unavailable_reason() is None


def test_unavailable_reason_names_the_missing_device_on_cpu():
    if torch.cuda.is_available():
        pytest.skip("CUDA here")
    assert "no CUDA device" in attention.unavailable_reason()


@pytest.mark.gpu
@cuda
def test_real_varlen_kernel_matches_sdpa_on_the_padded_batch_in_bf16():
    """torch's FlashAttention varlen kernel: the padded batch's loss and gradients, within bf16 rounding."""
    assert attention.unavailable_reason() is None
    padded, flat = (({k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in b.items()}) for b in _batches())
    loss_ref, grads_ref = _loss_and_grads(_tiny_llama("sdpa", torch.bfloat16).cuda(), padded)
    loss, grads = _loss_and_grads(_tiny_llama(attention.NAME, torch.bfloat16).cuda(), flat)
    # Attending across examples changes this model's loss by ~1e-1 (the CPU control); bf16 rounding is ~1e-2.
    assert loss == pytest.approx(loss_ref, abs=2e-2)
    cos = torch.nn.functional.cosine_similarity(grads.float(), grads_ref.float(), dim=0).item()
    assert cos > 0.99, cos
