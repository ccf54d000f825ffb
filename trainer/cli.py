"""Command line of ``python -m trainer``: every TrainConfig field is a flag; ``--config FILE`` supplies YAML defaults.

Examples::

    python -m trainer --config configs/smollm2_medcot.yaml
    python -m trainer --config configs/smollm2_medcot.yaml --max_steps 20 --output_dir /tmp/run
    python -m trainer --config /tmp/run/config.yaml --resume auto

Flags override the YAML file, which overrides the defaults. All flags are parsed as text and
converted by the config's own coercion, so a bad value is reported together with every other
problem instead of argparse stopping at the first. Importing this module does not import torch.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence

from trainer.config import AUTO, NO_EVAL, ConfigError, TrainConfig, load_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        description="Fine-tune LoRA adapters (QLoRA on CUDA) on the prepared medical reasoning records. "
        "Writes config.yaml, metrics.jsonl, status.json, checkpoint-N/ and adapter/ into the run directory. "
        "Stop gracefully with SIGTERM/Ctrl-C or by creating a file named STOP in the run directory.",
    )
    parser.add_argument("--config", type=Path, default=None, help="YAML file of defaults (keys = the flag names).")
    for f in fields(TrainConfig):
        meta = f.metadata
        default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
        shown = ",".join(default) if isinstance(default, list) else default
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "type": str,
                                  "help": f"{meta['help']} (default: {shown!r})"}
        if meta.get("choices"):
            kwargs["metavar"] = "{" + ",".join(meta["choices"]) + "}"
        if f.name == "resume":
            kwargs.update(nargs="?", const=AUTO, metavar="PATH|auto")
        parser.add_argument(f"--{f.name}", **kwargs)
    return parser


def _unknown_flags(extra: Sequence[str]) -> list[str]:
    """Problems for the arguments argparse did not recognise (a value after an unknown flag is its value)."""
    problems: list[str] = []
    names = {f.name for f in fields(TrainConfig)}
    after_flag = False
    for arg in extra:
        if arg.startswith("-") and len(arg) > 1:
            flag = arg.split("=", 1)[0]
            guess = flag.lstrip("-").replace("-", "_")
            close = [n for n in names if n.replace("_", "") == guess.replace("_", "")]
            hint = f" (did you mean --{close[0]}?)" if close else ""
            problems.append(f"command line: unknown flag {flag[:80]!r}{hint}")
            after_flag = "=" not in arg
        elif after_flag:
            after_flag = False
        else:
            problems.append(f"command line: unexpected argument {arg[:80]!r} (every setting is a --flag VALUE)")
    return problems


def parse_config(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parse flags into a validated TrainConfig (raises ConfigError listing every problem).

    Unknown flags are reported with every other problem (not by argparse stopping at the first);
    a flag without its value raises ConfigError too. ``--help`` still exits.
    """
    parser = build_parser()
    parser.exit_on_error = False
    try:
        parsed, extra = parser.parse_known_args(argv)
    except argparse.ArgumentError as exc:
        raise ConfigError([f"command line: {exc}"]) from None
    ns = vars(parsed)
    config_file = ns.pop("config")
    problems = _unknown_flags(extra)
    try:
        cfg = load_config(config_file, ns)
    except ConfigError as exc:
        raise ConfigError(problems + exc.problems) from None
    if problems:
        raise ConfigError(problems)
    return cfg


def baseline_callbacks(cfg: TrainConfig) -> list[Any]:
    """The starting point of every validation curve: one evaluation before the first step (issue 20).

    At step 0 the LoRA weights are the identity (B = 0), so this is the base model's validation loss on
    the same held-out examples, written to ``metrics.jsonl`` as an ``eval`` line at step 0 by the trainer's own
    evaluation (transformers' ``eval_on_start``, switched on when training begins from step 0). A resumed run
    already has it; a run without validation data has nothing to evaluate.
    """
    if cfg.eval_file.strip().lower() == NO_EVAL:
        return []
    from transformers import TrainerCallback

    class BaselineEvaluation(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if state.global_step == 0:
                args.eval_on_start = True  # read by the training loop right after this callback

    return [BaselineEvaluation()]


def main(cfg: TrainConfig) -> int:
    """Train with a validated config, the baseline evaluation of :func:`baseline_callbacks` added; the heavy
    imports happen here, not at import time. Exits as ``trainer.train.main``."""
    from trainer import train

    return train.main(cfg, extra_callbacks=baseline_callbacks(cfg))


def run(argv: Sequence[str] | None = None) -> int:
    try:
        cfg = parse_config(argv)
    except ConfigError as exc:
        print(f"[trainer] {exc}", file=sys.stderr)
        return 2
    return main(cfg)
