"""Tests for core.decoder: the lean Llama decoder matches transformers, its 4-bit native path, its sampling.

Tiny Llamas built from a config in code (no hub). The reference is always transformers' own
``LlamaForCausalLM`` on the same weights.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch

from core import decoder as dec
from core import inference
from core.inference import GenerationSettings, ServingPlan

VOCAB = 300


def _config(**overrides):
    from transformers import LlamaConfig

    values = dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True, eos_token_id=2,
        # 10x transformers' default spread: attention is peaked and positions matter, as in a trained
        # model (at 0.02 a tiny random model's logits barely notice RoPE, so a check would prove little)
        initializer_range=0.2,
    )
    values.update(overrides)
    return LlamaConfig(**values)


def _model(seed: int = 0, **overrides):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(_config(**overrides)).eval()


def _ids(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, VOCAB, (1, n), generator=torch.Generator().manual_seed(seed))


def _teacher_forced(decoder, ids: torch.Tensor, prompt: int) -> torch.Tensor:
    """Decoder logits after each token from position ``prompt - 1`` on: prefill, then one step per token."""
    with torch.inference_mode():
        out = [decoder.module.prefill(ids[:, :prompt])]
        for i in range(prompt, ids.shape[1]):
            out.append(decoder.module.step(ids[:, i], i))
    return torch.cat(out).float()


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).min().item()


# -- the computation matches transformers ---------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [{}, {"num_key_value_heads": 4}, {"tie_word_embeddings": False},
     {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 64}}],
    ids=["gqa", "mha", "untied-head", "llama3-rope"],
)
def test_fp32_decoder_reproduces_transformers_logits(overrides):
    model = _model(**overrides)
    decoder = dec.build_decoder(model, max_len=64)
    assert decoder is not None
    ids = _ids(40)
    with torch.inference_mode():
        want = model(input_ids=ids).logits[0, 19:].float()
    got = _teacher_forced(decoder, ids, 20)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


def test_static_masked_step_equals_the_sliced_step():
    # The CUDA path attends to the whole cache under a mask; it must equal attending to the filled part.
    model = _model(seed=1)
    decoder = dec.build_decoder(model, max_len=64)
    ids = _ids(30, seed=1)
    sliced = _teacher_forced(decoder, ids, 10)
    with torch.inference_mode():
        masked = [decoder.module.prefill(ids[:, :10])]
        for i in range(10, 30):
            decoder.module.step_ids.copy_(ids[:, i : i + 1])
            decoder.module.step_pos.fill_(i)
            masked.append(decoder.module._static_step())
    assert torch.allclose(torch.cat(masked).float(), sliced, atol=1e-5)


def test_views_share_storage_and_keep_the_transformers_model_working():
    model = _model(seed=2)
    ids = _ids(12, seed=2)
    with torch.inference_mode():
        before = model(input_ids=ids).logits
    decoder = dec.build_decoder(model, max_len=64)
    attn = model.model.layers[0].self_attn
    fused = decoder.module.layers[0].qkv.weight
    assert attn.q_proj.weight.data_ptr() == fused.data_ptr()  # q is the first rows of the fused matrix
    assert attn.k_proj.weight.data_ptr() == fused[attn.q_proj.weight.shape[0]:].data_ptr()
    with torch.inference_mode():
        assert torch.equal(model(input_ids=ids).logits, before)


@pytest.mark.parametrize("weights", ["bf16", "int8"])
def test_prepared_weights_are_what_the_decoder_decodes_with(weights):
    model = _model(seed=3)
    inference.prepare_for_serving(model, ServingPlan(weights))
    decoder = dec.build_decoder(model, max_len=64)
    assert decoder is not None
    ids = _ids(24, seed=3)
    with torch.inference_mode():
        want = model(input_ids=ids).logits[0, 15:].float()
    assert _cos(_teacher_forced(decoder, ids, 16), want) > 0.999
    if weights == "int8":
        assert decoder.module.layers[0].qkv.int8 is not None and decoder.module.head.int8 is not None


def test_greedy_decoding_equals_transformers_generate():
    model = _model(seed=4)
    decoder = dec.build_decoder(model, max_len=128)
    ids = _ids(9, seed=4)
    with torch.inference_mode():
        want = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=30, do_sample=False,
                              eos_token_id=None, pad_token_id=0)[0, 9:].tolist()
    got: list[int] = []
    n = decoder.generate(ids, max_new_tokens=30, temperature=0.0, top_p=1.0, should_stop=lambda: False,
                         on_token=got.append, eos=set())
    assert n == 30 and got == want


def test_generation_ends_at_eos_and_at_stop():
    model = _model(seed=5)
    decoder = dec.build_decoder(model, max_len=128)
    ids = _ids(6, seed=5)
    first: list[int] = []
    decoder.generate(ids, max_new_tokens=20, temperature=0.0, top_p=1.0, should_stop=lambda: False,
                     on_token=first.append, eos=set())
    # the third greedy token made an end-of-sequence id: generation ends right there, with it
    got: list[int] = []
    n = decoder.generate(ids, max_new_tokens=20, temperature=0.0, top_p=1.0, should_stop=lambda: False,
                         on_token=got.append, eos={first[2]})
    assert got == first[: first.index(first[2]) + 1] and n == len(got)
    stopped: list[int] = []
    decoder.generate(ids, max_new_tokens=20, temperature=0.0, top_p=1.0, should_stop=lambda: len(stopped) >= 4,
                     on_token=stopped.append, eos=set())
    assert stopped == first[:4]


def test_a_wiring_mistake_is_caught_and_generate_is_kept(monkeypatch):
    cls = dec._module_class()
    monkeypatch.setattr(cls, "_rope", staticmethod(lambda x, cos, sin: x))  # positions ignored: wrong model
    logs: list[str] = []
    assert dec.build_decoder(_model(seed=6), max_len=64, log=logs.append) is None
    assert "differ" in logs[-1]


@pytest.mark.parametrize(
    ("overrides", "gen", "reason"),
    [({"attention_bias": True}, {}, "biases"), ({"hidden_act": "gelu"}, {}, "activation"),
     ({}, {"repetition_penalty": 1.3}, "repetition_penalty")],
)
def test_models_the_loop_does_not_implement_are_left_to_generate(overrides, gen, reason):
    model = _model(**overrides)
    for key, value in gen.items():
        setattr(model.generation_config, key, value)
    logs: list[str] = []
    assert dec.build_decoder(model, max_len=64, log=logs.append) is None
    assert reason in logs[-1]


# -- sampling --------------------------------------------------------------------------------------


def test_sampling_follows_temperature_top_k_and_top_p():
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([[0.1, 0.6, 0.3]]))
    assert dec._sample(logits, temperature=0.0, top_k=None, top_p=1.0).item() == 1
    assert {dec._sample(logits, temperature=1.0, top_k=1, top_p=1.0).item() for _ in range(50)} == {1}
    # top-p 0.5: the most likely token already holds 0.6, so it is the only one left
    assert {dec._sample(logits, temperature=1.0, top_k=None, top_p=0.5).item() for _ in range(50)} == {1}
    # top-p 0.8: 0.6 + 0.3 are kept, 0.1 is dropped; the kept two keep their odds (2:1)
    draws = [dec._sample(logits, temperature=1.0, top_k=None, top_p=0.8).item() for _ in range(3000)]
    assert 0 not in draws
    assert abs(draws.count(1) / len(draws) - 2 / 3) < 0.04


# -- the 4-bit native base with an unmerged adapter ----------------------------------------------------


def _snap_to_grid(model) -> None:
    """Put every decoder-layer linear on a 4-bit grid of 32-input groups, as a GGUF Q4_1 model is."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and name.startswith("model.layers."):
                w = module.weight
                g = w.reshape(w.shape[0], -1, 32)
                low, high = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
                step = (high - low) / 15
                # steps and offsets exact in bf16, so the CPU kernel's bf16 scales reproduce the grid exactly
                step, low = step.bfloat16().float(), low.bfloat16().float()
                codes = ((g - low) / step).round().clamp(0, 15)
                w.copy_((codes * step + low).reshape_as(w))


