"""Start, watch, stop and cancel training and evaluation as background processes (no torch, no database).

The app calls this module; nothing here imports Streamlit or storage (the app records runs in
the database itself). A training job is::

    [sys.executable, "-m", "trainer", "--config", RUN_DIR/config.yaml]            (+ "--resume", "auto")

started without a shell, in the project root, in its own session (so its whole process group can
be terminated), with stdout and stderr appended to ``RUN_DIR/train.log``. The launcher writes
``RUN_DIR/job.json`` (command, pid, the pid's start time, when) next to the trainer's own
``status.json``; :func:`run_state` combines the two with whether the process still lives:

- trainer alive: the state it writes (``running``/``stopping``), ``running`` while it starts, and
  ``stopping`` once it has written a final state but has not exited yet;
- trainer gone: the final state it wrote (``completed``, ``stopped``, ``failed``); ``cancelled``
  when :func:`cancel` ended it; ``interrupted`` when it died mid-run without a final state
  (kill -9, a reboot, the machine running out of memory) -- resumable from its last complete
  checkpoint; ``failed`` when it exited before it started training (the log says why).

An evaluation job (``python -m trainer.evaluate``) writes ``eval_job.json`` and ``eval.log`` in
its output folder. Only one job of either kind runs at a time: ``JOBS_DIR/active_job.json``
names it, and :func:`start_training` / :func:`start_evaluation` refuse a second one with a
message naming the running one (an ``flock`` makes the check-and-start atomic across sessions).
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.atomic import atomic_write_text
from core.settings import PROJECT_ROOT
from trainer.checkpoint import checkpoints, last_complete_checkpoint
from trainer.config import AUTO, CONFIG_FILE, ConfigError, TrainConfig, save_config, validate
from trainer.status import (
    ADAPTER_DIR,
    COMPLETED,
    FAILED,
    FINAL_STATES,
    METRICS_FILE,
    RUNNING,
    STOPPED,
    STOPPING,
    now_iso,
    read_status,
    request_stop,
)

LOG_FILE = "train.log"
JOB_FILE = "job.json"
EVAL_LOG_FILE = "eval.log"
EVAL_JOB_FILE = "eval_job.json"
ACTIVE_FILE = "active_job.json"
LOCK_FILE = ".jobs.lock"

CANCELLED, INTERRUPTED = "cancelled", "interrupted"
"""States only the launcher knows (the trainer never writes them)."""
RUN_STATES = (RUNNING, STOPPING, STOPPED, COMPLETED, FAILED, CANCELLED, INTERRUPTED)
ACTIVE_STATES = (RUNNING, STOPPING)
RESUMABLE_STATES = (STOPPED, INTERRUPTED)
TRAIN, EVALUATE = "train", "evaluate"

STARTING_REASON = "starting (loading libraries)"
"""The reason while the launched process has not written its first status: a STOP file made now would be
removed by the trainer as stale, so "Stop & save" waits until it has started (Cancel works at any time)."""

CANCEL_GRACE_S = 5.0
"""How long :func:`cancel` waits after SIGTERM before SIGKILL."""

# Processes this Python process started: polling them reaps them, so a child killed with -9
# does not linger as a zombie that still answers ``kill(pid, 0)``.
_CHILDREN: dict[int, subprocess.Popen] = {}


class LaunchError(RuntimeError):
    """A job cannot be started or controlled; the message is safe to show as is."""


class JobBusyError(LaunchError):
    """Another job is running (the message names it)."""


# -- processes ---------------------------------------------------------------------------------------


def process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux ``/proc``), or None if unknown.

    Stored with the pid so a pid reused by an unrelated process after a restart is not mistaken
    for our trainer.
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces: split after it.
    fields_after_name = text[text.rfind(")") + 2:].split()
    try:
        return int(fields_after_name[19])  # field 22 overall
    except (IndexError, ValueError):
        return None


def _proc_state(pid: int) -> str | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()[0]


def pid_alive(pid: int | None, start_ticks: int | None = None) -> bool:
    """Whether ``pid`` is a live (not zombie) process, and the same one when ``start_ticks`` is given."""
    if not pid or pid <= 0:
        return False
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        return False
    if Path("/proc").is_dir():
        state = _proc_state(pid)
        if state is None or state in ("Z", "X", "x"):
            return False
        if start_ticks is not None and process_start_ticks(pid) != start_ticks:
            return False
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _returncode(pid: int) -> int | None:
    child = _CHILDREN.get(pid)
    return child.poll() if child is not None else None


def reap_children() -> None:
    """Collect every finished child of this process (keeps their return codes for :func:`run_state`)."""
    for child in list(_CHILDREN.values()):
        child.poll()


# -- small files -------------------------------------------------------------------------------------


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class Job:
    """A background process this module started (``job.json`` / ``eval_job.json``)."""

    kind: str
    """``train`` or ``evaluate``."""
    label: str
    """What the job works on: the run's or the adapter's name."""
    folder: str
    """The run directory (training) or the output folder (evaluation)."""
    command: list[str]
    pid: int
    pid_start: int | None
    started_at: str
    log: str
    started_ts: float = 0.0
    """``time.time()`` at the start (compared with file modification times)."""
    resume: bool = False
    cancelled_at: str | None = None
    returncode: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return pid_alive(self.pid, self.pid_start)

    @property
    def command_line(self) -> str:
        return shlex.join(self.command)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job | None:
        try:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except TypeError:
            return None


def _job_path(folder: Path, kind: str) -> Path:
    return Path(folder) / (JOB_FILE if kind == TRAIN else EVAL_JOB_FILE)


def read_job(folder: Path, kind: str = TRAIN) -> Job | None:
    data = _read_json(_job_path(folder, kind))
    return Job.from_dict(data) if data else None


def _save_job(job: Job) -> None:
    _write_json(_job_path(Path(job.folder), job.kind), asdict(job))


@contextmanager
def _jobs_lock(jobs_dir: Path) -> Iterator[None]:
    jobs_dir.mkdir(parents=True, exist_ok=True)
    with (jobs_dir / LOCK_FILE).open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def active_job(jobs_dir: Path) -> Job | None:
    """The job that is running now (training or evaluation), or None."""
    data = _read_json(Path(jobs_dir) / ACTIVE_FILE)
    job = Job.from_dict(data) if data else None
    return job if job is not None and job.alive else None


def describe(job: Job) -> str:
    what = "Training run" if job.kind == TRAIN else "Evaluation of"
    return f"{what} {job.label!r} (pid {job.pid}, started {job.started_at})"


def _spawn(
    *, kind: str, label: str, folder: Path, command: Sequence[str], log_path: Path, jobs_dir: Path,
    resume: bool = False, extra: dict[str, Any] | None = None,
) -> Job:
    """Start ``command`` in its own session with output appended to ``log_path``; one job at a time."""
    with _jobs_lock(Path(jobs_dir)):
        running = active_job(jobs_dir)
        if running is not None:
            raise JobBusyError(f"{describe(running)} is still running: stop it or wait for it to finish "
                               "before starting another job.")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            header = f"\n=== {now_iso()} {'resume' if resume else 'start'}: {shlex.join(command)}\n"
            log.write(header.encode())
            log.flush()
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            try:
                proc = subprocess.Popen(
                    list(command), cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True, env=env,
                )
            except OSError as exc:
                raise LaunchError(f"Could not start {command[0]}: {exc}") from exc
        _CHILDREN[proc.pid] = proc
        job = Job(kind=kind, label=label, folder=str(folder), command=list(command), pid=proc.pid,
                  pid_start=process_start_ticks(proc.pid), started_at=now_iso(), log=str(log_path),
                  started_ts=time.time(), resume=resume, extra=dict(extra or {}))
        _save_job(job)
        _write_json(Path(jobs_dir) / ACTIVE_FILE, asdict(job))
        return job


# -- training ----------------------------------------------------------------------------------------


def train_command(run_dir: Path, *, resume: bool = False) -> list[str]:
    """The exact command a training job runs (no shell)."""
    command = [sys.executable, "-m", "trainer", "--config", str(Path(run_dir) / CONFIG_FILE)]
    return command + (["--resume", AUTO] if resume else [])


def cli_equivalent(cfg: TrainConfig) -> str:
    """``python -m trainer`` with a flag for every setting that differs from the defaults."""
    default = TrainConfig()
    argv = ["python", "-m", "trainer"]
    for name, value in cfg.to_dict().items():
        if value == getattr(default, name) or name == "resume":
            continue
        shown = ",".join(value) if isinstance(value, list) else str(value)
        argv += [f"--{name}", shown]
    return shlex.join(argv)


def run_problems(cfg: TrainConfig) -> list[str]:
    """Every reason ``cfg`` cannot be launched: the trainer's own validation, this machine's runtime, the run directory."""
    problems = validate(cfg)
    if problems:
        return problems
    # The trainer runs on this machine: what its auto settings become here (a CUDA-only kernel or optimiser on a
    # CPU machine) is refused now, on the form, rather than by a failed run.
    from trainer.modeling import resolve_runtime

    try:
        resolve_runtime(cfg)
    except ConfigError as exc:
        return list(exc.problems)
    if cfg.resume:
        return ["resume: start a new run here; resume a stopped run from its page instead"]
    if cfg.output_dir:
        out = Path(cfg.output_dir).expanduser()
        if (out / METRICS_FILE).exists() or (out.is_dir() and checkpoints(out)):
            problems.append(f"output_dir: {out} already holds a run; resume it instead, or choose another output_dir")
    return problems


@dataclass(frozen=True)
class DatasetPlan:
    """What a config will train on, measured with the base model's tokenizer before launching."""

    train_file: str
    records: int
    lengths: list[int]
    """Tokens (prompt + completion, chat template applied) of every usable training example."""
    kept: int
    """Examples within max_seq_len (the trainer leaves longer ones out, never cuts them)."""
    skipped: dict[str, int]
    total_steps: int
    tokens_per_step: float
    """Mean kept example length x batch size x gradient accumulation."""
    eval_examples: int | None
    tokenizer: str
    sample: list[dict[str, Any]]


