"""One training run: records -> TRL SFTTrainer (LoRA / QLoRA) -> checkpoints, metrics, and a self-describing adapter.

Run it through the CLI::

    python -m trainer --config configs/smollm2_medcot.yaml            # the shipped adapter's recipe
    python -m trainer --config RUN_DIR/config.yaml --resume auto      # continue a stopped run

:func:`train` does the work and returns a :class:`TrainResult`; :func:`main` wraps it for the
command line (exit 0 when completed or stopped, 2 for a configuration/data problem, 1 for a crash;
``status.json`` says which, with the reason).
"""

from __future__ import annotations

import json
import math
import sys
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from core.atomic import atomic_dir
from core.metrics import RESUME_EVENT, MetricsWriter, read_metrics
from core.model import BaseModel, ModelError
from trainer import distributed
from trainer.checkpoint import checkpoints, is_complete, last_complete_checkpoint
from trainer.config import (
    AUTO,
    CONFIG_FILE,
    NO_EVAL,
    ConfigError,
    TrainConfig,
    changed_fields,
    load_config,
    save_config,
)
from trainer.dataset import DataError, ExampleSet, drop_overlong, load_examples, raft_references
from trainer.status import (
    ADAPTER_DIR,
    COMPLETED,
    FAILED,
    METRICS_FILE,
    RUNNING,
    STOPPED,
    clear_stop,
    now_iso,
    write_status,
)


@dataclass
class TrainResult:
    """What a run produced."""

    run_dir: Path
    adapter_dir: Path
    state: str
    """completed or stopped."""
    global_step: int
    total_steps: int
    trainable_params: int
    total_params: int
    card: dict[str, Any]


def log(message: str) -> None:
    """A progress line on stdout (from rank 0 only when several processes train)."""
    if distributed.is_main():
        print(f"[trainer] {message}", flush=True)


class _NoMetrics:
    """The metrics writer of ranks other than 0: they train, rank 0 writes."""

    def write(self, record: Any) -> None:
        pass

    def close(self) -> None:
        pass


def finalize_config(cfg: TrainConfig) -> TrainConfig:
    """The config with its paths made absolute, as saved in ``config.yaml`` and the card."""
    eval_file = cfg.resolved_eval_file()
    return replace(
        cfg,
        work_dir=str(cfg.resolved_work_dir()),
        output_dir=str(cfg.resolved_output_dir()),
        train_file=str(cfg.resolved_train_file()),
        eval_file=str(eval_file) if eval_file is not None else NO_EVAL,
    )


def _resume_checkpoint(cfg: TrainConfig, run_dir: Path) -> Path | None:
    if not cfg.resume:
        return None
    if cfg.resume == AUTO:
        ckpt = last_complete_checkpoint(run_dir)
        if ckpt is None:
            log(f"resume auto: no complete checkpoint in {run_dir}; starting from step 0")
        return ckpt
    ckpt = Path(cfg.resume).expanduser().resolve()
    if not is_complete(ckpt):
        raise ConfigError([f"resume: {ckpt} is not a complete checkpoint (needs adapter weights, optimizer.pt, "
                           "scheduler.pt and trainer_state.json)"])
    return ckpt


def _check_run_dir(cfg: TrainConfig, run_dir: Path, resuming: bool) -> None:
    saved = run_dir / CONFIG_FILE
    if resuming and saved.is_file():
        try:
            old = load_config(saved, check_files=False)
        except ConfigError:
            return  # an unreadable old config does not block the resume; the new one replaces it
        diff = changed_fields(old, cfg)
        if diff:
            raise ConfigError([f"resume: {name} differs from the run's saved config ({getattr(old, name)!r} -> "
                               f"{getattr(cfg, name)!r}); a resumed run must train the same thing" for name in diff])
    if not resuming and ((run_dir / METRICS_FILE).exists() or checkpoints(run_dir)):
        raise ConfigError([f"output_dir: {run_dir} already holds a run; pass --resume auto to continue it, "
                           "or choose another output_dir"])


