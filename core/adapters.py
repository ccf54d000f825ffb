"""Adapter folders as the registry handles them: identity checks, snapshots, zip downloads, merged exports.

A registered adapter is a folder of its own (``<work_dir>/adapters/<name>/``), copied from a run's
``adapter/`` when the run finishes, so a later resume or deletion of the run never changes what
is being served. The shipped default adapter is registered where it lies.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

from core.atomic import atomic_dir
from core.model import CARD_FILE, CONVERSION_FILE, EMBEDDED_BASE_ID, BaseModel, ModelError, read_adapter_card
from core.prompts import PROMPT_FORMAT_VERSION
from core.settings import EMBEDDED_MODEL, Settings

MERGED_INFO_FILE = "merged_from.json"


def base_identity(settings: Settings) -> str:
    """The identity adapter cards record for the app's base model, without loading or converting it."""
    spec = settings.base_model
    if spec == EMBEDDED_MODEL:
        return EMBEDDED_BASE_ID
    path = Path(spec).expanduser()
    if path.is_dir():
        info = path / CONVERSION_FILE
        if info.is_file():
            try:
                return json.loads(info.read_text()).get("identity", path.name)
            except (OSError, json.JSONDecodeError):
                return path.name
        return path.name
    return spec


def mismatch(card: dict[str, Any], identity: str) -> str | None:
    """Why an adapter with ``card`` cannot be served on the base ``identity`` (None when it can)."""
    recorded = card.get("base_model")
    if recorded != identity:
        return (f"it was trained on base model {recorded!r}, but the app serves {identity!r} "
                "(set MEDSTUDY_BASE_MODEL to that base to use it)")
    if card.get("prompt_format") != PROMPT_FORMAT_VERSION:
        return f"it uses prompt format {card.get('prompt_format')!r}; the app speaks {PROMPT_FORMAT_VERSION!r}"
    return None


def safe_name(text: str) -> str:
    """A folder-safe name: letters, digits, dot, dash and underscore."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-")[:120] or "adapter"


def snapshot(adapter_dir: Path, target: Path) -> Path:
    """Copy an adapter folder to ``target`` atomically (a temporary sibling, then a rename)."""
    read_adapter_card(adapter_dir)  # refuses a folder that is not a described adapter
    with atomic_dir(target) as tmp:
        shutil.copytree(adapter_dir, tmp, dirs_exist_ok=True)
    return target


def archive(adapter_dir: Path) -> bytes:
    """The adapter folder as a zip (its files under a folder of its name), for a download button."""
    adapter_dir = Path(adapter_dir)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(adapter_dir.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                zf.write(path, f"{adapter_dir.name}/{path.relative_to(adapter_dir)}")
    return buffer.getvalue()


def export_merged(base: BaseModel, adapter_dir: Path, target: Path) -> Path:
    """Merge the LoRA weights into a full-precision (fp32) copy of ``base`` and save a standalone model folder.

    Never merges into a quantised model: the base is loaded dense in float32 by
    :func:`core.model.load_model`, the adapter applied with peft and folded in with
    ``merge_and_unload``. Written to a temporary sibling and renamed into place when complete.
    Raises :class:`core.model.ModelError` (e.g. an adapter of another base) before writing anything.
    """
    import torch

    from core.model import load_model

    card = read_adapter_card(adapter_dir)
    model, tokenizer = load_model(base, adapter_dir=Path(adapter_dir), device="cpu", dtype=torch.float32, merge=True)
    if any(getattr(p, "quant_state", None) is not None for p in model.parameters()):
        raise ModelError("the merged model is quantised; refusing to export it")
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        info = {"base_model": base.identity, "adapter": Path(adapter_dir).name, "dtype": "float32",
                "prompt_format": card.get("prompt_format"), "adapter_card": card}
        (tmp / MERGED_INFO_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
    return target


def has_card(folder: Path) -> bool:
    return (Path(folder) / CARD_FILE).is_file() and (Path(folder) / "adapter_config.json").is_file()
