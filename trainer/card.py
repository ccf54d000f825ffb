"""The adapter's self-description: ``adapter_card.json`` (read by core.model) and a human ``README.md``.

``core.model.check_adapter`` refuses an adapter whose ``base_model`` differs from the served base
identity or whose ``prompt_format`` differs from ``core.prompts.PROMPT_FORMAT_VERSION``; the rest
(data hashes, config, trainable parameters, hardware, wall time, metrics) is for people and
for the admin page's adapter registry.
"""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from core.model import CARD_FILE, CONVERSION_FILE, BaseModel, sha256_file
from core.prompts import PROMPT_FORMAT_VERSION
from trainer.status import now_iso

CARD_VERSION = 1
LIBRARIES = ("torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes", "datasets", "liger-kernel")


def base_fingerprint(base: BaseModel) -> tuple[str | None, str]:
    """(sha256, what was hashed) for the base weights, where they are local files."""
    folder = Path(base.location)
    if not folder.is_dir():
        return None, "not hashed (hub id)"
    conversion = folder / CONVERSION_FILE
    if conversion.is_file():
        try:
            info = json.loads(conversion.read_text())
            if info.get("gguf_sha256"):
                return info["gguf_sha256"], f"GGUF file {Path(str(info.get('source', 'model.gguf'))).name}"
        except (OSError, json.JSONDecodeError):
            pass
    for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
        if (folder / name).is_file():
            return sha256_file(folder / name), name
    return None, "not hashed (no known weights file)"


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def manifest_hash(train_file: Path) -> tuple[str | None, str | None]:
    """sha256 of the data pipeline's ``manifest.json`` beside the training file, if there is one."""
    manifest = Path(train_file).parent / "manifest.json"
    if manifest.is_file():
        return sha256_file(manifest), str(manifest)
    return None, None


def build_card(
    *,
    base: BaseModel,
    config: dict[str, Any],
    runtime: dict[str, Any],
    data: dict[str, Any],
    trainable_params: int,
    total_params: int,
    training: dict[str, Any],
    metrics: dict[str, Any],
    status: str,
) -> dict[str, Any]:
    sha, what = base_fingerprint(base)
    return {
        "card_version": CARD_VERSION,
        "base_model": base.identity,
        "base_model_sha256": sha,
        "base_model_sha256_of": what,
        "prompt_format": PROMPT_FORMAT_VERSION,
        "created_at": now_iso(),
        "status": status,
        "method": "QLoRA (NF4 base)" if runtime.get("quantization") == "nf4" else "LoRA",
        "lora": {
            "r": config["lora_r"],
            "alpha": config["lora_alpha"],
            "dropout": config["lora_dropout"],
            "target_modules": config["lora_target_modules"],
        },
        "trainable_params": trainable_params,
        "total_params": total_params,
        "trainable_percent": round(100.0 * trainable_params / total_params, 4) if total_params else None,
        "data": data,
        "config": config,
        "runtime": runtime,
        "hardware": {"device": runtime.get("device"), "device_name": runtime.get("device_name"),
                     "platform": platform.platform(), "libraries": library_versions()},
        "training": training,
        "metrics": metrics,
    }


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def card_readme(card: dict[str, Any]) -> str:
    """A short human-readable card (Markdown) from the JSON card."""
    lora = card["lora"]
    tr = card.get("training", {})
    m = card.get("metrics", {})
    data = card.get("data", {})
    train = data.get("train", {})
    rt = card.get("runtime", {})
    lines = [
        f"# LoRA adapter for {card['base_model']}",
        "",
        "Educational use only: a small model fine-tuned on medical reasoning examples. Not for patient care.",
        "",
        f"- Base model: `{card['base_model']}` (sha256 of {card['base_model_sha256_of']}: "
        f"`{card['base_model_sha256'] or 'n/a'}`)",
        f"- Prompt format: `{card['prompt_format']}` (core/prompts.py)",
        f"- Method: {card['method']}, r={lora['r']}, alpha={lora['alpha']}, dropout={lora['dropout']} on "
        f"{', '.join(lora['target_modules'])}",
        f"- Trainable parameters: {_fmt(card['trainable_params'])} of {_fmt(card['total_params'])} "
        f"({_fmt(card['trainable_percent'], 2)}%)",
        f"- Data: {_fmt(train.get('examples'))} training examples from `{Path(str(train.get('file', ''))).name}` "
        f"(sha256 `{train.get('sha256', 'n/a')}`); manifest sha256 `{data.get('manifest_sha256') or 'n/a'}`",
        f"- Hardware: {rt.get('device_name', 'n/a')} ({rt.get('device')}), precision {rt.get('precision')}, "
        f"base weights {rt.get('base_dtype')}, optimiser {rt.get('optim')}",
        f"- Training: {_fmt(tr.get('global_step'))} of {_fmt(tr.get('total_steps'))} steps, "
        f"{_fmt(tr.get('epoch'), 2)} epochs, wall time {_fmt(tr.get('wall_time_s'), 1)} s; status {card['status']}",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| final training loss | {_fmt(m.get('train_loss'))} |",
        f"| final validation loss | {_fmt(m.get('eval_loss'))} |",
        f"| best validation loss | {_fmt(m.get('best_eval_loss'))} |",
        f"| validation mean token accuracy (training diagnostic, not exam accuracy) | "
        f"{_fmt(m.get('eval_mean_token_accuracy'))} |",
        "",
        "The base-vs-adapter evaluation (`python -m trainer.evaluate --adapter <this folder>`) writes "
        "`eval.json` and `eval.md` here.",
        "",
        "Reproduce: `python -m trainer --config <config.yaml of the run>` (the full config is in "
        f"`{CARD_FILE}`).",
        "",
    ]
    return "\n".join(lines)


def write_card(adapter_dir: Path, card: dict[str, Any]) -> None:
    (adapter_dir / CARD_FILE).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (adapter_dir / "README.md").write_text(card_readme(card), encoding="utf-8")