def _settings_of_older_run(cfg: TrainConfig, run_dir: Path, *, resuming: bool) -> TrainConfig:
    """A resumed run saved before ``padding_free`` existed keeps the padded batches it started with.

    Its config.yaml has no such key, so the setting would read as auto, which on CUDA now means padding-free batches in
    another order: the resumed epoch would skip the wrong examples.
    """
    saved = run_dir / CONFIG_FILE
    if not resuming or not saved.is_file() or cfg.padding_free != AUTO:
        return cfg
    import yaml

    try:
        old = yaml.safe_load(saved.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return cfg
    if isinstance(old, dict) and "padding_free" not in old and not cfg.packing:
        log("resume: the run was saved before padding-free batches existed; it keeps padded batches")
        return replace(cfg, padding_free="false")
    return cfg


def _elapsed_before(metrics_path: Path, step: int) -> float:
    """Wall time already spent before a checkpoint at ``step`` (so elapsed_s continues across resumes)."""
    spent = 0.0
    for rec in read_metrics(metrics_path):
        if isinstance(rec.get("step"), int) and rec["step"] <= step and isinstance(rec.get("elapsed_s"), (int, float)):
            spent = max(spent, float(rec["elapsed_s"]))
    return spent


def _sft_config(cfg: TrainConfig, rt: Any, run_dir: Path, *, has_eval: bool) -> Any:
    from trl import SFTConfig

    targets = cfg.report_targets()
    periodic_eval = has_eval and cfg.eval_steps > 0
    kwargs: dict[str, Any] = dict(
        output_dir=str(run_dir),
        num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio if cfg.warmup_ratio > 0 else 0,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        optim=rt.optim,
        bf16=rt.precision == "bf16",
        fp16=rt.precision == "fp16",
        use_cpu=rt.device == "cpu",
        gradient_checkpointing=rt.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if rt.gradient_checkpointing else None,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,  # a short run still has a point on the loss curve
        eval_strategy="steps" if periodic_eval else "no",
        eval_steps=cfg.eval_steps if periodic_eval else None,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=cfg.early_stopping_patience > 0,
        metric_for_best_model="eval_loss" if cfg.early_stopping_patience > 0 else None,
        greater_is_better=False if cfg.early_stopping_patience > 0 else None,
        seed=cfg.seed,
        data_seed=cfg.seed,
        train_sampling_strategy="group_by_length" if rt.group_by_length else "random",
        report_to=targets or "none",
        # Padding-free without packing: TRL refuses a max_length it would not enforce; drop_overlong already left
        # out every example longer than max_seq_len.
        max_length=cfg.max_seq_len if cfg.packing or not rt.padding_free else None,
        # Packing: best-fit rows of max_seq_len. Padding-free (always with packing): each batch flattened into one
        # row, position ids restarting at every example and the boundaries (cu_seq_lens) handed to the attention
        # kernel; transformers turns the restarts into a per-example causal mask for sdpa and flex_attention.
        packing=cfg.packing,
        packing_strategy="bfd",
        padding_free=rt.padding_free,
        torch_compile=rt.torch_compile,
        completion_only_loss=True,  # loss on the assistant's completion only, never on the prompt
        dataloader_num_workers=0,
        disable_tqdm=not sys.stderr.isatty(),
        use_liger_kernel=rt.liger,
        ddp_find_unused_parameters=False,  # every LoRA weight gets a gradient: skip DDP's extra graph walk
    )
    if rt.liger:
        # Only the layer kernels: TRL's fused LM head already avoids materialising the logits.
        kwargs["liger_kernel_config"] = {"rope": True, "rms_norm": True, "swiglu": True,
                                         "cross_entropy": False, "fused_linear_cross_entropy": False}
    return SFTConfig(**kwargs)


def _cast_safetensors(path: Path, dtype_name: str) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    dtype = getattr(torch, dtype_name)
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in load_file(str(path)).items()}
    save_file(tensors, str(path), metadata={"format": "pt"})


