"""``python -m trainer``: fine-tune LoRA adapters (see trainer/cli.py for the flags, ``--help`` for the list)."""

from trainer.cli import run

raise SystemExit(run())
