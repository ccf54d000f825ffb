"""Training and evaluation: the launcher's processes and their database records, kept in step.

The trainer writes files and never the database (``trainer.launch`` starts it and reads its
files); this module is the app's single writer of training runs and adapters and the only caller
of ``trainer.launch``. Functions take the engine and settings explicitly, open one short session
per unit of work, and raise :class:`JobError` (or :class:`LaunchError` / ``ConfigError``) with
messages a page can show as they are.

A training config is checked once on its way to a run (:func:`launch_run`: the form's values,
the trainer's own validation, the run directory) and saved once, into the new run directory; the
trainer process reads that file. :func:`check_config` is the same check for the form's "Check".
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from core import adapters as adapter_lib
from core import llamacpp
from core import runs as runs_lib
from core.metrics import read_metrics
from core.model import DEFAULT_ADAPTER_DIR, ModelError, read_adapter_card
from core.settings import EMBEDDED_MODEL, Settings
from services.generation import Refused  # noqa: F401  (the compare view's refusal, so pages need not import it twice)
from storage import training
from storage.models import AdapterRecord, TrainingRun  # noqa: F401  (TrainingRun: the admin page's type)
from trainer import launch
from core import estimate as estimate_lib
from core.atomic import atomic_write_text
from trainer.config import (
    CONFIG_VERSION,
    ConfigError,
    Preset,
    TrainConfig,
    build_config,
    builtin_presets,
    config_warnings,
    preset_config,
    preset_diff,
)
from trainer.launch import ADAPTER_DIR, COMPLETED, METRICS_FILE, RUNNING, STOPPED, STOPPING  # the run-directory states

log = logging.getLogger(__name__)

# What the admin page reads from the launcher, so that pages never import it.
LaunchError = launch.LaunchError
JobBusyError = launch.JobBusyError
Job = launch.Job
DatasetPlan = launch.DatasetPlan
RunState = launch.RunState
EVALUATE, FAILED = launch.EVALUATE, launch.FAILED
describe = launch.describe
log_tail = launch.log_tail
cli_equivalent = launch.cli_equivalent
dataset_plan = launch.dataset_plan
CalibrationError = launch.CalibrationError
CALIBRATION_STEPS = launch.CALIBRATION_STEPS
PRESET_FILE = "preset.json"
"""Written into a run directory by :func:`launch_run`: which preset the form started from (for the runs' diff)."""

UNSETTLED = ("queued", "running", "stopping")
"""Database statuses that the run directory may have moved past."""


class JobError(RuntimeError):
    """A job or adapter request that cannot be done; the message is safe to show."""


def registry_dir(settings: Settings) -> Path:
    """Where finished runs' adapters are copied to be served (``<work_dir>/adapters``)."""
    return settings.work_dir / "adapters"


def exports_dir(settings: Settings) -> Path:
    return settings.work_dir / "exports"


def _get_run(engine: Engine, run_id: int) -> TrainingRun:
    with Session(engine) as session:
        run = training.get_training_run(session=session, run_id=run_id)
    if run is None:
        raise JobError(f"No training run with id {run_id}.")
    return run


def _get_adapter(engine: Engine, adapter_id: int) -> AdapterRecord:
    with Session(engine) as session:
        record = session.get(AdapterRecord, adapter_id)
    if record is None:
        raise JobError(f"No adapter with id {adapter_id}.")
    return record


def run_name(run: TrainingRun) -> str:
    return Path(run.run_dir).name


# -- training runs ---------------------------------------------------------------------------------------


def check_config(values: Mapping[str, Any]) -> tuple[TrainConfig, list[str]]:
    """The config the form's raw ``values`` describe, and every reason it cannot be launched.

    The same messages as ``python -m trainer``: conversion problems, the trainer's validation, then
    the run directory.
    """
    cfg, problems = build_config(values)
    return cfg, problems + launch.run_problems(cfg)


def launch_run(engine: Engine, settings: Settings, config: TrainConfig | Mapping[str, Any], *, user_id: int | None,
               command: Sequence[str] | None = None, preset: Preset | None = None) -> TrainingRun:
    """Check the config, create its run directory (saving ``config.yaml`` there), start the trainer, record the run.

    ``config`` is a ``TrainConfig`` or the form's raw values; ``preset`` the preset the form was loaded from
    (kept as ``preset.json`` in the run directory: the runs overview shows what was changed). Raises ``ConfigError`` listing every
    problem (checked once, here, before anything is created), :class:`JobBusyError` naming the
    running job. ``command`` replaces the trainer (tests).
    """
    cfg, problems = check_config(config) if not isinstance(config, TrainConfig) else (
        config, launch.run_problems(config))
    if problems:
        raise ConfigError(problems)
    running = launch.active_job(settings.runs_dir)
    if running is not None:  # checked before creating a run directory; start_training checks again under a lock
        raise launch.JobBusyError(f"{launch.describe(running)} is still running: stop it or wait for it to finish "
                                  "before starting another job.")
    final = launch.create_run_dir(cfg)
    if preset is not None:
        atomic_write_text(Path(final.output_dir) / PRESET_FILE, json.dumps(
            {"name": preset.name, "title": preset.title, "builtin": preset.builtin,
             "config": preset_config(preset)[0].to_dict()}, indent=2))
    job = launch.start_training(Path(final.output_dir), jobs_dir=settings.runs_dir, command=command)
    with Session(engine) as session:
        return training.create_training_run(session=session, run_dir=final.output_dir, config=final.to_dict(),
                                            status="running", pid=job.pid, started_by_id=user_id)


def resume_run(engine: Engine, settings: Settings, run_id: int, *, command: Sequence[str] | None = None) -> TrainingRun:
    """Continue a stopped or interrupted run from its last complete checkpoint."""
    run = sync_run(engine, settings, run_id)
    state = launch.run_state(Path(run.run_dir))
    if not state.resumable:
        why = "it has no complete checkpoint" if state.checkpoint is None else f"it is {state.state}"
        raise JobError(f"Run {run_name(run)} cannot be resumed: {why}.")
    job = launch.start_training(Path(run.run_dir), jobs_dir=settings.runs_dir, resume=True, command=command)
    with Session(engine) as session:
        return training.update_training_run(session=session, run_id=run_id, status="running", pid=job.pid)


def stop_run(engine: Engine, run_id: int) -> TrainingRun:
    """Stop & save: the trainer finishes its step, saves a checkpoint and the adapter, and exits."""
    run = _get_run(engine, run_id)
    state = launch.run_state(Path(run.run_dir))
    if not state.active:
        raise JobError(f"Run {run_name(run)} is not running ({state.state}).")
    launch.stop(Path(run.run_dir))  # refuses while the trainer is still starting
    with Session(engine) as session:
        return training.update_training_run(session=session, run_id=run_id, status=STOPPING)


def cancel_run(engine: Engine, run_id: int, *, grace_s: float = launch.CANCEL_GRACE_S) -> TrainingRun:
    """Terminate the run's process tree now (no final save) and mark it cancelled."""
    run = _get_run(engine, run_id)
    launch.cancel(Path(run.run_dir), grace_s=grace_s)
    metrics = runs_lib.final_metrics(read_metrics(Path(run.run_dir) / METRICS_FILE))
    with Session(engine) as session:
        return training.update_training_run(session=session, run_id=run_id, status=launch.CANCELLED,
                                            finished_at=datetime.now(UTC), final_metrics=metrics)


def sync_run(engine: Engine, settings: Settings, run_id: int) -> TrainingRun:
    """Bring the database record in line with the run directory; returns the (possibly updated) run.

    A run whose process is gone mid-run becomes ``interrupted``; a completed run's adapter is
    registered. Writes only when something changed.
    """
    run = _get_run(engine, run_id)
    state = launch.run_state(Path(run.run_dir))
    if state.state == run.status and (state.active or run.final_metrics is not None):
        return run
    if run.status == STOPPING and state.state == RUNNING:
        return run  # asked to stop; the trainer notices at the end of its step
    fields: dict[str, Any] = {"status": state.state}
    if state.pid:
        fields["pid"] = state.pid
    if state.final:
        fields["finished_at"] = datetime.now(UTC)
        fields["final_metrics"] = runs_lib.final_metrics(read_metrics(Path(run.run_dir) / METRICS_FILE))
    with Session(engine) as session:
        run = training.update_training_run(session=session, run_id=run_id, **fields)
    if state.state == COMPLETED and state.has_adapter:
        try:
            register_run_adapter(engine, settings, run_id)
        except (JobError, ModelError, OSError) as exc:  # the run stays completed; the admin can register it later
            log.warning("adapter of run %s not registered: %s", run_name(run), exc)
    return run


def reconcile(engine: Engine, settings: Settings) -> list[TrainingRun]:
    """Settle every run the database says is running (or has no final numbers yet): the ones whose process
    is gone become interrupted, or take the final state they wrote. Returns the runs whose status changed."""
    with Session(engine) as session:
        runs = training.list_training_runs(session=session)
    changed = []
    for run in runs:
        if run.status not in UNSETTLED and run.final_metrics is not None:
            continue
        assert run.id is not None
        updated = sync_run(engine, settings, run.id)
        if updated.status != run.status:
            changed.append(updated)
    ensure_default_adapter(engine)
    return changed


def list_runs(engine: Engine) -> list[TrainingRun]:
    """Every run, newest first, as recorded (see :func:`settled_runs` for runs brought up to date first)."""
    with Session(engine) as session:
        return training.list_training_runs(session=session)


def settled_runs(engine: Engine, settings: Settings) -> list[TrainingRun]:
    """Every run, newest first, after settling the unsettled ones with :func:`reconcile`."""
    reconcile(engine, settings)
    return list_runs(engine)


@dataclass(frozen=True)
class RunView:
    """Everything the live view shows about one run."""

    run: TrainingRun
    state: launch.RunState
    progress: runs_lib.Progress
    curves: runs_lib.Curves
    log_tail: str
    command: str


def run_view(engine: Engine, settings: Settings, run_id: int, *, log_lines: int = 30) -> RunView:
    """Sync the run, then read its state, metrics and log."""
    run = sync_run(engine, settings, run_id)
    run_dir = Path(run.run_dir)
    state = launch.run_state(run_dir)
    records = read_metrics(run_dir / METRICS_FILE)
    job = launch.read_job(run_dir)
    return RunView(
        run=run, state=state,
        progress=runs_lib.progress(records, step=state.step, total_steps=state.total_steps, active=state.active),
        curves=runs_lib.curves(records),
        log_tail=launch.log_tail(run_dir / launch.LOG_FILE, lines=log_lines),
        command=job.command_line if job else "",
    )


def measured_throughput(engine: Engine, model_name: str) -> tuple[float, str] | None:
    """The training throughput (tokens/s) of the newest run of ``model_name`` that measured one, with its name."""
    for run in list_runs(engine):
        if (run.config or {}).get("model_name") != model_name:
            continue
        tps = runs_lib.measured_tokens_per_s(read_metrics(Path(run.run_dir) / METRICS_FILE))
        if tps:
            return tps, run_name(run)
    return None


# -- adapters --------------------------------------------------------------------------------------------


def ensure_default_adapter(engine: Engine) -> AdapterRecord | None:
    """Register the shipped adapter (once) so it can be picked, activated and downloaded like the others."""
    if not adapter_lib.has_card(DEFAULT_ADAPTER_DIR):
        return None
    path = str(DEFAULT_ADAPTER_DIR)
    with Session(engine) as session:
        existing = next((a for a in training.list_adapters(session=session) if a.path == path), None)
        if existing is not None:
            return existing
        card = read_adapter_card(DEFAULT_ADAPTER_DIR)
        return training.register_adapter(session=session, path=path, name=DEFAULT_ADAPTER_DIR.name,
                                          base_model=str(card.get("base_model", "")), card=card)


def register_run_adapter(engine: Engine, settings: Settings, run_id: int) -> AdapterRecord:
    """Copy a finished run's ``adapter/`` into the registry and record it.

    A completed run registers as its run name; a stopped one as ``<run>-step<N>``.
    """
    run = _get_run(engine, run_id)
    source = Path(run.run_dir) / ADAPTER_DIR
    if not adapter_lib.has_card(source):
        raise JobError(f"Run {run_name(run)} has no saved adapter yet.")
    card = read_adapter_card(source)
    name = adapter_lib.safe_name(run_name(run))
    if card.get("status") == STOPPED:
        name = f"{name}-step{(card.get('training') or {}).get('global_step', 0)}"
    target = adapter_lib.snapshot(source, registry_dir(settings) / name)
    with Session(engine) as session:
        return training.register_adapter(session=session, path=str(target), name=name,
                                         base_model=str(card.get("base_model", "")), card=card, training_run_id=run_id)


def list_adapters(engine: Engine) -> list[AdapterRecord]:
    with Session(engine) as session:
        return training.list_adapters(session=session)


def activate(engine: Engine, settings: Settings, adapter_id: int | None) -> AdapterRecord | None:
    """Serve this adapter from now on (None: the configured default); refuses one of another base."""
    if adapter_id is not None:
        record = _get_adapter(engine, adapter_id)
        try:
            card = read_adapter_card(Path(record.path))
        except ModelError as exc:
            raise JobError(f"Adapter {record.name} cannot be served: {exc}") from exc
        why = adapter_lib.mismatch(card, adapter_lib.base_identity(settings))
        if why:
            raise JobError(f"Adapter {record.name} cannot be served: {why}.")
    with Session(engine) as session:
        return training.activate_adapter(session=session, adapter_id=adapter_id)


# -- evaluation ------------------------------------------------------------------------------------------


def eval_dir(settings: Settings, record: AdapterRecord) -> Path:
    """Where an adapter's evaluation writes: its own folder when it lives in the work dir, else ``<work_dir>/evals``.

    (The shipped adapter's folder is part of the project and keeps its published report.)
    """
    path = Path(record.path)
    if path.resolve().is_relative_to(settings.work_dir.resolve()):
        return path
    return settings.work_dir / "evals" / adapter_lib.safe_name(record.name)


def start_evaluation(engine: Engine, settings: Settings, adapter_id: int, *, limit: int | None,
                     max_new_tokens: int, mcq_per_source: int, command: Sequence[str] | None = None) -> launch.Job:
    record = _get_adapter(engine, adapter_id)
    return launch.start_evaluation(
        Path(record.path), output_dir=eval_dir(settings, record), jobs_dir=settings.runs_dir, label=record.name,
        command=command, work_dir=str(settings.work_dir), limit=limit, max_new_tokens=max_new_tokens,
        mcq_per_source=mcq_per_source,
    )


def eval_report(settings: Settings, record: AdapterRecord) -> tuple[dict[str, Any], Path] | None:
    """The newest ``eval.json`` for an adapter (its evaluation folder, else its own folder) and where it is."""
    import json

    found = []
    for folder in dict.fromkeys([eval_dir(settings, record), Path(record.path)]):
        path = folder / "eval.json"
        if path.is_file():
            found.append((path.stat().st_mtime, path))
    for _, path in sorted(found, reverse=True):
        try:
            return json.loads(path.read_text(encoding="utf-8")), path.parent
        except (OSError, ValueError):
            continue
    return None


def export_merged(settings: Settings, record: AdapterRecord, base: Any) -> Path:
    """Merge an adapter into a full-precision copy of ``base`` (a ``core.model.BaseModel``) under ``<work_dir>/exports``."""
    why = adapter_lib.mismatch(record.card or {}, base.identity)
    if why:
        raise JobError(f"Adapter {record.name} cannot be merged into {base.identity}: {why}.")
    return adapter_lib.export_merged(base, Path(record.path), exports_dir(settings) / f"{adapter_lib.safe_name(record.name)}-merged")


def export_gguf(settings: Settings, record: AdapterRecord, *, merged: bool) -> Path:
    """The adapter as a GGUF file for llama.cpp, Ollama and LM Studio, under ``<work_dir>/exports``.

    ``merged``: the base model with the adapter merged in, quantised to Q8_0, one self-contained file
    (tokenizer and chat template copied from the embedded GGUF); else the LoRA alone as a GGUF adapter
    to load on top of the base GGUF (``--lora``). Made once per adapter folder content; only the
    embedded base ships as a GGUF, so other bases are refused with a message.
    """
    from core import gguf_export
    from core.model import find_embedded_gguf, sha256_file

    if settings.base_model != EMBEDDED_MODEL:
        raise JobError("GGUF export needs a GGUF base model: it works with the embedded SmolLM2 base "
                       f"(base_model = {EMBEDDED_MODEL!r}); use \"Export merged model\" for other bases.")
    why = adapter_lib.mismatch(record.card or {}, adapter_lib.base_identity(settings))
    if why:
        raise JobError(f"Adapter {record.name} does not fit the embedded base: {why}.")
    base_gguf = find_embedded_gguf()
    digest = llamacpp.adapter_content_hash(Path(record.path), sha256_file(base_gguf))[:12]
    name = adapter_lib.safe_name(record.name)
    out = exports_dir(settings) / f"{name}-gguf" / f"{name}-{digest}.{'q8_0' if merged else 'lora'}.gguf"
    if out.is_file():
        return out
    try:
        export = gguf_export.export_merged_gguf if merged else gguf_export.export_lora_gguf
        export(Path(record.path), out, base_gguf=base_gguf)
    except ModelError as exc:
        raise JobError(str(exc)) from exc
    return out


def active_job(settings: Settings) -> launch.Job | None:
    """The training or evaluation job running now, if any."""
    return launch.active_job(settings.runs_dir)


def evaluation_running(job: launch.Job) -> bool:
    return launch.evaluation_state(Path(job.folder)).state == launch.RUNNING


def evaluation_failure(settings: Settings, record: AdapterRecord) -> str | None:
    """Why the adapter's last evaluation failed; None when it did not (or never ran)."""
    state = launch.evaluation_state(eval_dir(settings, record))
    return (state.reason or "") if state.state == launch.FAILED else None


# -- presets: built-in recipes and the admin's saved ones --------------------------------------------


class PresetError(JobError):
    """A preset that cannot be found, read or saved; the message says which and why."""


def presets_dir(settings: Settings) -> Path:
    """Where the admin's saved presets live: one JSON file each (``<work_dir>/presets/<name>.json``)."""
    return settings.work_dir / "presets"


def preset_slug(title: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", title.strip().lower()).strip("-")[:60]
    return slug


def _read_saved(path: Path) -> tuple[Preset | None, list[str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, [f"saved preset {path.name} cannot be read ({type(exc).__name__}: {exc}); the file is left as it is"]
    if not isinstance(data, dict) or not isinstance(data.get("values"), dict):
        return None, [f"saved preset {path.name} is not a preset (expected an object with 'values'); the file is left "
                      "as it is"]
    version = data.get("config_version", 1)
    return Preset(name=path.stem, title=str(data.get("title") or path.stem), description=str(data.get("description", "")),
                  values=data["values"], builtin=False, version=version if isinstance(version, int) else 1), []


def list_presets(settings: Settings) -> tuple[dict[str, Preset], list[str]]:
    """Built-in presets, then the saved ones (by title), keyed by name; and a problem for each file that cannot be read."""
    out: dict[str, Preset] = {}
    problems: list[str] = []
    for name, (preset, errs) in builtin_presets().items():
        if preset is not None:
            out[name] = preset
        problems += errs
    folder = presets_dir(settings)
    saved = sorted(folder.glob("*.json")) if folder.is_dir() else []
    for path in saved:
        preset, errs = _read_saved(path)
        problems += errs
        if preset is not None and preset.name not in out:
            out[preset.name] = preset
    return out, problems


def get_preset(settings: Settings, name: str) -> Preset:
    """The preset called ``name``; :class:`PresetError` (listing the known ones) when there is none."""
    presets, problems = list_presets(settings)
    if name in presets:
        return presets[name]
    unreadable = [p for p in problems if f" {name}.json " in p or f"{name}.json" in p]
    if unreadable:
        raise PresetError(unreadable[0])
    raise PresetError(f"No preset named {name!r}. Known presets: {', '.join(sorted(presets)) or 'none'}.")


@dataclass(frozen=True)
class LoadedPreset:
    """A preset as the form takes it: the config, and what could not be carried over."""

    preset: Preset
    config: TrainConfig
    problems: list[str]
    """Keys or values the trainer refuses (those fields keep their defaults)."""
    notes: list[str]
    """Older keys renamed or left out."""


def load_preset(settings: Settings, name: str) -> LoadedPreset:
    preset = get_preset(settings, name)
    cfg, problems, notes = preset_config(preset)
    return LoadedPreset(preset, cfg, problems, notes)


def save_preset(settings: Settings, title: str, values: Mapping[str, Any], *, description: str = "") -> Preset:
    """Save the form's values as a named preset (a new one, or an edit of the saved one with that name).

    Checked with the trainer's conversion first (:class:`ConfigError` lists every problem); only the
    fields that differ from the trainer's defaults are kept, so later default changes reach the preset.
    Built-in names cannot be overwritten.
    """
    slug = preset_slug(title)
    if not slug:
        raise PresetError("Give the preset a name (letters or digits).")
    if slug in builtin_presets():
        raise PresetError(f"{title!r} is the name of a built-in preset; choose another name.")
    cfg, problems = build_config(values)
    if problems:
        raise ConfigError(problems)
    default = TrainConfig().to_dict()
    changed = {k: v for k, v in cfg.to_dict().items() if v != default[k] and k != "resume"}
    data = {"title": title.strip(), "description": description.strip(), "config_version": CONFIG_VERSION,
            "saved_at": datetime.now(UTC).isoformat(timespec="seconds"), "values": changed}
    path = presets_dir(settings) / f"{slug}.json"
    try:
        atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise PresetError(f"Could not save preset {title!r} to {path}: {exc}") from exc
    return Preset(name=slug, title=data["title"], description=data["description"], values=changed, builtin=False)


def delete_preset(settings: Settings, name: str) -> None:
    if name in builtin_presets():
        raise PresetError(f"{name!r} is a built-in preset; it cannot be deleted.")
    path = presets_dir(settings) / f"{name}.json"
    if not path.is_file():
        raise PresetError(f"No saved preset named {name!r}.")
    path.unlink()


def run_preset(run: TrainingRun) -> dict[str, Any] | None:
    """The preset a run started from (``preset.json`` in its run directory), None when it has none or it is gone."""
    try:
        data = json.loads((Path(run.run_dir) / PRESET_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("config"), dict) else None


def settings_diff(run: TrainingRun) -> tuple[str, dict[str, tuple[Any, Any]]]:
    """What a run changed against its preset (or against the trainer's defaults when it had none)."""
    preset = run_preset(run)
    reference = preset["config"] if preset else TrainConfig().to_dict()
    label = str(preset.get("title")) if preset else "trainer defaults"
    return label, preset_diff(run.config or {}, reference)


# -- estimate before start -----------------------------------------------------------------------------

THROUGHPUT_FIELDS = ("model_name", "device", "quantization", "precision", "base_dtype", "fp32_upcast",
                     "attn_implementation", "liger", "torch_compile", "lora_r", "lora_target_modules", "batch_size",
                     "max_seq_len", "packing", "padding_free", "group_by_length", "optim", "gradient_checkpointing")
"""Settings that change tokens per second: a measurement is reused only for a config equal in all of them."""


def throughput_key(cfg: TrainConfig | Mapping[str, Any]) -> str:
    values = cfg.to_dict() if isinstance(cfg, TrainConfig) else dict(cfg)
    import hashlib

    text = json.dumps({k: values.get(k) for k in THROUGHPUT_FIELDS}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def calibration_dir(settings: Settings) -> Path:
    return settings.work_dir / "calibration"


def calibrate(settings: Settings, cfg: TrainConfig, *, steps: int = launch.CALIBRATION_STEPS,
              timeout_s: float = launch.CALIBRATION_TIMEOUT_S, command: Sequence[str] | None = None,
              ) -> estimate_lib.Throughput:
    """Time a few optimiser steps of ``cfg`` in a throwaway process (see ``trainer.launch.calibrate``) and keep
    the result for this machine (``<work_dir>/calibration/<settings key>.json``). Raises CalibrationError/JobBusyError."""
    result = launch.calibrate(cfg, jobs_dir=settings.runs_dir, folder_root=calibration_dir(settings), steps=steps,
                              timeout_s=timeout_s, command=command)
    measured_at = datetime.now(UTC)
    data = {"tokens_per_s": result.tokens_per_s, "startup_s": result.startup_s, "steps": result.steps,
            "wall_s": result.wall_s, "device": result.device, "measured_at": measured_at.isoformat(timespec="seconds"),
            "settings": {k: cfg.to_dict()[k] for k in THROUGHPUT_FIELDS}}
    atomic_write_text(calibration_dir(settings) / f"{throughput_key(cfg)}.json", json.dumps(data, indent=2))
    return _calibration_throughput(data)


def _calibration_throughput(data: Mapping[str, Any]) -> estimate_lib.Throughput:
    when = str(data.get("measured_at", ""))[:16].replace("T", " ")
    return estimate_lib.Throughput(
        tokens_per_s=float(data["tokens_per_s"]), startup_s=data.get("startup_s"), device=str(data.get("device", "")),
        basis=f"calibration on this machine ({data.get('steps')} steps of these settings, {when} UTC)")


def known_throughput(engine: Engine, settings: Settings, cfg: TrainConfig) -> estimate_lib.Throughput | None:
    """The newest measurement for settings like ``cfg``: a calibration, else an earlier run with the same
    throughput settings; None when neither exists."""
    key = throughput_key(cfg)
    path = calibration_dir(settings) / f"{key}.json"
    if path.is_file():
        try:
            return _calibration_throughput(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    for run in list_runs(engine):
        if throughput_key(run.config or {}) != key:
            continue
        records = read_metrics(Path(run.run_dir) / METRICS_FILE)
        tps = runs_lib.measured_tokens_per_s(records)
        if not tps:
            continue
        job = launch.read_job(Path(run.run_dir))
        start = next((r for r in records if r.get("event") == "start"), {})
        startup = (float(start["time"]) - job.started_ts if job and job.started_ts and
                   isinstance(start.get("time"), (int, float)) else None)
        return estimate_lib.Throughput(tokens_per_s=tps, startup_s=startup if startup and startup > 0 else None,
                                       basis=f"run {run_name(run)} on this machine (same model and batch settings)")
    return None


@dataclass(frozen=True)
class Projection:
    """The Check's numbers: the estimate, the warnings, and the device the run will use."""

    estimate: estimate_lib.Estimate
    warnings: list[str]
    device: str


def project(engine: Engine, settings: Settings, cfg: TrainConfig, plan: DatasetPlan) -> Projection:
    """Estimate ``cfg``'s run from its data plan and the known throughput, with every warning that applies."""
    from trainer.config import AUTO

    kept = [n for n in plan.lengths if n <= cfg.max_seq_len]
    has_eval = cfg.eval_file.strip().lower() != "none" and bool(plan.eval_examples)
    est = estimate_lib.estimate(kept, steps=plan.total_steps, batch_size=cfg.batch_size,
                                gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                                eval_examples=plan.eval_examples if has_eval else 0, eval_steps=cfg.eval_steps,
                                throughput=known_throughput(engine, settings, cfg))
    epoch_steps = runs_lib.estimate_steps(len(kept), batch_size=cfg.batch_size,
                                          gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                                          num_epochs=cfg.num_epochs, max_steps=-1)
    warnings = config_warnings(cfg, lengths=plan.lengths, epoch_steps=epoch_steps)
    device = cfg.device if cfg.device != AUTO else _auto_device()
    if cpu := estimate_lib.long_cpu_warning(est, device=device):
        warnings.append(cpu)
    return Projection(est, warnings, device)


def _auto_device() -> str:
    """What ``device: auto`` resolves to here (CUDA if torch sees one), without loading torch when it is absent."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# -- compare two models on one case ----------------------------------------------------------------


def comparison_backend(served: Any) -> Any:
    """An in-process backend (``core.serving.LocalBackend``) over a served model of ``app.resources``."""
    from core import serving

    return serving.LocalBackend(served, base_model=served.base.identity, adapter=served.adapter_name,
                                engine=f"{served.device}, {served.describe()}", adapter_problem=served.adapter_problem,
                                requested_adapter=served.requested_adapter)


def start_comparison(engine: Engine, *, user_id: int, sides: Sequence[tuple[str, Any]], case_text: str,
                     settings: Any, limit_per_hour: int) -> tuple[str, list[Any]]:
    """Start the same case on each side's backend; each run is saved to history by ``services.generation``
    when its stream ends, marked ``{"comparison": <id>, "side": <label>}`` so the pair stays linked.

    ``sides``: (label, backend) pairs. Returns the comparison id and one ``generation.Generation`` per side
    (consume their events in order). Raises ``generation.Refused`` when the hourly limit leaves too little room.
    """
    from services import generation

    comparison = uuid.uuid4().hex[:12]
    labels = [label for label, _ in sides]
    started = []
    for label, backend in sides:
        request = generation.Request(case_text=case_text, settings=settings, run_settings={
            "comparison": comparison, "side": label, "compared_with": [x for x in labels if x != label]})
        started.append(generation.start(engine, user_id=user_id, backend=backend, request=request,
                                        limit_per_hour=limit_per_hour))
    return comparison, started


# -- learn from an evaluation's samples ------------------------------------------------------------


def eval_samples(settings: Settings, record: AdapterRecord) -> list[dict[str, Any]]:
    """The per-item samples of the adapter's newest evaluation (``eval_samples.jsonl[.gz]``), [] when there are none."""
    from trainer.launch import read_eval_samples

    found = eval_report(settings, record)
    if found is None:
        return []
    return read_eval_samples(found[1])