def _save_adapter(model: Any, run_dir: Path, base: BaseModel, dtype_name: str) -> Path:
    """Save the LoRA weights into ``adapter/`` atomically (temp folder, then rename)."""
    target = run_dir / ADAPTER_DIR
    with atomic_dir(target) as tmp:
        # Embeddings are not trained (LoRA on the projections only), so never save them.
        model.save_pretrained(str(tmp), save_embedding_layers=False)
        _cast_safetensors(tmp / "adapter_model.safetensors", dtype_name)
        # The card carries the base identity; a machine-specific cache path must not travel with the adapter.
        config_path = tmp / "adapter_config.json"
        adapter_config = json.loads(config_path.read_text())
        adapter_config["base_model_name_or_path"] = base.identity
        config_path.write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")
    return target


def _final_metrics(metrics_path: Path) -> dict[str, Any]:
    records = read_metrics(metrics_path)
    train = [r for r in records if r.get("event") == "train" and r.get("loss") is not None]
    evals = [r for r in records if r.get("event") == "eval" and r.get("eval_loss") is not None]
    out: dict[str, Any] = {}
    if train:
        out["train_loss"] = train[-1]["loss"]
        out["train_mean_token_accuracy"] = train[-1].get("mean_token_accuracy")
        out["tokens_per_s"] = train[-1].get("tokens_per_s")
        out["peak_mem_gb"] = max((r.get("peak_mem_gb") or 0.0) for r in train)
    if evals:
        out["eval_loss"] = evals[-1]["eval_loss"]
        out["eval_perplexity"] = math.exp(min(evals[-1]["eval_loss"], 50.0))
        out["eval_mean_token_accuracy"] = evals[-1].get("eval_mean_token_accuracy")
        out["best_eval_loss"] = min(r["eval_loss"] for r in evals)
    return out


def train(cfg: TrainConfig, *, extra_callbacks: Sequence[Any] = ()) -> TrainResult:
    """Train LoRA adapters as ``cfg`` says; see the module docstring. Raises on failure (status 'failed')."""
    started = time.monotonic()
    cfg = finalize_config(cfg)
    run_dir = Path(cfg.output_dir)
    main = distributed.is_main()  # several processes (DDP): only rank 0 writes the run directory
    resume_ckpt = _resume_checkpoint(cfg, run_dir)
    cfg = _settings_of_older_run(cfg, run_dir, resuming=bool(cfg.resume))
    if main:
        _check_run_dir(cfg, run_dir, resuming=bool(cfg.resume))
        save_config(cfg, run_dir)  # creates the run directory
        if clear_stop(run_dir):
            log("removed a stale STOP file from an earlier request")
        write_status(run_dir, RUNNING, reason="starting", step=0, total_steps=None, started_at=now_iso(),
                     adapter_dir=None)
    _quiet_progress_bars()

    from trainer.callbacks import StopController

    controller = StopController(run_dir, writes=main)
    controller.install()
    writer: Any = MetricsWriter(run_dir / METRICS_FILE) if main else _NoMetrics()
    try:
        return _train(cfg, run_dir, resume_ckpt, controller, writer, started, extra_callbacks)
    except BaseException as exc:
        reason = f"{type(exc).__name__}: {exc}".strip()
        writer.write({"event": "failed", "reason": reason[:2000], "time": time.time()})
        if main:
            write_status(run_dir, FAILED, reason=reason[:2000])
        raise
    finally:
        writer.close()
        controller.uninstall()


