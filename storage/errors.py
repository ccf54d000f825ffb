"""Storage failures a user can understand: disk full, read-only working folder, database busy, disk error.

The engine (``storage/engine.py``) turns the driver's errors for these conditions into a
:class:`StorageError` as they happen, so every unit of work raises the same exception type whatever
the statement; file writers (model cache, adapters, exports) map their ``OSError`` with
:func:`storage_error_from`. The transaction that failed is rolled back by SQLite (and by the
``with Session(...)`` block), so a :class:`StorageError` always means "nothing was changed".
Pages show :meth:`StorageError.user_message` (``app/saving.py`` does it in one place).
"""

from __future__ import annotations

import errno
import sqlite3
from typing import Literal

Reason = Literal["full", "read_only", "busy", "io"]

REASONS: dict[Reason, str] = {
    "full": "the disk is full",
    "read_only": "the working folder is read-only",
    "busy": "the database is busy (another program is writing to it), try again in a moment",
    "io": "the disk reported an error",
}

# SQLite primary result codes (the low byte of an extended code).
_SQLITE_REASONS: dict[int, Reason] = {
    5: "busy",  # SQLITE_BUSY
    6: "busy",  # SQLITE_LOCKED
    8: "read_only",  # SQLITE_READONLY
    10: "io",  # SQLITE_IOERR
    13: "full",  # SQLITE_FULL
}
# PostgreSQL SQLSTATEs.
_PG_REASONS: dict[str, Reason] = {
    "53100": "full",  # disk_full
    "25006": "read_only",  # read_only_sql_transaction
    "55P03": "busy",  # lock_not_available
    "58030": "io",  # io_error
}
_OS_REASONS: dict[int, Reason] = {
    errno.ENOSPC: "full",
    errno.EDQUOT: "full",
    errno.EROFS: "read_only",
    errno.EACCES: "read_only",
    errno.EPERM: "read_only",
    errno.EIO: "io",
}


class StorageError(RuntimeError):
    """A write (or the lock it needs) failed for a reason outside the app; nothing was changed."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        self.reason: Reason = reason
        self.detail = detail
        super().__init__(f"{REASONS[reason]}" + (f" ({detail})" if detail else ""))

    def user_message(self, what: str) -> str:
        """``"Could not save <what>: <reason>; nothing was changed."`` (``what`` e.g. "your answer")."""
        return f"Could not save {what}: {REASONS[self.reason]}. Nothing was changed."

    def page_message(self) -> str:
        """For a failure outside any one save (e.g. reading the signed-in user while the database is locked)."""
        return f"The app could not use its database: {REASONS[self.reason]}. Nothing was changed; reload to try again."


def storage_error_from(exc: BaseException) -> StorageError | None:
    """The :class:`StorageError` for a driver or OS error, or None when it is something else (a bug)."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        reason = _SQLITE_REASONS.get(code & 0xFF) if isinstance(code, int) else None
        if reason is None and "database is locked" in str(exc):
            reason = "busy"
        return StorageError(reason, getattr(exc, "sqlite_errorname", "") or str(exc)) if reason else None
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate in _PG_REASONS:
        return StorageError(_PG_REASONS[sqlstate], sqlstate)
    if isinstance(exc, OSError) and exc.errno in _OS_REASONS:
        return StorageError(_OS_REASONS[exc.errno], errno.errorcode.get(exc.errno, str(exc.errno)))
    return None