def dataset_plan(cfg: TrainConfig, *, sample: int = 5) -> DatasetPlan:
    """Read the training file as the trainer will, count tokens per example, and estimate the steps.

    Uses the trainer's own example builder and its leave-out rule, so the counts match the run.
    Raises ``trainer.dataset.DataError`` / ``core.model.ModelError`` with a message to show.
    """
    from core.model import load_tokenizer
    from core.runs import estimate_steps, preview_rows
    from trainer.dataset import load_examples, read_records
    from trainer.modeling import resolve_base_model

    train_file = cfg.resolved_train_file()
    examples = load_examples(train_file)
    eval_file = cfg.resolved_eval_file()
    n_eval = len(load_examples(eval_file).examples) if eval_file is not None and eval_file.is_file() else None
    base = resolve_base_model(cfg.model_name, work_dir=cfg.resolved_work_dir())
    tokenizer = load_tokenizer(base)
    texts = tokenizer.apply_chat_template([ex["prompt"] + ex["completion"] for ex in examples.examples],
                                          tokenize=False)
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    kept = [n for n in lengths if n <= cfg.max_seq_len]
    skipped = dict(examples.skipped)
    if len(kept) < len(lengths):
        skipped[f"longer than {cfg.max_seq_len} tokens"] = len(lengths) - len(kept)
    steps = estimate_steps(len(kept), batch_size=cfg.batch_size,
                           gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                           num_epochs=cfg.num_epochs, max_steps=cfg.max_steps)
    mean_kept = sum(kept) / len(kept) if kept else 0.0
    return DatasetPlan(
        train_file=str(train_file), records=examples.n_records, lengths=lengths, kept=len(kept), skipped=skipped,
        total_steps=steps, tokens_per_step=mean_kept * cfg.batch_size * cfg.gradient_accumulation_steps,
        eval_examples=n_eval, tokenizer=base.identity, sample=preview_rows(read_records(train_file), n=sample),
    )


