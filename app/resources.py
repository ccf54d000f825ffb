"""Every ``st.cache_resource`` of the app lives here: settings, the database engine, the served model, the bank
and the reference index.

Cached objects are shared by all sessions and never mutated; generation on a shared model holds
the lock that comes with it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import streamlit as st
from sqlalchemy import Engine
from sqlmodel import Session

from core import data as data_lib
from core import inference
from core import model as model_lib
from core import retrieval, serving
from core.quiz_bank import Bank
from core.settings import Settings, load_settings
from services import training as training_service
from storage import training
from storage.engine import open_database


@st.cache_resource(show_spinner=False)
def get_settings() -> Settings:
    """Validated settings (raises SettingsError listing every problem)."""
    return load_settings()


def get_engine() -> Engine:
    """The database engine for the configured URL, migrated to the newest schema on first use.

    Raises ``storage.engine.MigrationError`` (not cached, so the next run tries again) when the
    database cannot be opened or upgraded. Use one ``with Session(get_engine())`` per unit of work.
    """
    return _engine_for(get_settings().resolved_database_url)


@st.cache_resource(show_spinner="Opening the database…")
def _engine_for(database_url: str) -> Engine:
    return open_database(database_url)


def active_adapter_path() -> str:
    """The ``adapter`` key for :func:`get_served_model`: the adapter activated on the admin page, else the setting.

    Read from the database on every call, so activating another adapter switches the pages on
    their next run, without a restart.
    """
    settings = get_settings()
    with Session(get_engine()) as session:
        record = training.active_adapter(session=session)
    if record is None or not Path(record.path).is_dir():
        return settings.adapter
    configured = model_lib.resolve_adapter(settings)
    if configured is not None and configured.resolve() == Path(record.path).resolve():
        return settings.adapter  # the same folder: share the cached model
    return record.path


@st.cache_resource(show_spinner=False)
def reconcile_jobs() -> int:
    """Once per server process: settle training runs whose process is gone (they become "interrupted")."""
    return len(training_service.reconcile(get_engine(), get_settings()))


@dataclass(eq=False, kw_only=True)
class ServedModel(inference.ModelServer):
    """The model the app serves (its :class:`core.inference.ModelServer`), with what the pages show about it."""

    base: model_lib.BaseModel
    adapter_dir: Path | None
    adapter_card: dict[str, Any] | None
    device: str
    adapter_problem: str | None = None
    """Why the requested adapter was left out (the base model is served alone); None when it was not."""
    requested_adapter: str | None = None
    """Folder name of the adapter that was asked for (also when it was left out)."""

    @property
    def adapter_name(self) -> str:
        return self.adapter_dir.name if self.adapter_dir else "none (base model)"


@st.cache_resource(show_spinner=False)
def get_base_model(base_model: str, model_cache_dir: str, _progress: Callable[[str], None] | None = None) -> model_lib.BaseModel:
    """Resolve (and on first start convert) the base model; keyed by the setting and cache dir."""
    settings = get_settings()
    return model_lib.resolve_base(settings, progress=_progress or (lambda _m: None))


@st.cache_resource(show_spinner=False, max_entries=2)  # the active adapter and the one before it
def get_served_model(
    base_model: str, adapter: str, device: str, _progress: Callable[[str], None] | None = None
) -> ServedModel:
    """The model the app serves, keyed by (base, adapter, device): adapter merged, then made fast.

    An adapter that cannot be used (unreadable files, missing or invalid card, another base model
    or prompt format) is left out: the base model is served alone and ``adapter_problem`` says why.
    The adapter is merged into fp32 weights (exact), then :meth:`core.inference.ModelServer.prepare`
    applies the device's measured serving plan (int8 weight-only linears on CPU; bf16 with a
    static KV cache and compiled decoding on CUDA) and a short warm-up generation runs, so the
    first student does not pay one-time costs. Never the 4-bit training model.
    """
    settings = replace(get_settings(), base_model=base_model, adapter=adapter, device=device)
    base = get_base_model(base_model, str(settings.model_cache_dir), _progress=_progress)
    adapter_dir = model_lib.resolve_adapter(settings)
    dev = model_lib.pick_device(device)
    if dev == "cpu":
        import torch

        # Process-wide: decoding with as many threads as cores stalls whenever anything else runs
        # (measured ~8x slower under the load test); Settings.torch_threads says how many.
        torch.set_num_threads(settings.serving_threads)
    mdl, tok, problem = model_lib.load_model_or_base(base, adapter_dir=adapter_dir, device=dev, merge=True)
    served_dir = adapter_dir if problem is None else None
    card = model_lib.read_adapter_card(served_dir) if served_dir else None
    served = ServedModel(mdl, tok, base=base, adapter_dir=served_dir, adapter_card=card, device=dev,
                         adapter_problem=problem, requested_adapter=adapter_dir.name if adapter_dir else None)
    served.prepare(inference.serving_plan(dev), adapter_dir=served_dir)
    if dev == "cpu":
        served.set_threads(settings.serving_threads)
    served.warm_up()
    return served


def get_backend(_progress: Callable[[str], None] | None = None) -> serving.Backend:
    """Whoever generates for the pages, serving the active adapter: the model in this process
    (``serving_backend = "local"``) or the OpenAI-compatible server at ``serving_url`` (``"openai"``).

    Raises ``core.model.ModelError`` when the local model cannot be loaded. A server that is down is
    not an error here: the backend says so when asked (``describe``) and when it generates.
    """
    settings = get_settings()
    adapter = active_adapter_path()
    if settings.serving_backend == "openai":
        return _openai_backend(settings.serving_url, settings.serving_model, adapter, settings.base_model,
                               _progress=_progress)
    served = get_served_model(settings.base_model, adapter, settings.device, _progress=_progress)
    return serving.LocalBackend(
        served, base_model=served.base.identity, adapter=served.adapter_name,
        engine=f"{served.device}, {served.describe()}",
        adapter_problem=served.adapter_problem, requested_adapter=served.requested_adapter,
    )


@st.cache_resource(show_spinner=False, max_entries=4)
def _openai_backend(
    url: str, model: str, adapter: str, base_model: str, _progress: Callable[[str], None] | None = None
) -> serving.OpenAIBackend:
    """The client of the inference server; only the base model's tokenizer is loaded here, no weights."""
    settings = replace(get_settings(), adapter=adapter)
    base = get_base_model(base_model, str(settings.model_cache_dir), _progress=_progress)
    return serving.OpenAIBackend(
        url=url, tokenizer=model_lib.load_tokenizer(base), base_model=base.identity,
        adapter_dir=model_lib.resolve_adapter(settings), model=model, api_key_env=settings.serving_api_key_env,
        connect_timeout_s=settings.serving_connect_timeout_s,
        first_token_timeout_s=settings.serving_first_token_timeout_s,
        stall_timeout_s=settings.serving_stall_timeout_s,
        manifest_path=settings.work_dir / "serving" / "server.json",
    )