def test_int4_grid_recognises_a_4bit_weight_and_rejects_a_dense_one():
    model = _model(seed=7)
    _snap_to_grid(model)
    weight = model.model.layers[0].mlp.gate_proj.weight.detach()
    grid = dec.int4_grid(weight)
    assert grid is not None and grid.codes.max() <= 15
    step, zero = grid.scale_zero[..., 0].float(), grid.scale_zero[..., 1].float()  # (groups, out)
    codes = grid.codes.reshape(weight.shape[0], -1, 32).float()
    rebuilt = ((codes - 8) * step.t()[..., None] + zero.t()[..., None]).reshape_as(weight)
    assert torch.allclose(rebuilt, weight, atol=1e-6)
    assert dec.int4_grid(torch.randn(16, 64)) is None
    assert dec.int4_grid(torch.randn(16, 48)) is None  # not a whole number of groups


@pytest.fixture()
def grid_base_and_adapter(tmp_path):
    from peft import LoraConfig, get_peft_model

    base = _model(seed=8)
    _snap_to_grid(base)
    base_dir = tmp_path / "base"
    base.save_pretrained(base_dir)
    peft_model = get_peft_model(
        _model(seed=8), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"])
    )
    peft_model.base_model.model.load_state_dict(base.state_dict(), strict=False)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)
    merged = peft_model.merge_and_unload().eval()
    return base_dir, adapter_dir, merged


