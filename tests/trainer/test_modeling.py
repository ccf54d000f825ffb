"""trainer.modeling: runtime resolution, the bitsandbytes CPU gradient trap, parameter counts, the CUDA NF4 path."""

from __future__ import annotations

import pytest
import torch

from core.model import BaseModel
from trainer.config import ConfigError, TrainConfig
from trainer.modeling import count_parameters, disable_bnb_cpu_packing, load_training_model, resolve_runtime

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _base(folder) -> BaseModel:
    return BaseModel(identity=folder.name, location=str(folder))


def test_cpu_auto_runtime_is_lora_on_fp32_with_bf16_autocast():
    rt = resolve_runtime(TrainConfig(device="cpu"))
    assert (rt.device, rt.quantization, rt.precision, rt.base_dtype) == ("cpu", "none", "bf16", "float32")
    assert rt.optim == "adamw_torch" and rt.gradient_checkpointing is False and rt.liger is False
    nf4 = resolve_runtime(TrainConfig(device="cpu", quantization="nf4"))
    assert nf4.base_dtype == "nf4" and nf4.gradient_checkpointing is True and nf4.optim == "adamw_torch"


def test_torch_compile_resolves_off_unless_asked_and_reaches_sft_config(tmp_path, data_dir):
    from trainer.train import _sft_config

    assert resolve_runtime(TrainConfig(device="cpu")).torch_compile is False  # auto: off until measured
    cfg = TrainConfig(device="cpu", torch_compile="true", work_dir=str(data_dir.parent))
    rt = resolve_runtime(cfg)
    assert rt.torch_compile is True and rt.to_dict()["torch_compile"] is True  # recorded in the adapter card
    assert _sft_config(cfg, rt, tmp_path, has_eval=False).torch_compile is True
    off = TrainConfig(device="cpu", torch_compile="false", work_dir=str(data_dir.parent))
    assert _sft_config(off, resolve_runtime(off), tmp_path, has_eval=False).torch_compile is False


def test_flex_attention_is_refused_when_auto_lands_on_cpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("device auto is CUDA here")
    with pytest.raises(ConfigError, match="flex_attention cannot train on CPU"):
        resolve_runtime(TrainConfig(attn_implementation="flex_attention"))


def test_runtime_rejects_what_this_machine_cannot_do():
    with pytest.raises(ConfigError) as info:
        resolve_runtime(TrainConfig(device="cpu", optim="paged_adamw_8bit", precision="fp16", liger="on"))
    text = str(info.value)
    assert "paged_adamw_8bit needs CUDA" in text and "fp16 autocast" in text and "liger" in text


def _lora_grads(model, ids) -> dict[str, float]:
    model.train()
    model.zero_grad()
    model(input_ids=ids, labels=ids).loss.backward()
    return {n: (p.grad.abs().sum().item() if p.grad is not None else 0.0)
            for n, p in model.named_parameters() if p.requires_grad}


def _b_grads(grads: dict[str, float]) -> dict[str, float]:
    # LoRA B starts at zero, so the A gradients are zero on the first step by construction.
    return {n: v for n, v in grads.items() if "lora_B" in n}


def test_nf4_on_cpu_keeps_gradients_after_an_eval_forward(tiny_model_dir):
    """The bitsandbytes CPU trap: an eval-mode no-grad forward must not silence later LoRA gradients."""
    import bitsandbytes as bnb
    from bitsandbytes.functional import has_avx512bf16

    cfg = TrainConfig(device="cpu", quantization="nf4", lora_dropout=0.0)
    model, tok = load_training_model(_base(tiny_model_dir), cfg, resolve_runtime(cfg))
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 14 and all(m.support_avx512bf16_for_cpu is False for m in layers)
    ids = torch.tensor([tok.encode("Chest pain with ST elevation. Final answer: STEMI")])
    before = _lora_grads(model, ids)
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)  # what the periodic evaluation does
    after = _lora_grads(model, ids)
    assert len(_b_grads(after)) == 14
    assert all(v > 0 for v in _b_grads(after).values()), [n for n, v in _b_grads(after).items() if not v]
    assert after == pytest.approx(before)  # the eval forward changed nothing about training

    if has_avx512bf16():
        # Control: this CPU has the repacking path, so without the fix the same sequence loses gradients.
        # (If a bitsandbytes release fixes the trap, this control fails: then the workaround can go.)
        fresh, _ = load_training_model(_base(tiny_model_dir), cfg, resolve_runtime(cfg))
        for m in fresh.modules():
            if isinstance(m, bnb.nn.Linear4bit):
                m.support_avx512bf16_for_cpu = True
        fresh.eval()
        with torch.no_grad():
            fresh(input_ids=ids)
        broken = _b_grads(_lora_grads(fresh, ids))
        assert sum(1 for v in broken.values() if v == 0) > len(broken) // 2
        assert disable_bnb_cpu_packing(fresh) == 14