def _train(
    cfg: TrainConfig,
    run_dir: Path,
    resume_ckpt: Path | None,
    controller: Any,
    writer: MetricsWriter,
    started: float,
    extra_callbacks: Sequence[Any],
) -> TrainResult:
    from datasets import Dataset
    from transformers import EarlyStoppingCallback
    from trl import SFTTrainer

    from trainer.callbacks import MetricsCallback, StatusCallback, StopCallback
    from trainer.card import build_card, manifest_hash, write_card
    from trainer.modeling import (compile_pays, count_parameters, load_training_model, planned_steps,
                                  resolve_base_model, resolve_runtime)

    rt = resolve_runtime(cfg)
    references = None
    if cfg.references_fraction > 0:
        from core.retrieval import RetrievalUnavailable, load_index

        try:
            index = load_index(cfg.resolved_references_index())
        except RetrievalUnavailable as exc:
            raise DataError(f"references_fraction {cfg.references_fraction}: {exc}") from exc
        references = raft_references(index, fraction=cfg.references_fraction, seed=cfg.seed)
    train_set: ExampleSet = load_examples(Path(cfg.train_file), references=references)
    eval_set: ExampleSet | None = load_examples(Path(cfg.eval_file)) if cfg.eval_file != NO_EVAL else None

    base = resolve_base_model(cfg.model_name, work_dir=Path(cfg.work_dir), progress=log)
    model, tokenizer = load_training_model(base, cfg, rt)
    train_set = drop_overlong(tokenizer, train_set, cfg.max_seq_len)
    eval_set = drop_overlong(tokenizer, eval_set, cfg.max_seq_len) if eval_set else None
    log(f"data: {len(train_set.examples)} training examples from {cfg.train_file}"
        + (f", {len(eval_set.examples)} validation examples" if eval_set else ", no validation")
        + (f"; left out: train {train_set.skipped}" if train_set.skipped else "")
        + (f", validation {eval_set.skipped}" if eval_set and eval_set.skipped else ""))
    rt = compile_pays(cfg, rt, planned_steps(cfg, len(train_set.examples), distributed.world_size()))
    log(f"runtime: {rt.device} ({rt.device_name}), quantization {rt.quantization}, precision {rt.precision}, "
        f"base weights {rt.base_dtype}"
        + (f" (unquantised weights in {'fp32' if rt.fp32_upcast else rt.precision})" if rt.quantization == "nf4" else "")
        + f", optimiser {rt.optim}, gradient checkpointing {rt.gradient_checkpointing}, liger {rt.liger}, "
        f"attention {rt.attn_implementation}, padding-free {rt.padding_free}, torch.compile {rt.torch_compile}")
    trainable, total = count_parameters(model)
    pct = 100.0 * trainable / total if total else 0.0
    log(f"trainable params: {trainable:,} of {total:,} ({pct:.2f}%) -- LoRA r={cfg.lora_r} on "
        f"{', '.join(cfg.lora_target_modules)}")

    args = _sft_config(cfg, rt, run_dir, has_eval=eval_set is not None)
    # Read before training: checkpoint rotation may delete the resumed checkpoint later.
    resumed_step = _ckpt_step(resume_ckpt)
    spent_before = _elapsed_before(run_dir / METRICS_FILE, resumed_step)
    main = distributed.is_main()
    callbacks = [
        *([MetricsCallback(writer, device=rt.device, elapsed_offset_s=spent_before),
           StatusCallback(run_dir, controller)] if main else []),
        StopCallback(controller),
        *extra_callbacks,
    ]
    if cfg.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_set.examples),
        eval_dataset=Dataset.from_list(eval_set.examples) if eval_set else None,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    upcast = fp32_trainable_for_fp16(trainer.model, rt.precision)
    if upcast:
        log(f"fp16 mixed precision: {upcast} trainable tensors kept in fp32 (the loss scaler unscales fp32 gradients only)")
    common = {"time": time.time(), "trainable_params": trainable, "total_params": total,
              "trainable_percent": round(pct, 4), "runtime": rt.to_dict(),
              "peak_mem_kind": "cuda_allocated" if rt.device == "cuda" else "cpu_peak_rss"}
    if resume_ckpt is not None:
        log(f"resuming from {resume_ckpt} (step {resumed_step})")
        writer.write({"event": RESUME_EVENT, "step": resumed_step, "checkpoint": str(resume_ckpt), **common})
    elif cfg.resume:
        # Resume asked for, but no complete checkpoint: start over; earlier lines are superseded.
        writer.write({"event": RESUME_EVENT, "step": 0, "checkpoint": None, **common})
    else:
        writer.write({"event": "start", "step": 0, **common})

    trainer.train(resume_from_checkpoint=str(resume_ckpt) if resume_ckpt else None)
    state = trainer.state
    stopped = bool(controller.reason) and state.global_step < state.max_steps
    if not stopped and eval_set is not None:
        evaluated = [h for h in state.log_history if "eval_loss" in h and h.get("step") == state.global_step]
        if not evaluated:
            trainer.evaluate()  # the final point of the validation curve

    if not main:  # rank 0 saves the adapter and writes the card and the final status
        distributed.wait_for_everyone()
        return TrainResult(run_dir, run_dir / ADAPTER_DIR, STOPPED if stopped else COMPLETED, state.global_step,
                           state.max_steps, trainable, total, {})
    adapter_dir = _save_adapter(trainer.model, run_dir, base, cfg.adapter_dtype)
    mhash, mpath = manifest_hash(Path(cfg.train_file))
    wall = time.monotonic() - started
    training = {
        "global_step": state.global_step,
        "total_steps": state.max_steps,
        "epoch": state.epoch,
        "wall_time_s": round(wall + spent_before, 1),
        "this_session_wall_time_s": round(wall, 1),
        "resumed_from_step": resumed_step if resume_ckpt else None,
        "stop_reason": controller.reason or None,
    }
    card = build_card(
        base=base,
        config=cfg.to_dict(),
        runtime=rt.to_dict(),
        data={"train": train_set.summary(), "eval": eval_set.summary() if eval_set else None,
              "manifest_sha256": mhash, "manifest_file": mpath},
        trainable_params=trainable,
        total_params=total,
        training=training,
        metrics=_final_metrics(run_dir / METRICS_FILE),
        status=STOPPED if stopped else COMPLETED,
    )
    write_card(adapter_dir, card)
    final_state = STOPPED if stopped else COMPLETED
    if stopped:
        reason = controller.reason
    elif state.global_step < state.max_steps:
        reason = f"early stopping at step {state.global_step}: no better eval loss in {cfg.early_stopping_patience} evaluations"
    else:
        reason = f"finished {state.global_step} steps"
    writer.write({"event": final_state, "step": state.global_step, "reason": reason, "adapter_dir": str(adapter_dir),
                  "wall_time_s": training["wall_time_s"], "time": time.time()})
    write_status(run_dir, final_state, reason=reason, step=state.global_step, total_steps=state.max_steps,
                 adapter_dir=str(adapter_dir))
    log(f"{final_state} at step {state.global_step}/{state.max_steps}; adapter saved to {adapter_dir}")
    distributed.wait_for_everyone()
    return TrainResult(run_dir, adapter_dir, final_state, state.global_step, state.max_steps, trainable, total, card)


