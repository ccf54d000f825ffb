"""How pages report a write that failed because of the disk or the database lock (one place, one wording).

Wrap a page's write in :func:`saving`; a :class:`storage.errors.StorageError` (disk full, read-only
working folder, database busy, disk error) or an ``OSError`` of the same kind becomes an
``st.error`` saying what could not be saved and why, and that nothing was changed. Widgets keep
their values, so what the user typed is still in the form. Any other exception is a bug and is
raised as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import streamlit as st
from sqlmodel import Session

from storage.errors import StorageError, storage_error_from


@dataclass
class SaveOutcome:
    """What :func:`saving` yields: ``error`` is set when the write failed (and was shown)."""

    error: StorageError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def message_for(exc: BaseException, what: str) -> str | None:
    """The user-facing sentence for a storage failure while saving ``what``; None for other errors."""
    problem = storage_error_from(exc)
    return problem.user_message(what) if problem is not None else None


@contextmanager
def saving(what: str, *, show: bool = True) -> Iterator[SaveOutcome]:
    """Run the block; on a storage failure show "Could not save <what>: <reason>. Nothing was changed."

    ``show=False`` only records the error in the outcome (for callbacks that keep the message in
    session state to show it after the rerun).
    """
    outcome = SaveOutcome()
    try:
        yield outcome
    except (StorageError, OSError) as exc:
        problem = storage_error_from(exc)
        if problem is None:
            raise
        outcome.error = problem
        if show:
            st.error(problem.user_message(what), icon=":material/sd_card_alert:")


def attempt(
    engine: Any,
    action: Callable[..., Any],
    *,
    what: str,
    refusals: tuple[type[Exception], ...],
    on_error: Callable[[str], None],
    describe: Callable[[Exception], str] = str,
    **kwargs: Any,
) -> tuple[bool, Any]:
    """Run ``action(session=..., **kwargs)`` in a session of its own: ``(True, result)``; or ``(False, None)``
    after ``on_error`` got the message: "Could not save <what>: …" for a failed write, ``describe(exc)`` for
    one of the ``refusals`` (the domain's "no, because…"). Nothing is half-written either way."""
    try:
        with Session(engine) as session:
            return True, action(session=session, **kwargs)
    except StorageError as exc:
        on_error(exc.user_message(what))
    except refusals as exc:
        on_error(describe(exc))
    return False, None