def _fake_cuda(monkeypatch, bf16: bool = True) -> None:
    """resolve_runtime as on a CUDA machine (only the runtime choice; nothing is loaded)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (9, 0) if bf16 else (7, 5))


def test_fp32_upcast_auto_is_off_only_for_nf4_with_bf16_on_cuda(monkeypatch):
    assert resolve_runtime(TrainConfig(device="cpu", quantization="nf4")).fp32_upcast is True  # CPU: as before
    assert resolve_runtime(TrainConfig(device="cpu")).fp32_upcast is False  # nothing quantised, nothing to cast
    with pytest.raises(ConfigError, match="fp32_upcast: only applies to an nf4 base"):
        resolve_runtime(TrainConfig(device="cpu", quantization="none", fp32_upcast="true"))
    _fake_cuda(monkeypatch)
    assert resolve_runtime(TrainConfig(device="cuda", quantization="nf4")).fp32_upcast is False
    assert resolve_runtime(TrainConfig(device="cuda", quantization="nf4", precision="fp16")).fp32_upcast is True
    assert resolve_runtime(TrainConfig(device="cuda", quantization="nf4", fp32_upcast="true")).fp32_upcast is True
    _fake_cuda(monkeypatch, bf16=False)  # a T4: auto picks fp16, which needs the upcast
    rt = resolve_runtime(TrainConfig(device="cuda", quantization="nf4"))
    assert rt.precision == "fp16" and rt.fp32_upcast is True


def test_attention_auto_is_varlen_for_padding_free_batches_on_cuda_only(monkeypatch):
    from trainer import attention

    cpu = resolve_runtime(TrainConfig(device="cpu", packing=True))
    assert cpu.attn_implementation == "sdpa" and cpu.padding_free is True
    _fake_cuda(monkeypatch)
    monkeypatch.setattr(attention, "unavailable_reason", lambda: None)
    for cfg in (TrainConfig(device="cuda", packing=True), TrainConfig(device="cuda", padding_free="true")):
        rt = resolve_runtime(cfg)
        assert (rt.attn_implementation, rt.padding_free, rt.group_by_length) == ("torch_varlen", True, False)
    # auto on CUDA with the kernel: padding-free by default; padded batches only when asked for.
    default = resolve_runtime(TrainConfig(device="cuda"))
    assert (default.attn_implementation, default.padding_free, default.group_by_length) == ("torch_varlen", True, False)
    padded = resolve_runtime(TrainConfig(device="cuda", padding_free="false"))
    assert (padded.attn_implementation, padded.padding_free, padded.group_by_length) == ("sdpa", False, True)
    assert resolve_runtime(TrainConfig(device="cuda", packing=True, attn_implementation="sdpa")).attn_implementation == "sdpa"
    # A kernel the user picked that is not made for flattened rows keeps padded batches.
    for attn in ("sdpa", "eager"):
        rt = resolve_runtime(TrainConfig(device="cuda", attn_implementation=attn))
        assert (rt.attn_implementation, rt.padding_free) == (attn, False)
    # fp32 (FlashAttention has no fp32): padded by default; padding-free when asked gets FlexAttention.
    assert resolve_runtime(TrainConfig(device="cuda", precision="fp32")).padding_free is False
    fp32 = resolve_runtime(TrainConfig(device="cuda", precision="fp32", padding_free="true"))
    assert (fp32.attn_implementation, fp32.padding_free) == ("flex_attention", True)
    # A torch without the kernel: padded batches by default, FlexAttention for packing, a refusal by name.
    monkeypatch.setattr(attention, "unavailable_reason", lambda: "torch 2.8 has no torch.nn.attention.varlen")
    assert resolve_runtime(TrainConfig(device="cuda")).padding_free is False
    assert resolve_runtime(TrainConfig(device="cuda", packing=True)).attn_implementation == "flex_attention"
    with pytest.raises(ConfigError, match="torch_varlen cannot run here: torch 2.8"):
        resolve_runtime(TrainConfig(device="cuda", packing=True, attn_implementation="torch_varlen"))


def test_torch_varlen_is_refused_without_padding_free_batches_or_in_fp32(monkeypatch):
    from trainer import attention

    _fake_cuda(monkeypatch)
    monkeypatch.setattr(attention, "unavailable_reason", lambda: None)
    with pytest.raises(ConfigError) as info:
        resolve_runtime(TrainConfig(device="cuda", attn_implementation="torch_varlen", precision="fp32",
                                    padding_free="false"))
    text = str(info.value)
    assert "torch_varlen needs padding-free batches" in text and "needs bf16 or fp16" in text


def test_nf4_without_upcast_keeps_the_compute_dtype_and_still_trains(tiny_model_dir):
    """fp32_upcast false: embeddings and norms stay bf16 (loaded in the compute dtype); LoRA still gets gradients."""
    ids = None
    dtypes = {}
    for upcast in ("true", "false"):
        cfg = TrainConfig(device="cpu", quantization="nf4", lora_dropout=0.0, fp32_upcast=upcast)
        rt = resolve_runtime(cfg)
        assert rt.fp32_upcast is (upcast == "true")
        model, tok = load_training_model(_base(tiny_model_dir), cfg, rt)
        ids = torch.tensor([tok.encode("Chest pain with ST elevation. Final answer: STEMI")])
        norms = {p.dtype for n, p in model.named_parameters() if "norm" in n}
        embed = model.get_input_embeddings().weight
        dtypes[upcast] = (norms, embed.dtype)
        assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            grads = _b_grads(_lora_grads(model, ids))
        assert len(grads) == 14 and all(v > 0 for v in grads.values())
    assert dtypes["true"] == ({torch.float32}, torch.float32)
    assert dtypes["false"] == ({torch.bfloat16}, torch.bfloat16)


def test_planned_steps_from_epochs_batch_and_processes():
    from trainer.modeling import planned_steps

    cfg = TrainConfig(num_epochs=3, batch_size=16, gradient_accumulation_steps=1)
    assert planned_steps(cfg, 8000) == 1500  # the seed-size job: 3 x ceil(8000 / 16)
    assert planned_steps(cfg, 8001) == 1503  # a partial last batch is still a step
    assert planned_steps(cfg, 8000, world_size=2) == 750
    assert planned_steps(TrainConfig(batch_size=4, gradient_accumulation_steps=4, num_epochs=1.5), 100) == 11
    assert planned_steps(TrainConfig(max_steps=40), 8000) == 40  # max_steps wins


def test_compile_auto_pays_only_for_long_cuda_runs(monkeypatch):
    from trainer.modeling import COMPILE_MIN_STEPS, compile_pays

    cpu = resolve_runtime(TrainConfig(device="cpu"))
    assert compile_pays(TrainConfig(device="cpu"), cpu, 10_000).torch_compile is False
    _fake_cuda(monkeypatch)
    cfg = TrainConfig(device="cuda")
    rt = resolve_runtime(cfg)
    assert rt.torch_compile is False  # undecided until the run's length is known
    assert compile_pays(cfg, rt, COMPILE_MIN_STEPS).torch_compile is True
    assert compile_pays(cfg, rt, COMPILE_MIN_STEPS - 1).torch_compile is False
    off = TrainConfig(device="cuda", torch_compile="false")
    assert compile_pays(off, resolve_runtime(off), 10_000).torch_compile is False
    on = TrainConfig(device="cuda", torch_compile="true")
    assert compile_pays(on, resolve_runtime(on), 1).torch_compile is True


def test_trainable_parameter_count_matches_lora_arithmetic(tiny_model_dir):
    cfg = TrainConfig(device="cpu")
    model, _ = load_training_model(_base(tiny_model_dir), cfg, resolve_runtime(cfg))
    trainable, total = count_parameters(model)
    assert trainable == 2 * 16 * (128 + 96 + 96 + 128 + 192 + 192 + 192)
    assert trainable == sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert total == sum(p.numel() for p in model.parameters())


def test_unknown_target_modules_give_a_clear_error(tiny_model_dir):
    from core.model import ModelError

    cfg = TrainConfig(device="cpu", lora_target_modules=["query_key_value"])
    with pytest.raises(ModelError, match="lora_target_modules"):
        load_training_model(_base(tiny_model_dir), cfg, resolve_runtime(cfg))


@pytest.mark.slow
def test_embedded_smollm2_trainable_parameters():
    """SmolLM2-135M, r=16 on seven projections: 30 layers x 16 x 10,176 = 4,884,480 (3.50%)."""
    from core.model import resolve_base
    from core.settings import load_settings

    cfg = TrainConfig(device="cpu")
    model, _ = load_training_model(resolve_base(load_settings()), cfg, resolve_runtime(cfg))
    trainable, total = count_parameters(model)
    assert trainable == 4_884_480
    assert round(100 * trainable / total, 2) == 3.50


@pytest.mark.gpu
@cuda
def test_nf4_qlora_on_cuda_trains_lora_only(tiny_model_dir, data_dir, tmp_path):
    """CUDA defaults: NF4 + double quant, bf16/fp16 compute, fused AdamW, checkpointing, padding-free batches through
    torch's varlen FlashAttention kernel."""
    import bitsandbytes as bnb

    from core.metrics import read_metrics
    from trainer.config import load_config
    from trainer.train import train

    from .conftest import param_snapshots, tiny_overrides

    snap = param_snapshots()
    values = tiny_overrides(tiny_model_dir, data_dir, tmp_path / "run", device="cuda")
    cfg = load_config(None, values)
    rt = resolve_runtime(cfg)
    assert (rt.quantization, rt.optim, rt.gradient_checkpointing, rt.padding_free, rt.attn_implementation) == (
        "nf4", "adamw_torch_fused", True, True, "torch_varlen")
    model, _ = load_training_model(_base(tiny_model_dir), cfg, rt)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 14 and layers[0].weight.quant_state.nested  # double quantisation
    del model
    result = train(cfg, extra_callbacks=[snap])
    assert result.state == "completed" and result.card["runtime"]["quantization"] == "nf4"
    assert result.card["runtime"]["optim"] == "adamw_torch_fused"
    assert result.card["runtime"]["attn_implementation"] == "torch_varlen"
    losses = [r["loss"] for r in read_metrics(result.run_dir / "metrics.jsonl") if r["event"] == "train"]
    assert len(losses) == 4 and all(loss > 0 for loss in losses)
    lora = [n for n in snap.begin if "lora_B" in n]
    assert lora and all(not snap.begin[n].equal(snap.end[n]) for n in lora)
    assert all(snap.begin[n].equal(snap.end[n]) for n in snap.begin if "lora_" not in n)


