"""Admin page (AppTest): the training form's validation and preview, the live view over prepared run files,
launching through the form (stub trainer), and the adapter registry."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from core.metrics import MetricsWriter
from core.model import DEFAULT_ADAPTER_DIR
from core.records import write_jsonl
from storage import training
from tests.pages.auth_harness import add_user, app_as, app_environment
from tests.trainer.conftest import build_tiny_llama, make_records
from tests.trainer.stub_trainer import save_adapter as save_stub_adapter
from trainer import launch
from trainer.config import ConfigError, load_config
from trainer.status import write_status

PAGE = "pages/admin.py"
STUB = [sys.executable, "-m", "tests.trainer.stub_trainer"]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return tmp_path / "work"


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch, work: Path) -> Iterator[Engine]:
    yield from app_environment(monkeypatch, work)


@pytest.fixture
def admin(engine: Engine):
    return add_user(engine, "root", "admin")


@pytest.fixture(autouse=True)
def _no_leftover_processes():
    yield
    for pid, child in list(launch._CHILDREN.items()):
        if child.poll() is None:
            os.killpg(pid, signal.SIGKILL)
            child.wait()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-base")


def prepared(work: Path) -> None:
    write_jsonl(work / "data" / "train.jsonl", make_records("train"))
    write_jsonl(work / "data" / "validation.jsonl", make_records("validation", 2, 1))


def button(at, label: str):
    return next(b for b in at.button if b.label == label)


def error_text(at) -> str:
    return "\n".join(e.value for e in at.error)


def set_fields(at, **values) -> None:
    for name, value in values.items():
        at.text_input(key=f"cfg_{name}").set_value(str(value))


def test_non_admins_are_refused(engine):
    student = add_user(engine, "stu")
    at = app_as(student, PAGE).run()
    assert not at.exception and not [t for t in at.title if t.value == "Admin"]


def test_form_reports_every_problem_with_the_trainers_messages(engine, admin, work, tiny_model):
    at = app_as(admin, PAGE).run()
    assert not at.exception
    set_fields(at, model_name=tiny_model, lora_r=0, max_steps="abc", learning_rate=3)
    button(at, "Check settings").click().run()
    with pytest.raises(ConfigError) as err:  # what `python -m trainer` says for the same values
        load_config(None, {"model_name": str(tiny_model), "lora_r": "0", "max_steps": "abc", "learning_rate": "3"})
    shown = error_text(at)
    assert shown.startswith("The run cannot start")
    for problem in err.value.problems:
        assert f"- {problem}" in shown
    assert "max_steps: expected a whole number, got 'abc'" in shown and "train.jsonl does not exist" in shown
    assert not at.code  # no command for an invalid config
    button(at, "Start training").click().run()
    assert "lora_r: must be between 1 and 1024; got 0" in error_text(at)
    with Session(engine) as session:
        assert training.list_training_runs(session=session) == []


def test_checked_form_shows_preview_estimate_and_command(engine, admin, work, tiny_model):
    prepared(work)
    at = app_as(admin, PAGE).run()
    set_fields(at, model_name=tiny_model, max_steps=-1, num_epochs=2, batch_size=3, gradient_accumulation_steps=1,
               max_seq_len=16)
    button(at, "Check settings").click().run()
    assert "All 8 examples are longer than max_seq_len=16" in error_text(at)
    set_fields(at, max_seq_len=180)
    button(at, "Check settings").click().run()
    assert not at.exception and not at.error, error_text(at)
    command = at.code[0].value
    assert command.startswith("python -m trainer ") and f"--model_name {tiny_model}" in command
    assert "--num_epochs 2.0" in command and "--batch_size 3" in command
    metrics = {m.label: m.value for m in at.metric}
    # 8 training records (166 to 221 tokens); with max_seq_len 180 some are too long, the rest make
    # ceil(kept / 3) steps per epoch, times 2 epochs.
    kept, left_out = int(metrics["Training examples"]), int(metrics["Left out (too long)"])
    assert kept + left_out == 8 and 0 < left_out < 8
    assert int(metrics["Estimated steps"]) == 2 * -(-kept // 3)
    assert metrics["Estimated time"] == "—"  # nothing measured yet on this machine
    assert len(at.dataframe[0].value) == 5  # sample records
    charts = at.get("plotly_chart")
    histogram = json.loads(charts[0].proto.spec)
    assert histogram["data"][0]["type"] == "histogram" and len(histogram["data"][0]["x"]) == 8


def write_run(work: Path, engine: Engine, name: str, *, state: str, steps: int, total: int, checkpoint: bool,
              dead_job: bool = False) -> tuple[int, Path]:
    """A run directory as the trainer leaves it, and its database record."""
    run_dir = work / "runs" / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("max_steps: 5\n")
    now = time.time()
    with MetricsWriter(run_dir / "metrics.jsonl") as writer:
        writer.write({"event": "start", "step": 0, "time": now - 100})
        for step in range(1, steps + 1):
            writer.write({"event": "train", "step": step, "loss": 3.0 - 0.5 * step, "learning_rate": 1e-3 * step,
                          "tokens_per_s": 200.0 + step, "elapsed_s": 10.0 * step, "eta_s": 10.0 * (total - step),
                          "total_steps": total, "time": now - 100 + 10 * step})
        writer.write({"event": "eval", "step": steps, "eval_loss": 2.25, "total_steps": total, "time": now})
    write_status(run_dir, state, reason="test", step=steps, total_steps=total)
    if checkpoint:
        ckpt = run_dir / f"checkpoint-{steps}"
        ckpt.mkdir()
        for f in ("adapter_config.json", "adapter_model.safetensors", "optimizer.pt", "scheduler.pt"):
            (ckpt / f).write_text("{}")
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": steps}))
    if dead_job:
        dead = 2**22 + 4321  # above the default pid_max: never alive
        status = json.loads((run_dir / "status.json").read_text())
        (run_dir / "status.json").write_text(json.dumps({**status, "pid": dead}))
        (run_dir / "job.json").write_text(json.dumps({
            "kind": "train", "label": name, "folder": str(run_dir), "command": ["python", "-m", "trainer"],
            "pid": dead, "pid_start": None, "started_at": "2000-01-01T00:00:00+00:00", "log": str(run_dir / "train.log"),
        }))
        (run_dir / "train.log").write_text("[trainer] runtime: cpu\n[trainer] step 3 of 5\n")
    with Session(engine) as session:
        run = training.create_training_run(session=session, run_dir=str(run_dir), config={"model_name": "m"},
                                           status="running" if dead_job else state)
    return run.id, run_dir


def chart_spec(at, index: int) -> dict:
    return json.loads(at.get("plotly_chart")[index].proto.spec)


def test_live_view_over_a_prepared_metrics_file(engine, admin, work):
    run_id, _ = write_run(work, engine, "stopped-run", state="stopped", steps=3, total=5, checkpoint=True)
    at = app_as(admin, PAGE).run()
    assert not at.exception
    assert any("Status: **stopped**" in m.value for m in at.markdown)
    bar = at.get("progress")[0].proto
    assert bar.value == 60 and bar.text == "Step 3 of 5"  # no ETA: the run is not active
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Training loss"] == "1.5000" and metrics["Validation loss"] == "2.2500"
    loss, lr, tps = chart_spec(at, 0), chart_spec(at, 1), chart_spec(at, 2)
    assert loss["data"][0]["y"] == [2.5, 2.0, 1.5] and loss["data"][1]["y"] == [2.25]
    assert lr["data"][0]["x"] == [1, 2, 3] and tps["data"][0]["y"] == [201.0, 202.0, 203.0]
    assert not button(at, "Resume").disabled and button(at, "Stop & save").disabled and button(at, "Cancel").disabled
    with Session(engine) as session:
        assert training.get_training_run(session=session, run_id=run_id).final_metrics["train_loss"] == 1.5


def test_a_run_whose_process_died_shows_interrupted_with_resume(engine, admin, work, monkeypatch):
    run_id, run_dir = write_run(work, engine, "killed-run", state="running", steps=3, total=5, checkpoint=True,
                                dead_job=True)
    at = app_as(admin, PAGE).run()
    assert not at.exception
    assert any("Status: **interrupted**" in m.value for m in at.markdown)
    assert any("Resume continues from checkpoint-3" in w.value for w in at.warning)
    assert "step 3 of 5" in at.code[-1].value  # the log tail
    with Session(engine) as session:
        assert training.get_training_run(session=session, run_id=run_id).status == "interrupted"
    monkeypatch.setattr(launch, "train_command", lambda rd, resume=False: STUB + ["--config", str(rd / "config.yaml")]
                        + (["--resume", "auto"] if resume else []))
    (run_dir / "config.yaml").write_text("max_steps: 5\nsave_steps: 1\nmodel_name: m\n")
    button(at, "Resume").click().run()
    assert any("Resumed run killed-run" in s.value for s in at.success)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and launch.run_state(run_dir).active:
        time.sleep(0.1)
    at.run()
    assert any("Status: **completed**" in m.value for m in at.markdown)
    assert at.get("progress")[0].proto.value == 100
    with Session(engine) as session:
        assert training.get_training_run(session=session, run_id=run_id).status == "completed"


def test_start_training_from_the_form_and_refuse_a_second(engine, admin, work, tiny_model, monkeypatch):
    prepared(work)
    monkeypatch.setenv("STUB_STEP_S", "0.3")
    monkeypatch.setattr(launch, "train_command", lambda rd, resume=False: STUB + ["--config", str(rd / "config.yaml")])
    at = app_as(admin, PAGE).run()
    set_fields(at, model_name=tiny_model, max_steps=50, output_dir=work / "runs" / "from-form")
    button(at, "Start training").click().run()
    assert not at.exception and not at.error, error_text(at)
    assert any("Started training run from-form" in s.value for s in at.success)
    assert any("Status: **running**" in m.value for m in at.markdown)
    assert at.code[0].value.startswith(" ".join(STUB))  # the live view shows the command actually run
    set_fields(at, output_dir=work / "runs" / "second")
    button(at, "Start training").click().run()
    assert "Training run 'from-form'" in error_text(at) and "is still running" in error_text(at)
    assert not (work / "runs" / "second").exists()
    button(at, "Cancel").click().run()
    assert any("Run cancelled" in w.value for w in at.warning)
    assert any("Status: **cancelled**" in m.value for m in at.markdown)


def test_adapter_registry_lists_the_shipped_adapter_with_its_evaluation(engine, admin, work):
    at = app_as(admin, PAGE, admin_tab="Adapters").run()
    assert not at.exception
    assert any(m.value.startswith(f"#### {DEFAULT_ADAPTER_DIR.name}") for m in at.markdown)
    report = json.loads((DEFAULT_ADAPTER_DIR / "eval.json").read_text())
    rows = next(d.value for d in at.dataframe if "Metric" in d.value.columns)
    all_row = rows[rows["Metric"] == "MCQ accuracy, all sampled"].iloc[0]
    assert all_row["Adapter"] == pytest.approx(100 * report["results"]["adapter"]["mcq"]["all"]["accuracy"])
    activate = next(b for b in at.button if b.key and b.key.startswith("admin_activate_"))
    activate.click().run()
    assert any(f"Now serving adapter {DEFAULT_ADAPTER_DIR.name}" in s.value for s in at.success)
    with Session(engine) as session:
        assert training.active_adapter(session=session).path == str(DEFAULT_ADAPTER_DIR)
    button(at, "Serve the configured default instead").click().run()
    with Session(engine) as session:
        assert training.active_adapter(session=session) is None


def test_run_history_table_overlay_and_picking_a_run(engine, admin, work):
    first, run_a = write_run(work, engine, "run-a", state="stopped", steps=3, total=5, checkpoint=True)
    save_stub_adapter(run_a, {"model_name": "tiny-base"}, "stopped", 3)
    second, _ = write_run(work, engine, "run-b", state="completed", steps=5, total=5, checkpoint=False)
    at = app_as(admin, PAGE, admin_tab="Runs").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["Run"]) == ["run-b", "run-a"] and list(table["Status"]) == ["completed", "stopped"]
    assert list(table["Train loss"]) == [0.5, 1.5] and list(table["Eval loss"]) == [2.25, 2.25]
    assert [b.label for b in at.button if b.label.startswith("Register")] == []  # run-b is picked: completed
    at.multiselect(key="admin_overlay").set_value([first, second]).run()
    overlay = chart_spec(at, 0)
    assert [t["name"] for t in overlay["data"]] == ["run-a · training", "run-a · validation", "run-b · training",
                                                     "run-b · validation"]
    at.selectbox(key="admin_pick_run").set_value(first).run()
    button(at, "Register this run's adapter").click().run()
    assert any("Registered adapter run-a-step3" in s.value for s in at.success)
    assert (work / "adapters" / "run-a-step3" / "adapter_card.json").is_file()
    button(at, "Show in the live view").click().run()
    assert at.session_state["admin_tab"] == "Train" and at.session_state["admin_run_id"] == first
    assert any(m.value == "Run run-a" for m in at.subheader)


def test_evaluation_runs_in_the_background_and_its_report_is_shown(engine, admin, work, monkeypatch):
    report = json.loads((DEFAULT_ADAPTER_DIR / "eval.json").read_text())
    report["results"]["adapter"]["mcq"]["all"]["accuracy"] = 0.5
    source = work / "fake-eval.json"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text(json.dumps(report))
    seen = {}

    def fake_command(adapter_dir, *, output_dir, **options):
        seen.update(options, adapter=Path(adapter_dir), output=Path(output_dir))
        return [sys.executable, "-c", "import shutil, sys, time; time.sleep(0.5); print('[evaluate] base: loading'); "
                f"shutil.copy({str(source)!r}, {str(Path(output_dir) / 'eval.json')!r})"]

    monkeypatch.setattr(launch, "evaluate_command", fake_command)
    at = app_as(admin, PAGE, admin_tab="Adapters").run()
    at.number_input(key="admin_eval_limit").set_value(3)
    at.number_input(key="admin_eval_tokens").set_value(32)
    at.number_input(key="admin_eval_mcq").set_value(4)
    next(b for b in at.button if b.key and b.key.startswith("admin_eval_")).click().run()
    assert not at.exception
    assert any(f"Evaluation of {DEFAULT_ADAPTER_DIR.name} started" in i.value for i in at.info)
    assert any("is running" in i.value for i in at.info)
    assert next(b for b in at.button if b.key and b.key.startswith("admin_eval_")).disabled  # one job at a time
    assert seen["adapter"] == DEFAULT_ADAPTER_DIR and seen["output"] == work / "evals" / DEFAULT_ADAPTER_DIR.name
    assert (seen["limit"], seen["max_new_tokens"], seen["mcq_per_source"]) == (3, 32, 4)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and launch.evaluation_state(seen["output"]).state == "running":
        time.sleep(0.1)
    at.run()
    rows = at.dataframe[-1].value
    assert rows[rows["Metric"] == "MCQ accuracy, all sampled"].iloc[0]["Adapter"] == pytest.approx(50.0)
    assert not (DEFAULT_ADAPTER_DIR / "eval.log").exists()  # the shipped folder is left as published


def test_pages_serve_the_active_adapter(engine, work):
    """resources.active_adapter_path: the activated adapter's folder, the setting otherwise (and for the same folder)."""
    import shutil

    from app import resources

    assert resources.active_adapter_path() == "default"
    run_dir = work / "runs" / "my-run"
    run_dir.mkdir(parents=True)
    save_stub_adapter(run_dir, {"model_name": "tiny-base"}, "completed", 4)
    folder = work / "adapters" / "my-run"
    shutil.copytree(run_dir / "adapter", folder)
    with Session(engine) as session:
        mine = training.register_adapter(session=session, path=str(folder), name="my-run", base_model="tiny-base",
                                         card={})
        shipped = training.register_adapter(session=session, path=str(DEFAULT_ADAPTER_DIR), name="shipped",
                                            base_model="x", card={})
        mine_id, shipped_id = mine.id, shipped.id
        training.activate_adapter(session=session, adapter_id=mine_id)
    assert resources.active_adapter_path() == str(folder)
    with Session(engine) as session:
        training.activate_adapter(session=session, adapter_id=shipped_id)
    assert resources.active_adapter_path() == "default"  # the configured default's folder: one cached model
    with Session(engine) as session:
        training.activate_adapter(session=session, adapter_id=mine_id)
    shutil.rmtree(folder)
    assert resources.active_adapter_path() == "default"  # a folder deleted by hand never breaks the pages


