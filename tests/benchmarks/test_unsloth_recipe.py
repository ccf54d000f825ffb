"""benchmarks.unsloth_recipe: Unsloth's runs use our architecture, data, sequence length, LoRA shape and steps, and
bench_training reports a run that cannot start with its exact error."""

from __future__ import annotations

import argparse
import json

import pytest

from benchmarks.bench_training import RECIPES, exact_error, recipe_values, run_recipe, table
from benchmarks.unsloth_recipe import UNSLOTH_RECIPES, TokenCounter, batch_tokens, plan
from trainer.config import TrainConfig, build_config, validate


def _args(tmp_path, **kw) -> argparse.Namespace:
    values = {"device": "cuda", "examples": 16 * 16, "max_seq_len": 1024, "processes": 0,
              "unsloth_site": str(tmp_path / "no-such-site"), "unsloth_timeout_s": 120, **kw}
    return argparse.Namespace(**values)


def _values(tmp_path, overrides, **kw):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (tmp_path / "model").mkdir(exist_ok=True)  # the trainer's validation wants a local model folder to exist
    return recipe_values("llama-1b", "r", dict(overrides), tmp_path / "model", data, tmp_path / "runs", _args(tmp_path, **kw))


@pytest.mark.parametrize("name", sorted(UNSLOTH_RECIPES))
def test_every_unsloth_recipe_is_a_valid_trainer_config_with_a_prediction(name):
    description, overrides, settings, prediction = UNSLOTH_RECIPES[name]
    assert description and len(prediction) > 20
    cfg, problems = build_config({**overrides, "device": "cuda"})
    assert not problems + validate(cfg, check_files=False), name
    assert settings["load_in_4bit"] == (overrides["quantization"] == "nf4")
    assert name not in RECIPES  # one namespace: bench_training tells them apart by the dict


@pytest.mark.parametrize("name, ours", [("unsloth-nf4", "ours-nf4-fast"), ("unsloth-bf16", "ours-bf16-compile")])
def test_unsloth_plan_matches_our_recipe_in_model_data_shape_and_steps(tmp_path, name, ours):
    _, overrides, settings, _ = UNSLOTH_RECIPES[name]
    theirs = plan(_values(tmp_path, overrides), settings)
    mine = build_config(_values(tmp_path, RECIPES[ours][1]))[0]
    defaults = TrainConfig()
    assert theirs["model_dir"] == mine.model_name  # the same random-weight folder of the architecture
    assert theirs["train_file"] == mine.train_file and theirs["eval_file"] == mine.eval_file
    assert theirs["max_seq_len"] == mine.max_seq_len == 1024
    assert theirs["lora_r"] == mine.lora_r == defaults.lora_r == 16
    assert theirs["lora_alpha"] == mine.lora_alpha == 32.0
    assert theirs["target_modules"] == mine.lora_target_modules == list(defaults.lora_target_modules)
    assert len(theirs["target_modules"]) == 7
    assert theirs["lora_dropout"] == 0.0
    assert theirs["batch_size"] == mine.batch_size == 16 and theirs["gradient_accumulation_steps"] == 1
    assert theirs["max_steps"] == mine.max_steps == 16  # 256 examples / 16 per step: the same steps as ours
    assert theirs["learning_rate"] == mine.learning_rate and theirs["lr_scheduler_type"] == "constant"
    assert theirs["warmup_ratio"] == mine.warmup_ratio == 0.0
    assert theirs["optim"] == "adamw_torch_fused" and theirs["precision"] == "bf16"
    assert theirs["seed"] == mine.seed and theirs["logging_steps"] == 1
    assert theirs["use_gradient_checkpointing"] == "unsloth"


def test_packed_unsloth_recipe_trains_one_epoch_like_our_packed_ones(tmp_path):
    _, overrides, settings, _ = UNSLOTH_RECIPES["unsloth-bf16-packed"]
    theirs = plan(_values(tmp_path, overrides), settings)
    assert theirs["packing"] is True and theirs["max_steps"] == -1 and theirs["num_epochs"] == 1


