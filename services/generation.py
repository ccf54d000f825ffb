"""Generating for a student: the one workflow behind the case study and the quiz's explanations.

:func:`start` checks the student's hourly limit (and refuses with :class:`Refused`, whose message is
for the page), then returns a :class:`Generation`: its ``events`` stream from the serving backend
(:mod:`core.serving`, in-process or a server), and when the stream ends (finished, stopped, failed
or abandoned) the generation is recorded once: a case study as a history row (which counts toward
the limit), a quiz explanation as a counted generation. A failure keeps what was written, as a row
marked ``error``; a run stopped before any text keeps nothing. What was recorded, or why it could
not be, is in ``Generation.outcome``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from sqlalchemy import Engine
from sqlmodel import Session

from core import inference
from core.inference import CaseRun, GenerationError, GenerationSettings, StreamEvent
from core.serving import Backend, served_by
from storage import history, rate_limit
from storage.errors import StorageError, storage_error_from

Kind = Literal["case_study", "quiz_explanation"]


class Refused(Exception):
    """The student may not generate now (hourly limit); the message says when they can again."""


@dataclass(frozen=True)
class Request:
    """What to generate, and what to keep with the run."""

    case_text: str
    settings: GenerationSettings
    kind: Kind = "case_study"
    options: dict[str, str] | None = None
    context: str = ""
    """Reference passages given to the model with the case (``core.retrieval.prompt_context``)."""
    references: Sequence[dict[str, Any]] = ()
    """The passages shown with the run (``Passage.to_dict()``), best first."""
    example_id: str | None = None
    run_settings: dict[str, Any] = field(default_factory=dict)
    """Kept with the run's settings (e.g. whether the model saw the references)."""


@dataclass
class Outcome:
    """Filled in when the stream ends: the run as recorded, its history id, or why saving failed."""

    run: CaseRun | None = None
    saved_id: int | None = None
    save_error: StorageError | None = None
    error: GenerationError | None = None


@dataclass
class Generation:
    events: Iterator[StreamEvent]
    outcome: Outcome
    base_model: str
    adapter: str


def start(engine: Engine, *, user_id: int, backend: Backend, request: Request, limit_per_hour: int,
          stop: threading.Event | None = None, conclude: threading.Event | None = None) -> Generation:
    """Check the limit now (raises :class:`Refused`); the returned events generate and then record."""
    with Session(engine) as session:
        allowed, message = rate_limit.check_generation_allowed(
            session=session, user_id=user_id, limit_per_hour=limit_per_hour)
    if not allowed:
        raise Refused(message)
    outcome = Outcome()
    events = _generate(engine, user_id, backend, request, outcome, stop, conclude)
    return Generation(events, outcome, backend.base_model, backend.adapter)


def _generate(engine: Engine, user_id: int, backend: Backend, request: Request, outcome: Outcome,
              stop: threading.Event | None, conclude: threading.Event | None) -> Iterator[StreamEvent]:
    last: StreamEvent | None = None
    who = served_by(backend)
    try:
        for event in backend.stream(request.case_text, settings=request.settings, stop=stop, conclude=conclude,
                                    options=request.options, context=request.context):
            last = event
            yield event
    except GenerationError as exc:
        outcome.error = exc
        raise
    finally:
        _record(engine, user_id, backend, request, last, outcome, who)


def _record(engine: Engine, user_id: int, backend: Backend, request: Request, last: StreamEvent | None,
            outcome: Outcome, who: dict[str, str]) -> None:
    finished = last is not None and last.kind == "done" and not last.stopped
    if last is None or (not last.text and not finished):
        return  # stopped or failed before any text: nothing to keep, nothing counted
    # A stream that ended without its "done" (failed, or abandoned by the page) is a stopped run.
    run = inference.case_run(
        last, case_text=request.case_text, base_model=backend.base_model, adapter=backend.adapter,
        settings=request.settings, example_id=request.example_id, references=request.references,
        stopped=last.stopped or last.kind != "done",
    )
    run = replace(run, settings={**run.settings, **request.run_settings, **who})
    outcome.run = run
    try:
        with Session(engine) as session:
            if request.kind == "case_study":
                fields = {**run.history_fields(), **({"status": "error"} if outcome.error else {})}
                outcome.saved_id = history.save_case_run(session=session, user_id=user_id, **fields).id
            else:
                rate_limit.record_generation(session=session, user_id=user_id, kind=request.kind)
    except Exception as exc:  # noqa: BLE001 - a storage failure is reported with the run; anything else is a bug
        problem = storage_error_from(exc)
        if problem is None:
            raise
        outcome.save_error = problem