def test_gguf_exports_of_an_adapter_are_written_and_offered_as_downloads(engine, admin, work):
    from gguf import GGUFReader

    at = app_as(admin, PAGE, admin_tab="Adapters").run()
    record_id = next(b.key for b in at.button if b.key and b.key.startswith("admin_activate_")).rsplit("_", 1)[1]
    at.button(key=f"admin_gguf_lora_{record_id}_export").click().run()
    assert not at.exception and not at.error
    lora = Path(at.session_state[f"admin_gguf_lora_{record_id}"])
    assert lora.is_file() and lora.is_relative_to(work) and lora.name.endswith(".lora.gguf")
    fields = GGUFReader(lora).fields
    assert bytes(fields["general.type"].parts[-1]).decode() == "adapter"
    labels = [b.label for b in at.get("download_button")]
    assert "Download GGUF LoRA" in labels and "Export GGUF merged (Q8_0)" in [b.label for b in at.button]
    # The same adapter content is exported once: a second export returns the same file untouched.
    mtime = lora.stat().st_mtime_ns
    from services import training as training_service
    from app import resources
    with Session(engine) as session:
        record = next(r for r in training.list_adapters(session=session) if r.id == int(record_id))
    assert training_service.export_gguf(resources.get_settings(), record, merged=False) == lora
    assert lora.stat().st_mtime_ns == mtime


