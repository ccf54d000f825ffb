"""Properties of the trainer's configuration (trainer.config) and command line (trainer.cli).

tests/trainer/test_config.py already proves: any dict of values gives a config or a ConfigError, and
one saved config round-trips. Here: any YAML *text* (and unreadable config paths) gives a config or a
ConfigError; any argv gives a config or a ConfigError (unknown flags and stray words are collected
with every other problem instead of argparse exiting at the first); every valid config, drawn field
by field, round-trips through save_config -> --config and through its flags; non-finite numbers and
seeds numpy cannot take are refused; and k bad flags give a problem naming each one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainer.cli import parse_config
from trainer.config import ConfigError, TrainConfig, field_choices, load_config, save_config, validate
from tests.properties.strategies import odd_text

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture()
def work(tmp_path) -> Path:
    (tmp_path / "data").mkdir()
    for name in ("train.jsonl", "validation.jsonl"):
        (tmp_path / "data" / name).write_text("")
    return tmp_path


def _config_or_error(call):
    try:
        cfg = call()
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p and len(p) < 800 for p in exc.problems)
        return exc
    assert isinstance(cfg, TrainConfig)
    return cfg


yaml_lines = st.sampled_from([
    "lora_r: 8", "lora_r: many", "lora_alpha: .inf", "learning_rate: .nan", "seed: -1", "liger: off",
    "lora_target_modules: [q_proj, 'v proj']", "lora_target_modules: {a: 1}", "packing: yes", "resume: [x]",
    "? [a]\n: b", "a: &x [*x]", "[" * 500, "- just\n- a list", "!!python/object:os.system {}", "model_name: ~",
    "max_seq_len: 1e99", "batch_size: 0x10", "num_epochs: 2020-01-01", "\t- bad indent", "key: 'unterminated",
])


@FAST
@given(text=st.one_of(st.text(max_size=120), odd_text, st.lists(yaml_lines, max_size=4).map("\n".join)))
def test_any_yaml_text_gives_a_config_or_a_config_error(text, work):
    path = work / "any.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _config_or_error(lambda: load_config(path, {"work_dir": str(work)}))


@pytest.mark.parametrize("path", ["folder", "bad\x00name.yaml", "missing.yaml", "deep"])
def test_unreadable_config_path_is_one_clear_problem(path, work):
    target = work if path == "folder" else Path(path)
    if path == "deep":  # PyYAML recurses per nesting level: 1000 brackets overflow the stack
        target = work / "deep.yaml"
        target.write_text("[" * 1000)
    with pytest.raises(ConfigError) as info:
        parse_config(["--config", str(target), "--work_dir", str(work)])
    assert [p for p in info.value.problems if "config file" in p]


flags = st.sampled_from(["--lora_r", "--lorar", "--seed", "--device", "--resume", "--learning_rate", "--packing",
                         "--lora-alpha=2", "--max_steps", "--output_dir", "--config", "--", "-x", "--eval_file"])
values = st.one_of(st.sampled_from(["8", "-1", "inf", "nan", "auto", "cpu", "true", "none", "", "1e3"]), odd_text)


@FAST
@given(argv=st.lists(st.one_of(flags, values), max_size=8))
def test_any_command_line_gives_a_config_or_a_config_error(argv, work):
    argv = ["--work_dir", str(work), "--output_dir", str(work / "run"), *argv]
    _config_or_error(lambda: parse_config(argv))


@st.composite
def valid_configs(draw):
    values = {}
    for name in ("device", "quantization", "precision", "attn_implementation", "liger", "lr_scheduler_type",
                 "group_by_length", "padding_free", "adapter_dtype"):
        values[name] = draw(st.sampled_from(field_choices(name)))
    values |= {
        "lora_r": draw(st.integers(1, 1024)),
        "lora_alpha": draw(st.floats(0.01, 1e4)),
        "lora_dropout": draw(st.floats(0, 0.99)),
        "lora_target_modules": draw(st.lists(st.sampled_from(["q_proj", "k_proj", "v_proj", "o_proj", "mlp.up"]),
                                             min_size=1, max_size=4, unique=True)),
        "max_seq_len": draw(st.integers(16, 131072)),
        "batch_size": draw(st.integers(1, 64)),
        "learning_rate": draw(st.floats(1e-7, 0.5)),
        "weight_decay": draw(st.floats(0, 10)),
        "seed": draw(st.integers(0, 2**32 - 1)),
        "max_steps": draw(st.one_of(st.just(-1), st.integers(1, 10**6))),
    }
    # Combinations the validator refuses on purpose (see trainer.config.validate).
    if values["device"] == "cpu":
        values["precision"] = "fp32" if values["precision"] == "fp16" else values["precision"]
        if values["attn_implementation"] in ("flash_attention_2", "flex_attention", "torch_varlen"):  # CUDA only
            values["attn_implementation"] = "sdpa"
    if values["quantization"] == "nf4" and values.get("base_dtype") == "bfloat16":
        values["base_dtype"] = "auto"
    return values


@FAST
@given(values=valid_configs())
def test_every_valid_config_round_trips_through_the_saved_file_and_the_flags(values, work):
    values |= {"work_dir": str(work), "output_dir": str(work / "run")}
    cfg = load_config(None, values)
    again = load_config(save_config(cfg, work / "run"))
    assert again == cfg
    argv = []
    for key, value in values.items():
        argv += [f"--{key}", ",".join(value) if isinstance(value, list) else repr(value) if isinstance(value, float)
                 else str(value)]
    assert parse_config(argv) == cfg


BAD_FLAGS = {
    "lora_alpha": "inf",
    "weight_decay": "nan",
    "seed": "-1",
    "learning_rate": "1e400",
    "lora_r": "9" * 5000,
    "device": "tpu",
    "lora_target_modules": "q proj",
    "max_seq_len": "1.5",
    "lorar": "3",
}


@FAST
@given(chosen=st.sets(st.sampled_from(sorted(BAD_FLAGS)), min_size=1))
def test_every_bad_flag_is_reported_at_once_naming_it(chosen, work):
    argv = ["--work_dir", str(work)]
    for name in sorted(chosen):
        argv += [f"--{name}", BAD_FLAGS[name]]
    with pytest.raises(ConfigError) as info:
        parse_config(argv)
    problems = info.value.problems
    for name in chosen:
        assert any(p.startswith(f"{name}:") or f"'--{name}'" in p for p in problems), (name, problems)
    assert all(len(p) < 400 for p in problems)


def test_seed_and_finite_checks_in_validate():
    assert any(p.startswith("seed:") for p in validate(TrainConfig(seed=2**32), check_files=False))
    assert not any(p.startswith("seed:") for p in validate(TrainConfig(seed=2**32 - 1), check_files=False))
