"""medical-o1-reasoning-SFT (FreedomIntelligence): open-ended questions with a chain of thought and a response.

Two ways in:

- :func:`read_subset` reads the offline 500-record sample (``medical-o1-sft-subset-raulvazquez7/``,
  verbatim rows with lower-case keys ``question`` / ``complex_cot`` / ``response``).
- :func:`load_original` reads the release in its ORIGINAL schema (``Question`` / ``Complex_CoT`` /
  ``Response``, about 19.7k rows): from a local ``.json`` / ``.jsonl`` / ``.parquet`` file (or a folder
  of them), or from the hub id ``FreedomIntelligence/medical-o1-reasoning-SFT`` (config ``en``,
  split ``train``) through ``datasets.load_dataset`` when the machine has network access.

Both give ``medical-o1`` records: question, reasoning = chain of thought, answer = response.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from core.datasets.base import DataError, SourceInfo, iter_json_items, iter_jsonl, require_str
from core.records import Record, stable_id

INFO = SourceInfo(
    name="medical-o1",
    license="Apache-2.0",
    attribution="medical-o1-reasoning-SFT by FreedomIntelligence (Chen et al. 2024, HuatuoGPT-o1), Apache-2.0",
)
SUBSET_FOLDER = "medical-o1-sft-subset-raulvazquez7"
SUBSET_FILES = ("train_data.jsonl", "test_data.jsonl")
SUBSET_FIELDS = ("question", "complex_cot", "response")
ORIGINAL_FIELDS = ("Question", "Complex_CoT", "Response")
HUB_ID = "FreedomIntelligence/medical-o1-reasoning-SFT"
HUB_CONFIG = "en"
LOCAL_SUFFIXES = (".json", ".jsonl", ".parquet")


def _record(row: Mapping[str, Any], fields: tuple[str, str, str], path: Path | str, where: int | str, origin: str) -> Record:
    q, cot, resp = fields
    question = require_str(row, q, Path(path), where).strip()
    return Record(
        id=stable_id(INFO.name, question),
        source=INFO.name,
        license=INFO.license,
        question=question,
        kind="open",
        reasoning=require_str(row, cot, Path(path), where).strip(),
        answer=require_str(row, resp, Path(path), where).strip(),
        attribution=INFO.attribution,
        origin=origin,
    )


def read_subset(folder: Path, *, files: Iterable[str] = SUBSET_FILES, relative: str = SUBSET_FOLDER) -> list[Record]:
    """The offline sample's files (those of ``files`` that exist in ``folder``; lower-case keys)."""
    records = []
    for name in files:
        path = folder / name
        if path.is_file():
            records += [
                _record(row, SUBSET_FIELDS, path, line, f"{relative}/{name}:{line}") for line, row in iter_jsonl(path)
            ]
    return records


def _rows_from_file(path: Path) -> Iterator[tuple[int | str, Mapping[str, Any]]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from iter_jsonl(path)
    elif suffix == ".json":
        for line, _key, value in iter_json_items(path):
            if not isinstance(value, dict):
                raise DataError(path, line, None, f"expected a JSON object per record, got {type(value).__name__}")
            yield line, value
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several unrelated types for a bad file
            raise DataError(path, None, None, f"not a readable Parquet file ({exc})") from exc
        for index, row in enumerate(table.to_pylist()):
            yield f"row {index}", row
    else:
        raise DataError(path, None, None, f"unsupported file type {suffix!r} (use {', '.join(LOCAL_SUFFIXES)})")


def local_files(path: Path) -> list[Path]:
    """The data files of a local original-schema source: the file itself, or the supported files in a folder."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in LOCAL_SUFFIXES)
    return [path]


def records_from_rows(rows: Iterable[tuple[int | str, Mapping[str, Any]]], path: Path | str, label: str) -> list[Record]:
    """Original-schema rows -> records; ``label`` names the source in ``origin``."""
    out = []
    for where, row in rows:
        suffix = f":{where}" if isinstance(where, int) else f" {where}"
        out.append(_record(row, ORIGINAL_FIELDS, path, where, f"{label}{suffix}"))
    return out


def load_original(spec: str | Path, *, base: Path | None = None) -> list[Record]:
    """Records from the original release: a local file/folder, or a hub id (``hub`` means the default id).

    ``base`` makes ``origin`` paths relative (to the raw-data folder) so outputs do not depend on
    where the data lives.
    """
    text = str(spec)
    path = Path(text).expanduser()
    if path.exists():
        records = []
        for file in local_files(path):
            label = str(file.relative_to(base)) if base and file.is_relative_to(base) else file.name
            records += records_from_rows(_rows_from_file(file), file, label)
        return records
    if text.startswith((".", "/", "~")) or Path(text).suffix.lower() in LOCAL_SUFFIXES:
        raise DataError(path, None, None, "file or folder does not exist")
    return load_hub(HUB_ID if text == "hub" else text)


def load_hub(hub_id: str = HUB_ID, *, config: str = HUB_CONFIG, split: str = "train") -> list[Record]:
    """Download (or reuse the cached) hub release via ``datasets.load_dataset``; needs network the first time."""
    import datasets

    try:
        ds = datasets.load_dataset(hub_id, config, split=split)
    except Exception as exc:  # offline, unknown id, gated... datasets raises many types
        raise DataError(f"hub:{hub_id}", None, None, f"could not load config {config!r} split {split!r}: {exc}") from exc
    missing = [f for f in ORIGINAL_FIELDS if f not in ds.column_names]
    if missing:
        raise DataError(f"hub:{hub_id}", None, missing[0], f"missing column (columns: {ds.column_names})")
    return records_from_rows(((f"row {i}", row) for i, row in enumerate(ds)), f"hub:{hub_id}", f"hub:{hub_id}/{config}/{split}")
