"""Import quiz items from CSV or JSON, and export quiz sets and results to CSV.

Columns (CSV header names, or keys of each JSON object; case-insensitive, surrounding spaces ignored):

============  ========  ===========================================================================
column        required  meaning
============  ========  ===========================================================================
question      yes       the stem
A ... E       mcq       option texts, in order, no gaps (CSV); or instead ``options``
options       mcq       a JSON object ``{"A": "...", ...}`` (or a JSON list, lettered A, B, ...);
                        in a JSON file, the object or list itself. Up to 10 options.
correct       mcq       the letter of the correct option (``c``, ``C`` and ``C.`` are accepted)
answer        open      reference answer of an open-ended item (for mcq it is the correct option's
                        text and may be left out)
explanation   no        shown after answering
subject       no        e.g. ``Cardiology``
source        no        a short source name; ``import`` when left empty
license       yes       the license of the item's text, e.g. ``CC BY 4.0`` or ``own work``
attribution   no        credit line shown with the item (needed for CC BY material)
kind          no        ``mcq`` or ``open``; by default ``mcq`` when options are given, else ``open``
tags          no        separated by ``;`` or ``,``, e.g. ``step1``
id            no        ignored on import (ids are recomputed from the text), written on export
============  ========  ===========================================================================

Files must be UTF-8 (a BOM is fine). A JSON file is a list of objects, or ``{"items": [...]}``.

Every problem is reported, never just the first, as a :class:`RowError` with a row and a field:
for CSV, ``row`` is the spreadsheet row (the header is row 1, the first item row 2); for JSON it is
the item's 1-based position in the list; ``row == 0`` with ``field == "file"`` (or the column name)
is a problem with the whole file. A row with any error is left out of ``valid``; whether to import
the valid rows of a file with errors is the caller's (the user's) choice.

Exported CSV guards against formula injection: a cell starting with ``=``, ``+``, ``-``, ``@``,
tab or carriage return gets a leading ``'`` (as spreadsheets themselves do for text); the importer
removes exactly that guard, so an exported quiz set re-imports unchanged.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from core.records import Record, stable_id

MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_ROWS = 5000
MAX_OPTIONS = 10
OPTION_COLUMNS: tuple[str, ...] = ("A", "B", "C", "D", "E")
MAX_CHARS: dict[str, int] = {
    "question": 8000,
    "option": 1000,
    "answer": 8000,
    "explanation": 12000,
    "attribution": 500,
}
MAX_SHORT_CHARS = 200
"""Limit for the short fields: subject, source, license, kind, tags, correct."""

KNOWN_COLUMNS: tuple[str, ...] = (
    "id",
    "question",
    *OPTION_COLUMNS,
    "options",
    "correct",
    "answer",
    "explanation",
    "subject",
    "source",
    "license",
    "attribution",
    "kind",
    "tags",
)
EXPORT_COLUMNS = KNOWN_COLUMNS

IMPORT_SOURCE = "import"
"""Id prefix of imported items (``import:<hash>``) and their source when none is given."""

# Letters outside C0 controls other than tab, newline and carriage return; DEL too.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_GUARD_RE = re.compile(r"'*[=+\-@\t\r]")
_UNGUARD_RE = re.compile(r"'+[=+\-@\t\r]")


@dataclass(frozen=True)
class RowError:
    """One problem in an import file."""

    row: int
    field: str
    message: str

    def __str__(self) -> str:
        if self.row == 0:
            return f"file: {self.message}" if self.field == "file" else f"file, {self.field}: {self.message}"
        return f"row {self.row}, {self.field}: {self.message}"


@dataclass
class ImportResult:
    """Parsed items and every problem found."""

    valid: list[Record] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    rows: int = 0
    """Item rows read (0 when the file could not be read at all)."""

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def error_rows(self) -> list[int]:
        return sorted({e.row for e in self.errors if e.row})


def _file_error(message: str, field_name: str = "file") -> ImportResult:
    return ImportResult(errors=[RowError(0, field_name, message)])


def _unguard(value: str) -> str:
    return value[1:] if _UNGUARD_RE.match(value) else value


def _decode(data: bytes) -> str | RowError:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return RowError(
            0,
            "file",
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at position {exc.start}); "
            "save the file as UTF-8 (in Excel: 'CSV UTF-8') and try again",
        )


def _short(text: str, limit: int = 120) -> str:
    """``text`` cut to ``limit`` characters for a message (a cell may be megabytes long)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _csv_problem(exc: csv.Error) -> str:
    if "field larger than field limit" in str(exc):
        return f"a cell is longer than {csv.field_size_limit():,} characters (the longest field allowed is " \
               f"{max(MAX_CHARS.values()):,}); nothing after it can be read"
    return f"malformed CSV from here on: {exc}"


