"""The unit of work most repository functions end with: save one row, or delete one row by id."""

from __future__ import annotations

from typing import TypeVar

from sqlmodel import Session, SQLModel

Row = TypeVar("Row", bound=SQLModel)


def save(session: Session, row: Row) -> Row:
    """Add ``row``, commit, and return it refreshed (ids and defaults filled in by the database)."""
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


def delete(session: Session, model: type[SQLModel], row_id: int) -> bool:
    """Delete the ``model`` row with id ``row_id`` (with what the table cascades to); False when absent."""
    row = session.get(model, row_id)
    if row is None:
        return False
    session.delete(row)
    session.commit()
    return True
