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

from app import auth, resources, saving
from core import adapters as adapter_lib
from core import charts, safety
from core import runs as runs_lib
from core.metrics import read_metrics
from core.model import ModelError
from core.settings import PROJECT_ROOT
from services import training
from services.training import AdapterRecord, DatasetPlan, Job, LaunchError, TrainingRun
from trainer.config import (
    ConfigError,
    TrainConfig,
    build_config,
    field_choices,
    field_help,
    read_yaml,
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
PRESETS = {p.stem: p for p in sorted((PROJECT_ROOT / "configs").glob("*.yaml"))}
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
                     ("admin_overlay", []), ("admin_preset", "defaults"), ("admin_eval_limit", 8),
                     ("admin_eval_tokens", 128), ("admin_eval_mcq", 20)):
    st.session_state.setdefault(key, default)
if "cfg_model_name" not in st.session_state:
    _set_form(TrainConfig())


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
    name = st.session_state["admin_preset"]
    if name == "defaults":
        _set_form(TrainConfig())
        return
    data, problems = read_yaml(PRESETS[name])
    cfg, more = build_config(data, source=PRESETS[name].name)
    if problems or more:
        st.session_state["admin_problems"] = problems + more
        return
    _set_form(cfg)
    st.session_state["admin_problems"] = []


def _check() -> None:
    cfg, problems = _form_config()
    st.session_state["admin_problems"] = problems
    st.session_state["admin_checked"] = None if problems else cfg.to_dict()


def _start() -> None:
    raw = {name: st.session_state[f"cfg_{name}"] for name in FORM_FIELDS}
    st.session_state["admin_problems"] = []
    st.session_state["admin_checked"] = build_config(raw)[0].to_dict()
    try:
        run = training.launch_run(engine, settings, raw, user_id=user.id)
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
    preset_col, load_col = st.columns([3, 1], vertical_alignment="bottom")
    preset_col.selectbox("Start from", ["defaults", *PRESETS], key="admin_preset",
                         format_func=lambda n: "Trainer defaults" if n == "defaults" else f"configs/{n}.yaml")
    load_col.button("Load", key="admin_load_preset", on_click=_load_preset)

    def field_widget(name: str) -> None:
        choices, key = field_choices(name), f"cfg_{name}"
        if choices:
            st.selectbox(name, choices, key=key, help=field_help(name))
        elif isinstance(st.session_state[key], bool):
            st.checkbox(name, key=key, help=field_help(name))
        else:
            st.text_input(name, key=key, help=field_help(name))

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
        else:
            stats = runs_lib.length_stats(plan.lengths, cfg.max_seq_len)
            throughput = training.measured_throughput(engine, cfg.model_name)
            seconds = runs_lib.estimate_seconds(plan.total_steps, tokens_per_step=plan.tokens_per_step,
                                                tokens_per_s=throughput[0] if throughput else None)
            m = st.columns(4)
            m[0].metric("Training examples", f"{plan.kept:,}", help=f"{plan.records:,} records in {plan.train_file}")
            m[1].metric("Left out (too long)", f"{stats.over_limit:,}")
            m[2].metric("Estimated steps", f"{plan.total_steps:,}")
            m[3].metric("Estimated time", runs_lib.format_duration(seconds))
            if throughput:
                st.caption(f"Time at {throughput[0]:,.0f} tokens/s, measured in run {throughput[1]} on this machine; "
                           f"~{plan.tokens_per_step:,.0f} tokens per step.")
            else:
                st.caption("No earlier run of this model here to time it: the live view shows the ETA once it runs.")
            if plan.skipped:
                st.caption("Left out: " + ", ".join(f"{n} {why}" for why, n in plan.skipped.items()))
            if plan.kept == 0:
                st.error(f"All {len(plan.lengths)} examples are longer than max_seq_len={cfg.max_seq_len}: "
                         "the trainer would refuse to start. Raise max_seq_len.")
            st.plotly_chart(charts.token_length_figure(plan.lengths, max_seq_len=cfg.max_seq_len),
                            key="admin_lengths")
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
            curves = {names[i]: runs_lib.curves(read_metrics(Path(next(r for r in all_runs if r.id == i).run_dir)
                                                             / "metrics.jsonl")) for i in overlay}
            st.plotly_chart(charts.loss_overlay_figure(curves), key="admin_overlay_chart")

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
            with st.expander("Card"):
                st.json(card, expanded=False)


st.title("Admin")
show_flash()
# Stateful tabs: the open tab survives reruns (a message above them included), and only its content runs,
# so the live view polls only while the Train tab is open.
train_tab, runs_tab, adapters_tab = st.tabs(["Train", "Runs", "Adapters"], key="admin_tab", on_change="rerun")
if train_tab.open:
    with train_tab:
        train_view(training.list_runs(engine))
if runs_tab.open:
    with runs_tab:
        runs_view(training.settled_runs(engine, settings))
if adapters_tab.open:
    with adapters_tab:
        adapters_view()