def _reload_merged(base_dir: Path, adapter_dir: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    return PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload().eval()


def test_4bit_native_decoding_applies_the_adapter_unmerged(grid_base_and_adapter):
    base_dir, adapter_dir, _ = grid_base_and_adapter
    reference = _reload_merged(base_dir, adapter_dir)  # fp32, merged: what the app loads
    served = _reload_merged(base_dir, adapter_dir)
    native, why = dec.native_int4(served, adapter_dir)
    assert native is not None, why
    assert native["model.layers.0.self_attn.q_proj"].lora_a is not None
    assert native["model.layers.0.self_attn.k_proj"].lora_a is None  # not targeted
    decoder = dec.build_decoder(served, max_len=64, native=native)
    assert decoder is not None and decoder.module.layers[0].qkv.int4 is not None
    ids = _ids(24, seed=8)
    with torch.inference_mode():
        want = reference(input_ids=ids).logits[0, 15:].float()
        without_adapter = _model(seed=8)
        _snap_to_grid(without_adapter)
        base_logits = without_adapter(input_ids=ids).logits[0, 15:].float()
    got = _teacher_forced(decoder, ids, 16)
    error = (got - want).norm() / want.norm()
    adapter_effect = (base_logits - want).norm() / want.norm()
    assert error < 0.01 < adapter_effect  # the adapter is there, and nothing else changed beyond bf16 rounding


def test_4bit_native_is_refused_for_dense_bases_and_unusual_adapters(grid_base_and_adapter, tmp_path):
    base_dir, adapter_dir, _ = grid_base_and_adapter
    dense = _model(seed=9)
    native, why = dec.native_int4(dense, None)
    assert native is None and "not on a 4-bit grid" in why
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    for change in ({"use_dora": True}, {"modules_to_save": ["lm_head"]}, {"rank_pattern": {"q_proj": 8}}):
        odd = tmp_path / f"odd-{next(iter(change))}"
        odd.mkdir()
        (odd / "adapter_model.safetensors").write_bytes((adapter_dir / "adapter_model.safetensors").read_bytes())
        (odd / "adapter_config.json").write_text(json.dumps({**cfg, **change}))
        assert dec.lora_factors(odd) is None
        assert dec.native_int4(_reload_merged(base_dir, adapter_dir), odd)[0] is None


def test_cpu_serving_plan_uses_the_4bit_path_only_when_the_base_allows(grid_base_and_adapter):
    base_dir, adapter_dir, _ = grid_base_and_adapter
    on_grid = inference.prepare_for_serving(_reload_merged(base_dir, adapter_dir), inference.serving_plan("cpu"),
                                            adapter_dir=adapter_dir)
    assert on_grid.decoder.module.layers[0].gate_up.int4 is not None
    dense = inference.prepare_for_serving(_model(seed=10), inference.serving_plan("cpu"))
    layer = dense.decoder.module.layers[0]
    assert layer.gate_up.int4 is None and layer.gate_up.int8 is not None  # int8 decoding instead


# -- through stream_case ----------------------------------------------------------------------------


class _Tok:
    """Just enough tokenizer for stream_case: fixed prompt ids and a decode that spells ids out."""

    pad_token_id = 0
    eos_token_id = 2

    def apply_chat_template(self, messages, **_kwargs):
        return {"input_ids": _ids(8, seed=11)}

    def decode(self, ids, **_kwargs):
        return "".join(f"<{int(i)}>" for i in ids)

    def encode(self, text, **_kwargs):
        return [5, 6, 7]  # the forced final-answer marker (decoded, it is no marker: the answer runs to its limit)


def _served(model) -> inference.ModelServer:
    """``model`` served with the stand-in tokenizer (a prepared server keeps its decoder)."""
    if isinstance(model, inference.ModelServer):
        model.tokenizer = _Tok()
        return model
    return inference.ModelServer(model, _Tok())


def test_stream_case_decodes_with_the_lean_decoder_and_falls_back_beyond_its_cache():
    greedy = GenerationSettings(max_new_tokens=12, temperature=0.0)
    plain = _model(seed=12)
    plain.generation_config.eos_token_id = None
    lean = inference.prepare_for_serving(_model(seed=12), ServingPlan("fp32", max_cache_len=64, decoder=True))
    lean.model.generation_config.eos_token_id = None
    assert lean.decoder is not None
    calls = []
    original = lean.decoder.generate
    lean.decoder.generate = lambda *a, **k: calls.append(1) or original(*a, **k)
    texts = [list(inference.stream_case("case", served=_served(m), settings=greedy))[-1] for m in (plain, lean)]
    assert calls == [1, 1] and texts[1].text == texts[0].text and texts[1].stats.new_tokens == 12
    # neither wrote a final answer: both forced one, the lean decoder serving both phases
    assert texts[0].forced == texts[1].forced == "budget" and "<5><6><7>" in texts[1].text
    # 8 prompt tokens + 60 new > 64 slots: generate serves it, with the same greedy text
    longer = GenerationSettings(max_new_tokens=60, temperature=0.0)
    want = list(inference.stream_case("case", served=_served(plain), settings=longer))[-1]
    got = list(inference.stream_case("case", served=_served(lean), settings=longer))[-1]
    assert calls == [1, 1] and got.text == want.text and got.stats.new_tokens == 60 and got.forced == "budget"


# -- CUDA: the compiled step ------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_cuda_step_matches_transformers_and_eager_greedy():
    model = _model(seed=13).to("cuda")  # fp32: the greedy tokens can be compared exactly
    ids = _ids(20, seed=13).cuda()
    with torch.inference_mode():
        want_logits = model(input_ids=ids).logits[0, 9:].float()
        want_tokens = model.generate(ids[:, :10], attention_mask=torch.ones_like(ids[:, :10]), max_new_tokens=24,
                                     do_sample=False, eos_token_id=None, pad_token_id=0)[0, 10:].tolist()
    decoder = dec.build_decoder(model, max_len=128, compile_step=True)
    assert decoder is not None and decoder.module.compiled
    assert _cos(_teacher_forced(decoder, ids, 10), want_logits) > 0.9999
    got: list[int] = []
    decoder.generate(ids[:, :10], max_new_tokens=24, temperature=0.0, top_p=1.0, should_stop=lambda: False,
                     on_token=got.append, eos=set())
    assert got == want_tokens


def test_the_page_is_told_what_really_serves_the_model(grid_base_and_adapter):
    base_dir, adapter_dir, _ = grid_base_and_adapter
    plan = inference.serving_plan("cpu")
    on_grid = inference.prepare_for_serving(_reload_merged(base_dir, adapter_dir), plan, adapter_dir=adapter_dir)
    assert on_grid.describe().startswith("lean decoder: 4-bit native base + unmerged LoRA")
    dense = inference.prepare_for_serving(_model(seed=14), plan)
    assert dense.describe().startswith("lean decoder: int8 decoding")
    refused = inference.prepare_for_serving(_model(seed=15, attention_bias=True), plan)
    assert refused.decoder is None and refused.describe() == ServingPlan("int8").describe()  # generate, int8