def test_gguf_export_is_refused_with_a_message_for_a_base_without_gguf(engine, admin, work, monkeypatch):
    from dataclasses import replace

    from app import resources
    from services import training as training_service

    at = app_as(admin, PAGE, admin_tab="Adapters").run()
    record_id = int(next(b.key for b in at.button if b.key and b.key.startswith("admin_activate_")).rsplit("_", 1)[1])
    with Session(engine) as session:
        record = next(r for r in training.list_adapters(session=session) if r.id == record_id)
    hub = replace(resources.get_settings(), base_model="meta-llama/Llama-3.2-1B-Instruct")
    with pytest.raises(training_service.JobError, match="needs a GGUF base model"):
        training_service.export_gguf(hub, record, merged=True)
    assert not (work / "exports").exists() or not any((work / "exports").rglob("*.gguf"))


# -- the fine-tuning lab (issue 20) ---------------------------------------------------------------------


def test_form_speaks_plainly_with_the_config_name_in_the_help(engine, admin):
    at = app_as(admin, PAGE).run()
    lr = at.text_input(key="cfg_learning_rate")
    assert lr.label == "Learning rate" and "`learning_rate`" in lr.help and "Peak learning rate" in lr.help
    assert at.text_input(key="cfg_gradient_accumulation_steps").label == "Micro-batches per step"
    assert at.selectbox(key="cfg_device").label == "Train on"
    assert not any(w.label in ("model_name", "eval_steps") for w in at.text_input)


