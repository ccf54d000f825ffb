"""core.adapters: which base an adapter belongs to, snapshots, zip downloads and merged full-precision exports."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import replace

import pytest

from core import adapters as adapter_lib
from core.model import EMBEDDED_BASE_ID, BaseModel, ModelError
from core.prompts import PROMPT_FORMAT_VERSION
from core.settings import Settings
from tests.tiny import make_lora_adapter
from tests.trainer.conftest import build_tiny_llama


def test_base_identity_without_loading(tmp_path):
    assert adapter_lib.base_identity(Settings()) == EMBEDDED_BASE_ID
    folder = tmp_path / "tiny-base"
    folder.mkdir()
    assert adapter_lib.base_identity(replace(Settings(), base_model=str(folder))) == "tiny-base"
    (folder / "conversion.json").write_text(json.dumps({"identity": "org/converted"}))
    assert adapter_lib.base_identity(replace(Settings(), base_model=str(folder))) == "org/converted"
    assert adapter_lib.base_identity(replace(Settings(), base_model="org/hub-model")) == "org/hub-model"


def test_mismatch_names_both_bases_and_the_prompt_format():
    good = {"base_model": "b", "prompt_format": PROMPT_FORMAT_VERSION}
    assert adapter_lib.mismatch(good, "b") is None
    assert "'other'" in adapter_lib.mismatch(good, "other") and "'b'" in adapter_lib.mismatch(good, "other")
    assert "prompt format" in adapter_lib.mismatch({**good, "prompt_format": "v0"}, "b")


def test_safe_name():
    assert adapter_lib.safe_name("20250101-120000-tiny llama/../x") == "20250101-120000-tiny-llama-..-x"
    assert adapter_lib.safe_name("...") == "adapter"


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    base_dir = build_tiny_llama(root / "tiny-base")  # with a tokenizer: an export carries it
    adapter = make_lora_adapter(base_dir, root / "run-adapter", base_identity="tiny-base")
    return base_dir, adapter


def test_snapshot_copies_and_replaces_atomically(tiny_adapter, tmp_path):
    _, adapter = tiny_adapter
    target = adapter_lib.snapshot(adapter, tmp_path / "registry" / "my-run")
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in adapter.iterdir())
    (target / "stale.txt").write_text("old")
    adapter_lib.snapshot(adapter, target)
    assert not (target / "stale.txt").exists()
    assert [p.name for p in (tmp_path / "registry").iterdir()] == ["my-run"]  # no temporary folder left
    with pytest.raises(ModelError):
        adapter_lib.snapshot(tmp_path / "registry", tmp_path / "x")  # not an adapter


def test_archive_holds_every_file_under_the_adapter_name(tiny_adapter):
    _, adapter = tiny_adapter
    with zipfile.ZipFile(io.BytesIO(adapter_lib.archive(adapter))) as zf:
        names = sorted(zf.namelist())
        assert names == sorted(f"run-adapter/{p.name}" for p in adapter.iterdir())
        assert zf.read("run-adapter/adapter_card.json") == (adapter / "adapter_card.json").read_bytes()


def test_export_merged_is_a_full_precision_model_equal_to_base_plus_lora(tiny_adapter, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_dir, adapter = tiny_adapter
    base = BaseModel(identity="tiny-base", location=str(base_dir))
    out = adapter_lib.export_merged(base, adapter, tmp_path / "exports" / "merged")
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert all(p.dtype == torch.float32 for p in merged.parameters())
    assert not any("lora" in n for n, _ in merged.named_parameters())
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), str(adapter)).eval()
    plain = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    with torch.no_grad():
        got, want, before = merged.eval()(ids).logits, reference(ids).logits, plain(ids).logits
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, before, atol=1e-3)  # the adapter changed the weights
    info = json.loads((out / adapter_lib.MERGED_INFO_FILE).read_text())
    assert info["base_model"] == "tiny-base" and info["dtype"] == "float32"
    wrong = BaseModel(identity="another-base", location=str(base_dir))
    with pytest.raises(ModelError, match="another-base"):
        adapter_lib.export_merged(wrong, adapter, tmp_path / "exports" / "wrong")
    assert not (tmp_path / "exports" / "wrong").exists()