def _read_csv(text: str) -> tuple[list[tuple[int, dict[str, Any]]], list[RowError]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        return [], [RowError(1, "file", f"malformed CSV header: {_csv_problem(exc)}")]
    if header is None or not any(h.strip() for h in header):
        return [], [RowError(0, "file", "the file has no header row")]
    names = [_column_name(h) for h in header]
    errors: list[RowError] = []
    for i, name in enumerate(names):
        if not name:
            errors.append(RowError(1, f"column {i + 1}", "empty column name in the header"))
        elif name not in KNOWN_COLUMNS:
            errors.append(RowError(1, _short(name, 60), f"unknown column; expected some of {', '.join(KNOWN_COLUMNS)}"))
        elif names.index(name) != i:
            errors.append(RowError(1, name, "column appears twice in the header"))
    for required in ("question", "license"):
        if required not in names:
            errors.append(RowError(1, required, "required column is missing from the header"))
    if errors:
        return [], errors
    rows: list[tuple[int, dict[str, Any]]] = []
    row_no = 1
    while True:
        row_no += 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append(RowError(row_no, "file", _csv_problem(exc)))
            break
        if not any(c.strip() for c in cells):
            continue  # blank line: Excel leaves these at the end
        if len(cells) > len(names):
            errors.append(
                RowError(row_no, "file", f"{len(cells)} cells but the header has {len(names)} columns")
            )
            continue
        if len(rows) >= MAX_ROWS:
            errors.append(RowError(row_no, "file", f"more than {MAX_ROWS} items; split the file"))
            break
        rows.append((row_no, {n: _unguard(c) for n, c in zip(names, cells)}))
    return rows, errors


def _column_name(raw: Any) -> str:
    name = str(raw).strip()
    return name.upper() if name.upper() in OPTION_COLUMNS else name.lower()


def _read_json(text: str) -> tuple[list[tuple[int, dict[str, Any]]], list[RowError]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return [], [RowError(0, "file", f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")]
    except RecursionError:
        return [], [RowError(0, "file", "malformed JSON: nested too deeply")]
    except ValueError as exc:  # e.g. an integer literal longer than Python's 4300-digit conversion limit
        return [], [RowError(0, "file", f"malformed JSON: {exc}")]
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        data = data["items"]
    if not isinstance(data, list):
        return [], [RowError(0, "file", 'expected a JSON list of items, or an object {"items": [...]}')]
    if len(data) > MAX_ROWS:
        return [], [RowError(0, "file", f"{len(data)} items; at most {MAX_ROWS} per file, split the file")]
    rows: list[tuple[int, dict[str, Any]]] = []
    errors: list[RowError] = []
    for i, obj in enumerate(data, start=1):
        if not isinstance(obj, dict):
            errors.append(RowError(i, "item", f"expected an object with named fields, got {type(obj).__name__}"))
            continue
        item: dict[str, Any] = {}
        for key, value in obj.items():
            name = _column_name(key)
            if name not in KNOWN_COLUMNS:
                errors.append(RowError(i, _short(str(key).strip(), 60) or "(empty name)", "unknown field"))
            elif name in item:
                errors.append(RowError(i, name, "field given twice"))
            else:
                item[name] = value
        rows.append((i, item))
    return rows, errors


def _text(row: int, name: str, value: Any, errors: list[RowError], limit: int = MAX_SHORT_CHARS) -> str:
    """A cell as stripped text; records an error for a wrong type, control characters or excess length."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        errors.append(RowError(row, name, f"expected text, got {type(value).__name__}"))
        return ""
    text = str(value).strip()
    if _CONTROL_RE.search(text):
        errors.append(RowError(row, name, "contains control characters (not printable text)"))
    if len(text) > limit:
        errors.append(RowError(row, name, f"{len(text)} characters; at most {limit}"))
    return text


def _options(row: int, item: dict[str, Any], errors: list[RowError]) -> dict[str, str] | None:
    """The item's options (None when it gives none); records errors."""
    raw = item.get("options")
    columns = {k: _text(row, k, item.get(k), errors, MAX_CHARS["option"]) for k in OPTION_COLUMNS}
    has_columns = any(columns.values())
    if isinstance(raw, str) and raw.strip():
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError; so is a 5000-digit number
            errors.append(RowError(row, "options", f"not valid JSON ({_short(str(exc))})"))
            return {}
    elif isinstance(raw, str):
        raw = None
    if raw is not None and has_columns:
        errors.append(RowError(row, "options", "give the options either in columns A-E or in 'options', not both"))
        return {}
    if raw is None:
        if not has_columns:
            return None
        filled = [k for k, v in columns.items() if v]
        last = OPTION_COLUMNS.index(filled[-1])
        gaps = [k for k in OPTION_COLUMNS[:last] if not columns[k]]
        for k in gaps:
            errors.append(RowError(row, k, f"option {k} is empty but a later option is filled"))
        return {k: columns[k] for k in OPTION_COLUMNS[: last + 1]}
    if isinstance(raw, list):
        if len(raw) > MAX_OPTIONS:
            errors.append(RowError(row, "options", f"{len(raw)} options; at most {MAX_OPTIONS}"))
            return {}
        raw = {chr(ord("A") + i): v for i, v in enumerate(raw)}
    if not isinstance(raw, dict):
        errors.append(RowError(row, "options", "expected an object of letter -> text, or a list of texts"))
        return {}
    if len(raw) > MAX_OPTIONS:
        errors.append(RowError(row, "options", f"{len(raw)} options; at most {MAX_OPTIONS}"))
        return {}
    options: dict[str, str] = {}
    for i, (key, value) in enumerate(raw.items()):
        letter = str(key).strip().upper()
        expected = chr(ord("A") + i)
        if letter != expected:
            errors.append(RowError(row, "options", f"option keys must be A, B, C, ... in order; got {_short(repr(key), 60)}"))
            return {}
        text = _text(row, f"options.{letter}", value, errors, MAX_CHARS["option"])
        if not text:
            errors.append(RowError(row, f"options.{letter}", f"option {letter} is empty"))
        options[letter] = text
    return options


def _row_to_record(row: int, item: dict[str, Any], filename: str, errors: list[RowError]) -> Record | None:
    start = len(errors)
    question = _text(row, "question", item.get("question"), errors, MAX_CHARS["question"])
    if not question:
        errors.append(RowError(row, "question", "required: the question text is empty"))
    license_ = _text(row, "license", item.get("license"), errors)
    if not license_:
        errors.append(RowError(row, "license", "required: say under which license the text is (e.g. 'own work')"))
    explanation = _text(row, "explanation", item.get("explanation"), errors, MAX_CHARS["explanation"])
    subject = _text(row, "subject", item.get("subject"), errors)
    source = _text(row, "source", item.get("source"), errors) or IMPORT_SOURCE
    attribution = _text(row, "attribution", item.get("attribution"), errors, MAX_CHARS["attribution"])
    answer = _text(row, "answer", item.get("answer"), errors, MAX_CHARS["answer"])
    kind_text = _text(row, "kind", item.get("kind"), errors).lower()
    raw_tags = item.get("tags")
    if isinstance(raw_tags, list):
        tags = [_text(row, "tags", t, errors) for t in raw_tags]
    else:
        tags = re.split(r"[;,]", _text(row, "tags", raw_tags, errors))
    tags = list(dict.fromkeys(t.strip() for t in tags if t and t.strip()))
    options = _options(row, item, errors)
    correct_text = _text(row, "correct", item.get("correct"), errors)

    kind = kind_text or ("mcq" if options is not None else "open")
    if kind not in ("mcq", "open"):
        errors.append(RowError(row, "kind", f"must be 'mcq' or 'open', got {kind_text!r}"))
        # Check the rest as the kind the options imply, so one pass reports every other problem too.
        kind = "mcq" if options is not None else "open"
    correct: str | None = None
    if kind == "mcq":
        if options is None:
            errors.append(RowError(row, "options", "a multiple-choice item needs options (columns A-E or 'options')"))
        elif options and len(options) < 2:
            errors.append(RowError(row, "options", "a multiple-choice item needs at least 2 options"))
        elif options:
            seen: dict[str, str] = {}
            for key, text in options.items():
                folded = text.casefold()
                if folded and folded in seen:
                    errors.append(RowError(row, key, f"option {key} repeats option {seen[folded]}"))
                seen.setdefault(folded, key)
        letter = correct_text.rstrip(".)").lstrip("(").strip().upper()
        if not correct_text:
            errors.append(RowError(row, "correct", "required for a multiple-choice item: the correct option's letter"))
        elif len(letter) != 1 or not letter.isalpha():
            errors.append(RowError(row, "correct", f"expected one option letter, got {correct_text!r}"))
        elif options and letter not in options:
            errors.append(
                RowError(row, "correct", f"{letter!r} is not among the options {', '.join(options)}")
            )
        else:
            correct = letter
        if options and correct in options:
            if answer and answer.casefold() != options[correct].casefold():
                errors.append(RowError(row, "answer", f"differs from the text of the correct option {correct}"))
            answer = options[correct]
    elif kind == "open":
        if options:
            errors.append(RowError(row, "options", "an open-ended item takes no options (set kind to 'mcq')"))
        if correct_text:
            errors.append(RowError(row, "correct", "an open-ended item has no correct letter; use 'answer'"))
        if not answer:
            errors.append(RowError(row, "answer", "required for an open-ended item: the reference answer"))

    if len(errors) > start:
        return None
    return Record(
        id=stable_id(IMPORT_SOURCE, question, options if kind == "mcq" else None),
        source=source,
        license=license_,
        question=question,
        kind=kind,  # type: ignore[arg-type]  # checked above
        answer=answer,
        options=options if kind == "mcq" else None,
        correct=correct,
        explanation=explanation,
        subject=subject,
        tags=tags,
        split="bank",
        attribution=attribution,
        origin=f"{filename} row {row}",
    )


def parse_import(data: bytes, filename: str, *, existing_ids: Collection[str] = ()) -> ImportResult:
    """Parse and validate an uploaded CSV or JSON file of quiz items (format: see the module docstring).

    Never raises on bad input: every problem comes back in ``errors``. ``existing_ids`` are ids
    already in the bank; a row that would duplicate one is an error, as is a repeat within the file.
    """
    name = (filename or "").strip()
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if ext not in ("csv", "json"):
        return _file_error(f"unsupported file type {name!r}; upload a .csv or .json file")
    if not isinstance(data, (bytes, bytearray)):
        return _file_error("no file content")
    if len(data) > MAX_FILE_BYTES:
        return _file_error(f"file is {len(data)} bytes; at most {MAX_FILE_BYTES} ({MAX_FILE_BYTES // 2**20} MiB)")
    text = _decode(bytes(data))
    if isinstance(text, RowError):
        return ImportResult(errors=[text])
    if not text.strip():
        return _file_error("the file is empty")
    if "\x00" in text:
        return _file_error("the file contains NUL bytes: it is not a text file")
    rows, errors = _read_csv(text) if ext == "csv" else _read_json(text)
    result = ImportResult(errors=errors, rows=len(rows))
    if not rows and not errors:
        result.errors.append(RowError(0, "file", "the file holds no items"))
        return result
    bad_rows = {e.row for e in errors}
    first_row_of: dict[str, int] = {}
    existing = set(existing_ids)
    for row, item in rows:
        row_errors: list[RowError] = []
        record = _row_to_record(row, item, name, row_errors)
        result.errors.extend(row_errors)
        if record is None or row in bad_rows:
            continue
        if record.id in first_row_of:
            result.errors.append(
                RowError(row, "question", f"duplicate of row {first_row_of[record.id]} (same question and options)")
            )
            continue
        first_row_of[record.id] = row
        if record.id in existing:
            result.errors.append(RowError(row, "question", f"already in the bank as {record.id}"))
            continue
        result.valid.append(record)
    result.errors.sort(key=lambda e: e.row)
    return result


# --------------------------------------------------------------------------- export


def _cell(value: Any) -> str:
    """One exported cell: plain text, guarded against spreadsheet formula injection."""
    if value is None:
        text = ""
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, datetime):
        text = value.isoformat()
    elif isinstance(value, Enum):
        text = str(value.value)
    elif isinstance(value, (list, tuple, set, frozenset)):
        text = ";".join(str(v) for v in value)
    elif isinstance(value, Mapping):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = str(value)
    return "'" + text if _GUARD_RE.match(text) else text


def _write_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([_cell(h) for h in header])
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return buf.getvalue()


def quiz_set_to_csv(records: Iterable[Record]) -> str:
    """A quiz set's items as CSV in the import format (re-importing it gives the same items and ids).

    Options go in columns A-E when they are keyed A, B, ... with at most five; otherwise in the
    ``options`` column as JSON.
    """
    rows = []
    for r in records:
        opts = r.options or {}
        in_columns = bool(opts) and list(opts) == list(OPTION_COLUMNS[: len(opts)])
        row: dict[str, Any] = {
            "id": r.id,
            "question": r.question,
            "options": "" if in_columns or not opts else json.dumps(opts, ensure_ascii=False),
            "correct": r.correct or "",
            "answer": r.answer if r.kind == "open" else "",
            "explanation": r.explanation,
            "subject": r.subject,
            "source": r.source,
            "license": r.license,
            "attribution": r.attribution,
            "kind": r.kind,
            "tags": ";".join(r.tags),
        }
        for k in OPTION_COLUMNS:
            row[k] = opts.get(k, "") if in_columns else ""
        rows.append([row[c] for c in EXPORT_COLUMNS])
    return _write_csv(EXPORT_COLUMNS, rows)


def results_to_csv(rows: Iterable[Mapping[str, Any]], *, columns: Sequence[str] | None = None) -> str:
    """Result rows (one mapping per attempt or per answer) as CSV.

    Columns are ``columns`` if given, else every key in order of first appearance; a missing value
    is an empty cell. Datetimes are ISO 8601, floats 6 significant digits, lists joined by ``;``.
    """
    rows = list(rows)
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    return _write_csv(columns, ([row.get(c) for c in columns] for row in rows))
