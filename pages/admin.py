"""Admin page: launch and watch fine-tuning runs, compare them, evaluate adapters and choose the one the app serves.

Thin view: the form is built from ``trainer.config.TrainConfig`` and checked once by
``services.training`` with the trainer's own validation; processes are started and read through
``services.training`` (which also keeps the database in step); curves, progress and estimates come from ``core.runs``, figures
from ``core.charts``, zips and merged exports from ``core.adapters``.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import streamlit as st

from app import auth, resources, saving, tabs
from core import adapters as adapter_lib
from core import charts, inference, safety
from core import runs as runs_lib
from core.metrics import read_metrics
from core.model import ModelError
from services import training
from services.training import AdapterRecord, DatasetPlan, Job, LaunchError, TrainingRun
from trainer.config import (
    ConfigError,
    TrainConfig,
    build_config,
    config_warnings,
    field_choices,
    field_help,
    field_label,
)

user = auth.require_role(auth.ADMIN)
settings = resources.get_settings()
engine = resources.get_engine()
resources.reconcile_jobs()  # once per process (app/main.py calls it too); registers the shipped adapter

MAIN_FIELDS = ("model_name", "train_file", "eval_file", "max_seq_len", "num_epochs", "max_steps", "batch_size",
               "gradient_accumulation_steps", "learning_rate", "logging_steps", "eval_steps", "save_steps",
               "output_dir")
FORM_FIELDS = tuple(f.name for f in fields(TrainConfig) if f.name != "resume")
ADVANCED_FIELDS = tuple(n for n in FORM_FIELDS if n not in MAIN_FIELDS)
DEFAULTS = "defaults"
BASE_ONLY = "base"
LIVE_EVERY_S = 2


def _widget_value(value: Any) -> Any:
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


def _set_form(cfg: TrainConfig) -> None:
    for name in FORM_FIELDS:
        st.session_state[f"cfg_{name}"] = _widget_value(getattr(cfg, name))


for key, default in (("admin_flash", None), ("admin_problems", []), ("admin_checked", None), ("admin_run_id", None),
                     ("admin_overlay", []), ("admin_preset", DEFAULTS), ("admin_eval_limit", 8),
                     ("admin_eval_tokens", 128), ("admin_eval_mcq", 20), ("admin_loaded_preset", None),
                     ("admin_preset_notes", []), ("admin_preset_name", ""), ("admin_compare_result", None),
                     ("admin_compare_tokens", 256)):
    st.session_state.setdefault(key, default)
if "cfg_model_name" not in st.session_state:
    _set_form(TrainConfig())
    if requested := st.query_params.get("preset"):  # a link to a preset: ?preset=<name>
        st.session_state["admin_preset"] = requested
        st.session_state["admin_preload"] = True


def flash(kind: str, message: str) -> None:
    st.session_state["admin_flash"] = (kind, message)


def show_flash() -> None:
    if st.session_state["admin_flash"]:
        kind, message = st.session_state["admin_flash"]
        st.session_state["admin_flash"] = None
        getattr(st, kind)(message)


# -- callbacks -------------------------------------------------------------------------------------------


def _form_config() -> tuple[TrainConfig, list[str]]:
    return training.check_config({name: st.session_state[f"cfg_{name}"] for name in FORM_FIELDS})


def _load_preset() -> None:
    """Fill the form from the picked preset; what cannot be carried over is listed, and the preset file is never changed."""
    name = st.session_state["admin_preset"]
    st.session_state.update(admin_checked=None, admin_problems=[], admin_preset_notes=[])
    if name == DEFAULTS:
        _set_form(TrainConfig())
        st.session_state["admin_loaded_preset"] = None
        return
    try:
        loaded = training.load_preset(settings, name)
    except training.PresetError as exc:
        flash("error", f"{exc} The form is left as it was.")
        return
    _set_form(loaded.config)
    st.session_state["admin_loaded_preset"] = name
    st.session_state["admin_preset_name"] = "" if loaded.preset.builtin else loaded.preset.title
    notes = loaded.notes + [f"{p} (that field keeps its default)" for p in loaded.problems]
    st.session_state["admin_preset_notes"] = notes
    flash("success", f"Loaded preset \"{loaded.preset.title}\"" + (
        f" with {len(notes)} setting(s) to check (see below)." if notes else "."))


def _save_preset() -> None:
    title = st.session_state["admin_preset_name"]
    try:
        preset = training.save_preset(settings, title, {name: st.session_state[f"cfg_{name}"] for name in FORM_FIELDS})
    except ConfigError as exc:
        st.session_state["admin_problems"] = exc.problems
        return
    except training.PresetError as exc:
        flash("error", str(exc))
        return
    st.session_state.update(admin_preset=preset.name, admin_loaded_preset=preset.name)
    flash("success", f"Saved preset \"{preset.title}\" ({len(preset.values)} setting(s) that differ from the "
                     "trainer's defaults).")


def _delete_preset(name: str) -> None:
    try:
        training.delete_preset(settings, name)
    except training.PresetError as exc:
        flash("error", str(exc))
        return
    st.session_state.update(admin_preset=DEFAULTS, admin_loaded_preset=None)
    flash("info", f"Deleted preset {name!r}; the form keeps its values.")


def _calibrate(config: dict[str, Any]) -> None:
    cfg, _ = build_config(config)
    with st.spinner("Timing a few training steps in a throwaway process…"):
        try:
            tp = training.calibrate(settings, cfg)
        except (training.CalibrationError, LaunchError, ConfigError) as exc:
            flash("error", str(exc))
            return
    flash("success", f"Measured {tp.tokens_per_s:,.1f} tokens/s on this machine; the estimate below uses it.")


def _check() -> None:
    cfg, problems = _form_config()
    st.session_state["admin_problems"] = problems
    st.session_state["admin_checked"] = None if problems else cfg.to_dict()


def _start() -> None:
    raw = {name: st.session_state[f"cfg_{name}"] for name in FORM_FIELDS}
    st.session_state["admin_problems"] = []
    st.session_state["admin_checked"] = build_config(raw)[0].to_dict()
    preset = None
    if st.session_state["admin_loaded_preset"]:
        try:
            preset = training.get_preset(settings, st.session_state["admin_loaded_preset"])
        except training.PresetError:
            preset = None  # deleted since it was loaded: the run starts all the same, compared with the defaults
    try:
        run = training.launch_run(engine, settings, raw, user_id=user.id, preset=preset)
    except ConfigError as exc:
        st.session_state["admin_problems"] = exc.problems
        st.session_state["admin_checked"] = None
        return
    except LaunchError as exc:
        flash("error", str(exc))
        return
    st.session_state["admin_run_id"] = run.id
    flash("success", f"Started training run {training.run_name(run)}.")


def _control(action: str, run_id: int) -> None:
    try:
        if action == "stop":
            training.stop_run(engine, run_id)
            flash("info", "Stop requested: the trainer finishes its step, saves a checkpoint and the adapter, then exits.")
        elif action == "cancel":
            training.cancel_run(engine, run_id)
            flash("warning", "Run cancelled: its processes were terminated.")
        elif action == "resume":
            run = training.resume_run(engine, settings, run_id)
            flash("success", f"Resumed run {training.run_name(run)} from its last checkpoint.")
        elif action == "register":
            record = training.register_run_adapter(engine, settings, run_id)
            flash("success", f"Registered adapter {record.name}.")
    except (training.JobError, LaunchError, ModelError) as exc:
        flash("error", str(exc))


def _activate(adapter_id: int | None) -> None:
    try:
        record = training.activate(engine, settings, adapter_id)
    except training.JobError as exc:
        flash("error", str(exc))
        return
    flash("success", f"Now serving adapter {record.name}." if record else "Now serving the configured default.")


def _evaluate(adapter_id: int) -> None:
    state = st.session_state
    try:
        job = training.start_evaluation(engine, settings, adapter_id, limit=int(state["admin_eval_limit"]) or None,
                                    max_new_tokens=int(state["admin_eval_tokens"]),
                                    mcq_per_source=int(state["admin_eval_mcq"]))
    except (training.JobError, LaunchError) as exc:
        flash("error", str(exc))
        return
    flash("info", f"Evaluation of {job.label} started (pid {job.pid}).")


@st.cache_data(show_spinner="Reading and tokenising the training data…", max_entries=8)
def dataset_plan(config_json: str, train_mtime_ns: int) -> DatasetPlan:
    """Cached per config and training-file version (tokenising a few thousand examples takes seconds)."""
    cfg, _ = build_config(json.loads(config_json))
    return training.dataset_plan(cfg)


# -- live view -------------------------------------------------------------------------------------------


def live_view(run_id: int, *, was_active: bool) -> None:
    view = training.run_view(engine, settings, run_id)
    if view.state.active != was_active:
        st.rerun()  # start or stop the timer of this fragment
    show_flash()  # what a button of this fragment just did (a fragment rerun skips the page's own flash)
    state, p = view.state, view.progress
    st.subheader(f"Run {training.run_name(view.run)}")
    st.markdown(f"Status: **{state.state}**" + (f" — {state.reason}" if state.reason else ""))
    total = f" of {p.total_steps}" if p.total_steps else ""
    eta = f" · ETA {runs_lib.format_duration(p.eta_s)}" if state.active and p.eta_s is not None else ""
    st.progress(p.fraction, text=f"Step {p.step}{total}{eta}")
    cols = st.columns(4)
    cols[0].metric("Time trained", runs_lib.format_duration(p.elapsed_s))
    cols[1].metric("Training loss", "—" if p.last_loss is None else f"{p.last_loss:.4f}")
    cols[2].metric("Validation loss", "—" if p.last_eval_loss is None else f"{p.last_eval_loss:.4f}")
    cols[3].metric("Tokens/s", "—" if p.tokens_per_s is None else f"{p.tokens_per_s:,.0f}")
    buttons = st.columns(4)
    buttons[0].button("Stop & save", key="live_stop", on_click=_control, args=("stop", run_id),
                      disabled=not state.stoppable, icon=":material/stop_circle:")
    buttons[1].button("Cancel", key="live_cancel", on_click=_control, args=("cancel", run_id),
                      disabled=not state.active, icon=":material/cancel:")
    buttons[2].button("Resume", key="live_resume", on_click=_control, args=("resume", run_id),
                      disabled=not state.resumable, icon=":material/play_arrow:",
                      help=None if state.resumable else "Only a stopped or interrupted run with a complete checkpoint.")
    if state.state == "interrupted" and state.resumable:
        st.warning("The trainer process is gone without a final save (killed, or the server restarted). "
                   f"Resume continues from {Path(state.checkpoint or '').name}.")
    chart_cols = st.columns(3)
    chart_cols[0].plotly_chart(charts.loss_figure(view.curves), key="live_loss")
    chart_cols[1].plotly_chart(charts.learning_rate_figure(view.curves), key="live_lr")
    chart_cols[2].plotly_chart(charts.tokens_per_second_figure(view.curves), key="live_tps")
    if view.command:
        st.code(view.command, language="bash", wrap_lines=True)
    with st.expander("Log (last lines)", expanded=state.state in ("failed", "interrupted")):
        st.code(view.log_tail or "(no output yet)", language=None)


def evaluation_watch(job: Job) -> None:
    """The running evaluation's log tail; the whole page reruns when it ends (to show its report)."""
    if not training.evaluation_running(job):
        st.rerun()
    st.info(f"{training.describe(job)} is running.")
    st.code(training.log_tail(Path(job.log), lines=12) or "(no output yet)", language=None)