def test_builtin_and_saved_presets_fill_the_form_and_can_be_edited_and_deleted(engine, admin, work):
    at = app_as(admin, PAGE).run()
    picker = at.selectbox(key="admin_preset")
    assert picker.options[:5] == ["Trainer defaults", "The seed's QLoRA recipe", "Fast GPU (bf16)", "CPU demo (minutes)",
                                  "The shipped adapter's recipe"]
    picker.set_value("cpu-demo").run()
    button(at, "Load").click().run()
    assert not at.exception
    assert any('Loaded preset "CPU demo (minutes)"' in s.value for s in at.success)
    assert at.text_input(key="cfg_max_steps").value == "10" and at.selectbox(key="cfg_device").value == "cpu"
    assert at.text_input(key="cfg_batch_size").value == "1"
    # Edit two fields and save as a preset of one's own; it is offered, loads back, and is edited by saving again.
    set_fields(at, learning_rate="0.0001", lora_r=4)
    at.text_input(key="admin_preset_name").set_value("Tiny r4")  # a form field: sent with the submit
    button(at, "Save preset").click().run()
    assert any('Saved preset "Tiny r4"' in s.value for s in at.success)
    saved = json.loads((work / "presets" / "tiny-r4.json").read_text())
    assert saved["values"]["learning_rate"] == 0.0001 and saved["values"]["lora_r"] == 4
    assert saved["values"]["max_steps"] == 10  # carried over from the CPU demo it started from
    at.selectbox(key="admin_preset").set_value("defaults").run()
    button(at, "Load").click().run()
    assert at.text_input(key="cfg_lora_r").value == "16"
    at.selectbox(key="admin_preset").set_value("tiny-r4").run()
    assert "Tiny r4 (saved)" in at.selectbox(key="admin_preset").options
    button(at, "Load").click().run()
    assert at.text_input(key="cfg_lora_r").value == "4" and at.text_input(key="cfg_learning_rate").value == "0.0001"
    set_fields(at, lora_r=2)
    button(at, "Save preset").click().run()  # same name: the saved preset is edited
    assert json.loads((work / "presets" / "tiny-r4.json").read_text())["values"]["lora_r"] == 2
    at.text_input(key="admin_preset_name").set_value("CPU demo")
    button(at, "Save preset").click().run()
    assert any("built-in preset" in e.value for e in at.error)
    button(at, 'Delete preset "Tiny r4"').click().run()
    assert not (work / "presets" / "tiny-r4.json").exists()
    assert at.selectbox(key="admin_preset").value == "defaults"
    assert at.text_input(key="cfg_lora_r").value == "2"  # the form keeps what it had


