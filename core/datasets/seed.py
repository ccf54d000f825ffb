"""The seed project's ``instruction`` / ``input`` / ``output`` schema: loading it, and exporting to it.

Mapping (both directions):

- ``instruction``: the question (case text).
- ``input``: the lettered options, one ``A. text`` line each, for a multiple-choice item; otherwise
  extra context (may be empty).
- ``output``: the training target, reasoning then the final answer, written exactly as the
  prompt format's completion (``<reasoning>\\n\\nFinal answer: <answer>``).

When loading, an ``output`` without the final-answer marker is split at a HuatuoGPT-style
``## Final Response`` header, or else at its last blank line (reasoning, then answer). A one-paragraph
output becomes the answer with empty reasoning and the flag ``no-reasoning``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from core.atomic import atomic_file
from core.datasets.base import LETTERS, DataError, SourceInfo, iter_json_items, iter_jsonl, mcq_answer
from core.prompts import format_completion, format_options, parse_completion
from core.records import Record, normalise, stable_id

INFO = SourceInfo(name="seed", license="see the file's source", attribution="seed-format file supplied by the user")
FIELDS = ("instruction", "input", "output")
NO_REASONING_FLAG = "no-reasoning"
_OPTION_LINE = re.compile(r"^([A-J])[.)]\s+(.+)$")
_HUATUO = re.compile(r"(?im)^#+\s*thinking\s*$|^#+\s*final response\s*$")


def parse_options(text: str) -> dict[str, str] | None:
    """``A. text`` lines (consecutive letters from A) -> options; None when ``text`` is not such a list."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if len(lines) < 2:
        return None
    options: dict[str, str] = {}
    for expected, line in zip(LETTERS, lines):
        match = _OPTION_LINE.match(line)
        if not match or match.group(1) != expected:
            return None
        options[expected] = match.group(2).strip()
    return options if len(options) == len(lines) else None


def _correct_key(answer: str, options: Mapping[str, str]) -> str | None:
    """The option an answer names: by its letter ("C", "C. text", "C)") or by its exact text."""
    match = re.match(r"^\(?([A-J])(?:[.):]|\s|$)", answer.strip())
    if match and match.group(1) in options:
        return match.group(1)
    wanted = normalise(answer)
    found = [key for key, text in options.items() if normalise(text) == wanted]
    return found[0] if len(found) == 1 else None


def split_output(output: str) -> tuple[str, str]:
    """(reasoning, answer) of a seed ``output``."""
    parsed = parse_completion(output)
    if parsed.has_answer:
        return parsed.reasoning, parsed.answer
    parts = _HUATUO.split(output)
    if len(parts) == 3:  # "## Thinking\n...\n## Final Response\n..."
        return parts[1].strip(), parts[2].strip()
    head, sep, tail = output.strip().rpartition("\n\n")
    if sep and head.strip() and tail.strip():
        return head.strip(), tail.strip()
    return "", output.strip()


def _rows(path: Path) -> Iterator[tuple[int, Any]]:
    if path.suffix.lower() == ".jsonl":
        yield from iter_jsonl(path)
    else:
        for line, _key, value in iter_json_items(path):
            yield line, value


def load_seed(path: Path, *, source: str = INFO.name, license: str = INFO.license, label: str | None = None) -> list[Record]:
    """Records from a seed-schema ``.json`` (array) or ``.jsonl`` file."""
    label = label or path.name
    records = []
    for line, row in _rows(path):
        if not isinstance(row, dict):
            raise DataError(path, line, None, f"expected a JSON object per record, got {type(row).__name__}")
        values: dict[str, str] = {}
        for field in FIELDS:
            value = row.get(field, "" if field == "input" else None)
            if value is None:
                raise DataError(path, line, field, "missing")
            if not isinstance(value, str):
                raise DataError(path, line, field, f"expected text, got {type(value).__name__}")
            values[field] = value.strip()
        if not values["instruction"]:
            raise DataError(path, line, "instruction", "empty")
        if not values["output"]:
            raise DataError(path, line, "output", "empty")
        options = parse_options(values["input"])
        reasoning, answer = split_output(values["output"])
        correct = _correct_key(answer, options) if options else None
        if correct is None:
            options = None  # the answer names no option: keep it open-ended, options stay in the context
        else:
            answer = mcq_answer(options, correct)
        question = values["instruction"]
        records.append(
            Record(
                id=stable_id(source, question, options),
                source=source,
                license=license,
                question=question,
                kind="mcq" if options else "open",
                reasoning=reasoning,
                answer=answer,
                options=options,
                correct=correct,
                context="" if options else values["input"],
                flags=[] if reasoning else [NO_REASONING_FLAG],
                attribution=INFO.attribution,
                origin=f"{label}:{line}",
            )
        )
    return records


def to_seed_row(record: Record) -> dict[str, str]:
    """One record in the seed schema (see the module docstring for the mapping)."""
    return {
        "instruction": record.question,
        "input": format_options(record.options) if record.options else record.context,
        "output": format_completion(record.reasoning, record.answer),
    }


def export_seed(records: Iterable[Record], path: Path) -> int:
    """Write records as a seed-schema JSON array (atomically); returns the count."""
    rows: list[Mapping[str, str]] = [to_seed_row(r) for r in records]
    with atomic_file(path) as fh:
        json.dump(rows, fh, ensure_ascii=False, indent=1)
        fh.write("\n")
    return len(rows)