# -- tabs ------------------------------------------------------------------------------------------------


def train_view(all_runs: list[TrainingRun]) -> None:
    run_ids = [r.id for r in all_runs]
    shown_id = st.session_state["admin_run_id"] if st.session_state["admin_run_id"] in run_ids else (
        run_ids[0] if run_ids else None)
    if shown_id is not None:
        shown = next(r for r in all_runs if r.id == shown_id)
        active = shown.status in training.UNSETTLED
        with st.container(border=True):
            st.fragment(live_view, run_every=LIVE_EVERY_S if active else None)(shown_id, was_active=active)

    st.subheader("New training run")
    presets, unreadable = training.list_presets(settings)
    for problem in unreadable:
        st.warning(f"Preset not offered: {problem}")
    names = [DEFAULTS, *presets]
    if st.session_state["admin_preset"] not in names:
        st.error(f"No preset named {st.session_state['admin_preset']!r}: pick one of the list. The form is unchanged.")
        st.session_state["admin_preset"] = DEFAULTS
        st.session_state.pop("admin_preload", None)
    preset_col, load_col = st.columns([3, 1], vertical_alignment="bottom")

    def title(name: str) -> str:
        if name == DEFAULTS:
            return "Trainer defaults"
        preset = presets[name]
        return preset.title if preset.builtin else f"{preset.title} (saved)"

    preset_col.selectbox("Start from", names, key="admin_preset", format_func=title,
                         help="Built-in recipes and your saved presets. Load fills the form; nothing starts until you "
                              "click Start training.")
    load_col.button("Load", key="admin_load_preset", on_click=_load_preset)
    picked = presets.get(st.session_state["admin_preset"])
    if picked is not None:
        st.caption(safety.markdown_text(picked.description or picked.title))
    if st.session_state["admin_preset_notes"]:
        st.warning("Some settings of the preset could not be used as they are:\n\n"
                   + "\n".join(f"- {safety.markdown_text(n)}" for n in st.session_state["admin_preset_notes"]))

    def field_widget(name: str) -> None:
        choices, key = field_choices(name), f"cfg_{name}"
        label, help_text = field_label(name), f"`{name}` — {field_help(name)}"
        if choices:
            st.selectbox(label, choices, key=key, help=help_text)
        elif isinstance(st.session_state[key], bool):
            st.checkbox(label, key=key, help=help_text)
        else:
            st.text_input(label, key=key, help=help_text)

    with st.form("train_form", border=True):
        cols = st.columns(3)
        for i, name in enumerate(MAIN_FIELDS):
            with cols[i % 3]:
                field_widget(name)
        with st.expander("Advanced settings"):
            cols = st.columns(3)
            for i, name in enumerate(ADVANCED_FIELDS):
                with cols[i % 3]:
                    field_widget(name)
        check_col, start_col = st.columns(2)
        check_col.form_submit_button("Check settings", on_click=_check, icon=":material/fact_check:")
        start_col.form_submit_button("Start training", type="primary", on_click=_start, icon=":material/rocket_launch:")
        # In the form, so that saving takes the fields as they are typed (a button outside would see the last submit).
        save_col, save_btn = st.columns([3, 1], vertical_alignment="bottom")
        save_col.text_input("Save these settings as preset", key="admin_preset_name", max_chars=60,
                            placeholder="a name for your preset",
                            help="Saving under the name of a saved preset replaces it (that is how you edit one).")
        save_btn.form_submit_button("Save preset", on_click=_save_preset, icon=":material/save:")
    if picked is not None and not picked.builtin:
        st.button(f"Delete preset \"{picked.title}\"", key="admin_delete_preset", on_click=_delete_preset,
                  args=(picked.name,), icon=":material/delete:")

    if st.session_state["admin_problems"]:
        st.error("The run cannot start:\n\n" + "\n".join(f"- {p}" for p in st.session_state["admin_problems"]))
    elif st.session_state["admin_checked"]:
        cfg, _ = build_config(st.session_state["admin_checked"])
        st.markdown("**Command** (the launcher saves this config as `config.yaml` in the run directory and runs "
                    "`python -m trainer --config <run dir>/config.yaml`):")
        st.code(training.cli_equivalent(cfg), language="bash", wrap_lines=True)
        train_file = cfg.resolved_train_file()
        try:
            plan = dataset_plan(json.dumps(cfg.to_dict(), sort_keys=True), train_file.stat().st_mtime_ns)
        except (OSError, ValueError, ModelError) as exc:  # DataError is a ValueError
            st.error(f"Cannot read the training data: {exc}")
            for warning in config_warnings(cfg):
                st.warning(warning, icon=":material/warning:")
        else:
            estimate_view(cfg, plan)


