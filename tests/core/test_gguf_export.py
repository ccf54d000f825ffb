"""GGUF export of the shipped LoRA adapter, checked against transformers and against real llama.cpp.

Offline checks (no binary): the Q/K permutation against the real base weights, the merged tensors
against the dense fp32 merge, metadata copied, byte-for-byte determinism, clear refusals.
With llama-server (built by ``scripts/build_llama_server.sh``; ``make test`` builds it): both exports
load, and the first 32 greedy tokens of the app's real prompt agree with transformers' fp32 greedy
decoding of base + adapter merged (:func:`core.model.load_model`).

Agreement is measured two ways and both are printed: the exact greedy prefix the server and
transformers share, and teacher-forced top-1 agreement (transformers fed the server's tokens: at how
many of the 32 positions would it have picked the same token). The second does not collapse after one
near-tie flips, so it is what the thresholds are on. The server quantises (Q4_1/Q8_0 weights, Q8
activations), so exact equality of all 32 tokens is not expected.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks.bench_gguf_agreement import common_prefix, teacher_forced_agreement
from core import gguf_export as ge
from core.llamacpp import LlamaServer, find_llama_server
from core.model import DEFAULT_ADAPTER_DIR, find_embedded_gguf

pytestmark = pytest.mark.slow

N_TOKENS = 32
TEST_DATA = Path(__file__).resolve().parents[2] / ".work" / "data" / "test.jsonl"
FALLBACK_CASES = [
    {"question": "A 64-year-old man has crushing chest pain radiating to the left arm for 40 minutes, with sweating. "
                 "ECG shows ST elevation in leads II, III and aVF. Which coronary artery is most likely occluded?",
     "options": {"A": "Left anterior descending", "B": "Right coronary artery", "C": "Left circumflex",
                 "D": "Left main"}},
    {"question": "What are the early symptoms of type 1 diabetes in children?", "options": None},
]


def real_cases(n: int = 2) -> list[dict]:
    """The first ``n`` cases of the prepared test split (the app's real inputs), or built-in ones."""
    if not TEST_DATA.is_file():
        return FALLBACK_CASES[:n]
    rows = [json.loads(line) for line in TEST_DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [{"question": r["question"], "options": r.get("options") or None, "context": r.get("context") or ""}
            for r in rows[:n]] or FALLBACK_CASES[:n]  # an empty split (data being re-prepared) has no real case


@pytest.fixture(scope="module")
def base_gguf() -> Path:
    return find_embedded_gguf()


@pytest.fixture(scope="module")
def exports(tmp_path_factory, base_gguf) -> dict[str, ge.ExportResult]:
    out = tmp_path_factory.mktemp("gguf")
    lora = ge.export_lora_gguf(DEFAULT_ADAPTER_DIR, out / "medcot.lora.gguf", base_gguf=base_gguf)
    merged = ge.export_merged_gguf(DEFAULT_ADAPTER_DIR, out / "medcot.merged-q8_0.gguf", base_gguf=base_gguf)
    print(f"\nexport seconds: lora {lora.seconds}, merged q8_0 {merged.seconds}")
    return {"lora": lora, "merged": merged}


@pytest.fixture(scope="module")
def dense_base():
    from core.model import resolve_base
    from core.settings import load_settings

    return resolve_base(load_settings())


@pytest.fixture(scope="module")
def hf_merged(dense_base):
    """transformers fp32, base + shipped adapter merged: the reference the GGUF exports must agree with."""
    from core.model import load_model

    return load_model(dense_base, adapter_dir=DEFAULT_ADAPTER_DIR, device="cpu", merge=True)


# -- offline: arithmetic and metadata --------------------------------------------------------------------


def test_permutation_maps_the_dense_hf_weights_onto_the_gguf_ones(dense_base, base_gguf):
    """The dense folder the adapter was trained on, permuted back, is exactly the base GGUF's Q/K."""
    import gguf
    import numpy as np
    from gguf.quants import dequantize
    from safetensors.numpy import load_file

    dense = load_file(str(Path(dense_base.location) / "model.safetensors"))
    reader = gguf.GGUFReader(base_gguf)
    tensors = {t.name: t for t in reader.tensors}
    for layer in (0, 17):
        for hf, stem, heads in (("q_proj", "attn_q", 9), ("k_proj", "attn_k", 3)):
            t = tensors[f"blk.{layer}.{stem}.weight"]
            want = dequantize(t.data, t.tensor_type)
            hf_w = dense[f"model.layers.{layer}.self_attn.{hf}.weight"]
            assert not np.array_equal(hf_w, want)  # the layouts differ ...
            np.testing.assert_array_equal(ge.permute_rows(hf_w, heads), want)  # ... by exactly this permutation


def test_merged_q8_0_holds_the_fp32_merge_and_the_base_metadata(exports, dense_base, base_gguf, hf_merged):
    import gguf
    import numpy as np
    from gguf.quants import dequantize

    model, _ = hf_merged
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    merged = gguf.GGUFReader(exports["merged"].path)
    base = gguf.GGUFReader(base_gguf)
    m_tensors = {t.name: t for t in merged.tensors}
    assert [t.name for t in merged.tensors] == [t.name for t in base.tensors]
    for layer in (0, 29):
        for hf, stem, heads in (("self_attn.q_proj", "attn_q", 9), ("self_attn.k_proj", "attn_k", 3),
                                ("self_attn.v_proj", "attn_v", None), ("mlp.down_proj", "ffn_down", None)):
            t = m_tensors[f"blk.{layer}.{stem}.weight"]
            assert t.tensor_type == gguf.GGMLQuantizationType.Q8_0
            got = dequantize(t.data, t.tensor_type)
            want = state[f"model.layers.{layer}.{hf}.weight"]
            want = ge.permute_rows(want, heads) if heads else want
            # Q8_0 rounds to half a step of each 32-block's scale (max|w| / 127), a little more since the
            # scale itself is stored as fp16 (measured up to 0.55 steps); a wrong merge is off by many steps.
            step = np.abs(want.reshape(-1, 32)).max(axis=1, keepdims=True) / 127
            assert np.all(np.abs(got.reshape(-1, 32) - want.reshape(-1, 32)) <= 0.6 * step)
    for name in ("token_embd.weight", "blk.3.attn_norm.weight", "output_norm.weight"):  # untouched: same bytes
        b = next(t for t in base.tensors if t.name == name)
        assert m_tensors[name].tensor_type == b.tensor_type
        assert np.array_equal(np.asarray(m_tensors[name].data), np.asarray(b.data))
    for key, field in base.fields.items():
        if key.startswith("GGUF.") or key == "general.file_type":
            continue
        assert merged.get_field(key).contents() == field.contents(), key
    assert merged.get_field("tokenizer.ggml.eos_token_id").contents() == 2  # <|im_end|>, not <|im_start|>


def test_lora_gguf_layout(exports):
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(exports["lora"].path)
    assert reader.get_field("general.type").contents() == "adapter"
    assert reader.get_field("adapter.type").contents() == "lora"
    assert reader.get_field("adapter.lora.alpha").contents() == pytest.approx(32.0)
    names = {t.name: t for t in reader.tensors}
    assert len(names) == 30 * 7 * 2
    a, b = names["blk.4.attn_k.weight.lora_a"], names["blk.4.attn_k.weight.lora_b"]
    assert list(a.shape) == [576, 16] and list(b.shape) == [16, 192]  # ggml ne order: [in, r] and [r, out]
    lora = ge.read_peft_lora(DEFAULT_ADAPTER_DIR)
    np.testing.assert_array_equal(np.asarray(b.data), ge.permute_rows(lora.pairs["blk.4.attn_k.weight"].b, 3))
    np.testing.assert_array_equal(np.asarray(names["blk.4.attn_v.weight.lora_b"].data),
                                  lora.pairs["blk.4.attn_v.weight"].b)


def test_exports_are_deterministic(exports, tmp_path, base_gguf):
    again = ge.export_lora_gguf(DEFAULT_ADAPTER_DIR, tmp_path / "again.gguf", base_gguf=base_gguf)
    assert again.path.read_bytes() == exports["lora"].path.read_bytes()


# -- refusals --------------------------------------------------------------------------------------------


@pytest.fixture()
def adapter_copy(tmp_path) -> Path:
    target = tmp_path / "copy"
    target.mkdir()
    for name in ("adapter_config.json", "adapter_card.json", "adapter_model.safetensors"):
        shutil.copy(DEFAULT_ADAPTER_DIR / name, target / name)
    return target


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("no_config", "adapter_config.json is missing"),
        ("config_not_json", "adapter_config.json is not readable JSON"),
        ("no_card", "has no adapter_card.json"),
        ("other_base", "trained on base model 'HuggingFaceTB/SmolLM2-360M-Instruct'"),
        ("lm_head", "unsupported target modules ['lm_head']"),
        ("dora", "DoRA"),
        ("truncated_weights", "adapter_model.safetensors cannot be read"),
        ("no_weights", "adapter_model.safetensors is missing"),
    ],
)
def test_bad_adapters_are_refused_with_a_clear_message(adapter_copy, tmp_path, base_gguf, breakage, message):
    config, card, weights = (adapter_copy / n for n in ("adapter_config.json", "adapter_card.json",
                                                         "adapter_model.safetensors"))
    if breakage == "no_config":
        config.unlink()
    elif breakage == "config_not_json":
        config.write_text("{not json")
    elif breakage == "no_card":
        card.unlink()
    elif breakage == "other_base":
        _edit_json(card, base_model="HuggingFaceTB/SmolLM2-360M-Instruct")
    elif breakage == "lm_head":
        _edit_json(config, target_modules=["q_proj", "lm_head"])
    elif breakage == "dora":
        _edit_json(config, use_dora=True)
    elif breakage == "truncated_weights":
        weights.write_bytes(weights.read_bytes()[:5000])
    elif breakage == "no_weights":
        weights.unlink()
    out = tmp_path / "out.gguf"
    for export in (ge.export_lora_gguf, ge.export_merged_gguf):
        with pytest.raises(ge.GGUFExportError) as info:
            export(adapter_copy, out, base_gguf=base_gguf)
        assert message in str(info.value)
        assert "copy" in str(info.value)  # names the adapter
        assert not out.exists() and not list(tmp_path.glob(".out.gguf*"))  # nothing half-written


