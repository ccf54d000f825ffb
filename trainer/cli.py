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

from trainer.config import AUTO, ConfigError, TrainConfig, load_config


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


def parse_config(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parse flags into a validated TrainConfig (raises ConfigError listing every problem)."""
    ns = vars(build_parser().parse_args(argv))
    config_file = ns.pop("config")
    return load_config(config_file, ns)


def main(cfg: TrainConfig) -> int:
    """Train with a validated config; the heavy imports happen here, not at import time."""
    from trainer.train import main as train_main

    return train_main(cfg)


def run(argv: Sequence[str] | None = None) -> int:
    try:
        cfg = parse_config(argv)
    except ConfigError as exc:
        print(f"[trainer] {exc}", file=sys.stderr)
        return 2
    return main(cfg)