def estimate_view(cfg: TrainConfig, plan: DatasetPlan) -> None:
    """The data plan, the warnings and the projected wall time, with the basis of its speed."""
    projection = training.project(engine, settings, cfg, plan)
    est = projection.estimate
    for warning in projection.warnings:
        st.warning(warning, icon=":material/warning:")
    stats = runs_lib.length_stats(plan.lengths, cfg.max_seq_len)
    m = st.columns(5)
    m[0].metric("Training examples", f"{plan.kept:,}", help=f"{plan.records:,} records in {plan.train_file}")
    m[1].metric("Left out (too long)", f"{stats.over_limit:,}")
    m[2].metric("Estimated steps", f"{plan.total_steps:,}")
    m[3].metric("Tokens per epoch", f"{est.tokens_per_epoch:,}",
                help="Sum of the token lengths of the examples the trainer keeps.")
    m[4].metric("Estimated time", runs_lib.format_duration(est.total_s))
    if est.throughput is not None:
        tp = est.throughput
        parts = [f"start-up {runs_lib.format_duration(est.startup_s)}"] if est.startup_s else []
        parts.append(f"training {runs_lib.format_duration(est.train_s)} ({est.train_tokens:,.0f} tokens at "
                     f"{tp.tokens_per_s:,.1f} tokens/s)")
        if est.evaluations:
            parts.append(f"{est.evaluations} validation passes, the base model's baseline before step 1 included, "
                         f"{runs_lib.format_duration(est.eval_s)}")
        st.caption(f"Projected wall time = {' + '.join(parts)}. Speed from the {tp.basis}; ~{plan.tokens_per_step:,.0f} "
                   "tokens per step. Validation is counted at 3x the training speed (forward passes only).")
    else:
        st.caption("No speed measured yet for these settings on this machine: Calibrate times "
                   f"{training.CALIBRATION_STEPS} steps in a throwaway process (a minute or two on a CPU).")
    st.button("Calibrate (time a few steps)", key="admin_calibrate", on_click=_calibrate, args=(cfg.to_dict(),),
              icon=":material/speed:", disabled=training.active_job(settings) is not None,
              help="Runs the trainer for a few optimiser steps of these settings in a separate process, then removes it.")
    if plan.skipped:
        st.caption("Left out: " + ", ".join(f"{n} {why}" for why, n in plan.skipped.items()))
    if plan.kept == 0:
        st.error(f"All {len(plan.lengths)} examples are longer than max_seq_len={cfg.max_seq_len}: "
                 "the trainer would refuse to start. Raise max_seq_len.")
    st.plotly_chart(charts.token_length_figure(plan.lengths, max_seq_len=cfg.max_seq_len), key="admin_lengths")
    st.caption(f"Token lengths with the tokenizer of {plan.tokenizer}: mean {stats.mean:,.0f}, median "
               f"{stats.p50:,}, 90th percentile {stats.p90:,}, longest {stats.max:,}.")
    st.markdown("**Sample records**")
    st.dataframe(plan.sample, hide_index=True)


