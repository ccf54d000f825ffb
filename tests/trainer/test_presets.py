"""trainer.config's presets, labels, older-version upgrades and the warnings for valid-but-suspect settings."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import pytest

from trainer.config import (
    BUILTIN_PRESET_FILES,
    FIELD_LABELS,
    Preset,
    TrainConfig,
    builtin_presets,
    config_warnings,
    field_label,
    preset_config,
    preset_diff,
    upgrade_values,
    validate,
)


def test_every_field_has_a_plain_label_that_is_not_its_config_name():
    names = [f.name for f in fields(TrainConfig)]
    assert set(FIELD_LABELS) == set(names)
    for name in names:
        assert field_label(name) != name and "_" not in field_label(name)


def test_builtin_presets_load_with_the_trainers_validation():
    presets = builtin_presets()
    assert set(presets) == {"seed-qlora", "fast-gpu", "cpu-demo", "shipped"}
    for name, (preset, problems) in presets.items():
        assert preset is not None and problems == [], (name, problems)
        cfg, bad, notes = preset_config(preset)
        assert bad == [] and notes == []
        assert validate(cfg, check_files=False) == [], name
    seed = preset_config(presets["seed-qlora"][0])[0]
    assert (seed.quantization, seed.lora_r, seed.lora_dropout, seed.num_epochs, seed.learning_rate) == ("auto", 16, 0.05, 3.0, 2e-4)
    fast = preset_config(presets["fast-gpu"][0])[0]
    assert (fast.device, fast.precision, fast.base_dtype, fast.packing) == ("cuda", "bf16", "bfloat16", True)
    demo = preset_config(presets["cpu-demo"][0])[0]
    assert (demo.device, demo.max_steps, demo.batch_size, demo.gradient_accumulation_steps) == ("cpu", 10, 1, 1)
    assert demo.eval_file == "none" and demo.eval_steps == 0 and demo.max_seq_len == 1536


def test_a_missing_builtin_file_is_reported_not_raised(tmp_path: Path):
    presets = builtin_presets(root=tmp_path)
    assert all(p is None for p, _ in presets.values())
    assert any("does not exist" in problems[0] for _, problems in presets.values())
    assert len(presets) == len(BUILTIN_PRESET_FILES)


def test_an_older_preset_is_upgraded_with_a_note_for_every_key_changed_or_left_out():
    old = {"num_train_epochs": 2, "per_device_train_batch_size": 8, "lr": 1e-4, "load_in_4bit": True,
           "use_dora": True, "max_length": 512, "lora_r": 4}
    values, notes = upgrade_values(old, version=1, source="old")
    assert values == {"num_epochs": 2, "batch_size": 8, "learning_rate": 1e-4, "max_seq_len": 512, "lora_r": 4}
    assert len(notes) == 6  # four renamed, two removed; lora_r is current
    assert any("'load_in_4bit'" in n and "quantization" in n for n in notes)
    assert any("'use_dora'" in n and "not supported" in n for n in notes)
    cfg, problems, more = preset_config(Preset("old", "Old one", "", old, builtin=False, version=1))
    assert problems == [] and (cfg.num_epochs, cfg.batch_size, cfg.max_seq_len) == (2.0, 8, 512)


def test_a_preset_with_unknown_keys_or_bad_values_keeps_the_rest():
    preset = Preset("x", "X", "", {"lora_rr": 8, "batch_size": "many", "learning_rate": 1e-4}, builtin=False)
    cfg, problems, notes = preset_config(preset)
    assert cfg.learning_rate == 1e-4 and cfg.batch_size == TrainConfig().batch_size
    assert any("unknown setting 'lora_rr'" in p and "lora_r" in p for p in problems)
    assert any(p.startswith("batch_size") and "many" in p for p in problems)
    _, notes = upgrade_values({}, version=99)
    assert "newer version" in notes[0]


def test_warnings_catch_the_usual_mistakes_and_say_what_to_change():
    base = TrainConfig()
    assert config_warnings(base, lengths=[100] * 20) == []
    no_eval = config_warnings(replace(base, eval_file="none", eval_steps=25))
    assert len(no_eval) == 1 and "eval_steps" in no_eval[0] and "set eval_steps to 0" in no_eval[0]
    assert config_warnings(replace(base, eval_file="none", eval_steps=0)) == []
    steps = config_warnings(replace(base, max_steps=40), epoch_steps=600)
    assert len(steps) == 1 and "overrides the 3 epochs" in steps[0] and "600 steps" in steps[0] and "-1" in steps[0]
    assert "far outside" in config_warnings(replace(base, learning_rate=0.05))[0]
    assert "far outside" in config_warnings(replace(base, learning_rate=1e-7))[0]
    assert config_warnings(replace(base, learning_rate=1e-3)) == []  # the edge of the usual range: no noise
    lengths = list(range(100, 200))  # max_seq_len 190 leaves out 9 of 100 (9%)
    seq = config_warnings(replace(base, max_seq_len=190), lengths=lengths)
    assert len(seq) == 1 and "leaves out 9 of 100" in seq[0] and "Raise it to 194" in seq[0] and "199" in seq[0]
    assert config_warnings(replace(base, max_seq_len=195), lengths=lengths) == []  # 4%: under the 5% line


def test_preset_diff_ignores_paths_the_launcher_fills_in():
    ref = TrainConfig().to_dict()
    run = {**ref, "learning_rate": 1e-4, "output_dir": "/runs/x", "train_file": "/w/data/train.jsonl"}
    assert preset_diff(run, ref) == {"learning_rate": (2e-4, 1e-4)}
    assert preset_diff(run, {**ref, "train_file": "/other.jsonl"})["train_file"] == ("/other.jsonl", "/w/data/train.jsonl")
