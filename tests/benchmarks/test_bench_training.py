"""benchmarks.bench_training: the steady-state rate, the CPU mapping of CUDA-only settings, and recipes the trainer accepts."""

from __future__ import annotations

import pytest

from benchmarks.bench_training import (
    DEFAULT_RECIPES,
    RECIPES,
    Result,
    cpu_variant,
    prediction_table,
    step_rates,
    steady_tokens_per_s,
    table,
)
from trainer.config import TrainConfig, build_config, validate


def _lines(tokens: list[int], seconds: list[float]) -> list[dict]:
    """metrics.jsonl train lines: cumulative num_tokens and elapsed_s at steps 1..N."""
    return [{"event": "train", "step": i + 1, "num_tokens": n, "elapsed_s": t}
            for i, (n, t) in enumerate(zip(tokens, seconds))]


def test_steady_rate_is_the_median_of_steps_3_to_n():
    # Per-step rates: step 2: 1000/10 = 100 (start-up), step 3: 3000/1 = 3000, step 4: 2000/1 = 2000,
    # step 5: 4000/2 = 2000, step 6: 500/1 = 500 (a partial last batch).
    train = _lines([1000, 2000, 5000, 7000, 11000, 11500], [5.0, 15.0, 16.0, 17.0, 19.0, 20.0])
    assert step_rates(train) == [(2, 100.0), (3, 3000.0), (4, 2000.0), (5, 2000.0), (6, 500.0)]
    assert steady_tokens_per_s(train) == 2000.0  # median of 3000, 2000, 2000, 500: neither start-up nor the tail
    assert steady_tokens_per_s(train, first_step=2) == 2000.0
    assert steady_tokens_per_s(train[:4]) == 2500.0  # steps 3 and 4: the median of an even count is the mean