def runs_view(all_runs: list[TrainingRun]) -> None:
    if not all_runs:
        st.info("No training runs yet.")
    else:
        names = {r.id: training.run_name(r) for r in all_runs}
        rows = []
        for r in all_runs:
            cfg_d, fm = r.config or {}, r.final_metrics or {}
            rows.append({
                "Run": names[r.id], "Status": r.status,
                "Started": r.started_at.strftime("%Y-%m-%d %H:%M"),
                "Train time": runs_lib.format_duration(fm.get("train_time_s")),
                "Steps": fm.get("steps"), "Train loss": fm.get("train_loss"), "Eval loss": fm.get("eval_loss"),
                "Model": Path(str(cfg_d.get("model_name", ""))).name, "LR": cfg_d.get("learning_rate"),
                "Epochs": cfg_d.get("num_epochs"), "Max steps": cfg_d.get("max_steps"),
                "Batch × accum.": f"{cfg_d.get('batch_size')} × {cfg_d.get('gradient_accumulation_steps')}",
                "LoRA r": cfg_d.get("lora_r"),
            })
        st.dataframe(rows, hide_index=True)
        with st.expander("Settings changed from each run's preset"):
            diff_rows = []
            for r in all_runs:
                against, diff = training.settings_diff(r)
                diff_rows.append({"Run": names[r.id], "Preset": against, "Changed settings": "; ".join(
                    f"{field_label(k)} ({k}): {_shown(a)} → {_shown(b)}" for k, (a, b) in diff.items()) or "none"})
            st.dataframe(diff_rows, hide_index=True, key="admin_diff_table")
        pick_col, act_col = st.columns([3, 1], vertical_alignment="bottom")
        picked = pick_col.selectbox("Run", list(names), format_func=names.get, key="admin_pick_run")
        act_col.button("Show in the live view", key="admin_show_run",
                       on_click=lambda: st.session_state.update(admin_run_id=st.session_state["admin_pick_run"],
                                                                admin_tab="Train"))
        picked_run = next(r for r in all_runs if r.id == picked)
        registered = any(a.training_run_id == picked for a in training.list_adapters(engine))
        if picked_run.status in ("stopped", "cancelled", "interrupted", "completed") and not (
                registered and picked_run.status == "completed") and adapter_lib.has_card(
                Path(picked_run.run_dir) / "adapter"):
            st.button("Register this run's adapter", key="admin_register", on_click=_control,
                      args=("register", picked))
        overlay = st.multiselect("Compare loss curves", list(names), format_func=names.get, key="admin_overlay")
        if overlay:
            by_id = {r.id: r for r in all_runs}
            gone = [names[i] for i in overlay if i in by_id and not Path(by_id[i].run_dir).is_dir()]
            if gone:
                st.warning(f"The run folder of {', '.join(gone)} is gone (moved or deleted): no curve to draw. "
                           "Its row and numbers stay in the table.")
            curves = {names[i]: runs_lib.curves(read_metrics(Path(by_id[i].run_dir) / "metrics.jsonl"))
                      for i in overlay if i in by_id and names[i] not in gone}
            st.plotly_chart(charts.loss_overlay_figure(curves), key="admin_overlay_chart")

