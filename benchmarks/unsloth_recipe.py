"""Unsloth's own LoRA recipes on the training benchmark's model and data (issue 21), one run per process.

``benchmarks.bench_training`` starts it for the ``unsloth-*`` recipes, in the same call as the seed's and our
recipes; by hand on the GPU machine (after ``scripts/gpu/bench.sh`` unpacked the bundles)::

    PYTHONPATH=/tmp/site-unsloth:/tmp/site python3 -m benchmarks.unsloth_recipe --spec RUN/spec.json

Unsloth patches transformers, peft and TRL when it is imported (and must be imported before them), so it
never shares a process with our recipes; it also pins TRL ≤ 1.15 and datasets < 5, so its bundle
(``scripts/gpu/build_unsloth_bundle.sh``) goes first on the child's ``PYTHONPATH``.

What is the same as our recipes (:func:`plan` reads it from the same trainer config values): the model folder
(random weights of the architecture, built once by bench_training), the chat tokenizer, the examples (the
trainer's own ``load_examples`` and ``drop_overlong``, so the same prompt-completion records and the same
``max_seq_len`` cut), LoRA rank, alpha, dropout and the seven target projections, micro-batch 16, steps, learning
rate and schedule, fused AdamW, bf16, the loss on the completion only, logging every step and the validation
loss on the same records after the last step. What is Unsloth's own: ``FastLanguageModel`` (its patched Llama
with Triton RoPE/RMSNorm/SwiGLU/cross-entropy kernels and fused LoRA matmuls), its gradient checkpointing
(``"unsloth"``: activations offloaded to host memory), its NF4 loading (``load_in_4bit``) and its batching
(padding-free by its own automatic choice, or ``packing``).

The run writes ``metrics.jsonl`` through our :class:`trainer.callbacks.MetricsCallback`, so bench_training
reads it like any other run. Unsloth drops TRL's ``num_tokens`` from the logs, so :class:`TokenCounter`
counts the non-padding tokens of every micro-batch itself, as TRL does (attention-mask sum, or the flattened
row length when padding-free).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# name -> (what it is, trainer config values shared with our recipes, Unsloth's own settings, prediction).
# The trainer values are a valid TrainConfig (tests check it): the data, shape and optimiser settings come from
# the same config as ours; lora_dropout 0 because Unsloth's fused LoRA kernels need it (ours-*-fast use 0 too).
SHARED = {"batch_size": 16, "gradient_accumulation_steps": 1, "lora_dropout": 0.0, "optim": "adamw_torch_fused",
          "precision": "bf16"}
UNSLOTH_RECIPES: dict[str, tuple[str, dict[str, Any], dict[str, Any], str]] = {
    "unsloth-nf4": ("Unsloth QLoRA: FastLanguageModel load_in_4bit, its gradient checkpointing, its padding choice",
                    {**SHARED, "quantization": "nf4"},
                    {"load_in_4bit": True, "use_gradient_checkpointing": "unsloth", "packing": False},
                    "its claim is 2× HF+FA2; against ours-nf4-fast (compiled, Liger): 0.8-1.5×, peak 3-5 GiB "
                    "(offloaded checkpoints)"),
    "unsloth-bf16": ("Unsloth bf16 LoRA: FastLanguageModel 16-bit, its gradient checkpointing, its padding choice",
                     {**SHARED, "quantization": "none"},
                     {"load_in_4bit": False, "use_gradient_checkpointing": "unsloth", "packing": False},
                     "30-50 k tok/s steady (its checkpointing recomputes every layer; ours-bf16-compile has none), "
                     "peak ≤ 10 GiB"),
    "unsloth-bf16-nogc": ("Unsloth bf16 LoRA without gradient checkpointing (its fastest bf16 setting on a big card)",
                          {**SHARED, "quantization": "none"},
                          {"load_in_4bit": False, "use_gradient_checkpointing": False, "packing": False},
                          "+20-30% over unsloth-bf16, peak ≈ ours-bf16"),
    "unsloth-nf4-packed": ("Unsloth QLoRA with its packing (16 packed rows of ≤ max_seq_len per step, one epoch)",
                           {**SHARED, "quantization": "nf4", "packing": True, "group_by_length": "false"},
                           {"load_in_4bit": True, "use_gradient_checkpointing": "unsloth", "packing": True},
                           "+20-40% over unsloth-nf4 (≈ 16 k tokens a step); fewer steps, higher validation loss"),
    "unsloth-bf16-packed": ("Unsloth bf16 LoRA with its packing (16 packed rows per step, one epoch)",
                            {**SHARED, "quantization": "none", "packing": True, "group_by_length": "false"},
                            {"load_in_4bit": False, "use_gradient_checkpointing": "unsloth", "packing": True},
                            "+20-40% over unsloth-bf16; compare with ours-bf16-max"),
}


def plan(values: dict[str, Any], unsloth: dict[str, Any]) -> dict[str, Any]:
    """Everything the Unsloth run uses, taken from the same trainer config ``values`` as our recipes.

    ``values`` are the trainer settings bench_training builds for every recipe (model folder, data files, steps,
    max_seq_len, ...) with the recipe's overrides; ``unsloth`` its own settings. The trainer's validation runs on
    them (files unchecked), so a value our trainer would refuse is refused here too.
    """
    from trainer.config import load_config

    cfg = load_config(None, values, check_files=False)
    return {
        "model_dir": cfg.model_name,
        "train_file": cfg.train_file,
        "eval_file": cfg.eval_file,
        "output_dir": cfg.output_dir,
        "max_seq_len": cfg.max_seq_len,
        "lora_r": cfg.lora_r,
        "lora_alpha": cfg.lora_alpha,
        "lora_dropout": cfg.lora_dropout,
        "target_modules": list(cfg.lora_target_modules),
        "batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        # Packed runs train exactly one epoch (a packed step holds a varying number of examples), as ours do.
        "max_steps": -1 if unsloth.get("packing") else cfg.max_steps,
        "num_epochs": 1 if unsloth.get("packing") else cfg.num_epochs,
        "learning_rate": cfg.learning_rate,
        "lr_scheduler_type": cfg.lr_scheduler_type,
        "warmup_ratio": cfg.warmup_ratio,
        "weight_decay": cfg.weight_decay,
        "max_grad_norm": cfg.max_grad_norm,
        "optim": cfg.optim,
        "precision": cfg.precision,
        "seed": cfg.seed,
        "logging_steps": cfg.logging_steps,
        "quantization": cfg.quantization,
        **unsloth,
    }


class TokenCounter:
    """Counts every micro-batch's non-padding tokens as TRL does and puts the running total in the logs.

    Unsloth removes TRL's ``num_tokens`` metric; bench_training's rates need it. Wraps ``trainer.training_step``
    (one call per micro-batch); the count stays on the GPU until a log line reads it (one sync per logged step,
    as TRL's own ``.item()``).
    """

    def __init__(self) -> None:
        self.total: Any = 0

    def wrap(self, trainer: Any) -> None:
        step = trainer.training_step

        def training_step(model, inputs, *args, **kwargs):
            self.total = self.total + batch_tokens(inputs)
            return step(model, inputs, *args, **kwargs)

        trainer.training_step = training_step

    def callback(self) -> Any:
        from transformers import TrainerCallback

        counter = self

        class _Inject(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs is not None and "loss" in logs and "num_tokens" not in logs:
                    total = counter.total
                    logs["num_tokens"] = float(total.item() if hasattr(total, "item") else total)

        return _Inject()


def batch_tokens(inputs: dict[str, Any]) -> Any:
    """Non-padding tokens of one micro-batch: the attention-mask sum, or the flattened row's length (padding-free)."""
    mask = inputs.get("attention_mask")
    if mask is not None:
        return mask.sum()
    if inputs.get("position_ids") is not None:
        return int(inputs["position_ids"].size(-1)) * int(inputs["position_ids"].size(0))
    return int(inputs["input_ids"].numel())


def run(spec: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    import unsloth  # noqa: F401  (first: it patches transformers, peft and TRL)
    from unsloth import FastLanguageModel

    import importlib.metadata as md

    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from core.metrics import MetricsWriter
    from trainer.callbacks import MetricsCallback
    from trainer.dataset import drop_overlong, load_examples
    from trainer.modeling import align_eos

    p = plan(spec["values"], spec["unsloth"])
    run_dir = Path(p["output_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: Unsloth's own fallback (checks this script)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=p["model_dir"], max_seq_length=p["max_seq_len"], dtype=torch.bfloat16,
        load_in_4bit=p["load_in_4bit"], load_in_16bit=not p["load_in_4bit"], full_finetuning=False,
        use_gradient_checkpointing=p["use_gradient_checkpointing"], random_state=p["seed"])
    loaded_s = time.perf_counter() - started
    eos = align_eos(tokenizer, model)
    model = FastLanguageModel.get_peft_model(
        model, r=p["lora_r"], target_modules=p["target_modules"], lora_alpha=p["lora_alpha"],
        lora_dropout=p["lora_dropout"], bias="none", use_gradient_checkpointing=p["use_gradient_checkpointing"],
        random_state=p["seed"], max_seq_length=p["max_seq_len"])
    train_set = drop_overlong(tokenizer, load_examples(Path(p["train_file"])), p["max_seq_len"])
    eval_set = drop_overlong(tokenizer, load_examples(Path(p["eval_file"])), p["max_seq_len"])
    args = SFTConfig(
        output_dir=str(run_dir),
        num_train_epochs=p["num_epochs"],
        max_steps=p["max_steps"],
        per_device_train_batch_size=p["batch_size"],
        per_device_eval_batch_size=p["batch_size"],
        gradient_accumulation_steps=p["gradient_accumulation_steps"],
        learning_rate=p["learning_rate"],
        lr_scheduler_type=p["lr_scheduler_type"],
        warmup_steps=0,
        weight_decay=p["weight_decay"],
        max_grad_norm=p["max_grad_norm"],
        optim=p["optim"],
        bf16=True,
        logging_steps=p["logging_steps"],
        logging_first_step=True,
        eval_strategy="no",
        save_strategy="no",
        seed=p["seed"],
        data_seed=p["seed"],
        max_length=p["max_seq_len"],
        packing=p["packing"],
        completion_only_loss=True,
        dataloader_num_workers=0,
        report_to="none",
        disable_tqdm=True,
    )
    writer = MetricsWriter(run_dir / "metrics.jsonl")
    counter = TokenCounter()
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(train_set.examples),
                         eval_dataset=Dataset.from_list(eval_set.examples), processing_class=tokenizer,
                         callbacks=[counter.callback(), MetricsCallback(writer, device=device)])
    counter.wrap(trainer)
    runtime = {
        "runner": "unsloth", "unsloth": md.version("unsloth"), "unsloth_zoo": md.version("unsloth_zoo"),
        "trl": md.version("trl"), "datasets": md.version("datasets"), "transformers": md.version("transformers"),
        "peft": md.version("peft"), "torch": torch.__version__,
        "quantization": "nf4" if p["load_in_4bit"] else "none", "base_dtype": "bfloat16", "precision": "bf16",
        "device": device, "optim": p["optim"], "gradient_checkpointing": p["use_gradient_checkpointing"],
        "packing": bool(getattr(trainer.args, "packing", False)),
        "padding_free": bool(getattr(trainer.args, "padding_free", False)),
        "attn_implementation": str(getattr(model.config, "_attn_implementation", "")),
        "eos": eos, "load_s": round(loaded_s, 1),
    }
    for name in ("xformers", "flash_attn"):
        try:
            runtime[name] = md.version(name if name != "flash_attn" else "flash-attn-4")
        except md.PackageNotFoundError:
            runtime[name] = None
    writer.write({"event": "start", "step": 0, "runtime": runtime, "time": time.time(),
                  "peak_mem_kind": "cuda_allocated" if device == "cuda" else "cpu_peak_rss",
                  "train_examples": len(train_set.examples),
                  "eval_examples": len(eval_set.examples)})
    trainer.train()
    metrics = trainer.evaluate()
    adapter = run_dir / "adapter"
    trainer.model.save_pretrained(str(adapter))
    wall = time.perf_counter() - started
    writer.write({"event": "completed", "step": trainer.state.global_step, "wall_time_s": round(wall, 1),
                  "eval_loss": metrics.get("eval_loss"), "time": time.time()})
    writer.close()
    return {"runtime": runtime, "config": p, "wall_s": wall, "adapter_dir": str(adapter),
            "steps": trainer.state.global_step, "eval_loss": metrics.get("eval_loss")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", required=True, help="JSON: {values: trainer config values, unsloth: its settings}")
    args = parser.parse_args(argv)
    spec_path = Path(args.spec)
    spec = json.loads(spec_path.read_text())
    result = run(spec)
    (spec_path.parent / f"{spec_path.stem}.result.json").write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({k: result[k] for k in ("wall_s", "steps", "eval_loss")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