def test_an_unknown_preset_and_an_older_preset_get_clear_messages_with_nothing_lost(engine, admin, work):
    folder = work / "presets"
    folder.mkdir(parents=True)
    old = folder / "old-recipe.json"
    old.write_text(json.dumps({"title": "Old recipe", "config_version": 1,
                               "values": {"num_train_epochs": 1, "lr": 0.0005, "load_in_4bit": True, "lora_rr": 4}}))
    (folder / "damaged.json").write_text("{oops")
    before = old.read_text()
    at = app_as(admin, PAGE)
    at.query_params["preset"] = "no-such-preset"
    at.run()
    assert not at.exception
    assert any("No preset named 'no-such-preset'" in e.value and "unchanged" in e.value for e in at.error)
    assert at.text_input(key="cfg_learning_rate").value == "0.0002"  # the defaults, untouched
    assert any("damaged.json cannot be read" in w.value for w in at.warning)
    at.selectbox(key="admin_preset").set_value("old-recipe").run()
    button(at, "Load").click().run()
    assert at.text_input(key="cfg_num_epochs").value == "1.0" and at.text_input(key="cfg_learning_rate").value == "0.0005"
    notes = next(w.value for w in at.warning if "could not be used as they are" in w.value)
    assert "'num_train_epochs' is now called 'num_epochs'" in notes and "'load_in_4bit'" in notes
    assert "lora_rr" in notes and "keeps its default" in notes
    assert old.read_text() == before
    at2 = app_as(admin, PAGE)
    at2.query_params["preset"] = "cpu-demo"  # a link to a preset loads it
    at2.run()
    assert at2.text_input(key="cfg_max_steps").value == "10"