def _shown(value: Any) -> str:
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return text if len(text) <= 60 else "…" + text[-59:]


def gguf_view(record: AdapterRecord, problem: str | None) -> None:
    """GGUF exports for llama.cpp, Ollama and LM Studio: made on request, then offered as downloads."""
    g = st.columns([2, 1, 1])
    g[0].caption("For llama.cpp, Ollama or LM Studio: the LoRA as a GGUF adapter (load it with `--lora` on the "
                 "base GGUF), or one merged Q8_0 GGUF file.")
    for col, merged, label in ((g[1], False, "GGUF LoRA"), (g[2], True, "GGUF merged (Q8_0)")):
        key = f"admin_gguf_{'merged' if merged else 'lora'}_{record.id}"
        path = st.session_state.get(key)
        if path is not None and Path(path).is_file():
            col.download_button(f"Download {label}", data=lambda p=path: Path(p).read_bytes(), file_name=Path(path).name,
                                mime="application/octet-stream", key=f"{key}_download", on_click="ignore")
        elif col.button(f"Export {label}", key=f"{key}_export", disabled=problem is not None, help=problem):
            with st.spinner(f"Writing the {label} file…"):
                try:
                    st.session_state[key] = str(training.export_gguf(settings, record, merged=merged))
                except (training.JobError, OSError) as exc:
                    st.error(saving.message_for(exc, f"the {label} file") or f"Export failed: {exc}")
                else:
                    st.rerun()


