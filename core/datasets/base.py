"""Shared pieces of the source readers: the error type, source descriptions and row access with locations.

Every reader reports bad input the same way: a :class:`DataError` naming the file, the line (or
row) and the field, so a user can open the file at the right place. JSON arrays and objects are
walked element by element with :func:`iter_json_items`, which keeps the line where each element
starts (``json.load`` would lose it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from core.records import mcq_answer  # noqa: F401  (re-exported: every reader builds MCQ answers with it)

LETTERS = "ABCDEFGHIJ"


class DataError(ValueError):
    """Malformed input; the message names the file, the line or row, and the field."""

    def __init__(self, path: Path | str, line: int | str | None, field: str | None, problem: str):
        self.path = str(path)
        self.line = line
        self.field = field
        where = self.path
        if line is not None:
            where += f", line {line}" if isinstance(line, int) else f", {line}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class SourceInfo:
    """What the app shows about a source: its short name, license and credit line."""

    name: str
    license: str
    attribution: str


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for each non-blank line of a JSONL file."""
    with path.open(encoding="utf-8") as fh:
        number = 0
        while True:
            try:
                line = next(fh, None)
            except UnicodeDecodeError as exc:
                raise DataError(path, number + 1, None, f"not UTF-8 text ({exc.reason})") from exc
            if line is None:
                return
            number += 1
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(path, number, None, f"invalid JSON ({exc.msg} at column {exc.colno})") from exc
            except (RecursionError, ValueError) as exc:  # nesting too deep, a number too long to convert
                raise DataError(path, number, None, f"unreadable JSON ({type(exc).__name__}: {str(exc)[:80]})") from exc
            if not isinstance(row, dict):
                raise DataError(path, number, None, f"expected a JSON object, got {type(row).__name__}")
            yield number, row


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def iter_json_items(path: Path) -> Iterator[tuple[int, str | int, Any]]:
    """Yield ``(line, key, value)`` for each element of a top-level JSON array (key = index) or object.

    The line is where the element starts, so errors about one record point into the file.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(path, None, None, f"not UTF-8 text ({exc.reason})") from exc
    decoder = json.JSONDecoder()
    line, counted = 1, 0

    def line_at(pos: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, pos)
        counted = pos
        return line

    def fail(pos: int, problem: str) -> DataError:
        return DataError(path, line_at(pos), None, problem)

    def decode(pos: int) -> tuple[Any, int]:
        try:
            return decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise DataError(path, exc.lineno, None, f"invalid JSON ({exc.msg} at column {exc.colno})") from exc
        except (RecursionError, ValueError) as exc:  # nesting too deep, a number too long to convert
            raise fail(pos, f"unreadable JSON ({type(exc).__name__}: {str(exc)[:80]})") from exc

    pos = _skip_ws(text, 0)
    if pos >= len(text) or text[pos] not in "[{":
        raise fail(pos, "expected a JSON array or object at the top level")
    closing = "]" if text[pos] == "[" else "}"
    is_object = closing == "}"
    pos = _skip_ws(text, pos + 1)
    index = 0
    if pos < len(text) and text[pos] == closing:
        return
    while True:
        start = pos
        if is_object:
            key, pos = decode(pos)
            if not isinstance(key, str):
                raise fail(start, "expected a string key")
            pos = _skip_ws(text, pos)
            if pos >= len(text) or text[pos] != ":":
                raise fail(pos, "expected ':' after a key")
            pos = _skip_ws(text, pos + 1)
        else:
            key = index
        value, end = decode(pos)
        yield line_at(start), key, value
        index += 1
        pos = _skip_ws(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
            continue
        if pos < len(text) and text[pos] == closing:
            return
        raise fail(pos, f"expected ',' or '{closing}'")


def require_str(row: Mapping[str, Any], field: str, path: Path, line: int | str, *, allow_empty: bool = False) -> str:
    """The text of ``row[field]``, or a :class:`DataError` naming file, line and field."""
    if field not in row:
        raise DataError(path, line, field, "missing")
    value = row[field]
    if not isinstance(value, str):
        raise DataError(path, line, field, f"expected text, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise DataError(path, line, field, "empty")
    return value


def require_options(value: Any, path: Path, line: int | str, field: str) -> dict[str, str]:
    """Options as a lettered dict ``{"A": text, ...}`` from a list of texts or a dict keyed A, B, ..."""
    if isinstance(value, list):
        items = list(zip(LETTERS, value))
        if len(value) > len(LETTERS):
            raise DataError(path, line, field, f"too many options ({len(value)})")
    elif isinstance(value, dict):
        items = list(value.items())
        expected = list(LETTERS[: len(items)])
        if [str(k).upper() for k, _ in items] != expected:
            raise DataError(path, line, field, f"expected option keys {expected}, got {list(value)}")
        items = [(str(k).upper(), v) for k, v in items]
    else:
        raise DataError(path, line, field, f"expected a list or an object of options, got {type(value).__name__}")
    if len(items) < 2:
        raise DataError(path, line, field, f"expected at least 2 options, got {len(items)}")
    options: dict[str, str] = {}
    for key, text in items:
        if not isinstance(text, str) or not text.strip():
            raise DataError(path, line, f"{field}.{key}", "option text must be non-empty text")
        options[key] = text.strip()
    return options