def prepare_run(cfg: TrainConfig) -> TrainConfig:
    """Validate ``cfg``, give it absolute paths and a run directory, and save ``config.yaml`` there.

    Raises :class:`ConfigError` with every problem (the same messages as ``python -m trainer``).
    Returns the config as saved (``output_dir`` is the run directory).
    """
    problems = run_problems(cfg)
    if problems:
        raise ConfigError(problems)
    return create_run_dir(cfg)


def create_run_dir(cfg: TrainConfig) -> TrainConfig:
    """Give a config that passed :func:`run_problems` absolute paths and a run directory; save it there.

    Raises :class:`ConfigError` when the resolved run directory already holds a run.
    """
    from trainer.train import finalize_config  # light: torch is imported inside the trainer's functions

    final = finalize_config(cfg)
    run_dir = Path(final.output_dir)
    if (run_dir / METRICS_FILE).exists() or (run_dir.is_dir() and checkpoints(run_dir)):
        raise ConfigError([f"output_dir: {run_dir} already holds a run; choose another output_dir"])
    save_config(final, run_dir)
    return final


def start_training(
    run_dir: Path, *, jobs_dir: Path, resume: bool = False, command: Sequence[str] | None = None,
) -> Job:
    """Start the trainer on ``run_dir/config.yaml`` (``resume``: from its last complete checkpoint).

    Raises :class:`JobBusyError` when another job runs, :class:`LaunchError` when the run cannot
    start (no config, nothing to resume). ``command`` replaces the trainer (tests use a stub).
    """
    run_dir = Path(run_dir).resolve()
    if not (run_dir / CONFIG_FILE).is_file():
        raise LaunchError(f"{run_dir} has no {CONFIG_FILE}; prepare the run first")
    if resume:
        state = run_state(run_dir)
        if state.state in ACTIVE_STATES:
            raise LaunchError(f"Run {run_dir.name} is {state.state}; it cannot be resumed while it runs.")
        if last_complete_checkpoint(run_dir) is None:
            raise LaunchError(f"Run {run_dir.name} has no complete checkpoint to resume from.")
    argv = list(command) if command is not None else train_command(run_dir, resume=resume)
    return _spawn(kind=TRAIN, label=run_dir.name, folder=run_dir, command=argv, log_path=run_dir / LOG_FILE,
                  jobs_dir=jobs_dir, resume=resume)