def adapters_view() -> None:
    adapters = training.list_adapters(engine)
    serving = resources.active_adapter_path()
    st.caption(f"The case-study and quiz pages serve `{Path(serving).name}` on base `{settings.base_model}`.")
    if settings.serving_backend == "openai":  # only then is the backend cheap to ask (no model to load)
        backend = resources.get_backend()
        st.caption(f"Generation runs on the {safety.markdown_text(backend.describe())}.")
        if note := backend.adapter_note():
            st.warning(safety.markdown_text(note), icon=":material/restart_alt:")
    if any(a.active for a in adapters):
        st.button("Serve the configured default instead", key="admin_deactivate", on_click=_activate, args=(None,))
    running = training.active_job(settings)
    if running is not None and running.kind == training.EVALUATE:
        st.fragment(evaluation_watch, run_every=LIVE_EVERY_S)(running)
    with st.expander("Evaluation settings"):
        e = st.columns(3)
        e[0].number_input("Items per part (0 = all)", min_value=0, step=1, key="admin_eval_limit")
        e[1].number_input("Max new tokens", min_value=1, max_value=4096, step=16, key="admin_eval_tokens")
        e[2].number_input("MCQ items per source", min_value=0, step=10, key="admin_eval_mcq")
    identity = adapter_lib.base_identity(settings)
    if not adapters:
        st.info("No adapters registered yet: a completed run registers its adapter here.")
    for record in adapters:
        card = record.card or {}
        with st.container(border=True):
            st.markdown(f"#### {record.name}" + (" · active" if record.active else ""))
            training_info = card.get("training") or {}
            st.caption(f"Base `{record.base_model}` · {card.get('status', '?')} at step "
                       f"{training_info.get('global_step', '?')} · trainable parameters "
                       f"{card.get('trainable_params') or 0:,} · `{record.path}`")
            problem = adapter_lib.mismatch(card, identity)
            b = st.columns(4)
            b[0].button("Activate", key=f"admin_activate_{record.id}", on_click=_activate, args=(record.id,),
                        disabled=record.active or problem is not None, help=problem)
            b[1].download_button("Download zip", data=lambda p=record.path: adapter_lib.archive(Path(p)),
                                 file_name=f"{record.name}.zip", mime="application/zip",
                                 key=f"admin_zip_{record.id}", on_click="ignore")
            b[2].button("Evaluate", key=f"admin_eval_{record.id}", on_click=_evaluate, args=(record.id,),
                        disabled=running is not None)
            if b[3].button("Export merged model", key=f"admin_export_{record.id}", disabled=problem is not None,
                           help=problem or "Merge into a full-precision copy of the base model (takes a while)."):
                with st.spinner("Merging the adapter into a full-precision copy of the base model…"):
                    try:
                        base = resources.get_base_model(settings.base_model, str(settings.model_cache_dir))
                        out = training.export_merged(settings, record, base)
                    except (training.JobError, ModelError, OSError) as exc:
                        st.error(saving.message_for(exc, "the merged model") or f"Export failed: {exc}")
                    else:
                        st.success(f"Merged model written to `{out}`.")
            gguf_view(record, problem)
            metrics = card.get("metrics") or {}
            if metrics:
                st.caption(" · ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float))))
            failure = training.evaluation_failure(settings, record)
            if failure is not None:
                st.error(f"Last evaluation failed: {failure}")
            report = training.eval_report(settings, record)
            with st.expander("Evaluation: base model vs adapter", expanded=False):
                if report is None:
                    st.caption("Not evaluated yet.")
                else:
                    data, where = report
                    rows = runs_lib.eval_rows(data)
                    st.dataframe([{"Metric": r.metric, "n": r.n, "Base model": r.base, "Adapter": r.adapter,
                                   "Change": r.change} for r in rows], hide_index=True)
                    st.plotly_chart(charts.eval_comparison_figure(rows), key=f"admin_eval_chart_{record.id}")
                    st.caption(f"From `{where / 'eval.json'}` ({data.get('created_at', '')}).")
            if report is not None:
                with st.expander("Learn from the samples: best, worst and wrong items"):
                    lessons_view(record)
            with st.expander("Card"):
                st.json(card, expanded=False)


def _sample_card(sample: dict[str, Any], *, score: str) -> None:
    with st.container(border=True):
        st.markdown(f"**{safety.markdown_text(str(sample.get('id', '?')))}** · {sample.get('source', '')} · {score}")
        st.markdown("Reference: " + safety.markdown_text(str(sample.get("reference", ""))))
        st.markdown("Adapter's final answer: " + safety.markdown_text(str(sample.get("answer") or "(none)")))
        with st.popover("Adapter's whole output"):
            st.text(str(sample.get("output", "")))


def lessons_view(record: AdapterRecord) -> None:
    """After an evaluation: the best and worst held-out answers by ROUGE-L, and the MCQ items the adapter got wrong."""
    samples = training.eval_samples(settings, record)
    if not samples:
        st.caption("This evaluation kept no per-item samples (eval_samples.jsonl).")
        return
    lessons = runs_lib.sample_lessons(samples, row="adapter", n=3)
    st.caption(f"{lessons.open_n} open-ended items scored by ROUGE-L against the reference; "
               f"{len(lessons.wrong_mcq)} of {lessons.mcq_n} multiple-choice items answered wrongly.")
    best, worst = st.columns(2)
    with best:
        st.markdown("**Best (highest ROUGE-L)**")
        for sample in lessons.best:
            _sample_card(sample, score=f"ROUGE-L {sample['rouge_l']:.3f}")
    with worst:
        st.markdown("**Worst (lowest ROUGE-L)**")
        for sample in lessons.worst:
            _sample_card(sample, score=f"ROUGE-L {sample['rouge_l']:.3f}")
    st.markdown("**Multiple-choice items answered wrongly**")
    st.dataframe([{"Item": s.get("id"), "Source": s.get("source"), "Correct": s.get("reference"),
                   "Adapter chose": s.get("choice") or "(none)", "Adapter's answer": s.get("answer")}
                  for s in lessons.wrong_mcq], hide_index=True, key=f"admin_wrong_mcq_{record.id}")


# -- compare two models on one case ----------------------------------------------------------------------


def _compare_choices() -> dict[str, str]:
    """Choice key -> label: the base model alone, and every registered adapter of the served base."""
    identity = adapter_lib.base_identity(settings)
    choices = {BASE_ONLY: f"Base model alone ({Path(settings.base_model).name})"}
    for record in training.list_adapters(engine):
        if adapter_lib.mismatch(record.card or {}, identity) is None:
            choices[str(record.id)] = f"Adapter {record.name}"
    return choices


def _side_backend(choice: str) -> Any:
    adapter = "none"
    if choice != BASE_ONLY:
        adapter = next(r.path for r in training.list_adapters(engine) if str(r.id) == choice)
    served = resources.get_served_model(settings.base_model, adapter, settings.device)
    return training.comparison_backend(served)


def _side_result(label: str, event: inference.StreamEvent | None, outcome: Any, error: str | None) -> dict[str, Any]:
    stats = event.stats if event is not None else None
    return {"label": label, "reasoning": event.reasoning if event else "", "answer": event.answer if event else "",
            "has_answer": bool(event and event.has_answer), "forced": event.forced if event else None,
            "tokens_per_s": stats.tokens_per_s if stats else None, "new_tokens": stats.new_tokens if stats else 0,
            "saved_id": outcome.saved_id if outcome else None, "error": error}


def _render_side(col: Any, side: dict[str, Any]) -> None:
    with col:
        st.markdown(f"#### {safety.markdown_text(side['label'])}")
        if side["error"]:
            st.error(side["error"])
        tps = "—" if side["tokens_per_s"] is None else f"{side['tokens_per_s']:.1f}"
        st.caption(f"{side['new_tokens']} tokens · {tps} tokens/s" + (f" · final answer forced ({side['forced']})"
                                                                          if side["forced"] else ""))
        st.markdown("**Final answer**")
        st.markdown(safety.markdown_text(side["answer"]) if side["has_answer"] else "_(no final answer)_")
        with st.expander("Reasoning", expanded=True):
            st.markdown(safety.markdown_text(side["reasoning"]) or "_(none)_")


def _run_comparison(choices: dict[str, str], a: str, b: str, case_text: str) -> None:
    """Generate the case on both sides, one after the other (one model generates at a time on this machine)."""
    gen_settings = inference.GenerationSettings(max_new_tokens=int(st.session_state["admin_compare_tokens"]),
                                                temperature=0.0).clamped(cap=settings.max_new_tokens)
    try:
        with st.spinner("Loading the two models…"):
            sides = [(choices[a], _side_backend(a)), (choices[b], _side_backend(b))]
        comparison, started = training.start_comparison(engine, user_id=user.id, sides=sides, case_text=case_text,
                                                        settings=gen_settings,
                                                        limit_per_hour=settings.generations_per_hour)
    except training.Refused as exc:
        st.warning(str(exc), icon=":material/timer:")
        return
    except ModelError as exc:
        st.error(f"A model could not be loaded: {exc}")
        return
    cols = st.columns(2)
    results = []
    for col, (label, _), gen in zip(cols, sides, started):
        placeholder = col.empty()
        last, error = None, None
        try:
            for event in gen.events:
                last = event
                placeholder.markdown(f"**{safety.markdown_text(label)}** — writing…\n\n"
                                     + safety.markdown_text(event.reasoning[-1500:]))
        except inference.GenerationError as exc:
            error = str(exc)
        placeholder.empty()
        results.append(_side_result(label, last, gen.outcome, error))
    st.session_state["admin_compare_result"] = {"id": comparison, "case": case_text, "sides": results}


def compare_view() -> None:
    st.caption("The same case goes to two models, one after the other, greedy decoding, in this process. Both runs are "
               "saved to your history, linked by the comparison's id.")
    choices = _compare_choices()
    keys = list(choices)
    a_col, b_col = st.columns(2)
    a = a_col.selectbox("Left", keys, index=0, format_func=choices.get, key="admin_compare_a")
    b = b_col.selectbox("Right", keys, index=min(1, len(keys) - 1), format_func=choices.get, key="admin_compare_b")
    case_text = st.text_area("Case", key="admin_compare_case", height=120,
                             placeholder="A 54-year-old man has crushing chest pain radiating to the left arm…")
    st.number_input("Max new tokens", min_value=16, max_value=settings.max_new_tokens, step=16,
                    key="admin_compare_tokens")
    if st.button("Compare", key="admin_compare_go", type="primary", icon=":material/compare:"):
        if not case_text.strip():
            st.error("Write a case to compare on.")
        elif a == b:
            st.error("Pick two different models.")
        else:
            _run_comparison(choices, a, b, case_text.strip())
    result = st.session_state["admin_compare_result"]
    if result:
        cols = st.columns(2)
        for col, side in zip(cols, result["sides"]):
            _render_side(col, side)
        saved = [str(s["saved_id"]) for s in result["sides"] if s["saved_id"] is not None]
        st.caption(f"Comparison {result['id']}: " + (f"saved to history as runs {', '.join(saved)}." if saved
                                                      else "not saved (no text was written)."))


st.title("Admin")
show_flash()
# Stateful tabs: the open tab survives reruns (a message above them included), and only its content runs,
# so the live view polls only while the Train tab is open.
if st.session_state.pop("admin_preload", False) and st.session_state["admin_preset"] in training.list_presets(settings)[0]:
    _load_preset()
    show_flash()
tabs.show_tabs({
    "Train": lambda: train_view(training.list_runs(engine)),
    "Runs": lambda: runs_view(training.settled_runs(engine, settings)),
    "Adapters": adapters_view,
    "Compare": compare_view,
}, key="admin_tab")
