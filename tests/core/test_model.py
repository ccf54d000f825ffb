"""Model loading: embedded-model conversion cache (atomic), adapter/base checks, real generation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import model as model_lib
from core.prompts import PROMPT_FORMAT_VERSION, build_messages
from core.settings import load_settings
from tests.tiny import make_lora_adapter, make_tiny_llama


@pytest.fixture()
def fake_gguf(tmp_path, monkeypatch):
    """A fake GGUF file; the transformers GGUF loaders are replaced by a tiny saved model."""
    import transformers

    tiny = make_tiny_llama(tmp_path / "tiny")
    gguf = tmp_path / "pkg" / "model.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF fake weights v1")
    calls = {"model": 0}
    real_loader = transformers.AutoModelForCausalLM.from_pretrained

    class FakeTokenizer:
        def save_pretrained(self, folder):
            (Path(folder) / "tokenizer_config.json").write_text("{}")

    def fake_model_loader(*_a, **_k):
        calls["model"] += 1
        return real_loader(tiny)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: FakeTokenizer())
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_model_loader)
    return gguf, calls


def test_conversion_writes_a_marked_cache_once(fake_gguf, tmp_path):
    gguf, calls = fake_gguf
    target = tmp_path / "cache" / "dense"
    assert model_lib.convert_gguf_to_dense(gguf, target) == target
    info = json.loads((target / model_lib.CONVERSION_FILE).read_text())
    assert info["gguf_sha256"] == model_lib.sha256_file(gguf)
    assert (target / "model.safetensors").is_file()
    model_lib.convert_gguf_to_dense(gguf, target)
    assert calls["model"] == 1  # the valid cache is reused


def test_interrupted_conversion_leaves_no_usable_cache(fake_gguf, tmp_path, monkeypatch):
    gguf, _ = fake_gguf
    target = tmp_path / "cache" / "dense"

    def crash(self, *_a, **_k):
        raise KeyboardInterrupt("power cut while writing")

    from transformers import PreTrainedModel

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", crash)
    with pytest.raises(KeyboardInterrupt):
        model_lib.convert_gguf_to_dense(gguf, target)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # temporary folder removed too


def test_half_written_or_stale_cache_is_rebuilt(fake_gguf, tmp_path):
    gguf, calls = fake_gguf
    target = tmp_path / "cache" / "dense"
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"truncated")  # no conversion.json: never trusted
    model_lib.convert_gguf_to_dense(gguf, target)
    assert calls["model"] == 1
    gguf.write_bytes(b"GGUF fake weights v2")  # a new package version: hash differs
    model_lib.convert_gguf_to_dense(gguf, target)
    assert calls["model"] == 2


def test_adapter_for_another_base_is_refused_before_loading(tmp_path):
    base_dir = make_tiny_llama(tmp_path / "base")
    base = model_lib.BaseModel(identity="tiny-a", location=str(base_dir))
    adapter = make_lora_adapter(base_dir, tmp_path / "adapter", base_identity="meta-llama/Llama-3.2-1B-Instruct")
    with pytest.raises(model_lib.AdapterMismatchError, match="Llama-3.2-1B-Instruct") as info:
        model_lib.load_model(base, adapter_dir=adapter)
    assert "tiny-a" in str(info.value) and "MEDSTUDY_ADAPTER=none" in str(info.value)


def test_adapter_with_other_prompt_format_or_no_card_is_refused(tmp_path):
    base_dir = make_tiny_llama(tmp_path / "base")
    base = model_lib.BaseModel(identity="tiny-a", location=str(base_dir))
    adapter = make_lora_adapter(base_dir, tmp_path / "adapter", base_identity="tiny-a")
    (adapter / "adapter_card.json").write_text(json.dumps({"base_model": "tiny-a", "prompt_format": "old-v0"}))
    with pytest.raises(model_lib.AdapterMismatchError, match="prompt format"):
        model_lib.load_model(base, adapter_dir=adapter)
    (adapter / "adapter_card.json").unlink()
    with pytest.raises(model_lib.ModelError, match="adapter_card.json"):
        model_lib.load_model(base, adapter_dir=adapter)


def test_matching_adapter_is_merged_and_changes_outputs(tmp_path):
    import torch

    base_dir = make_tiny_llama(tmp_path / "base")
    base = model_lib.BaseModel(identity="tiny-a", location=str(base_dir))
    adapter = make_lora_adapter(base_dir, tmp_path / "adapter", base_identity="tiny-a")
    # The tiny model has no tokenizer; load the weights directly through the same code path.
    from transformers import AutoModelForCausalLM
    from peft import PeftModel

    plain = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    card = model_lib.read_adapter_card(adapter)
    model_lib.check_adapter(card, base, adapter)
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), str(adapter)).merge_and_unload()
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        assert not torch.allclose(plain(ids).logits, merged.eval()(ids).logits)
    assert not any("lora" in n for n, _ in merged.named_parameters())


@pytest.mark.slow
def test_embedded_model_generates_from_a_chat_prompt_with_the_system_prompt():
    import torch

    settings = load_settings(env={})
    base = model_lib.resolve_base(settings)
    assert base.identity == model_lib.EMBEDDED_BASE_ID
    model, tokenizer = model_lib.load_model(base, device="cpu")
    enc = tokenizer.apply_chat_template(
        build_messages("A 30-year-old man has crushing chest pain. What is the first test?"),
        add_generation_prompt=True, return_tensors="pt", return_dict=True,
    )
    prompt = tokenizer.decode(enc["input_ids"][0])
    assert "medical reasoning tutor" in prompt  # our system prompt, not the template's default
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=12, min_new_tokens=10, do_sample=False)
    new_tokens = out[0][enc["input_ids"].shape[1]:]
    assert len(new_tokens) >= 10
    assert tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