def fp32_trainable_for_fp16(model: Any, precision: str) -> int:
    """With fp16 mixed precision, make every trainable tensor fp32 again; returns how many changed.

    TRL's SFTTrainer casts the LoRA weights of a quantised model to bf16. bf16 autocast is fine
    with that, but fp16 mixed precision (the seed's recipe, and ``auto`` on GPUs without bf16 such
    as a T4) keeps fp32 master weights: its loss scaler cannot unscale bf16 gradients and the first
    optimiser step fails ("_amp_foreach_non_finite_check_and_unscale_cuda" not implemented for
    'BFloat16'). Call after the trainer is built and before it trains (the optimiser is created then).
    """
    if precision != "fp16":
        return 0
    import torch

    changed = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
            changed += 1
    return changed


def _quiet_progress_bars() -> None:
    """Progress bars only on a terminal: in a log file they are noise (the metrics are in metrics.jsonl)."""
    if sys.stderr.isatty():
        return
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def _ckpt_step(ckpt: Path | None) -> int:
    if ckpt is None:
        return 0
    from trainer.checkpoint import checkpoint_step

    return checkpoint_step(ckpt) or 0


def main(cfg: TrainConfig, *, extra_callbacks: Sequence[Any] = ()) -> int:
    """Run :func:`train` (with ``extra_callbacks``); print a clear message instead of a traceback for
    config/data/model problems. Exits: 0 completed or stopped, 2 config/data/model problem, 130
    interrupted, 1 crash."""
    try:
        train(cfg, extra_callbacks=extra_callbacks)
    except (ConfigError, DataError, ModelError) as exc:
        print(f"[trainer] error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("[trainer] aborted without saving", file=sys.stderr, flush=True)
        return 130
    except Exception:
        traceback.print_exc()
        return 1
    return 0