def test_steady_rate_leaves_out_profiled_steps():
    # Step rates 3: 3000, 4: 1000 (profiled), 5: 500 (profiled), 6: 2000.
    train = _lines([1000, 2000, 5000, 6000, 6500, 8500], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert steady_tokens_per_s(train) == 1500.0  # median of 3000, 1000, 500, 2000
    assert steady_tokens_per_s(train, exclude={4, 5}) == 2500.0  # median of 3000 and 2000
    assert steady_tokens_per_s(train, exclude={3, 4, 5, 6}) is None


def test_steady_rate_needs_step_3_and_skips_steps_without_elapsed_time():
    assert steady_tokens_per_s(_lines([100, 200], [1.0, 2.0])) is None
    assert steady_tokens_per_s([]) is None
    train = _lines([100, 200, 300, 400], [1.0, 2.0, 2.0, 4.0])  # step 3 logged in the same second
    assert step_rates(train) == [(2, 100.0), (4, 50.0)]
    assert steady_tokens_per_s(train) == 50.0


def test_table_compares_steady_rates_with_the_seed_of_the_same_architecture():
    seed = Result("llama-1b", "seed", ok=True, tokens_per_s=3000.0, steady_tokens_per_s=4000.0, steps=16)
    ours = Result("llama-1b", "ours-bf16", ok=True, tokens_per_s=30000.0, steady_tokens_per_s=36000.0, steps=16,
                  runtime={"torch_compile": True, "attn_implementation": "flex_attention"},
                  config={"batch_size": 32, "gradient_accumulation_steps": 1, "lora_dropout": 0.0, "packing": True})
    failed = Result("llama-1b", "ours-nf4-b32", ok=False, error="OutOfMemoryError: CUDA out of memory")
    text = table([seed, ours, failed])
    row = next(line for line in text.splitlines() if "| ours-bf16 |" in line)
    assert "| 9.00× |" in row and "| 36,000 |" in row and "| 30,000 |" in row
    assert "batch 32 × 1" in row and "dropout 0" in row and "packed" in row and "compiled" in row
    assert "flex_attention" in row
    # 8000 x 3 x 245 tokens at 36,000 tok/s = 163.3 s = 2.7 min
    assert "| 2.7 min |" in row
    assert "failed: OutOfMemoryError" in text


def test_cpu_variant_maps_cuda_only_settings_with_a_note():
    mapped, notes = cpu_variant(RECIPES["seed"][1])
    assert mapped["precision"] == "bf16" and mapped["optim"] == "adamw_torch" and len(notes) == 2
    mapped, notes = cpu_variant(RECIPES["ours-bf16-compile"][1])
    assert mapped["torch_compile"] == "false" and notes == ["torch.compile skipped on CPU"]
    mapped, notes = cpu_variant(RECIPES["ours-bf16-packed"][1])
    assert mapped["attn_implementation"] == "sdpa" and mapped["packing"] is True and "flex_attention" in notes[0]
    assert RECIPES["ours-bf16-compile"][1]["torch_compile"] == "true"  # the recipe itself is untouched
    assert cpu_variant(RECIPES["ours-bf16-fast"][1]) == (RECIPES["ours-bf16-fast"][1], [])


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_is_a_valid_trainer_config_on_cuda_and_on_cpu(name):
    description, overrides, prediction = RECIPES[name]
    assert description and len(prediction) > 20  # a written prediction for every lever
    for device, values in (("cuda", overrides), ("cpu", cpu_variant(overrides)[0])):
        cfg, problems = build_config({**values, "device": device})
        problems += validate(cfg, check_files=False)
        assert not problems, (name, device, problems)


def test_new_recipes_change_only_what_their_names_say():
    bf16, nf4 = RECIPES["ours-bf16"][1], RECIPES["ours-nf4"][1]
    assert RECIPES["ours-bf16-b32"][1] == {**bf16, "batch_size": 32}
    assert RECIPES["ours-bf16-fast"][1] == {**bf16, "batch_size": 32, "lora_dropout": 0.0}
    assert RECIPES["ours-nf4-b32"][1] == {**nf4, "batch_size": 32}
    assert RECIPES["ours-nf4-dropout0"][1] == {**nf4, "lora_dropout": 0.0}
    assert RECIPES["ours-bf16-compile"][1] == {**bf16, "torch_compile": "true"}
    assert RECIPES["ours-nf4-upcast"][1] == {**nf4, "lora_dropout": 0.0, "fp32_upcast": "true"}
    # Recipes measured with the seed's dropout keep it now that the trainer's default is 0.
    assert RECIPES["seed"][1]["lora_dropout"] == 0.05 and nf4["lora_dropout"] == bf16["lora_dropout"] == 0.05
    assert RECIPES["seed"][1]["fp32_upcast"] == "true"  # the seed's prepare_model_for_kbit_training
    assert TrainConfig().gradient_checkpointing == "auto"  # NF4 recipes keep checkpointing through auto
    assert set(DEFAULT_RECIPES.split(",")) <= set(RECIPES)
    text = prediction_table(["ours-bf16-fast"])
    assert "ours-bf16-fast" in text and "validation loss" in text


@pytest.mark.parametrize("name", ["ours-bf16", "ours-bf16-packed", "ours-bf16-compile", "ours-nf4-dropout0"])
def test_child_process_flags_give_the_same_trainer_config(name, tmp_path):
    """--processes N (the ddp mode) hands each recipe to python -m trainer as flags: they must mean the same config."""
    from benchmarks.bench_training import trainer_flags
    from trainer.cli import parse_config
    from trainer.config import load_config

    values = {"model_name": str(tmp_path), "work_dir": str(tmp_path), "train_file": __file__, "eval_file": "none",
              "output_dir": str(tmp_path / "run"), "device": "cuda", "num_epochs": 1, "max_steps": -1,
              "logging_steps": 1, "eval_steps": 0, "warmup_ratio": 0.0, "lr_scheduler_type": "constant",
              **RECIPES[name][1]}
    assert parse_config(trainer_flags(values)) == load_config(None, values)