def test_align_eos_follows_the_model_config(tiny_model_dir):
    """The embedded GGUF tokenizer names <|im_start|> as eos; the model (and chat template) end turns with <|im_end|>."""
    from transformers import AutoConfig, AutoTokenizer

    from trainer.modeling import align_eos

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.eos_token = "<|im_start|>"  # the GGUF quirk
    model = type("M", (), {"config": AutoConfig.from_pretrained(tiny_model_dir)})()
    assert align_eos(tok, model) == "<|im_start|>"
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2
    assert align_eos(tok, model) is None  # already aligned


def test_only_the_embedded_gguf_is_accepted_as_a_file(tmp_path):
    from core.model import ModelError
    from trainer.modeling import resolve_base_model

    other = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    other.write_bytes(b"GGUF but not the shipped bytes")
    with pytest.raises(ModelError, match="not the embedded"):
        resolve_base_model(str(other), work_dir=tmp_path)
    assert not (tmp_path / "models").exists()  # refused before any conversion


@pytest.mark.slow
def test_embedded_gguf_file_resolves_like_embedded():
    from core.model import EMBEDDED_BASE_ID, find_embedded_gguf, resolve_base
    from core.settings import load_settings
    from trainer.modeling import resolve_base_model

    by_file = resolve_base_model(str(find_embedded_gguf()))
    assert by_file == resolve_base(load_settings())
    assert by_file.identity == EMBEDDED_BASE_ID