def test_check_warns_about_mistakes_and_estimates_from_the_data_plan(engine, admin, work, tiny_model):
    prepared(work)
    at = app_as(admin, PAGE).run()
    set_fields(at, model_name=tiny_model, eval_file="none", eval_steps=10, max_steps=5, learning_rate=0.05,
               max_seq_len=190, batch_size=2, gradient_accumulation_steps=1)
    button(at, "Check settings").click().run()
    assert not at.exception and not at.error, error_text(at)
    warnings = "\n".join(w.value for w in at.warning)
    assert "eval_steps" in warnings and "no validation data" in warnings
    assert "overrides the" in warnings and "set max_steps to -1" in warnings
    assert "far outside the usual LoRA range" in warnings
    assert "leaves out" in warnings and "Raise it to" in warnings
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Estimated time"] == "—" and any("Calibrate times" in c.value for c in at.caption)
    from app import resources
    from services import training as training_service
    from trainer.config import build_config as build

    cfg = build(at.session_state["admin_checked"])[0]
    plan = training_service.dataset_plan(cfg)
    assert int(metrics["Tokens per epoch"].replace(",", "")) == sum(n for n in plan.lengths if n <= 190)
    folder = training_service.calibration_dir(resources.get_settings())
    folder.mkdir(parents=True)
    (folder / f"{training_service.throughput_key(cfg)}.json").write_text(json.dumps(
        {"tokens_per_s": 10.0, "startup_s": 30.0, "steps": 3, "device": "cpu", "measured_at": "2026-12-06T09:00:00"}))
    button(at, "Check settings").click().run()
    metrics = {m.label: m.value for m in at.metric}
    expected = 30.0 + 5 * plan.tokens_per_step / 10.0
    from core.runs import format_duration

    assert metrics["Estimated time"] == format_duration(expected)
    assert any("calibration on this machine" in c.value and "tokens/s" in c.value for c in at.caption)


