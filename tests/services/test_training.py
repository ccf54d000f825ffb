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


def test_what_auto_settings_cannot_become_on_this_machine_is_refused_before_launch(engine, settings):
    """Device auto on a CPU machine: a CUDA-only kernel is refused on the form, not by a run that fails."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA here: auto lands on the GPU")
    cfg = make_config(settings, "varlen", attn_implementation="torch_varlen", device="auto")
    with pytest.raises(ConfigError) as err:
        service.launch_run(engine, settings, cfg, user_id=None, command=stub(cfg))
    assert any(p.startswith("attn_implementation: torch_varlen is a CUDA kernel") for p in err.value.problems)
    assert service.list_runs(engine) == [] and not Path(cfg.output_dir).exists()
    _, problems = service.check_config({**cfg.to_dict(), "output_dir": ""})
    assert any("torch_varlen" in p for p in problems)


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


# -- presets, estimates, comparisons (issue 20) ---------------------------------------------------------


def test_saved_presets_are_named_files_editable_and_deletable(settings):
    values = {**TrainConfig().to_dict(), "learning_rate": "1e-4", "lora_r": "8"}
    saved = service.save_preset(settings, "My quick run", values, description="r=8")
    path = service.presets_dir(settings) / "my-quick-run.json"
    assert saved.name == "my-quick-run" and path.is_file()
    import json

    data = json.loads(path.read_text())
    assert data["values"] == {"learning_rate": 1e-4, "lora_r": 8} and data["config_version"] == 2
    presets, problems = service.list_presets(settings)
    assert problems == [] and list(presets)[:4] == ["seed-qlora", "fast-gpu", "cpu-demo", "shipped"]
    assert presets["my-quick-run"].title == "My quick run" and not presets["my-quick-run"].builtin
    loaded = service.load_preset(settings, "my-quick-run")
    assert (loaded.config.learning_rate, loaded.config.lora_r, loaded.problems, loaded.notes) == (1e-4, 8, [], [])
    service.save_preset(settings, "My quick run", {**values, "lora_r": "4"})  # editing = saving under the same name
    assert service.load_preset(settings, "my-quick-run").config.lora_r == 4
    with pytest.raises(ConfigError, match="lora_r"):
        service.save_preset(settings, "Broken", {**values, "lora_r": "four"})
    assert not (service.presets_dir(settings) / "broken.json").exists()
    with pytest.raises(service.PresetError, match="built-in"):
        service.save_preset(settings, "cpu demo", values)
    with pytest.raises(service.PresetError, match="built-in"):
        service.delete_preset(settings, "seed-qlora")
    service.delete_preset(settings, "my-quick-run")
    assert not path.exists()
    with pytest.raises(service.PresetError, match="No preset named 'my-quick-run'. Known presets: cpu-demo"):
        service.load_preset(settings, "my-quick-run")


def test_an_older_or_damaged_preset_file_is_read_with_notes_and_never_rewritten(settings):
    folder = service.presets_dir(settings)
    folder.mkdir(parents=True)
    old = folder / "from-2025.json"
    old.write_text('{"title": "From 2025", "config_version": 1, "values": {"num_train_epochs": 1, '
                   '"load_in_4bit": true, "lr": 0.0001, "lora_rr": 4}}')
    broken = folder / "broken.json"
    broken.write_text("{not json")
    before = old.read_bytes(), broken.read_bytes()
    presets, problems = service.list_presets(settings)
    assert "from-2025" in presets and "broken" not in presets
    assert len(problems) == 1 and "broken.json cannot be read" in problems[0] and "left as it is" in problems[0]
    loaded = service.load_preset(settings, "from-2025")
    assert loaded.config.num_epochs == 1.0 and loaded.config.learning_rate == 1e-4
    assert any("'num_train_epochs' is now called 'num_epochs'" in n for n in loaded.notes)
    assert any("'load_in_4bit'" in n and "left out" in n for n in loaded.notes)
    assert any("lora_rr" in p for p in loaded.problems)
    with pytest.raises(service.PresetError, match="broken.json cannot be read"):
        service.load_preset(settings, "broken")
    assert (old.read_bytes(), broken.read_bytes()) == before  # nothing lost


def test_the_estimates_tokens_are_the_data_plans_and_a_calibration_is_reused(engine, settings, tmp_path):
    from tests.trainer.conftest import build_tiny_llama

    base = build_tiny_llama(tmp_path / "tiny-llama")
    cfg = make_config(settings, "plan", model_name=str(base), max_steps=-1, num_epochs=2, batch_size=3,
                      gradient_accumulation_steps=2, max_seq_len=200, eval_steps=1)
    plan = service.dataset_plan(cfg)
    kept = [n for n in plan.lengths if n <= cfg.max_seq_len]
    assert 0 < len(kept) < len(plan.lengths)  # some examples are too long: they must not count
    first = service.project(engine, settings, cfg, plan)
    est = first.estimate
    assert est.tokens_per_epoch == sum(kept) and est.examples == plan.kept == len(kept)
    assert est.steps == plan.total_steps and est.tokens_per_step == pytest.approx(plan.tokens_per_step)
    assert est.train_tokens == pytest.approx(plan.total_steps * plan.tokens_per_step)
    assert est.evaluations == plan.total_steps + 1 and est.throughput is None  # + the step-0 baseline and est.total_s is None
    assert any("leaves out" in w for w in first.warnings)
    import json

    key = service.throughput_key(cfg)
    (service.calibration_dir(settings)).mkdir(parents=True, exist_ok=True)
    (service.calibration_dir(settings) / f"{key}.json").write_text(json.dumps(
        {"tokens_per_s": 50.0, "startup_s": 10.0, "steps": 3, "device": "cpu", "measured_at": "2026-12-06T09:00:00"}))
    again = service.project(engine, settings, cfg, plan).estimate
    assert again.throughput.tokens_per_s == 50.0 and "calibration on this machine" in again.throughput.basis
    assert again.train_s == pytest.approx(est.train_tokens / 50.0)
    assert again.total_s == pytest.approx(10.0 + est.train_tokens / 50.0 + est.evaluations * est.eval_tokens / 150.0)
    from dataclasses import replace

    other = replace(cfg, batch_size=4)  # another shape: that measurement says nothing about it
    assert service.known_throughput(engine, settings, other) is None


def test_calibrate_through_the_service_keeps_the_result_and_removes_its_folder(engine, settings, monkeypatch):
    cfg = make_config(settings, "cal")
    monkeypatch.setattr(launch, "train_command", lambda rd, resume=False: STUB + ["--config", str(rd / "config.yaml")])
    tp = service.calibrate(settings, cfg, steps=3)
    assert tp.tokens_per_s == pytest.approx(102.5)
    kept = list(service.calibration_dir(settings).iterdir())
    assert [p.name for p in kept] == [f"{service.throughput_key(cfg)}.json"]  # the throwaway folder is gone
    assert service.known_throughput(engine, settings, cfg).tokens_per_s == pytest.approx(102.5)


def test_a_run_remembers_its_preset_and_shows_what_was_changed(engine, settings):
    preset = service.get_preset(settings, "cpu-demo")
    cfg = make_config(settings, "from-preset", **{k: v for k, v in service.load_preset(settings, "cpu-demo")
                                                  .config.to_dict().items() if k in ("lora_r", "batch_size")},
                      learning_rate=1e-4)
    run = service.launch_run(engine, settings, cfg, user_id=None, command=stub(cfg), preset=preset)
    label, diff = service.settings_diff(run)
    assert label == "CPU demo (minutes)"
    assert diff["learning_rate"] == (2e-4, 1e-4) and diff["max_steps"] == (10, 12)
    assert "lora_r" not in diff and "output_dir" not in diff
    settle(engine, settings, run.id)
    import shutil

    shutil.rmtree(run.run_dir)  # a run directory that disappeared: compared with the defaults, nothing raised
    label, diff = service.settings_diff(run)
    assert label == "trainer defaults" and diff["max_steps"] == (-1, 12)


class _FakeBackend:
    """A backend that writes a fixed reasoning and answer, naming itself (no model)."""

    kind = "local"

    def __init__(self, name: str):
        self.base_model, self.adapter, self.name = "tiny-base", name, name

    def describe(self) -> str:
        return f"fake {self.name}"

    def adapter_note(self):
        return None

    def stream(self, case_text, *, settings, stop=None, conclude=None, options=None, context=""):
        from core.inference import GenerationStats, StreamEvent

        text = f"{self.name} thinks.\n\nFinal answer: {self.name} says yes"
        yield StreamEvent("token", reasoning=f"{self.name} thinks.", text=text[:10])
        yield StreamEvent("done", reasoning=f"{self.name} thinks.", answer=f"{self.name} says yes", has_answer=True,
                          text=text, stats=GenerationStats(new_tokens=12, tokens_per_s=40.0, finish_reason="eos"))


def test_a_comparison_saves_both_runs_to_history_linked_by_its_id(engine, monkeypatch):
    from argon2 import PasswordHasher

    from core.inference import GenerationSettings
    from services import accounts, generation
    from storage import history, passwords

    monkeypatch.setattr(generation, "served_by", lambda backend: {"backend": "local", "engine": "fake"})
    monkeypatch.setattr(passwords, "HASHER", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    with Session(engine) as session:
        user_id = accounts.create_user(session=session, username="admin", password="pass phrase", role="admin").id
    comparison, started = service.start_comparison(
        engine, user_id=user_id, sides=[("Base model", _FakeBackend("base")), ("Adapter a", _FakeBackend("a"))],
        case_text="A case.", settings=GenerationSettings(max_new_tokens=64, temperature=0.0), limit_per_hour=10)
    finals = [list(gen.events)[-1] for gen in started]
    assert [f.answer for f in finals] == ["base says yes", "a says yes"]
    ids = [gen.outcome.saved_id for gen in started]
    with Session(engine) as session:
        runs = [history.get_case_run(session=session, run_id=i) for i in ids]
    assert [r.adapter for r in runs] == ["base", "a"]
    assert {r.settings["comparison"] for r in runs} == {comparison}
    assert [r.settings["side"] for r in runs] == ["Base model", "Adapter a"]
    assert runs[0].settings["compared_with"] == ["Adapter a"]
    with pytest.raises(service.Refused):  # two more would pass the hourly limit of 2
        service.start_comparison(engine, user_id=user_id, sides=[("x", _FakeBackend("x")), ("y", _FakeBackend("y"))],
                                 case_text="Again.", settings=GenerationSettings(), limit_per_hour=2)