def test_cli_reports_a_refusal_without_a_traceback(adapter_copy, tmp_path, capsys):
    (adapter_copy / "adapter_config.json").unlink()
    assert ge.main([str(adapter_copy), "--out", str(tmp_path / "o"), "--lora"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Cannot export adapter copy") and "Traceback" not in err


# -- with llama.cpp ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_bin() -> Path:
    binary = find_llama_server()
    if binary is None:
        pytest.skip("llama-server binary is missing: build it with `bash scripts/build_llama_server.sh` "
                    "(`make test` does) or set LLAMA_SERVER_BIN")
    return binary


@pytest.fixture(scope="module")
def lora_server(llama_bin, exports, base_gguf, tmp_path_factory):
    log = tmp_path_factory.mktemp("lora-server") / "server.log"
    # One thread: ggml's threads spin at every barrier, so two of them on a busy 2-core CI box crawl.
    with LlamaServer(model=base_gguf, loras=[exports["lora"].path], port=0, parallel=1, threads=1,
                     ctx_per_slot=2048, log_path=log, binary=llama_bin) as server:
        yield server


@pytest.fixture(scope="module")
def merged_server(llama_bin, exports, tmp_path_factory):
    log = tmp_path_factory.mktemp("merged-server") / "server.log"
    with LlamaServer(model=exports["merged"].path, port=0, parallel=1, threads=1, ctx_per_slot=2048,
                     log_path=log, binary=llama_bin) as server:
        yield server


@pytest.fixture(scope="module")
def prompts(hf_merged) -> list[list[int]]:
    from core.inference import prompt_ids

    _, tokenizer = hf_merged
    return [prompt_ids(tokenizer, c["question"], c["options"], context=c.get("context", ""))[0].tolist()
            for c in real_cases()]


@pytest.fixture(scope="module")
def hf_greedy(hf_merged, prompts) -> list[list[int]]:
    import torch

    model, tokenizer = hf_merged
    out = []
    with torch.no_grad():
        for ids in prompts:
            gen = model.generate(torch.tensor([ids]), max_new_tokens=N_TOKENS, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            out.append(gen[0, len(ids):].tolist())
    return out


@pytest.fixture(scope="module")
def lora_greedy(lora_server, prompts) -> list[list[int]]:
    """The server's first greedy tokens per prompt, base Q4_1 + LoRA GGUF applied at scale 1."""
    return [lora_server.complete(ids, n_predict=N_TOKENS, lora={0: 1.0})["tokens"] for ids in prompts]


@pytest.fixture(scope="module")
def merged_greedy(merged_server, prompts) -> list[list[int]]:
    return [merged_server.complete(ids, n_predict=N_TOKENS)["tokens"] for ids in prompts]


def _agreement(label: str, server_tokens: list[list[int]], hf_merged, prompts, hf_greedy) -> tuple[list[float], list[int]]:
    model, _ = hf_merged
    assert all(server_tokens), f"{label}: no tokens generated"
    forced = [teacher_forced_agreement(model, ids, tokens) for ids, tokens in zip(prompts, server_tokens)]
    prefixes = [common_prefix(tokens, ref) for tokens, ref in zip(server_tokens, hf_greedy)]
    print(f"\n{label} vs transformers fp32 ({len(prompts)} prompts, {N_TOKENS} greedy tokens): teacher-forced top-1 "
          f"agreement {[round(f, 3) for f in forced]} mean {sum(forced) / len(forced):.3f}; exact greedy prefix {prefixes}")
    return forced, prefixes


def test_lora_gguf_on_llama_server_agrees_with_transformers(lora_greedy, hf_merged, prompts, hf_greedy):
    forced, prefixes = _agreement("LoRA GGUF (Q4_1 base + F32 LoRA)", lora_greedy, hf_merged, prompts, hf_greedy)
    assert sum(forced) / len(forced) >= 0.9 and min(forced) >= 0.8
    assert max(prefixes) >= 8


def test_merged_q8_0_on_llama_server_agrees_with_transformers(merged_greedy, hf_merged, prompts, hf_greedy):
    forced, prefixes = _agreement("merged Q8_0 GGUF", merged_greedy, hf_merged, prompts, hf_greedy)
    assert sum(forced) / len(forced) >= 0.9 and min(forced) >= 0.8
    # No bound on the exact greedy prefix: a near-tie can flip even the first token (seen once in 3 prompts).


def server_teacher_forced(server: LlamaServer, prompt: list[int], tokens: list[int], lora: dict[int, float]) -> float:
    """Share of ``tokens`` the server picks itself given the prompt and the tokens before them (one token per
    request; ``cache_prompt`` keeps the shared prefix in the slot, so each step evaluates one new token)."""
    picks = [server.complete(prompt + tokens[:i], n_predict=1, lora=lora, cache_prompt=True)["tokens"][0]
             for i in range(len(tokens))]
    return sum(p == t for p, t in zip(picks, tokens)) / len(tokens)


def test_lora_scale_changes_the_text_and_matches_the_merged_export(lora_server, prompts, lora_greedy, merged_greedy):
    ids, applied = prompts[0], lora_greedy[0]
    bare = lora_server.complete(ids, n_predict=N_TOKENS, lora={0: 0.0})["tokens"]
    default = lora_server.complete(ids, n_predict=N_TOKENS)["tokens"]  # loaded unapplied: no lora means scale 0
    assert applied != bare
    assert default == bare
    # Q4_1 + LoRA and merged Q8_0 round differently, so one near-tie can send the free-running texts apart;
    # fed the merged export's tokens, the LoRA server must pick the same next token almost everywhere.
    forced = [server_teacher_forced(lora_server, p, m, {0: 1.0}) for p, m in zip(prompts, merged_greedy)]
    print(f"\nLoRA GGUF at scale 1 on the merged Q8_0 export's tokens: teacher-forced agreement "
          f"{[round(f, 3) for f in forced]}; exact greedy prefix {[common_prefix(a, m) for a, m in zip(lora_greedy, merged_greedy)]}; "
          f"scale 1 vs scale 0: common prefix {common_prefix(applied, bare)}")
    assert sum(forced) / len(forced) >= 0.9 and min(forced) >= 0.8


def test_server_tokenizes_the_chat_prompt_like_transformers(merged_server, hf_merged):
    """The merged GGUF carries the base's tokenizer: the chat-formatted text gives the app's token ids."""
    from core.llamacpp import post_json
    from core.prompts import build_messages

    _, tokenizer = hf_merged
    case = real_cases(1)[0]
    text = tokenizer.apply_chat_template(build_messages(case["question"], case["options"]), tokenize=False,
                                         add_generation_prompt=True)
    want = tokenizer(text, add_special_tokens=False)["input_ids"]
    got = post_json(f"{merged_server.base_url}/tokenize", {"content": text, "add_special": False,
                                                           "parse_special": True})["tokens"]
    assert got == want
