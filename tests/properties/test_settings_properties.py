"""Properties of the app settings (core.settings): environment variables and the TOML file.

tests/core/test_settings.py proves precedence and one fixed list of problems by example. Here:
any environment mapping and any TOML text give Settings or one SettingsError (never another
exception: the config path may be a folder, hold a NUL or nest 5000 arrays deep); valid values
written any way a person would (spaces, upper case, yes/on/1) round-trip through both the
environment and TOML; and k bad variables give at least k problems, each naming its variable.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.settings import DEVICES, ENV_PREFIX, Settings, SettingsError, load_settings
from tests.properties.strategies import odd_text

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FIELDS = [
    "data_dir", "work_dir", "model_cache", "base_model", "adapter", "database_url", "device",
    "max_input_chars", "max_new_tokens", "generations_per_hour", "allow_self_registration",
]


def _outcome(**kwargs):
    try:
        return load_settings(**kwargs)
    except SettingsError as exc:
        assert exc.problems and all(isinstance(p, str) and p and len(p) < 600 for p in exc.problems)
        assert str(exc).startswith("Invalid settings (")
        return exc


@FAST
@given(env=st.dictionaries(
    st.one_of(st.sampled_from([ENV_PREFIX + f.upper() for f in FIELDS]), st.text(max_size=12).map(ENV_PREFIX.__add__)),
    st.one_of(st.text(max_size=40), odd_text, st.sampled_from(["", " ", "\x00", "~nobody_here/x", "9" * 5000])),
    max_size=6,
))
def test_any_environment_gives_settings_or_one_settings_error(env, tmp_path):
    env = {k: v for k, v in env.items() if k != "MEDSTUDY_CONFIG"}
    env.setdefault("MEDSTUDY_WORK_DIR", str(tmp_path))
    result = _outcome(env=env)
    if isinstance(result, Settings):
        assert result.device in DEVICES


@pytest.mark.parametrize("target", ["folder", "nul", "deep", "binary", "missing"])
def test_unreadable_or_odd_config_files_are_one_clear_problem(tmp_path, target):
    path = {"folder": tmp_path, "nul": Path("bad\x00name.toml"), "missing": tmp_path / "none.toml"}.get(target)
    if target == "deep":
        path = tmp_path / "deep.toml"
        path.write_text("x = " + "[" * 5000 + "]" * 5000)
    elif target == "binary":
        path = tmp_path / "bin.toml"
        path.write_bytes(b"\xff\xfe\x00")
    for kwargs in ({"env": {}, "config_file": path}, {"env": {"MEDSTUDY_CONFIG": str(path)}}):
        with pytest.raises(SettingsError) as info:
            load_settings(**kwargs)
        assert len(info.value.problems) == 1 and "config file" in info.value.problems[0]


@FAST
@given(text=st.one_of(st.text(max_size=200), odd_text,
                      st.lists(st.sampled_from(['device = "cpu"', "max_new_tokens = 5", "[t]", "x=1", '"a"=',
                                                "allow_self_registration = yes", "work_dir = 3", "= =", "\x00"]),
                               max_size=5).map("\n".join)))
def test_any_toml_text_gives_settings_or_one_settings_error(text, tmp_path):
    path = tmp_path / "any.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _outcome(env={"MEDSTUDY_WORK_DIR": str(tmp_path)}, config_file=path)


def _spell_bool(value: bool, style: int) -> str:
    word = ["true", "yes", "on", "1"][style] if value else ["false", "no", "off", "0"][style]
    return f"  {word.upper() if style % 2 else word} "


valid_values = st.fixed_dictionaries({
    "device": st.sampled_from(DEVICES),
    "max_input_chars": st.integers(100, 200_000),
    "max_new_tokens": st.integers(1, 8192),
    "generations_per_hour": st.integers(0, 100_000),
    "allow_self_registration": st.booleans(),
    "base_model": st.sampled_from(["embedded", "HuggingFaceTB/SmolLM2-135M-Instruct", "org/model-ñ"]),
    "database_url": st.sampled_from(["", "sqlite:///x.db", "postgresql+psycopg://u@h/db"]),
})


@FAST
@given(values=valid_values, style=st.integers(0, 3), via=st.sampled_from(["env", "toml"]))
def test_valid_values_round_trip_through_environment_and_toml(values, style, via, tmp_path):
    if via == "env":
        env = {ENV_PREFIX + k.upper(): (_spell_bool(v, style) if isinstance(v, bool) else f" {v} ")
               for k, v in values.items()}
        env["MEDSTUDY_WORK_DIR"] = str(tmp_path)
        got = load_settings(env=env)
    else:
        path = tmp_path / "ok.toml"
        # JSON string and number literals are valid TOML basic strings / integers.
        path.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items()), encoding="utf-8")
        got = load_settings(env={"MEDSTUDY_WORK_DIR": str(tmp_path)}, config_file=path)
    for key, value in values.items():
        assert getattr(got, key) == value, key


BAD = {
    "MEDSTUDY_DEVICE": "tpu",
    "MEDSTUDY_MAX_INPUT_CHARS": "5",
    "MEDSTUDY_MAX_NEW_TOKENS": "9" * 5000,
    "MEDSTUDY_GENERATIONS_PER_HOUR": "-1",
    "MEDSTUDY_ALLOW_SELF_REGISTRATION": "perhaps",
    "MEDSTUDY_DATABASE_URL": "not a url",
    "MEDSTUDY_ADAPTER": "/no/such/adapter\x00",
    "MEDSTUDY_DATA_DIR": "\x00",
    "MEDSTUDY_MODEL_CACHE": "~no_such_user_xyz/cache",
    "MEDSTUDY_BASE_MODEL": "",
    "MEDSTUDY_COLOUR": "blue",
}


@FAST
@given(chosen=st.sets(st.sampled_from(sorted(BAD)), min_size=1))
def test_every_bad_variable_is_reported_at_once_naming_it(chosen, tmp_path):
    env = {k: BAD[k] for k in chosen} | {"MEDSTUDY_WORK_DIR": str(tmp_path)}
    with pytest.raises(SettingsError) as info:
        load_settings(env=env)
    problems = info.value.problems
    assert len(problems) >= len(chosen)
    for key in chosen:
        field = key[len(ENV_PREFIX):].lower()
        assert any(field in p or key in p for p in problems), (key, problems)
    assert all(len(p) < 300 for p in problems)  # the 5000-digit value is not echoed in full
