"""Per-user rate limit on model generations (the ``generations_per_hour`` setting).

Each generation is one :class:`~storage.models.GenerationEvent` row, written by
:func:`storage.history.save_case_run` (case studies) or :func:`record_generation` (anything else
that runs the model, e.g. a quiz explanation). Deleting history does not give generations back.
Pages call :func:`check_generation_allowed` before generating and show its message when refused.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlmodel import Session, func, select

from storage import rows
from storage.models import GenerationEvent, utcnow

WINDOW = timedelta(hours=1)


def record_generation(*, session: Session, user_id: int, kind: str = "case_study", at: datetime | None = None) -> GenerationEvent:
    event = GenerationEvent(user_id=user_id, kind=kind, created_at=at or utcnow())
    return rows.save(session, event)


def count_generations(*, session: Session, user_id: int, since: datetime) -> int:
    """Generations by ``user_id`` at or after ``since``."""
    query = select(func.count()).select_from(GenerationEvent).where(
        GenerationEvent.user_id == user_id, GenerationEvent.created_at >= since
    )
    return session.exec(query).one()


def check_generation_allowed(
    *, session: Session, user_id: int, limit_per_hour: int, now: datetime | None = None
) -> tuple[bool, str]:
    """``(True, "")`` when the user may generate now, else ``(False, message saying when they can again)``.

    ``limit_per_hour`` 0 means no limit.
    """
    if limit_per_hour <= 0:
        return True, ""
    now = now or utcnow()
    since = now - WINDOW
    if count_generations(session=session, user_id=user_id, since=since) < limit_per_hour:
        return True, ""
    # The window frees up when the oldest generation that still counts falls out of it.
    times = select(GenerationEvent.created_at).where(
        GenerationEvent.user_id == user_id, GenerationEvent.created_at >= since
    )
    in_window = sorted(session.exec(times))
    frees_at = in_window[len(in_window) - limit_per_hour] + WINDOW
    minutes = max(1, math.ceil((frees_at - now).total_seconds() / 60))
    return False, (
        f"You have reached the limit of {limit_per_hour} generations per hour. "
        f"You can generate again in about {minutes} minute{'s' if minutes != 1 else ''}."
    )