def get_bank() -> Bank:
    """The prepared question bank, shared read-only by every session.

    Keyed by the manifest's modification time and size: ``python -m core.data prepare`` swaps in a
    new folder (and manifest), and the next page run loads the new bank without a restart.
    Raises FileNotFoundError, naming the command to run, when the data has not been prepared.
    """
    settings = get_settings()
    try:
        stat = (settings.prepared_dir / data_lib.MANIFEST_FILE).stat()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"No prepared data in {settings.prepared_dir}: run `python -m core.data prepare`"
        ) from None
    return _bank_for(str(settings.prepared_dir), stat.st_mtime_ns, stat.st_size)


def bank_or_stop() -> Bank:
    """The question bank for a page that needs it; when it is not prepared yet, a warning that says how to
    prepare it, and the page's run ends there."""
    try:
        return get_bank()
    except FileNotFoundError as exc:
        st.warning(f"The question bank is not ready yet. {exc}")
        st.stop()


@st.cache_resource(show_spinner="Loading the question bank…", max_entries=2)
def _bank_for(prepared_dir: str, manifest_mtime_ns: int, manifest_size: int) -> Bank:
    return Bank.from_records(data_lib.load_bank(get_settings()))


def get_reference_index() -> retrieval.ReferenceIndex:
    """The reference passages' search index (``<prepared>/references``), shared read-only by every session.

    Keyed by the index manifest's modification time and size, like the bank: a rebuilt index (the
    manifest is written last) is picked up on the next page run, without a restart. Raises
    ``core.retrieval.RetrievalUnavailable``, whose message is fit for the user, when the index is
    missing, incomplete or damaged; that is not cached, so the next run looks again.
    """
    prepared_dir = get_settings().prepared_dir
    try:
        stat = (prepared_dir / retrieval.INDEX_DIRNAME / retrieval.MANIFEST_FILE).stat()
    except OSError:
        return retrieval.load_index(prepared_dir)  # raises, saying what is missing
    return _reference_index_for(str(prepared_dir), stat.st_mtime_ns, stat.st_size)


@st.cache_resource(show_spinner="Loading the reference passages…", max_entries=2)
def _reference_index_for(prepared_dir: str, manifest_mtime_ns: int, manifest_size: int) -> retrieval.ReferenceIndex:
    return retrieval.load_index(Path(prepared_dir))
