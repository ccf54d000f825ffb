"""trainer.launch: background jobs started, watched, stopped, cancelled and reconciled (a stub trainer, then a real one).

The stub (``tests/trainer/stub_trainer.py``) writes the run directory's files like the trainer but
without torch, so the process handling is tested in seconds; one test runs the real trainer on
the tiny model through the launcher.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from core.metrics import read_metrics
from core.runs import curves
from trainer import launch
from trainer.cli import parse_config
from trainer.config import ConfigError, TrainConfig, build_config, load_config, save_config, validate
from trainer.status import read_status, write_status

from .conftest import tiny_overrides

STUB = [sys.executable, "-m", "tests.trainer.stub_trainer"]


def wait_for(predicate: Callable[[], object], *, timeout: float = 60.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def stub_run(tmp_path: Path, name: str = "run", *, max_steps: int = 20, save_steps: int = 5) -> Path:
    run_dir = tmp_path / name
    save_config(TrainConfig(model_name="stub-base", max_steps=max_steps, save_steps=save_steps,
                            output_dir=str(run_dir)), run_dir)
    return run_dir


def stub_command(run_dir: Path, *, resume: bool = False) -> list[str]:
    return STUB + launch.train_command(run_dir, resume=resume)[3:]


def start_stub(run_dir: Path, jobs: Path, *, resume: bool = False) -> launch.Job:
    return launch.start_training(run_dir, jobs_dir=jobs, resume=resume, command=stub_command(run_dir, resume=resume))


def wait_final(run_dir: Path, timeout: float = 60.0) -> launch.RunState:
    return wait_for(lambda: (s := launch.run_state(run_dir)).final and s, timeout=timeout,  # type: ignore[return-value]
                    what=f"{run_dir.name} to finish")


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    return tmp_path / "jobs"


@pytest.fixture(autouse=True)
def _no_leftover_processes():
    yield
    for job_pid, child in list(launch._CHILDREN.items()):
        if child.poll() is None:
            os.killpg(job_pid, signal.SIGKILL)
            child.wait()


def test_train_command_is_the_trainer_on_the_saved_config(tmp_path):
    run_dir = tmp_path / "r"
    assert launch.train_command(run_dir) == [sys.executable, "-m", "trainer", "--config", str(run_dir / "config.yaml")]
    assert launch.train_command(run_dir, resume=True)[-2:] == ["--resume", "auto"]


def test_stub_run_completes_with_status_metrics_log_and_adapter(tmp_path, jobs, monkeypatch):
    run_dir = stub_run(tmp_path, max_steps=6, save_steps=3)
    job = start_stub(run_dir, jobs)
    assert launch.read_job(run_dir).pid == job.pid and job.pid_start is not None
    state = wait_final(run_dir)
    assert state.state == "completed" and state.has_adapter and state.step == 6, state
    assert read_status(run_dir)["pid"] == job.pid
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if r["event"] == "train"] == list(range(1, 7))
    log = (run_dir / "train.log").read_text()
    assert f"start: {job.command_line}" in log and "[trainer] completed at step 6" in log
    assert launch.active_job(jobs) is None


def test_a_second_job_is_refused_naming_the_running_one(tmp_path, jobs, monkeypatch):
    monkeypatch.setenv("STUB_STEP_S", "0.2")
    first, second = stub_run(tmp_path, "first-run", max_steps=200), stub_run(tmp_path, "second-run")
    job = start_stub(first, jobs)
    with pytest.raises(launch.JobBusyError) as err:
        start_stub(second, jobs)
    assert "'first-run'" in str(err.value) and str(job.pid) in str(err.value)
    assert not (second / "train.log").exists()
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(launch.JobBusyError, match="first-run"):  # evaluations count as jobs too
        launch.start_evaluation(adapter, output_dir=tmp_path / "ev", jobs_dir=jobs, command=STUB)
    launch.cancel(first, grace_s=2)
    start_stub(second, jobs)  # free again
    assert wait_final(second).state == "completed"


def test_stop_saves_and_resume_continues_without_duplicated_steps(tmp_path, jobs, monkeypatch):
    monkeypatch.setenv("STUB_STEP_S", "0.1")
    run_dir = stub_run(tmp_path, max_steps=40, save_steps=5)
    start_stub(run_dir, jobs)
    wait_for(lambda: (launch.run_state(run_dir).step or 0) >= 3, what="three steps")
    assert launch.run_state(run_dir).state == "running"
    launch.stop(run_dir)
    state = wait_final(run_dir)
    assert state.state == "stopped" and state.reason == "stop file found", state
    assert state.resumable and state.checkpoint.endswith(f"checkpoint-{state.step}")
    stopped_at = state.step
    assert stopped_at < 40

    monkeypatch.setenv("STUB_STEP_S", "0.01")
    start_stub(run_dir, jobs, resume=True)
    assert launch.run_state(run_dir).state == "running"  # the old "stopped" status is not this launch's
    final = wait_final(run_dir)
    assert final.state == "completed" and final.step == 40
    steps = curves(read_metrics(run_dir / "metrics.jsonl")).train_loss.steps
    assert steps == list(range(1, 41))
    assert (run_dir / "train.log").read_text().count("=== ") == 2


def test_resume_is_refused_without_a_checkpoint_or_while_running(tmp_path, jobs, monkeypatch):
    run_dir = stub_run(tmp_path, max_steps=3, save_steps=100)
    with pytest.raises(launch.LaunchError, match="no complete checkpoint"):
        start_stub(run_dir, jobs, resume=True)
    monkeypatch.setenv("STUB_STEP_S", "0.2")
    run2 = stub_run(tmp_path, "r2", max_steps=100, save_steps=1)
    start_stub(run2, jobs)
    wait_for(lambda: launch.run_state(run2).checkpoint, what="a checkpoint")
    with pytest.raises(launch.LaunchError, match="cannot be resumed while it runs"):
        start_stub(run2, jobs, resume=True)


def test_cancel_terminates_the_whole_process_group(tmp_path, jobs, monkeypatch):
    child_file = tmp_path / "child.pid"
    monkeypatch.setenv("STUB_STEP_S", "0.2")
    monkeypatch.setenv("STUB_CHILD_PID_FILE", str(child_file))
    run_dir = stub_run(tmp_path, max_steps=500)
    job = start_stub(run_dir, jobs)
    child_pid = int(wait_for(lambda: child_file.is_file() and child_file.read_text(), what="the child pid"))
    assert launch.pid_alive(child_pid)
    launch.cancel(run_dir, grace_s=5)
    assert not launch.pid_alive(job.pid)
    wait_for(lambda: not launch.pid_alive(child_pid), timeout=10, what="the grandchild to die")
    state = launch.run_state(run_dir)
    assert state.state == "cancelled" and not state.resumable
    assert launch.read_job(run_dir).cancelled_at


def test_cancel_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path, jobs, monkeypatch):
    monkeypatch.setenv("STUB_STEP_S", "0.2")
    monkeypatch.setenv("STUB_IGNORE_TERM", "1")
    run_dir = stub_run(tmp_path, max_steps=500)
    job = start_stub(run_dir, jobs)
    wait_for(lambda: launch.run_state(run_dir).step, what="a step")
    t0 = time.monotonic()
    launch.cancel(run_dir, grace_s=0.5)
    assert not launch.pid_alive(job.pid) and time.monotonic() - t0 < 10
    assert launch.read_job(run_dir).returncode == -signal.SIGKILL
    assert launch.run_state(run_dir).state == "cancelled"


def test_kill_9_mid_run_is_interrupted_and_resume_completes(tmp_path, jobs, monkeypatch):
    monkeypatch.setenv("STUB_STEP_S", "0.1")
    run_dir = stub_run(tmp_path, max_steps=30, save_steps=3)
    job = start_stub(run_dir, jobs)
    wait_for(lambda: launch.run_state(run_dir).checkpoint, what="a checkpoint")
    os.kill(job.pid, signal.SIGKILL)
    state = wait_for(lambda: (s := launch.run_state(run_dir)).final and s, timeout=10, what="the death")
    assert state.state == "interrupted" and state.resumable, state
    assert "died without saving a final state" in state.reason
    assert read_status(run_dir)["state"] == "running"  # the trainer never got to write anything else
    monkeypatch.setenv("STUB_STEP_S", "0.01")
    start_stub(run_dir, jobs, resume=True)
    assert wait_final(run_dir).state == "completed"


def test_a_trainer_that_exits_before_training_has_failed_with_its_message(tmp_path, jobs, monkeypatch):
    monkeypatch.setenv("STUB_FAIL_EARLY", "1")
    run_dir = stub_run(tmp_path)
    start_stub(run_dir, jobs)
    state = wait_final(run_dir)
    assert state.state == "failed" and not state.resumable
    assert "exit code 2" in state.reason and "failing early on purpose" in state.reason


def test_state_of_runs_started_outside_the_launcher(tmp_path):
    run_dir = tmp_path / "cli-run"
    write_status(run_dir, "running", reason="training", step=4, total_steps=10)  # our own, live pid
    assert launch.run_state(run_dir).state == "running"
    data = json.loads((run_dir / "status.json").read_text())
    data["pid"] = 2**22 + 12345  # above the default pid_max: never a live process
    (run_dir / "status.json").write_text(json.dumps(data))
    state = launch.run_state(run_dir)
    assert state.state == "interrupted" and state.step == 4 and not state.resumable  # no checkpoint
    write_status(run_dir, "completed", reason="finished 10 steps")
    assert launch.run_state(run_dir).state == "completed"
    assert launch.run_state(tmp_path / "missing").state == "failed"


def test_a_reused_pid_is_not_our_process(tmp_path):
    me = os.getpid()
    assert launch.pid_alive(me) and launch.pid_alive(me, launch.process_start_ticks(me))
    assert not launch.pid_alive(me, (launch.process_start_ticks(me) or 0) + 1)
    assert not launch.pid_alive(None) and not launch.pid_alive(0)


def test_log_tail_reads_the_end_of_a_large_log(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("".join(f"line {i}\n" for i in range(100_000)))
    tail = launch.log_tail(log, lines=3)
    assert tail.splitlines() == ["line 99997", "line 99998", "line 99999"]
    assert launch.log_tail(tmp_path / "none.log") == ""


def test_evaluation_job_states(tmp_path, jobs):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    out = tmp_path / "ev"
    writes = [sys.executable, "-c", f"import pathlib, time; time.sleep(0.3); pathlib.Path({str(out)!r}, 'eval.json')"
                                    ".write_text('{}'); print('[evaluate] wrote')"]
    launch.start_evaluation(adapter, output_dir=out, jobs_dir=jobs, command=writes)
    assert launch.evaluation_state(out).state == "running"
    assert wait_for(lambda: (s := launch.evaluation_state(out)).state != "running" and s).state == "completed"
    fails = [sys.executable, "-c", "import sys; print('[evaluate] error: no test file'); sys.exit(2)"]
    launch.start_evaluation(adapter, output_dir=out, jobs_dir=jobs, command=fails)
    state = wait_for(lambda: (s := launch.evaluation_state(out)).state != "running" and s)
    assert state.state == "failed" and "exit code 2" in state.reason and "no test file" in state.reason
    assert launch.evaluation_state(tmp_path / "never").state == "none"
    argv = launch.evaluate_command(adapter, output_dir=out, limit=8, max_new_tokens=64, mcq_per_source=None)
    assert argv[1:3] == ["-m", "trainer.evaluate"] and argv[argv.index("--limit") + 1] == "8"
    assert "--mcq_per_source" not in argv


def test_prepare_run_uses_the_trainers_validation_and_saves_the_config(tiny_model_dir, data_dir, tmp_path):
    bad, _ = build_config({**tiny_overrides(tiny_model_dir, data_dir, tmp_path / "bad"), "lora_r": 0, "max_steps": 0})
    with pytest.raises(ConfigError) as err:
        launch.prepare_run(bad)
    assert err.value.problems == validate(bad) and len(err.value.problems) == 2
    cfg = load_config(None, tiny_overrides(tiny_model_dir, data_dir, tmp_path / "good"))
    saved = launch.prepare_run(cfg)
    assert Path(saved.output_dir) == (tmp_path / "good").resolve()
    assert load_config(tmp_path / "good" / "config.yaml").train_file == str(data_dir / "train.jsonl")
    (tmp_path / "good" / "metrics.jsonl").write_text("")
    with pytest.raises(ConfigError, match="already holds a run"):
        launch.prepare_run(cfg)


def test_cli_equivalent_reproduces_the_config(tiny_model_dir, data_dir, tmp_path):
    cfg = load_config(None, tiny_overrides(tiny_model_dir, data_dir, tmp_path / "x", lora_target_modules="q_proj,v_proj"))
    command = launch.cli_equivalent(cfg)
    assert command.startswith("python -m trainer ") and "--lora_target_modules q_proj,v_proj" in command
    import shlex

    assert parse_config(shlex.split(command)[3:]) == cfg


@pytest.mark.slow
def test_a_real_tiny_run_through_the_launcher(tiny_model_dir, data_dir, tmp_path, jobs):
    """The real trainer as a background process: plan, launch, curves, completion, adapter."""
    cfg = load_config(None, tiny_overrides(tiny_model_dir, data_dir, tmp_path / "real", max_steps=-1, num_epochs=1.0,
                                           eval_steps=0, save_steps=100))
    plan = launch.dataset_plan(cfg)
    assert plan.kept == len(plan.lengths) == 8 and plan.records == 8
    assert plan.total_steps == 4  # 8 examples, batch 2, no accumulation, one epoch
    final = launch.prepare_run(cfg)
    job = launch.start_training(Path(final.output_dir), jobs_dir=jobs)
    state = wait_final(Path(final.output_dir), timeout=300)
    log = launch.log_tail(Path(job.log), lines=80)
    assert state.state == "completed" and state.has_adapter, log
    assert state.total_steps == plan.total_steps and state.step == plan.total_steps
    c = curves(read_metrics(Path(final.output_dir) / "metrics.jsonl"))
    assert c.train_loss.steps == [1, 2, 3, 4] and len(c.learning_rate) == 4 and len(c.tokens_per_s) == 4
    assert "trainable params" in log


def test_a_final_status_counts_only_once_the_process_has_exited(tmp_path, jobs):
    """A trainer that wrote "stopped" but is still exiting must not be resumed (or replaced) yet."""
    run_dir = stub_run(tmp_path)
    exiting = [sys.executable, "-c", "import os, time; from trainer.status import write_status; "
               f"write_status({str(run_dir)!r}, 'stopped', reason='stop file found'); time.sleep(1.5)"]
    job = launch.start_training(run_dir, jobs_dir=jobs, command=exiting)
    state = wait_for(lambda: (s := launch.run_state(run_dir)).reason.startswith("stopped") and s)
    assert state.state == "stopping" and state.active and "waiting for the process to exit" in state.reason
    assert launch.active_job(jobs).pid == job.pid
    assert wait_final(run_dir).state == "stopped"
    assert launch.active_job(jobs) is None


def test_stop_waits_until_the_trainer_has_started(tmp_path, jobs):
    """A STOP file made before the trainer's first status would be removed by it as stale: refuse it then."""
    run_dir = stub_run(tmp_path)
    slow_start = [sys.executable, "-c", "import time; time.sleep(1.0)"]
    launch.start_training(run_dir, jobs_dir=jobs, command=slow_start)
    state = launch.run_state(run_dir)
    assert state.starting and state.active and not state.stoppable
    with pytest.raises(launch.LaunchError, match="still starting"):
        launch.stop(run_dir)
    assert not (run_dir / "STOP").exists()