def stop(run_dir: Path) -> Path:
    """Ask the trainer to finish its step, save a checkpoint and the adapter, and exit ("Stop & save")."""
    state = run_state(Path(run_dir))
    if state.starting:
        raise LaunchError("The trainer is still starting; ask again in a few seconds (or cancel it).")
    return request_stop(Path(run_dir))


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # the job leads its own session, so its group id is its pid
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        raise LaunchError(f"Not allowed to signal process group {pid}: {exc}") from exc


def _wait_dead(job: Job, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not job.alive:
            return True
        time.sleep(0.05)
    return not job.alive


def terminate(job: Job, *, grace_s: float = CANCEL_GRACE_S) -> None:
    """SIGTERM the job's process group, then SIGKILL it if still alive after ``grace_s`` seconds."""
    if not job.alive:
        return
    _signal_group(job.pid, signal.SIGTERM)
    if not _wait_dead(job, grace_s):
        _signal_group(job.pid, signal.SIGKILL)
        _wait_dead(job, 10.0)
    rc = _returncode(job.pid)
    if rc is not None:
        job.returncode = rc


def cancel(folder: Path, *, kind: str = TRAIN, grace_s: float = CANCEL_GRACE_S) -> Job:
    """Terminate a job's whole process tree and mark it cancelled (no checkpoint is waited for)."""
    job = read_job(Path(folder), kind)
    if job is None:
        raise LaunchError(f"No job was started in {folder}.")
    job.cancelled_at = now_iso()
    _save_job(job)  # first: a state read while it dies already says "cancelled", never "interrupted"
    terminate(job, grace_s=grace_s)
    _save_job(job)
    return job


@dataclass(frozen=True)
class RunState:
    """What a run is doing, from ``job.json``, ``status.json`` and whether its process lives."""

    state: str
    """One of :data:`RUN_STATES`."""
    reason: str
    pid: int | None
    alive: bool
    step: int | None
    total_steps: int | None
    checkpoint: str | None
    """The last complete checkpoint (what a resume starts from)."""
    has_adapter: bool

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def starting(self) -> bool:
        return self.state == RUNNING and self.reason == STARTING_REASON

    @property
    def stoppable(self) -> bool:
        """Whether "Stop & save" can be asked now (running, and past the trainer's own start-up)."""
        return self.state == RUNNING and not self.starting

    @property
    def resumable(self) -> bool:
        return self.state in RESUMABLE_STATES and self.checkpoint is not None

    @property
    def final(self) -> bool:
        return not self.active


def _last_log_line(path: Path) -> str:
    for line in reversed(log_tail(path, lines=30).splitlines()):
        if line.strip() and not line.startswith("==="):
            return line.strip()[:500]
    return ""


def run_state(run_dir: Path) -> RunState:
    """The run's state now (see the module docstring for the rules)."""
    run_dir = Path(run_dir)
    job = read_job(run_dir)
    status = read_status(run_dir) or {}
    ckpt = last_complete_checkpoint(run_dir) if run_dir.is_dir() else None
    has_adapter = (run_dir / ADAPTER_DIR / "adapter_config.json").is_file()
    step, total = status.get("step"), status.get("total_steps")

    def make(state: str, reason: str, pid: int | None, alive: bool) -> RunState:
        return RunState(state, reason, pid, alive, step if isinstance(step, int) else None,
                        total if isinstance(total, int) else None, str(ckpt) if ckpt else None, has_adapter)

    if not run_dir.is_dir():
        return make(FAILED, f"the run directory {run_dir} is gone", None, False)
    if job is None:  # started outside the app (the command line): trust status.json and its pid
        state = status.get("state")
        if state in FINAL_STATES:
            return make(state, status.get("reason", ""), status.get("pid"), False)
        if state in ACTIVE_STATES:
            if pid_alive(status.get("pid")):
                return make(state, status.get("reason", ""), status.get("pid"), True)
            return make(INTERRUPTED, "the trainer process is gone without a final status", status.get("pid"), False)
        return make(FAILED, "no status.json: the trainer never started here", None, False)

    alive = job.alive
    # status.json belongs to this launch only if the launched process wrote it.
    fresh = status.get("pid") == job.pid and str(status.get("updated_at", "")) >= job.started_at
    state = status.get("state") if fresh else None
    if job.cancelled_at:
        return make(CANCELLED, f"cancelled at {job.cancelled_at}", job.pid, alive)
    if alive:
        if state in ACTIVE_STATES:
            return make(state, status.get("reason", ""), job.pid, True)
        if state in FINAL_STATES:
            # Its final state is written but the process is still exiting (saving, tearing down torch):
            # still a running job, so nothing can start or resume on top of it yet.
            return make(STOPPING, f"{state} ({status.get('reason', '')}); waiting for the process to exit",
                        job.pid, True)
        return make(RUNNING, STARTING_REASON, job.pid, True)
    if state in FINAL_STATES:
        return make(state, status.get("reason", ""), job.pid, False)
    if state in ACTIVE_STATES:
        return make(INTERRUPTED, f"the trainer process (pid {job.pid}) died without saving a final state",
                    job.pid, False)
    rc = _returncode(job.pid)
    why = _last_log_line(Path(job.log)) or "no output"
    code = f" with exit code {rc}" if rc is not None else ""
    return make(FAILED, f"the trainer exited{code} before it started training: {why}", job.pid, False)


def log_tail(path: Path, *, lines: int = 40, max_bytes: int = 64_000) -> str:
    """The last ``lines`` lines of a log file (reads at most ``max_bytes`` from its end)."""
    try:
        with Path(path).open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace").replace("\r", "\n")
    return "\n".join(text.split("\n")[-lines - 1:]).strip("\n")


# -- evaluation --------------------------------------------------------------------------------------


def evaluate_command(
    adapter_dir: Path, *, output_dir: Path, base: str = "", work_dir: str = "", limit: int | None = None,
    max_new_tokens: int | None = None, mcq_per_source: int | None = None, device: str = "",
) -> list[str]:
    """The exact ``python -m trainer.evaluate`` command (no shell)."""
    argv = [sys.executable, "-m", "trainer.evaluate", "--adapter", str(adapter_dir), "--output", str(output_dir)]
    for flag, value in (("--base", base), ("--work_dir", work_dir), ("--limit", limit),
                        ("--max_new_tokens", max_new_tokens), ("--mcq_per_source", mcq_per_source),
                        ("--device", device)):
        if value not in (None, ""):
            argv += [flag, str(value)]
    return argv


def start_evaluation(
    adapter_dir: Path, *, output_dir: Path, jobs_dir: Path, label: str = "", command: Sequence[str] | None = None,
    **options: Any,
) -> Job:
    """Start the evaluation of ``adapter_dir`` in the background; results go to ``output_dir``.

    ``options`` are :func:`evaluate_command`'s (base, work_dir, limit, max_new_tokens,
    mcq_per_source, device). Raises :class:`JobBusyError` when another job runs.
    """
    adapter_dir, output_dir = Path(adapter_dir).resolve(), Path(output_dir).resolve()
    if not (adapter_dir / "adapter_config.json").is_file():
        raise LaunchError(f"{adapter_dir} is not an adapter folder (adapter_config.json is missing).")
    argv = list(command) if command is not None else evaluate_command(adapter_dir, output_dir=output_dir, **options)
    return _spawn(kind=EVALUATE, label=label or adapter_dir.name, folder=output_dir, command=argv,
                  log_path=output_dir / EVAL_LOG_FILE, jobs_dir=jobs_dir)


@dataclass(frozen=True)
class EvalState:
    """An evaluation job's state: ``none`` (never started here), running, completed, failed or cancelled."""

    state: str
    reason: str
    job: Job | None


def evaluation_state(output_dir: Path) -> EvalState:
    output_dir = Path(output_dir)
    job = read_job(output_dir, EVALUATE)
    if job is None:
        return EvalState("none", "", None)
    if job.alive:
        return EvalState(RUNNING, "evaluating", job)
    if job.cancelled_at:
        return EvalState(CANCELLED, f"cancelled at {job.cancelled_at}", job)
    rc = _returncode(job.pid)
    report = output_dir / "eval.json"
    try:
        written_after = report.stat().st_mtime >= job.started_ts
    except OSError:
        written_after = False
    if written_after and rc in (None, 0):
        return EvalState(COMPLETED, "report written", job)
    why = _last_log_line(Path(job.log)) or "no output"
    code = f" with exit code {rc}" if rc is not None else ""
    return EvalState(FAILED, f"the evaluation exited{code} without a report: {why}", job)


# -- calibration: a few optimiser steps in a throwaway process ---------------------------------------

CALIBRATION_STEPS = 3
CALIBRATION_TIMEOUT_S = 300.0


class CalibrationError(LaunchError):
    """A calibration did not measure a throughput; ``pid`` is the process it started (ended by then)."""

    def __init__(self, message: str, *, pid: int | None = None):
        super().__init__(message)
        self.pid = pid


@dataclass(frozen=True)
class Calibration:
    """What a calibration measured, and the process and folder it used (both gone when it returns)."""

    tokens_per_s: float
    startup_s: float | None
    """The run's fixed cost: process start to steady training (imports, model load, tokenising the data, the first
    step's warm-up: the end of step 1 less its tokens at the measured speed), plus saving the adapter and exiting
    (the last step to the process's end)."""
    steps: int
    wall_s: float
    device: str
    pid: int
    folder: str


def calibration_config(cfg: TrainConfig, folder: Path, *, steps: int = CALIBRATION_STEPS) -> TrainConfig:
    """The same model, data and shapes as ``cfg`` for ``steps`` optimiser steps of one micro-batch each (tokens
    per second do not depend on accumulation), every step logged, no validation, no checkpoint."""
    from dataclasses import replace

    return replace(cfg, max_steps=steps, gradient_accumulation_steps=1, logging_steps=1, eval_file="none",
                   eval_steps=0, early_stopping_patience=0, save_steps=10**6, save_total_limit=1,
                   report_to="none", resume="", output_dir=str(Path(folder) / "run"))


def calibrate(
    cfg: TrainConfig, *, jobs_dir: Path, folder_root: Path, steps: int = CALIBRATION_STEPS,
    timeout_s: float = CALIBRATION_TIMEOUT_S, command: Sequence[str] | None = None,
) -> Calibration:
    """Time ``steps`` optimiser steps of ``cfg`` in a throwaway trainer process; waits for it (minutes at most).

    The process runs in its own session under ``folder_root/calibrate-*``; whatever happens (it
    finishes, fails, times out, or this call is interrupted) its whole process group is ended and the
    folder removed before this returns. Refuses while a training or evaluation job runs (it would
    slow both down). ``command`` replaces the trainer (tests). Raises :class:`CalibrationError`.
    """
    import shutil
    import tempfile

    from core.metrics import read_metrics
    from core.runs import measured_tokens_per_s

    running = active_job(jobs_dir)
    if running is not None:
        raise JobBusyError(f"{describe(running)} is running: calibrate when it has finished (a calibration next to "
                           "it would slow it down and measure the wrong speed).")
    folder_root = Path(folder_root)
    folder_root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=folder_root, prefix="calibrate-"))
    proc: subprocess.Popen | None = None
    try:
        final = create_run_dir(calibration_config(cfg, folder, steps=steps))
        run_dir = Path(final.output_dir)
        argv = list(command) if command is not None else train_command(run_dir)
        t0 = time.time()
        with (folder / LOG_FILE).open("wb") as log:
            try:
                proc = subprocess.Popen(argv, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
            except OSError as exc:
                raise CalibrationError(f"Could not start {argv[0]}: {exc}") from exc
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise CalibrationError(f"The calibration did not finish {steps} steps in {timeout_s:.0f} s; it was "
                                   "stopped. The machine may be busy: try again later.", pid=proc.pid) from None
        wall = time.time() - t0
        records = read_metrics(run_dir / METRICS_FILE)
        tps = measured_tokens_per_s(records)
        if proc.returncode != 0 or not tps:
            why = _last_log_line(folder / LOG_FILE) or "no output"
            raise CalibrationError(f"The calibration exited with code {proc.returncode} without a throughput: {why}",
                                   pid=proc.pid)
        start = next((r for r in records if r.get("event") == "start"), {})
        runtime = start.get("runtime") or {}
        # Start-up = everything before steady training: imports, model load, tokenising, and the first step's warm-up
        # (measured on CPU: the first step of 400 tokens took 15 s where later ones ran at ~170 tokens/s). So the time
        # to the end of step 1, less what its tokens cost at the steady speed.
        first = next((r for r in records if r.get("event") == "train" and isinstance(r.get("time"), (int, float))), None)
        started = start.get("time")
        if first is not None and isinstance(first.get("num_tokens"), (int, float)):
            startup = max(0.0, float(first["time"]) - t0 - float(first["num_tokens"]) / float(tps))
        else:
            startup = float(started) - t0 if isinstance(started, (int, float)) else None
        last = next((r for r in reversed(records) if r.get("event") == "train" and isinstance(r.get("time"), (int, float))),
                    None)
        if startup is not None and last is not None:
            startup += max(0.0, wall - (float(last["time"]) - t0))  # saving the adapter and exiting come once too
        return Calibration(tokens_per_s=float(tps), startup_s=startup,
                           steps=steps, wall_s=wall, device=str(runtime.get("device") or cfg.device),
                           pid=proc.pid, folder=str(folder))
    finally:
        if proc is not None and proc.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                _signal_group(proc.pid, sig)
                try:
                    proc.wait(timeout=5)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if proc is not None:
            # The trainer's own children (none today) share its group: end any that outlived it.
            _signal_group(proc.pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)


def eval_samples_text(folder: Path) -> str | None:
    """The text of an evaluation folder's per-item lines (``eval_samples.jsonl``, else ``.jsonl.gz``, as
    ``python -m trainer.evaluate`` writes them); None when there are none. OSError etc. propagate."""
    import gzip

    plain, packed = Path(folder) / "eval_samples.jsonl", Path(folder) / "eval_samples.jsonl.gz"
    if plain.is_file():
        return plain.read_text(encoding="utf-8")
    if packed.is_file():
        with gzip.open(packed, "rt", encoding="utf-8") as fh:
            return fh.read()
    return None


def read_eval_samples(folder: Path) -> list[dict[str, Any]]:
    """The per-item lines of an evaluation folder, for showing; [] when there are none or they cannot be
    read, and unreadable lines are skipped (``trainer.evaluate.read_samples`` is the strict reader)."""
    try:
        text = eval_samples_text(folder)
    except (OSError, EOFError, UnicodeDecodeError):
        return []
    out = []
    for line in (text or "").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return out