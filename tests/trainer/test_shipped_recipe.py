"""The shipped adapter is reproducible from the repository: its YAML pins every setting its run used,
and the README, the adapter's README and the YAML give the same command."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import yaml

from trainer.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_YAML = ROOT / "configs" / "smollm2_medcot_shipped.yaml"
ADAPTER = ROOT / "adapters" / "smollm2-135m-medcot"
RUN_SPECIFIC = {"work_dir", "output_dir", "resume"}  # where a run lives, not how it trains
TRAIN_COMMAND = "python -m trainer --config configs/smollm2_medcot_shipped.yaml --output_dir .work/runs/smollm2-medcot-shipped"


def test_the_shipped_yaml_pins_every_setting_and_leaves_none_to_auto():
    pinned = yaml.safe_load(SHIPPED_YAML.read_text(encoding="utf-8"))
    names = {f.name for f in fields(TrainConfig)}
    assert names - RUN_SPECIFIC - set(pinned) == set(), "settings the YAML leaves to their (changeable) defaults"
    assert [k for k, v in pinned.items() if v == "auto"] == []


def test_the_shipped_adapter_was_trained_with_the_yaml_settings():
    pinned = yaml.safe_load(SHIPPED_YAML.read_text(encoding="utf-8"))
    card = json.loads((ADAPTER / "adapter_card.json").read_text(encoding="utf-8"))
    used = card["config"]
    # Paths resolve differently on each machine: the embedded model and the default data files.
    skip = {"model_name", "train_file", "eval_file", "references_index"}
    # padding_free came after this adapter (issue 21): its card has no such setting, and its runtime says what the
    # run did (no padding_free entry: padded batches).
    if "padding_free" not in used:
        assert pinned["padding_free"] == ("true" if card["runtime"].get("padding_free", False) else "false")
        skip.add("padding_free")
    differ = {k: (v, used.get(k)) for k, v in pinned.items() if k not in skip and used.get(k) != v}
    # YAML writes 32 for 32.0 and 6 for 6.0: compare numbers as numbers
    differ = {k: pair for k, pair in differ.items() if not (isinstance(pair[0], (int, float)) and pair[0] == pair[1])}
    assert differ == {}


def test_readme_adapter_card_and_yaml_give_the_same_command():
    for path in (ROOT / "README.md", ADAPTER / "README.md", SHIPPED_YAML):
        assert TRAIN_COMMAND in path.read_text(encoding="utf-8"), path
