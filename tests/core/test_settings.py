"""Settings: defaults, TOML + environment precedence, and one message listing every problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import PROJECT_ROOT, Settings, SettingsError, load_settings


def test_defaults_point_at_shared_data_and_embedded_model():
    s = load_settings(env={})
    assert s.data_dir == PROJECT_ROOT.parent / "shared" / "data" / "raw"
    assert s.base_model == "embedded"
    assert s.resolved_database_url == f"sqlite:///{PROJECT_ROOT / '.work' / 'medstudy.db'}"
    assert s.prepared_dir == s.work_dir / "data"


def test_environment_overrides_toml_which_overrides_defaults(tmp_path):
    cfg = tmp_path / "medstudy.toml"
    cfg.write_text('base_model = "meta-llama/Llama-3.2-1B-Instruct"\nmax_new_tokens = 256\nwork_dir = "w"\n')
    s = load_settings(env={"MEDSTUDY_MAX_NEW_TOKENS": "300", "MEDSTUDY_DEVICE": "cpu"}, config_file=cfg)
    assert s.base_model == "meta-llama/Llama-3.2-1B-Instruct"  # from TOML
    assert s.max_new_tokens == 300  # env wins over TOML
    assert s.device == "cpu"
    assert s.work_dir == PROJECT_ROOT / "w"  # relative paths resolve against the project root


def test_config_file_named_by_environment(tmp_path):
    cfg = tmp_path / "other.toml"
    cfg.write_text("allow_self_registration = true\n")
    assert load_settings(env={"MEDSTUDY_CONFIG": str(cfg)}).allow_self_registration is True


def test_every_problem_is_reported_in_one_error(tmp_path):
    env = {
        "MEDSTUDY_DEVICE": "tpu",
        "MEDSTUDY_MAX_NEW_TOKENS": "lots",
        "MEDSTUDY_MAX_INPUT_CHARS": "5",
        "MEDSTUDY_ADAPTER": str(tmp_path / "missing-adapter"),
        "MEDSTUDY_DATABASE_URL": "not a url",
        "MEDSTUDY_ALLOW_SELF_REGISTRATION": "perhaps",
        "MEDSTUDY_COLOUR": "blue",
    }
    with pytest.raises(SettingsError) as info:
        load_settings(env=env)
    problems = info.value.problems
    text = str(info.value)
    for name in ("device", "max_new_tokens", "max_input_chars", "adapter", "database_url",
                 "allow_self_registration", "MEDSTUDY_COLOUR"):
        assert sum(name in p for p in problems) >= 1, name
        assert name in text
    assert len(problems) == 7
    assert text.startswith("Invalid settings (7 problems)")


def test_malformed_toml_is_a_clear_problem(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("base_model = \n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(env={}, config_file=cfg)


def test_unknown_toml_key_and_missing_config_file(tmp_path):
    cfg = tmp_path / "x.toml"
    cfg.write_text('modle = "typo"\n')
    with pytest.raises(SettingsError, match="unknown setting 'modle'"):
        load_settings(env={}, config_file=cfg)
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(env={"MEDSTUDY_CONFIG": str(tmp_path / "nope.toml")})


def test_local_base_model_folder_must_exist(tmp_path):
    with pytest.raises(SettingsError, match="base_model"):
        load_settings(env={"MEDSTUDY_BASE_MODEL": str(tmp_path / "no-model")})
    (tmp_path / "model").mkdir()
    assert load_settings(env={"MEDSTUDY_BASE_MODEL": str(tmp_path / "model")}).base_model == str(tmp_path / "model")


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        Settings().device = "cuda"  # type: ignore[misc]


def test_torch_threads_is_range_checked(tmp_path):
    with pytest.raises(SettingsError, match="torch_threads"):
        load_settings({"MEDSTUDY_TORCH_THREADS": "-1"}, config_file=None)
    assert load_settings({"MEDSTUDY_TORCH_THREADS": "2"}, config_file=None).torch_threads == 2
