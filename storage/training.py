"""Training runs launched from the app and the registry of LoRA adapters (at most one active).

The trainer process never touches the database: the app records a run when it launches it and
updates it from the run directory's status file (``trainer/launch.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select, update

from storage import rows
from storage.models import TRAINING_STATUSES, AdapterRecord, TrainingRun

FINISHED_STATUSES = ("stopped", "completed", "failed", "cancelled", "interrupted")


class TrainingRecordError(ValueError):
    """A training-run or adapter request that cannot be done; the message is safe to show."""


def _check_status(status: str) -> None:
    if status not in TRAINING_STATUSES:
        raise TrainingRecordError(f"Unknown training status {status!r}; one of {', '.join(TRAINING_STATUSES)}.")


def create_training_run(
    *,
    session: Session,
    run_dir: str,
    config: dict[str, Any],
    status: str = "running",
    pid: int | None = None,
    started_by_id: int | None = None,
) -> TrainingRun:
    _check_status(status)
    run = TrainingRun(run_dir=run_dir, config=dict(config), status=status, pid=pid, started_by_id=started_by_id)
    return rows.save(session, run)


def get_training_run(*, session: Session, run_id: int) -> TrainingRun | None:
    return session.get(TrainingRun, run_id)


def get_training_run_by_dir(*, session: Session, run_dir: str) -> TrainingRun | None:
    return session.exec(select(TrainingRun).where(TrainingRun.run_dir == run_dir)).first()


def list_training_runs(*, session: Session, statuses: tuple[str, ...] | None = None) -> list[TrainingRun]:
    """Runs newest first, optionally only those in ``statuses`` (e.g. ``("running", "stopping")``)."""
    query = select(TrainingRun)
    if statuses:
        query = query.where(col(TrainingRun.status).in_(statuses))
    return list(session.exec(query.order_by(col(TrainingRun.started_at).desc(), col(TrainingRun.id).desc())))


def update_training_run(
    *,
    session: Session,
    run_id: int,
    status: str | None = None,
    pid: int | None = None,
    finished_at: datetime | None = None,
    final_metrics: dict[str, Any] | None = None,
) -> TrainingRun:
    """Change the given fields (None leaves a field as it is)."""
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise TrainingRecordError(f"No training run with id {run_id}.")
    if status is not None:
        _check_status(status)
        run.status = status
    if pid is not None:
        run.pid = pid
    if finished_at is not None:
        run.finished_at = finished_at
    if final_metrics is not None:
        run.final_metrics = dict(final_metrics)
    return rows.save(session, run)


def register_adapter(
    *,
    session: Session,
    path: str,
    name: str,
    base_model: str,
    card: dict[str, Any],
    training_run_id: int | None = None,
) -> AdapterRecord:
    """Add an adapter folder to the registry, or refresh its name and card if already there."""
    record = session.exec(select(AdapterRecord).where(AdapterRecord.path == path)).first()
    if record is None:
        record = AdapterRecord(path=path, name=name, base_model=base_model)
    record.name, record.base_model, record.card = name, base_model, dict(card)
    if training_run_id is not None:
        record.training_run_id = training_run_id
    return rows.save(session, record)


def list_adapters(*, session: Session) -> list[AdapterRecord]:
    return list(session.exec(select(AdapterRecord).order_by(col(AdapterRecord.created_at).desc(), col(AdapterRecord.id).desc())))


def activate_adapter(*, session: Session, adapter_id: int | None) -> AdapterRecord | None:
    """Make one adapter the active one (None: serve the configured default). Returns the active record."""
    target = None
    if adapter_id is not None:
        target = session.get(AdapterRecord, adapter_id)
        if target is None:
            raise TrainingRecordError(f"No adapter with id {adapter_id}.")
    session.exec(update(AdapterRecord).values(active=False))  # type: ignore[call-overload]
    if target is not None:
        target.active = True
        session.add(target)
    session.commit()
    if target is not None:
        session.refresh(target)
    return target


def active_adapter(*, session: Session) -> AdapterRecord | None:
    return session.exec(select(AdapterRecord).where(AdapterRecord.active == True)).first()  # noqa: E712