def test_plan_refuses_what_the_trainer_refuses(tmp_path):
    from trainer.config import ConfigError

    values = _values(tmp_path, UNSLOTH_RECIPES["unsloth-nf4"][1])
    with pytest.raises(ConfigError, match="lora_r"):
        plan({**values, "lora_r": 0}, UNSLOTH_RECIPES["unsloth-nf4"][2])


def test_batch_tokens_counts_non_padding_tokens_as_trl_does():
    torch = pytest.importorskip("torch")
    padded = {"input_ids": torch.ones(2, 5, dtype=torch.long), "attention_mask": torch.tensor([[1, 1, 1, 0, 0], [1] * 5])}
    assert int(batch_tokens(padded)) == 8
    flat = {"input_ids": torch.ones(1, 9, dtype=torch.long), "position_ids": torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])}
    assert int(batch_tokens(flat)) == 9  # padding-free: the flattened row is all real tokens
    assert batch_tokens({"input_ids": torch.ones(3, 4, dtype=torch.long)}) == 12


def test_token_counter_puts_the_running_total_into_train_logs_only():
    torch = pytest.importorskip("torch")

    class FakeTrainer:
        def training_step(self, model, inputs, num_items=None):
            return torch.tensor(1.0)

    trainer = FakeTrainer()
    counter = TokenCounter()
    counter.wrap(trainer)
    trainer.training_step(None, {"input_ids": torch.ones(1, 4), "attention_mask": torch.tensor([[1, 1, 1, 0]])})
    trainer.training_step(None, {"input_ids": torch.ones(1, 4), "attention_mask": torch.tensor([[1, 1, 0, 0]])})
    callback = counter.callback()
    logs = {"loss": 1.0}
    callback.on_log(None, None, None, logs=logs)
    assert logs["num_tokens"] == 5.0
    kept = {"loss": 1.0, "num_tokens": 99.0}  # TRL's own count wins where it is there
    callback.on_log(None, None, None, logs=kept)
    assert kept["num_tokens"] == 99.0
    evals = {"eval_loss": 2.0}
    callback.on_log(None, None, None, logs=evals)
    assert "num_tokens" not in evals


def test_exact_error_is_the_exception_line_of_the_traceback():
    log = "Unsloth: patching\nTraceback (most recent call last):\n  File \"x.py\", line 1\n" \
          "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
    assert exact_error(log) == "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert exact_error("no traceback\njust the end\n") == "no traceback just the end"


def test_an_unsloth_recipe_that_cannot_import_reports_the_exact_error(tmp_path, monkeypatch):
    """Without Unsloth on the path the child process dies at `import unsloth`: the row says so, word for word."""
    import importlib.util

    if importlib.util.find_spec("unsloth") is not None:
        pytest.skip("unsloth is importable here")
    monkeypatch.delenv("PYTHONPATH", raising=False)
    data = tmp_path / "data"
    data.mkdir()
    res = run_recipe("tiny", "unsloth-bf16", tmp_path / "model", data, tmp_path / "runs", _args(tmp_path, device="cpu"))
    assert not res.ok
    assert "ModuleNotFoundError: No module named 'unsloth'" in res.error
    spec = json.loads((tmp_path / "runs" / "tiny-unsloth-bf16.spec.json").read_text())
    assert spec["unsloth"] == UNSLOTH_RECIPES["unsloth-bf16"][2] and spec["values"]["max_steps"] == 16
    assert "failed: exit 1: ModuleNotFoundError" in table([res])


def test_attention_check_packs_example_lengths_like_the_training_split():
    from benchmarks.attention_kernels import example_lengths

    lengths = example_lengths(16_384)
    assert sum(lengths) == 16_384  # one packed step of 16 rows of ≤ 1,024 tokens
    assert all(150 <= n <= 1024 for n in lengths[:-1]) and 0 < lengths[-1] <= 1024
    assert 400 <= sum(lengths[:-1]) / len(lengths[:-1]) <= 800  # the split's mean is ≈ 600 tokens
    assert example_lengths(16_384) == lengths  # fixed seed: every kernel sees the same row
