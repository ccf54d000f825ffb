"""trainer.config / trainer.cli: defaults, YAML + flag precedence, validation listing every problem, no torch on import."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from trainer.cli import build_parser, parse_config, run
from trainer.config import (
    CONFIG_FILE,
    ConfigError,
    TrainConfig,
    load_config,
    save_config,
    validate,
)

PROJECT = Path(__file__).resolve().parents[2]


def test_defaults_are_the_seed_method(data_dir):
    cfg = load_config(None, {"work_dir": str(data_dir.parent)})
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) == (16, 32.0, 0.0)
    assert cfg.lora_target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert cfg.quantization == "auto" and cfg.model_name == "embedded" and cfg.report_to == "none"
    assert cfg.resolved_train_file() == data_dir / "train.jsonl"
    assert cfg.resolved_eval_file() == data_dir / "validation.jsonl"


def test_every_field_is_documented_and_a_flag():
    parser_flags = {a.dest for a in build_parser()._actions}
    for f in fields(TrainConfig):
        assert len(f.metadata["help"]) > 15, f.name
        assert f.name in parser_flags, f.name


def test_yaml_then_flags_override(tmp_path, data_dir):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text(
        f"work_dir: {data_dir.parent}\nlora_r: 8\nlearning_rate: 1.0e-4\n"
        "gradient_checkpointing: true\nliger: off\nlora_target_modules: [q_proj, v_proj]\n"
    )
    cfg = parse_config(["--config", str(yaml_file), "--lora_r", "4", "--num_epochs", "2",
                        "--lora_target_modules", "q_proj,k_proj"])
    assert cfg.lora_r == 4  # flag beats YAML
    assert cfg.learning_rate == 1e-4  # YAML beats default
    assert cfg.num_epochs == 2.0
    assert cfg.gradient_checkpointing == "true" and cfg.liger == "off"  # YAML booleans read as choices
    assert cfg.lora_target_modules == ["q_proj", "k_proj"]


def test_resume_flag_without_value_means_auto(tmp_path, data_dir):
    cfg = parse_config(["--work_dir", str(data_dir.parent), "--output_dir", str(tmp_path), "--resume"])
    assert cfg.resume == "auto"


def test_invalid_config_lists_every_problem(tmp_path, data_dir):
    yaml_file = tmp_path / "bad.yaml"
    yaml_file.write_text("lora_rank: 8\nlora_r: many\nbatch_size: 0\n")
    with pytest.raises(ConfigError) as info:
        parse_config([
            "--config", str(yaml_file),
            "--work_dir", str(data_dir.parent),
            "--lora_dropout", "1.5",
            "--learning_rate", "-1",
            "--quantization", "int3",
            "--train_file", str(tmp_path / "missing.jsonl"),
            "--torch_compile", "maybe",
            "--device", "cpu", "--attn_implementation", "flex_attention",
            "--early_stopping_patience", "2", "--eval_steps", "10", "--save_steps", "15",
            "--report_to", "carrier-pigeon",
        ])
    problems = info.value.problems
    text = "\n".join(problems)
    for expected in ("unknown setting 'lora_rank'", "lora_r: expected", "batch_size", "lora_dropout",
                     "learning_rate", "quantization: must be one of", "missing.jsonl does not exist",
                     "torch_compile: must be one of auto, true, false; got 'maybe'",
                     "flex_attention cannot train on CPU", "save_steps (15) must be a multiple of eval_steps",
                     "report_to: unknown target"):
        assert expected in text, f"{expected!r} not reported in:\n{text}"
    assert len(problems) >= 10
    assert "(10 problems)" in str(info.value) or f"({len(problems)} problems)" in str(info.value)


def test_torch_compile_and_packing_options(tmp_path, data_dir):
    """torch_compile takes auto/true/false (YAML booleans too); packing is accepted with every attention kernel."""
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text(f"work_dir: {data_dir.parent}\ntorch_compile: true\npacking: true\n")
    cfg = load_config(yaml_file)
    assert cfg.torch_compile == "true" and cfg.packing is True and cfg.attn_implementation == "auto"
    assert TrainConfig().torch_compile == "auto"
    for attn in ("auto", "sdpa", "eager", "flex_attention", "flash_attention_2"):
        assert not validate(TrainConfig(packing=True, attn_implementation=attn, device="cuda"), check_files=False), attn
    assert not validate(TrainConfig(packing=True, device="cpu"), check_files=False)  # sdpa packs correctly on CPU
    problems = validate(TrainConfig(torch_compile="yes please", attn_implementation="flash", device="cpu"),
                        check_files=False)
    assert any(p.startswith("torch_compile: must be one of auto, true, false") for p in problems)
    assert any(p.startswith("attn_implementation: must be one of") and "flex_attention" in p for p in problems)


def test_help_lists_the_new_options():
    parser_help = build_parser().format_help()
    assert "--torch_compile {auto,true,false}" in parser_help
    assert "flex_attention" in parser_help


def test_unknown_key_suggests_the_field():
    with pytest.raises(ConfigError) as info:
        load_config(None, {"lora-r": 8}, check_files=False)
    assert "did you mean 'lora_r'" in str(info.value)


def test_cli_reports_problems_and_exits_2(capsys, data_dir):
    rc = run(["--work_dir", str(data_dir.parent), "--max_steps", "0", "--device", "tpu"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "max_steps" in err and "device: must be one of" in err


def test_missing_prepared_data_explains_how_to_get_it(tmp_path):
    problems = validate(TrainConfig(work_dir=str(tmp_path)))
    assert any("python -m core.data prepare" in p for p in problems)
    assert any("validation.jsonl does not exist" in p for p in problems)
    assert not validate(TrainConfig(work_dir=str(tmp_path), train_file=__file__, eval_file="none"))


def test_saved_config_round_trips(tmp_path, data_dir):
    cfg = load_config(None, {"work_dir": str(data_dir.parent), "lora_r": 8, "lora_target_modules": "q_proj,v_proj",
                             "output_dir": str(tmp_path / "run")})
    path = save_config(cfg, tmp_path / "run")
    assert path.name == CONFIG_FILE
    assert load_config(path) == cfg


@pytest.mark.parametrize("module_args", [["-m", "trainer", "--help"], ["-m", "trainer.evaluate", "--help"]])
def test_help_and_config_import_without_torch(module_args):
    probe = (
        "import runpy, sys\n"
        f"sys.argv = {module_args[1:2] + module_args[2:]!r}\n"
        "import trainer.config, trainer.cli, trainer.status, trainer.checkpoint\n"
        "try:\n"
        f"    runpy.run_module({module_args[1]!r}, run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'peft', 'datasets') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "usage: python -m trainer" in out.stdout
    assert "HEAVY []" in out.stdout


def test_any_values_give_a_config_or_a_config_error(tmp_path):
    """Property: whatever a YAML file or the command line holds, the result is a config or a ConfigError."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from trainer.config import FIELD_NAMES

    scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                       st.text(max_size=12), st.lists(st.text(max_size=6), max_size=3))
    keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8))

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.dictionaries(keys, scalar, max_size=6))
    def check(values):
        values = {"work_dir": str(tmp_path), **values}
        try:
            cfg = load_config(None, values)
        except ConfigError as exc:
            assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        else:
            assert isinstance(cfg, TrainConfig) and not validate(cfg)

    check()