def test_a_long_cpu_run_is_warned_about_with_the_demo_preset_named(engine, admin, work, tiny_model):
    prepared(work)
    at = app_as(admin, PAGE).run()
    set_fields(at, model_name=tiny_model, max_steps=-1, num_epochs=1000, max_seq_len=400)
    at.selectbox(key="cfg_device").set_value("cpu")
    button(at, "Check settings").click().run()
    from app import resources
    from services import training as training_service
    from trainer.config import build_config as build

    cfg = build(at.session_state["admin_checked"])[0]
    folder = training_service.calibration_dir(resources.get_settings())
    folder.mkdir(parents=True)
    (folder / f"{training_service.throughput_key(cfg)}.json").write_text(json.dumps(
        {"tokens_per_s": 5.0, "startup_s": 1.0, "steps": 3, "device": "cpu", "measured_at": "2026-12-06T09:00:00"}))
    button(at, "Check settings").click().run()
    warning = next(w.value for w in at.warning if "hours on this CPU" in w.value)
    assert "CPU demo (minutes)" in warning and "GPU" in warning


def test_calibrate_button_times_the_settings_in_a_throwaway_process(engine, admin, work, tiny_model, monkeypatch):
    prepared(work)
    monkeypatch.setattr(launch, "train_command", lambda rd, resume=False: STUB + ["--config", str(rd / "config.yaml")])
    at = app_as(admin, PAGE).run()
    set_fields(at, model_name=tiny_model, max_steps=4, max_seq_len=400)
    button(at, "Check settings").click().run()
    button(at, "Calibrate (time a few steps)").click().run()
    assert not at.exception
    assert any("Measured 102.5 tokens/s" in s.value for s in at.success)
    assert any("calibration on this machine" in c.value for c in at.caption)
    assert {m.label: m.value for m in at.metric}["Estimated time"] != "—"
    folder = work / "calibration"
    assert [p.suffix for p in folder.iterdir()] == [".json"]  # the throwaway run folder is gone


def _fake_models(monkeypatch):
    """get_served_model -> a fake per adapter; stream_case writes a reasoning and an answer naming the adapter."""
    import types

    from app import resources
    from core import inference
    from core.inference import GenerationStats, StreamEvent

    loads = []

    def served(base, adapter, device, _progress=None):
        loads.append(adapter)
        name = "none (base model)" if adapter == "none" else Path(adapter).name
        return types.SimpleNamespace(base=types.SimpleNamespace(identity="tiny-base"), adapter_name=name,
                                     adapter_problem=None, requested_adapter=None, device="cpu",
                                     describe=lambda: "fake")

    def stream(case_text, *, served, settings, stop=None, conclude=None, options=None, context=""):
        who = served.adapter_name
        yield StreamEvent("token", reasoning=f"{who} reasons about: {case_text}", text="x")
        yield StreamEvent("done", reasoning=f"{who} reasons about: {case_text}", answer=f"answer of {who}",
                          has_answer=True, text="x\n\nFinal answer: y",
                          stats=GenerationStats(new_tokens=20, tokens_per_s=12.5 if who.startswith("none") else 9.0,
                                                finish_reason="eos"))

    monkeypatch.setattr(resources, "get_served_model", served)
    monkeypatch.setattr(inference, "stream_case", stream)
    return loads