@pytest.mark.gpu
@cuda
def test_seed_recipe_fp16_nf4_paged_adamw_trains_on_cuda(tiny_model_dir, data_dir, tmp_path):
    """The seed's exact recipe (fp16 compute, paged 8-bit AdamW) runs: TRL's bf16 LoRA cast is undone for fp16."""
    from core.metrics import read_metrics
    from trainer.config import load_config
    from trainer.train import train

    from .conftest import tiny_overrides

    values = tiny_overrides(tiny_model_dir, data_dir, tmp_path / "run", device="cuda", quantization="nf4",
                            precision="fp16", optim="paged_adamw_8bit", gradient_checkpointing="true", liger="off")
    result = train(load_config(None, values))
    assert result.state == "completed" and result.card["runtime"]["precision"] == "fp16"
    losses = [r["loss"] for r in read_metrics(result.run_dir / "metrics.jsonl") if r["event"] == "train"]
    assert len(losses) == 4 and all(loss > 0 for loss in losses)


def test_fp16_keeps_trainable_weights_in_fp32_and_leaves_the_frozen_base(tiny_model_dir):
    """TRL casts LoRA weights of quantised models to bf16; fp16 mixed precision needs them fp32 again."""
    from trainer.train import fp32_trainable_for_fp16

    cfg = TrainConfig(device="cpu", base_dtype="bfloat16")
    model, _ = load_training_model(_base(tiny_model_dir), cfg, resolve_runtime(cfg))
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.to(torch.bfloat16)  # what SFTTrainer does for a quantised model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert fp32_trainable_for_fp16(model, "bf16") == 0  # bf16 autocast: left alone
    assert all(p.dtype == torch.bfloat16 for n, p in model.named_parameters() if n in trainable)
    assert fp32_trainable_for_fp16(model, "fp16") == len(trainable) > 0
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert all(dtypes[n] == torch.float32 for n in trainable)
    assert all(dtypes[n] == torch.bfloat16 for n in dtypes if n not in trainable)  # the frozen base untouched
    assert fp32_trainable_for_fp16(model, "fp16") == 0  # idempotent
