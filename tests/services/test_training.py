"""services.training: the launcher's processes and their database records kept in step (stub trainer, in-memory SQLite)."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlmodel import Session

from services import training as service
from core.model import DEFAULT_ADAPTER_DIR
from core.records import write_jsonl
from core.settings import Settings
from storage import training
from storage.engine import open_database
from trainer import launch
from trainer.config import ConfigError, TrainConfig, build_config
from tests.trainer.conftest import make_records

STUB = [sys.executable, "-m", "tests.trainer.stub_trainer"]


def wait_for(predicate: Callable[[], object], *, timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(work_dir=tmp_path / "work")


@pytest.fixture
def engine() -> Iterator:
    eng = open_database("sqlite://")
    yield eng
    eng.dispose()


@pytest.fixture(autouse=True)
def _no_leftover_processes():
    yield
    for pid, child in list(launch._CHILDREN.items()):
        if child.poll() is None:
            os.killpg(pid, signal.SIGKILL)
            child.wait()


def make_config(settings: Settings, name: str, **values) -> TrainConfig:
    data = settings.work_dir / "data"
    if not (data / "train.jsonl").exists():
        write_jsonl(data / "train.jsonl", make_records("train"))
        write_jsonl(data / "validation.jsonl", make_records("validation", 2, 1))
    base = settings.work_dir.parent / "tiny-base"
    base.mkdir(exist_ok=True)
    cfg, problems = build_config({"model_name": str(base), "work_dir": str(settings.work_dir), "device": "cpu",
                                  "output_dir": str(settings.runs_dir / name), "max_steps": 12, "save_steps": 3,
                                  **values})
    assert not problems
    return cfg


def stub(cfg: TrainConfig, *, resume: bool = False) -> list[str]:
    return STUB + launch.train_command(Path(cfg.output_dir), resume=resume)[3:]


def db_run(engine, run_id: int):
    with Session(engine) as session:
        return training.get_training_run(session=session, run_id=run_id)


def settle(engine, settings, run_id: int):
    return wait_for(lambda: (r := service.sync_run(engine, settings, run_id)).status not in service.UNSETTLED and r)


def test_launch_records_the_run_and_a_completed_run_registers_its_adapter(engine, settings):
    cfg = make_config(settings, "first")
    run = service.launch_run(engine, settings, cfg, user_id=None, command=stub(cfg))
    assert run.status == "running" and run.pid == launch.read_job(Path(cfg.output_dir)).pid
    assert run.run_dir == cfg.output_dir and run.config["max_steps"] == 12 and run.config["output_dir"] == cfg.output_dir
    done = settle(engine, settings, run.id)
    assert done.status == "completed" and done.finished_at is not None
    assert done.final_metrics["steps"] == 12 and done.final_metrics["train_loss"] == pytest.approx(2.0 / 12)
    adapters = service.list_adapters(engine)
    registered = next(a for a in adapters if a.training_run_id == run.id)
    assert registered.name == "first" and Path(registered.path) == service.registry_dir(settings) / "first"
    assert (Path(registered.path) / "adapter_card.json").is_file() and registered.base_model == "tiny-base"
    assert service.sync_run(engine, settings, run.id).status == "completed"  # nothing changes the second time
    assert len(service.list_adapters(engine)) == len(adapters)


def test_a_second_launch_is_refused_before_anything_is_created(engine, settings, monkeypatch):
    monkeypatch.setenv("STUB_STEP_S", "0.2")
    first = make_config(settings, "busy-run", max_steps=500)
    service.launch_run(engine, settings, first, user_id=None, command=stub(first))
    second = make_config(settings, "second")
    with pytest.raises(launch.JobBusyError, match="'busy-run'"):
        service.launch_run(engine, settings, second, user_id=None, command=stub(second))
    assert not Path(second.output_dir).exists() and len(service.list_runs(engine)) == 1


def test_invalid_config_lists_every_problem(engine, settings):
    cfg = make_config(settings, "bad", lora_r=0, learning_rate=2.0)
    with pytest.raises(ConfigError) as err:
        service.launch_run(engine, settings, cfg, user_id=None, command=stub(cfg))
    assert [p.split(":")[0] for p in err.value.problems] == ["lora_r", "learning_rate"]
    assert service.list_runs(engine) == []


def test_kill_9_becomes_interrupted_on_reconcile_and_resume_completes(engine, settings, monkeypatch):
    monkeypatch.setenv("STUB_STEP_S", "0.1")
    cfg = make_config(settings, "killed", max_steps=30)
    run = service.launch_run(engine, settings, cfg, user_id=None, command=stub(cfg))
    wait_for(lambda: launch.run_state(Path(cfg.output_dir)).checkpoint)
    os.kill(run.pid, signal.SIGKILL)
    wait_for(lambda: not launch.pid_alive(run.pid))
    changed = service.reconcile(engine, settings)
    assert [(r.id, r.status) for r in changed] == [(run.id, "interrupted")]
    assert service.reconcile(engine, settings) == []
    with pytest.raises(service.JobError, match="No training run"):
        service.resume_run(engine, settings, run.id + 100)
    monkeypatch.setenv("STUB_STEP_S", "0.01")
    resumed = service.resume_run(engine, settings, run.id, command=stub(cfg, resume=True))
    assert resumed.status == "running" and resumed.pid != run.pid
    assert settle(engine, settings, run.id).status == "completed"


def test_stop_then_register_and_cancel(engine, settings, monkeypatch):
    monkeypatch.setenv("STUB_STEP_S", "0.1")
    cfg = make_config(settings, "stopped-run", max_steps=200)
    run = service.launch_run(engine, settings, cfg, user_id=None, command=stub(cfg))
    wait_for(lambda: launch.run_state(Path(cfg.output_dir)).step)
    assert service.stop_run(engine, run.id).status == "stopping"
    stopped = settle(engine, settings, run.id)
    assert stopped.status == "stopped" and not any(a.training_run_id == run.id for a in service.list_adapters(engine))
    with pytest.raises(service.JobError, match="not running"):
        service.stop_run(engine, run.id)
    record = service.register_run_adapter(engine, settings, run.id)
    step = launch.run_state(Path(cfg.output_dir)).step
    assert record.name == f"stopped-run-step{step}" and record.training_run_id == run.id

    service.resume_run(engine, settings, run.id, command=stub(cfg, resume=True))
    cancelled = service.cancel_run(engine, run.id, grace_s=2)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert service.sync_run(engine, settings, run.id).status == "cancelled"
    with pytest.raises(service.JobError, match="cannot be resumed"):
        service.resume_run(engine, settings, run.id, command=stub(cfg, resume=True))


def test_activation_checks_the_base_and_the_shipped_adapter_is_registered_once(engine, settings):
    shipped = service.ensure_default_adapter(engine)
    assert shipped is not None and shipped.path == str(DEFAULT_ADAPTER_DIR)
    assert service.ensure_default_adapter(engine).id == shipped.id and len(service.list_adapters(engine)) == 1
    assert service.activate(engine, settings, shipped.id).active  # embedded base: matches the default settings
    cfg = make_config(settings, "tiny-run", max_steps=3)
    run = service.launch_run(engine, settings, cfg, user_id=None, command=stub(cfg))
    settle(engine, settings, run.id)
    tiny = next(a for a in service.list_adapters(engine) if a.name == "tiny-run")
    with pytest.raises(service.JobError, match="trained on base model 'tiny-base'"):
        service.activate(engine, settings, tiny.id)
    on_tiny = Settings(work_dir=settings.work_dir, base_model=cfg.model_name)
    assert service.activate(engine, on_tiny, tiny.id).name == "tiny-run"
    with Session(engine) as session:
        assert training.active_adapter(session=session).id == tiny.id
    assert service.activate(engine, settings, None) is None
    with pytest.raises(service.JobError, match="No adapter"):
        service.activate(engine, settings, 999)


def test_evaluation_folders_and_reports(engine, settings):
    shipped = service.ensure_default_adapter(engine)
    assert service.eval_dir(settings, shipped) == settings.work_dir / "evals" / shipped.name
    report, where = service.eval_report(settings, shipped)
    assert where == DEFAULT_ADAPTER_DIR and report["adapter_name"]  # the published report
    out = service.eval_dir(settings, shipped)
    out.mkdir(parents=True)
    (out / "eval.json").write_text('{"results": {}, "created_at": "newer"}')
    assert service.eval_report(settings, shipped) == ({"results": {}, "created_at": "newer"}, out)
    writes = [sys.executable, "-c", f"import pathlib; pathlib.Path({str(out)!r}, 'eval.json').write_text('{{}}')"]
    job = service.start_evaluation(engine, settings, shipped.id, limit=4, max_new_tokens=32, mcq_per_source=5,
                                command=writes)
    assert job.kind == "evaluate" and job.folder == str(out) and job.label == shipped.name
    assert wait_for(lambda: launch.evaluation_state(out).state == "completed")
    real = launch.evaluate_command(Path(shipped.path), output_dir=out, work_dir=str(settings.work_dir), limit=4,
                                   max_new_tokens=32, mcq_per_source=5)
    assert real[real.index("--output") + 1] == str(out)