def test_compare_view_runs_one_case_on_two_models_and_saves_both_to_history(engine, admin, work, monkeypatch):
    from storage import history

    loads = _fake_models(monkeypatch)
    at = app_as(admin, PAGE, admin_tab="Compare").run()
    assert not at.exception
    left, right = at.selectbox(key="admin_compare_a"), at.selectbox(key="admin_compare_b")
    assert left.value == "base" and right.value != "base"
    button(at, "Compare").click().run()
    assert any("Write a case" in e.value for e in at.error)
    at.text_area(key="admin_compare_case").set_value("Fever and neck stiffness.").run()
    button(at, "Compare").click().run()
    assert not at.exception, at.exception
    assert loads == ["none", str(DEFAULT_ADAPTER_DIR)]
    text = "\n".join(m.value for m in at.markdown)
    assert "answer of none (base model)" in text and f"answer of {DEFAULT_ADAPTER_DIR.name}" in text
    assert f"{DEFAULT_ADAPTER_DIR.name} reasons about: Fever and neck stiffness." in text
    captions = "\n".join(c.value for c in at.caption)
    assert "12.5 tokens/s" in captions and "9.0 tokens/s" in captions
    result = at.session_state["admin_compare_result"]
    with Session(engine) as session:
        runs = history.list_case_runs(session=session, user_id=admin.id)
    assert len(runs) == 2 and {r.settings["comparison"] for r in runs} == {result["id"]}
    assert sorted(r.settings["side"] for r in runs) == sorted(s["label"] for s in result["sides"])
    assert f"Comparison {result['id']}: saved to history as runs" in captions
    at.selectbox(key="admin_compare_b").set_value("base").run()
    button(at, "Compare").click().run()
    assert any("two different models" in e.value for e in at.error)


def test_learn_from_samples_shows_best_worst_and_wrong_items_with_references(engine, admin, work):
    from core.runs import sample_lessons
    from trainer.launch import read_eval_samples

    lessons = sample_lessons(read_eval_samples(DEFAULT_ADAPTER_DIR), row="adapter", n=3)
    at = app_as(admin, PAGE, admin_tab="Adapters").run()
    assert not at.exception
    text = "\n".join(m.value for m in at.markdown)
    best = lessons.best[0]
    assert f"ROUGE-L {best['rouge_l']:.3f}" in text and f"ROUGE-L {lessons.worst[0]['rouge_l']:.3f}" in text
    assert best["rouge_l"] > lessons.worst[0]["rouge_l"]
    wrong = next(d for d in at.dataframe if "Adapter chose" in d.value.columns)
    assert len(wrong.value) == len(lessons.wrong_mcq) > 0
    assert (wrong.value["Correct"] != wrong.value["Adapter chose"]).all()


def test_runs_overview_shows_each_runs_changes_and_survives_a_vanished_run_folder(engine, admin, work):
    import shutil

    first, run_a = write_run(work, engine, "run-a", state="completed", steps=3, total=3, checkpoint=False)
    (run_a / "preset.json").write_text(json.dumps({"name": "cpu-demo", "title": "CPU demo (minutes)", "builtin": True,
                                                   "config": {"model_name": "embedded", "lora_r": 8}}))
    second, run_b = write_run(work, engine, "run-b", state="completed", steps=2, total=2, checkpoint=False)
    at = app_as(admin, PAGE, admin_tab="Runs").run()
    diff = next(d.value for d in at.dataframe if "Changed settings" in d.value.columns)
    row_a = diff[diff["Run"] == "run-a"].iloc[0]
    assert row_a["Preset"] == "CPU demo (minutes)" and "Base model (model_name): embedded → m" in row_a["Changed settings"]
    assert diff[diff["Run"] == "run-b"].iloc[0]["Preset"] == "trainer defaults"
    shutil.rmtree(run_b)
    at.multiselect(key="admin_overlay").set_value([first, second]).run()
    assert not at.exception
    assert any("run-b is gone" in w.value for w in at.warning)
    overlay = chart_spec(at, 0)
    assert [t["name"] for t in overlay["data"]] == ["run-a · training", "run-a · validation"]
