"""Data pipeline: raw sources -> canonical records -> leak-free reasoning splits and the held-out quiz bank.

Run it with::

    python -m core.data prepare                    # (re)build <work_dir>/data/
    python -m core.data prepare --if-stale         # only when the raw inputs changed (``make run``)
    python -m core.data prepare --export-seed out.json   # also write the training split as seed JSON
    python -m core.data prepare --medical-o1 hub   # add the full original release (needs network)

What it does:

1. Reads every source under ``settings.data_dir`` (see ``../shared/data/README.md``) into
   :class:`core.records.Record`. A missing source is skipped with a warning naming it; a malformed
   file or row stops everything with a :class:`DataError` naming file, line and field. Optional
   extras: original-schema files (``Question``/``Complex_CoT``/``Response``) dropped into
   ``<data_dir>/medical-o1-reasoning-sft/``, seed-schema files (``instruction``/``input``/``output``)
   in ``<data_dir>/seed/``, or the same given on the command line (``--medical-o1``, ``--seed-file``).
2. Groups exact and near duplicates (word 8-gram Jaccard >= 0.8, :mod:`core.dedup`) across the
   reasoning corpus AND the held-out bank. A reasoning item whose group holds any bank item is
   removed (a leak); otherwise one item per group is kept and the whole group goes to one split,
   chosen by a seeded hash of the group key (80/10/10).
3. The bank is MedQA + MedMCQA + MMLU + PubMedQA + the CasiMedicos official test cases + the
   reasoning test split. MedMCQA OCR damage is flagged, never edited.
4. Writes ``train.jsonl``, ``validation.jsonl``, ``test.jsonl``, ``bank.jsonl`` and ``manifest.json``
   (input SHA-256s, counts, dedup and leak numbers, token-length statistics with the default
   tokenizer) into a temporary folder, then renames it to ``settings.prepared_dir``. Output is
   byte-identical for identical input: sorted keys, records sorted by id, no timestamps.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from core import dedup
from core.datasets import casimedicos, huatuo_demo, medical_o1, medmcqa, medqa, mmlu, pubmedqa, seed
from core.datasets.base import DataError
from core.prompts import PROMPT_FORMAT_VERSION, build_messages, format_completion
from core.records import Record, normalise, read_jsonl, write_jsonl
from core.settings import Settings

log = logging.getLogger(__name__)

PIPELINE_VERSION = "medstudy-data-v2"
"""Bump when the pipeline's output changes for the same input (makes prepared data stale)."""
SPLIT_SEED = "medstudy-split-v1"
SPLIT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}
SPLITS = ("train", "validation", "test")
OUTPUT_FILES = {"train": "train.jsonl", "validation": "validation.jsonl", "test": "test.jsonl", "bank": "bank.jsonl"}
MANIFEST_FILE = "manifest.json"
ORIGINAL_FOLDER = "medical-o1-reasoning-sft"
SEED_FOLDER = "seed"
REASONING_TEST_TAG = "reasoning-test"
DUPLICATE_FLAG = "duplicate"
CONFLICT_FLAG = "conflicting-key"
TOKEN_LIMITS = (512, 1024, 2048)

__all__ = [
    "DataError",
    "PrepareResult",
    "is_stale",
    "load_bank",
    "load_split",
    "prepare",
    "read_manifest",
]

_DEFAULT = object()
"""Sentinel: load the default tokenizer (the embedded model's) for token statistics."""


# -- reading the sources ----------------------------------------------------------------------------


@dataclass
class Sources:
    """Everything read from the raw folder (and extras), before dedup and splitting."""

    reasoning: list[Record] = field(default_factory=list)
    bank: list[Record] = field(default_factory=list)
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Input path (relative to data_dir, or as given for extras) -> {sha256, bytes}."""
    missing: list[str] = field(default_factory=list)
    ocr_words: Counter[str] = field(default_factory=Counter)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _fingerprint(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


# Every raw file the pipeline reads, relative to data_dir (the optional folders are added when present).
REQUIRED_INPUTS: dict[str, tuple[str, ...]] = {
    "medical-o1": tuple(f"{medical_o1.SUBSET_FOLDER}/{name}" for name in medical_o1.SUBSET_FILES),
    "huatuogpt-o1-demo": (huatuo_demo.FILE,),
    "casimedicos": tuple(f"{casimedicos.FOLDER}/{split}.tsv" for split in casimedicos.SPLITS),
    "medqa": (medqa.FILE, medqa.STEP_FILE),
    "medmcqa": (medmcqa.FILE,),
    "mmlu": (mmlu.FILE,),
    "pubmedqa": (pubmedqa.FILE, pubmedqa.TEST_FILE),
}


def _optional_files(data_dir: Path) -> list[str]:
    found = []
    for folder, suffixes in ((ORIGINAL_FOLDER, medical_o1.LOCAL_SUFFIXES), (SEED_FOLDER, (".json", ".jsonl"))):
        base = data_dir / folder
        if base.is_dir():
            found += sorted(f"{folder}/{p.name}" for p in base.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    return found


MEDQUAD_FOLDER = "medquad"
MEDQUAD_SUMS = f"{MEDQUAD_FOLDER}/SHA256SUMS.txt"
"""MedQuAD's 5,497 XML files are stood for by the folder's checksum list, which the pipeline checks
against the files it reads (:func:`_medquad_fingerprint`)."""


def input_files(data_dir: Path, *, medical_o1_spec: str | None = None, seed_file: str | None = None) -> dict[str, Path]:
    """Key -> path of every local file the pipeline would read now (present ones only)."""
    files = {rel: data_dir / rel for rels in REQUIRED_INPUTS.values() for rel in rels if (data_dir / rel).is_file()}
    if (data_dir / MEDQUAD_SUMS).is_file():
        files[MEDQUAD_SUMS] = data_dir / MEDQUAD_SUMS
    files.update({rel: data_dir / rel for rel in _optional_files(data_dir)})
    for spec in (medical_o1_spec, seed_file):
        if spec and Path(spec).expanduser().exists():
            for path in medical_o1.local_files(Path(spec).expanduser().resolve()):
                files[f"extra:{path}"] = path
    return files


def read_sources(data_dir: Path, *, medical_o1_spec: str | None = None, seed_file: str | None = None) -> Sources:
    """Run every reader; missing sources are logged (warning) and listed in ``Sources.missing``."""
    out = Sources()

    def present(source: str, rel: str, *, what: str = "") -> Path | None:
        path = data_dir / rel
        if path.is_file():
            out.inputs[rel] = _fingerprint(path)
            return path
        message = f"source {source}: {rel} is missing{what}; skipped"
        log.warning(message)
        out.missing.append(message)
        return None

    for name in medical_o1.SUBSET_FILES:
        if path := present("medical-o1", f"{medical_o1.SUBSET_FOLDER}/{name}"):
            out.reasoning += medical_o1.read_subset(path.parent, files=(name,))
    if path := present("huatuogpt-o1-demo", huatuo_demo.FILE):
        out.reasoning += huatuo_demo.read(path)
    for split in casimedicos.SPLITS:
        if path := present("casimedicos", f"{casimedicos.FOLDER}/{split}.tsv"):
            (out.bank if split == "test" else out.reasoning).extend(casimedicos.read(path.parent, split))
    if path := present("medqa", medqa.FILE):
        steps_path = present("medqa", medqa.STEP_FILE, what=" (no USMLE Step tags)")
        out.bank += medqa.read(path, medqa.read_steps(steps_path) if steps_path else None)
    if path := present("medmcqa", medmcqa.FILE):
        out.bank += medmcqa.read(path)
    if path := present("mmlu", mmlu.FILE):
        out.bank += mmlu.read(path)
    if path := present("pubmedqa", pubmedqa.FILE):
        test_path = present("pubmedqa", pubmedqa.TEST_FILE, what=" (official test items not tagged)")
        out.bank += pubmedqa.read(path, pubmedqa.read_test_ids(test_path) if test_path else None)

    if (data_dir / MEDQUAD_SUMS).is_file():
        out.inputs[MEDQUAD_SUMS] = _medquad_fingerprint(data_dir)
    else:
        message = f"source medquad: {MEDQUAD_SUMS} is missing; the case study will run without references"
        log.warning(message)
        out.missing.append(message)
    for rel in _optional_files(data_dir):
        path = data_dir / rel
        out.inputs[rel] = _fingerprint(path)
        if rel.startswith(ORIGINAL_FOLDER + "/"):
            out.reasoning += medical_o1.load_original(path, base=data_dir)
        else:
            out.reasoning += seed.load_seed(path, label=rel)
    if medical_o1_spec:
        local = Path(medical_o1_spec).expanduser()
        if local.exists():
            for path in medical_o1.local_files(local.resolve()):
                out.inputs[f"extra:{path}"] = _fingerprint(path)
        else:
            out.inputs[f"hub:{medical_o1_spec}"] = {"sha256": None, "bytes": None}
        out.reasoning += medical_o1.load_original(medical_o1_spec)
    if seed_file:
        path = Path(seed_file).expanduser().resolve()
        if not path.is_file():
            raise DataError(path, None, None, "seed-schema file does not exist")
        out.inputs[f"extra:{path}"] = _fingerprint(path)
        out.reasoning += seed.load_seed(path)

    mcqa = [r for r in out.bank if r.source == medmcqa.INFO.name]
    if mcqa:
        others = (r for r in out.reasoning + out.bank if r.source != medmcqa.INFO.name)
        known = medmcqa.vocabulary(
            text for r in others for text in (r.question, r.reasoning, r.answer, r.explanation, r.context, *(r.options or {}).values())
        )
        out.ocr_words = medmcqa.flag_ocr(mcqa, known)
    return out


def _medquad_fingerprint(data_dir: Path) -> dict[str, Any]:
    """The checksum list's fingerprint, after checking that every XML file matches its line in it.

    A changed, added or removed XML file therefore either fails here (DataError: the list is stale)
    or changes the list, which makes the prepared data stale.
    """
    sums_path = data_dir / MEDQUAD_SUMS
    listed: dict[str, str] = {}
    for number, line in enumerate(sums_path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            digest, _, name = line.strip().partition("  ")
            listed[name.removeprefix("./")] = digest
    folder = data_dir / MEDQUAD_FOLDER
    present = {str(p.relative_to(folder)) for p in folder.glob("*/*.xml")}
    expected = {name for name in listed if name.endswith(".xml")}
    if present != expected:
        diff = sorted(present ^ expected)[:5]
        raise DataError(sums_path, None, None, f"does not list the XML files present (first differences: {diff})")
    for name in sorted(expected):
        if sha256_file(folder / name) != listed[name]:
            raise DataError(folder / name, None, None, "content differs from its SHA256SUMS.txt line")
    return _fingerprint(sums_path)


# -- dedup, leak control, splits --------------------------------------------------------------------


VIGNETTE_MIN_WORDS = 25
"""Questions at least this long also count alone (without options), so two items that share a
clinical vignette but ask different questions land in the same split (and never straddle the bank)."""


def dedup_texts(record: Record) -> list[str]:
    """The texts that make two records duplicates: question with options, and the exam question an
    open item was rewritten from."""
    texts = [" ".join([record.question, *(record.options or {}).values()])]
    if record.source_mcq:
        texts.append(" ".join([record.source_mcq["question"], *record.source_mcq["options"].values()]))
    return texts


def vignette_texts(record: Record) -> list[str]:
    """The long case text alone: items sharing it are related (one split) but not collapsed."""
    texts = [record.question]
    if record.source_mcq:
        texts.append(record.source_mcq["question"])
    return [t for t in texts if len(t.split()) >= VIGNETTE_MIN_WORDS]


def split_for(group_key: str, seed: str = SPLIT_SEED) -> str:
    """Deterministic 80/10/10 split from a seeded hash of the duplicate-group key."""
    digest = hashlib.sha256(f"{seed}\x1f{group_key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for name in SPLITS:
        edge += SPLIT_FRACTIONS[name]
        if u < edge:
            return name
    return SPLITS[-1]


def _preference(record: Record) -> tuple:
    """Which member of a duplicate group is kept: one that keeps its source MCQ, then the longest reasoning."""
    return (record.source_mcq is None, -len(record.reasoning), record.id, record.origin)


@dataclass
class SplitResult:
    splits: dict[str, list[Record]]
    bank: list[Record]
    stats: dict[str, Any]


def question_texts(record: Record) -> list[str]:
    """The questions alone (the item's, and the exam question it was rewritten from)."""
    texts = [record.question]
    if record.source_mcq:
        texts.append(record.source_mcq["question"])
    return texts


def split_and_dedup(reasoning: Sequence[Record], bank: Sequence[Record], *, embed: Callable[[list[str]], Any] | None = None) -> SplitResult:
    """Group duplicates across both sets, drop leaks and duplicates, assign splits, assemble the bank.

    Two relations: *duplicates* (question+options, or source MCQ, near-identical) are collapsed to one
    record; *related* items (duplicates, sharing a long vignette, or near copies in other words) always
    share a split. A related group that holds any bank item loses all its reasoning members (leaks):
    the held-out copy is kept. Near copies (:func:`core.dedup.char_copies`, and
    :func:`core.dedup.embedding_copies` when ``embed`` is given) are searched between every reasoning
    item and every other item.
    """
    items = list(reasoning) + list(bank)
    n_reasoning = len(reasoning)
    keys = [r.id for r in items]
    duplicates, dup_matches = dedup.group_items([dedup_texts(r) for r in items], keys)
    vignette_matches = dedup.item_matches([vignette_texts(r) for r in items])
    copies = dedup.char_copies([dedup_texts(r) + question_texts(r) for r in items], n_reasoning)
    if embed is not None:
        for pair, match in dedup.embedding_copies([question_texts(r) for r in items], n_reasoning, embed).items():
            copies.setdefault(pair, match)
    related = dedup.Groups(keys)
    for m in [*dup_matches, *vignette_matches, *copies.values()]:
        related.union(m.a, m.b)
    score_of: dict[tuple[int, int], tuple[float, str]] = {}
    for pair, copy in copies.items():
        score_of[pair] = (copy.score, copy.measure)
    for kind, matches in (("vignette", vignette_matches), ("duplicate", dup_matches)):
        for m in matches:
            score_of[(m.a, m.b)] = (m.score, kind)

    splits: dict[str, list[Record]] = {name: [] for name in SPLITS}
    collapsed: Counter[str] = Counter()
    leaked: Counter[str] = Counter()
    leak_pairs: list[dict[str, Any]] = []
    bank_groups = 0
    for root, members in sorted(related.members().items(), key=lambda kv: (related.keys[kv[0]], kv[0])):
        in_reasoning = [i for i in members if i < n_reasoning]
        in_bank = [i for i in members if i >= n_reasoning]
        bank_groups += len(in_bank) > 1
        if not in_reasoning:
            continue
        if in_bank:
            for i in in_reasoning:
                leaked[items[i].source] += 1
                direct = [(score_of[(min(i, j), max(i, j))], j) for j in in_bank if (min(i, j), max(i, j)) in score_of]
                (score, kind), j = max(direct, key=lambda d: (d[0][1] == "duplicate", d[0][0], -d[1])) if direct else ((None, "via group"), in_bank[0])
                leak_pairs.append(
                    {
                        "removed": items[i].origin,
                        "bank_item": items[j].origin,
                        "match": kind,
                        "score": None if score is None else round(score, 3),
                        "conflicting_key": _keys_conflict(items[i], items[j]),
                    }
                )
            continue
        name = split_for(related.group_key(root))
        by_duplicate: dict[int, list[int]] = defaultdict(list)
        for i in in_reasoning:
            by_duplicate[duplicates.find(i)].append(i)
        for same in by_duplicate.values():
            keep = min(same, key=lambda i: _preference(items[i]))
            for i in same:
                if i != keep:
                    collapsed[items[i].source] += 1
            splits[name].append(dataclasses.replace(items[keep], split=name))

    held_out = _dedupe_ids([dataclasses.replace(r, split="bank") for r in bank])
    held_out += [
        dataclasses.replace(r, split="bank", tags=[*r.tags, REASONING_TEST_TAG]) for r in splits["test"]
    ]
    for name in SPLITS:
        splits[name].sort(key=lambda r: r.id)
    held_out.sort(key=lambda r: r.id)
    ids = [r.id for r in held_out]
    if len(ids) != len(set(ids)):  # a reasoning test item sharing an id with a bank item would be a leak
        raise AssertionError("duplicate ids in the bank after leak control")
    measures = Counter(c.measure for c in copies.values())
    crossing = [c for c in copies.values() if c.b >= n_reasoning]
    stats = {
        "near_copy": {
            "char_grams": dedup.CHAR_GRAMS,
            "char_threshold": dedup.CHAR_THRESHOLD,
            "embedding_model": None if embed is None else "sentence-transformers/all-MiniLM-L6-v2",
            "embedding_threshold": None if embed is None else dedup.EMBED_THRESHOLD,
            "pairs": dict(sorted(measures.items())),
            "pairs_with_held_out": len(crossing),
        },
        "near_duplicate_threshold": dedup.THRESHOLD,
        "shingle_words": dedup.SHINGLE_WORDS,
        "vignette_min_words": VIGNETTE_MIN_WORDS,
        "duplicate_pairs": len(dup_matches),
        "vignette_pairs": len(vignette_matches),
        "reasoning_duplicates_collapsed": dict(sorted(collapsed.items())),
        "reasoning_removed_as_bank_leaks": dict(sorted(leaked.items())),
        "leak_pairs": sorted(leak_pairs, key=lambda p: (p["removed"], p["bank_item"])),
        "bank_related_groups": bank_groups,
    }
    return SplitResult(splits, held_out, stats)


def _keys_conflict(a: Record, b: Record) -> bool | None:
    """Whether two copies of one question are keyed to different answers (None: not comparable)."""
    if not (a.correct and b.correct and a.options and b.options):
        return None
    return normalise(a.options.get(a.correct, "")) != normalise(b.options.get(b.correct, "")) and a.correct != b.correct


def _dedupe_ids(bank: list[Record]) -> list[Record]:
    """Keep every bank item (benchmark counts stay official) but make ids unique.

    Exact repeats (same source, question and options) get ``-2``, ``-3`` ... suffixes, the flag
    ``duplicate`` and a ``duplicate-of:<id>`` tag so a quiz can skip them; repeats whose answer
    keys disagree are all flagged ``conflicting-key``.
    """
    by_id: dict[str, list[Record]] = defaultdict(list)
    for rec in bank:
        by_id[rec.id].append(rec)
    out = []
    for rec_id, copies in by_id.items():
        conflicting = len({c.correct for c in copies}) > 1
        for n, rec in enumerate(copies, start=1):
            flags = list(rec.flags)
            tags = list(rec.tags)
            if conflicting:
                flags.append(CONFLICT_FLAG)
            if n > 1:
                flags.append(DUPLICATE_FLAG)
                tags.append(f"duplicate-of:{rec_id}")
                rec = dataclasses.replace(rec, id=f"{rec_id}-{n}")
            out.append(dataclasses.replace(rec, flags=flags, tags=tags))
    return out


# -- token statistics -------------------------------------------------------------------------------


def _describe(lengths: Sequence[int]) -> dict[str, Any]:
    if not lengths:
        return {"n": 0}
    ordered = sorted(lengths)

    def pct(p: float) -> int:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    out: dict[str, Any] = {
        "n": len(ordered),
        "mean": round(sum(ordered) / len(ordered), 1),
        "p50": pct(0.5),
        "p90": pct(0.9),
        "p99": pct(0.99),
        "max": ordered[-1],
    }
    for limit in TOKEN_LIMITS:
        out[f"over_{limit}"] = sum(n > limit for n in ordered)
    return out


def token_stats(splits: dict[str, list[Record]], bank: list[Record], tokenizer: Any, *, name: str | None = None) -> dict[str, Any]:
    """Token lengths under the chat template: full training examples per split, prompts for the bank."""

    backend = getattr(tokenizer, "backend_tokenizer", None)

    def lengths(texts: list[str]) -> list[int]:
        if not texts:
            return []
        if hasattr(backend, "encode_batch_fast"):  # same ids, no offsets: about twice as fast here
            return [len(e.ids) for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def prompt(r: Record) -> str:
        return tokenizer.apply_chat_template(build_messages(r.question, r.options), tokenize=False, add_generation_prompt=True)

    def full(r: Record) -> str:
        messages = build_messages(r.question, r.options)
        messages.append({"role": "assistant", "content": format_completion(r.reasoning, r.answer)})
        return tokenizer.apply_chat_template(messages, tokenize=False)

    # A local path differs between checkouts, so only its last part is recorded.
    stats: dict[str, Any] = {"tokenizer": name or Path(str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)).name}
    for name, records in splits.items():
        stats[name] = {"prompt": _describe(lengths([prompt(r) for r in records])), "example": _describe(lengths([full(r) for r in records]))}
    stats["bank"] = {
        "prompt": _describe(lengths([prompt(r) for r in bank])),
        "context": _describe(lengths([r.context for r in bank if r.context])),
    }
    return stats


def default_tokenizer(settings: Settings) -> tuple[Any, str] | None:
    """The base model's tokenizer and identity, or None (with a warning) when it cannot be loaded."""
    try:
        from core.model import load_tokenizer, resolve_base

        base = resolve_base(settings)
        return load_tokenizer(base), base.identity
    except Exception as exc:  # any failure only costs the statistics, never the data
        log.warning("token-length statistics skipped: default tokenizer unavailable (%s)", exc)
        return None


def default_embedder(settings: Settings) -> Callable[[list[str]], Any]:
    """all-MiniLM-L6-v2 with its vectors cached in the model cache (encoded once per machine)."""
    from core.embedding import Embedder

    return Embedder(cache_file=settings.model_cache_dir / "embeddings" / "minilm-128.npz").encode


# -- outputs ----------------------------------------------------------------------------------------


@dataclass
class PrepareResult:
    """What :func:`prepare` wrote: the folder and its manifest."""

    prepared_dir: Path
    manifest: dict[str, Any]

    def summary(self) -> str:
        return summary_table(self.manifest)


def _by_source(records: Iterable[Record]) -> dict[str, int]:
    counts = Counter(r.source for r in records)
    return dict(sorted(counts.items()))


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Replace ``target`` by the finished ``tmp`` folder; the old one is restored if the swap fails."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        os.rmdir(old)
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _normal_permissions(folder: Path) -> None:
    """mkdtemp/mkstemp create private (0700/0600) entries; give the outputs the usual umask-based modes."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


class _WarningCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def prepare(
    settings: Settings,
    *,
    medical_o1_spec: str | None = None,
    seed_file: str | None = None,
    tokenizer: Any = _DEFAULT,
    tokenizer_name: str | None = None,
    embed: Any = _DEFAULT,
) -> PrepareResult:
    """Build ``settings.prepared_dir`` from ``settings.data_dir`` (see the module docstring).

    ``tokenizer``: the one used for token statistics (``tokenizer_name`` is recorded with them); by
    default the base model's, loaded via ``core.model`` (a warning, and no statistics, when that
    fails); ``None`` skips the statistics. ``embed``: texts -> unit vectors for paraphrase detection;
    by default :func:`default_embedder` (``None``: the character measure alone). Raises
    :class:`DataError` for malformed input.
    """
    collector = _WarningCollector()
    logging.getLogger("core").addHandler(collector)
    try:
        sources = read_sources(settings.data_dir, medical_o1_spec=medical_o1_spec, seed_file=seed_file)
        result = split_and_dedup(sources.reasoning, sources.bank, embed=default_embedder(settings) if embed is _DEFAULT else embed)
        if tokenizer is _DEFAULT:
            loaded = default_tokenizer(settings)
            if loaded is None:
                tokens: dict[str, Any] = {"unavailable": "the default tokenizer could not be loaded (see warnings)"}
            else:
                tokens = token_stats(result.splits, result.bank, loaded[0], name=loaded[1])
        elif tokenizer is None:
            tokens = {"unavailable": "skipped (no tokenizer given)"}
        else:
            tokens = token_stats(result.splits, result.bank, tokenizer, name=tokenizer_name)
    finally:
        logging.getLogger("core").removeHandler(collector)

    target = settings.prepared_dir
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        outputs: dict[str, Any] = {}
        for name, records in [*result.splits.items(), ("bank", result.bank)]:
            path = tmp / OUTPUT_FILES[name]
            write_jsonl(path, records)
            outputs[OUTPUT_FILES[name]] = {"records": len(records), **_fingerprint(path)}
        references = _build_references(settings, tmp, result.splits["train"])
        manifest = _manifest(settings, sources, result, tokens, outputs, collector.messages, medical_o1_spec, seed_file)
        manifest["references"] = references
        # Written last: a folder with a manifest is a complete one.
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
        _normal_permissions(tmp)
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PrepareResult(target, manifest)


def _build_references(settings: Settings, folder: Path, train: list[Record]) -> dict[str, Any]:
    """The reference index (MedQuAD + the training split's reasoning) inside the prepared folder.

    It is built in the temporary folder and swapped in with the splits, so an interrupted build is
    never used. Without MedQuAD the app still answers, without references, and says why.
    """
    from core import retrieval

    medquad_dir = settings.data_dir / MEDQUAD_FOLDER
    if not medquad_dir.is_dir():
        log.warning("source medquad: %s is missing; the case study will run without references", MEDQUAD_FOLDER)
        return {"unavailable": f"{MEDQUAD_FOLDER} is missing"}
    section = retrieval.build_index(folder / retrieval.INDEX_DIRNAME, medquad_dir=medquad_dir, train=train)
    # Wall times differ between runs; the manifest stays byte-identical for identical input.
    return {k: v for k, v in section.items() if k not in {"timings", "build_seconds"}}


def _manifest(
    settings: Settings,
    sources: Sources,
    result: SplitResult,
    tokens: dict[str, Any],
    outputs: dict[str, Any],
    warnings: list[str],
    medical_o1_spec: str | None,
    seed_file: str | None,
) -> dict[str, Any]:
    read_counts = _by_source(sources.reasoning + sources.bank)
    with_reasoning = sum(len(v) for v in result.splits.values()) + sum(
        1 for r in result.bank if r.reasoning and REASONING_TEST_TAG not in r.tags
    )
    flags = Counter(flag for r in result.bank for flag in r.flags)
    licenses = {r.source: (r.license, r.attribution) for r in sources.reasoning + sources.bank}
    return {
        "pipeline": PIPELINE_VERSION,
        "prompt_format": PROMPT_FORMAT_VERSION,
        "split_seed": SPLIT_SEED,
        "split_fractions": SPLIT_FRACTIONS,
        "inputs": dict(sorted(sources.inputs.items())),
        "extra_sources": {"medical_o1": medical_o1_spec, "seed_file": seed_file},
        "missing_sources": sources.missing,
        "warnings": warnings,
        "sources": {
            name: {"read": read_counts[name], "license": licenses[name][0], "attribution": licenses[name][1]}
            for name in read_counts
        },
        "counts": {
            **{name: {"total": len(records), "by_source": _by_source(records)} for name, records in result.splits.items()},
            "bank": {
                "total": len(result.bank),
                "by_source": _by_source(result.bank),
                "mcq": sum(r.kind == "mcq" for r in result.bank),
                "open": sum(r.kind == "open" for r in result.bank),
                "reasoning_test_items": sum(REASONING_TEST_TAG in r.tags for r in result.bank),
                "pubmedqa_official_test": sum(pubmedqa.TEST_TAG in r.tags for r in result.bank),
            },
            "reasoning_records": with_reasoning,
        },
        "dedup": result.stats,
        "flags": dict(sorted(flags.items())),
        "ocr_suspect_words": dict(sorted(sources.ocr_words.most_common(30), key=lambda kv: (-kv[1], kv[0]))),
        "token_stats": tokens,
        "outputs": outputs,
    }


# -- reading prepared data ----------------------------------------------------------------------------


def read_manifest(settings: Settings) -> dict[str, Any]:
    """The prepared data's manifest; FileNotFoundError (with the command to run) when there is none."""
    path = settings.prepared_dir / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"No prepared data in {settings.prepared_dir}: run `python -m core.data prepare`")
    return json.loads(path.read_text(encoding="utf-8"))


def load_split(settings: Settings, name: str) -> list[Record]:
    """Records of one prepared split: ``train``, ``validation``, ``test`` or ``bank``."""
    if name not in OUTPUT_FILES:
        raise ValueError(f"unknown split {name!r}; expected one of {', '.join(OUTPUT_FILES)}")
    read_manifest(settings)  # only complete folders have one
    return list(read_jsonl(settings.prepared_dir / OUTPUT_FILES[name]))


def load_bank(settings: Settings) -> list[Record]:
    """The held-out quiz and evaluation bank."""
    return load_split(settings, "bank")


def is_stale(settings: Settings, *, medical_o1_spec: str | None = None, seed_file: str | None = None) -> bool:
    """True when the prepared data is missing, incomplete, from another pipeline or prompt version, or
    when any input file changed, appeared or disappeared. Extras default to those the manifest
    recorded; a hub source cannot be re-checked and counts as unchanged."""
    try:
        manifest = read_manifest(settings)
    except (FileNotFoundError, json.JSONDecodeError):
        return True
    if manifest.get("pipeline") != PIPELINE_VERSION or manifest.get("prompt_format") != PROMPT_FORMAT_VERSION:
        return True
    for name, info in manifest.get("outputs", {}).items():
        path = settings.prepared_dir / name
        if not path.is_file() or path.stat().st_size != info.get("bytes"):
            return True
    recorded_extras = manifest.get("extra_sources", {})
    medical_o1_spec = medical_o1_spec if medical_o1_spec is not None else recorded_extras.get("medical_o1")
    seed_file = seed_file if seed_file is not None else recorded_extras.get("seed_file")
    if (medical_o1_spec, seed_file) != (recorded_extras.get("medical_o1"), recorded_extras.get("seed_file")):
        return True
    recorded = {k: v for k, v in manifest.get("inputs", {}).items() if not k.startswith("hub:")}
    current = input_files(settings.data_dir, medical_o1_spec=medical_o1_spec, seed_file=seed_file)
    if set(current) != set(recorded):
        return True
    if any(sha256_file(path) != recorded[key]["sha256"] for key, path in current.items()):
        return True
    if MEDQUAD_SUMS in current:
        try:  # an XML file edited without its checksum line
            _medquad_fingerprint(settings.data_dir)
        except DataError:
            return True
    return False


# -- summary and command line -----------------------------------------------------------------------


def summary_table(manifest: dict[str, Any]) -> str:
    """A plain-text table of counts per source and split, with dedup and leak numbers."""
    counts = manifest["counts"]
    dd = manifest["dedup"]
    columns = ["read", "dup", "leak", "train", "validation", "test", "bank"]
    sources = sorted(manifest["sources"])
    rows = []
    for name in sources:
        rows.append(
            [
                name,
                manifest["sources"][name]["read"],
                dd["reasoning_duplicates_collapsed"].get(name, 0),
                dd["reasoning_removed_as_bank_leaks"].get(name, 0),
                *(counts[s]["by_source"].get(name, 0) for s in SPLITS),
                counts["bank"]["by_source"].get(name, 0),
            ]
        )
    rows.append(["total", *(sum(r[i] for r in rows) for i in range(1, len(columns) + 1))])
    width = max(len(r[0]) for r in rows)
    lines = [f"{'source':<{width}}  " + "  ".join(f"{c:>10}" for c in columns)]
    lines.append("-" * len(lines[0]))
    for r in rows:
        if r[0] == "total":
            lines.append("-" * len(lines[0]))
        lines.append(f"{r[0]:<{width}}  " + "  ".join(f"{v:>10}" for v in r[1:]))
    bank = counts["bank"]
    flags = manifest["flags"]
    lines += [
        "",
        "dup = duplicates collapsed inside the reasoning corpus; leak = reasoning items removed because they "
        "(near-)duplicate a held-out item.",
        f"reasoning records after dedup (train + validation + test + held-out cases with reasoning): {counts['reasoning_records']}",
        f"bank: {bank['total']} items ({bank['mcq']} multiple choice, {bank['open']} open; "
        f"{bank['reasoning_test_items']} from the reasoning test split; "
        f"{bank['pubmedqa_official_test']} PubMedQA official test)",
        f"flags in the bank: {', '.join(f'{k} {v}' for k, v in flags.items()) or 'none'}",
    ]
    tokens = manifest["token_stats"]
    if "train" in tokens:
        t = tokens["train"]["example"]
        lines.append(f"train example tokens ({tokens['tokenizer']}): mean {t.get('mean')}, p90 {t.get('p90')}, max {t.get('max')}")
    else:
        lines.append(f"token statistics: unavailable ({tokens.get('unavailable')})")
    for message in manifest["missing_sources"]:
        lines.append(f"WARNING: {message}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.data", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="build the prepared data (splits, bank, manifest) from the raw sources")
    prep.add_argument("--if-stale", action="store_true", help="do nothing when the prepared data matches the raw inputs")
    prep.add_argument("--export-seed", metavar="PATH", help="also write the training split as seed-schema JSON")
    prep.add_argument(
        "--medical-o1",
        metavar="SPEC",
        help="add the original medical-o1-reasoning-SFT release: a local .json/.jsonl/.parquet file or folder, "
        f"'hub' ({medical_o1.HUB_ID}) or another hub id",
    )
    prep.add_argument("--seed-file", metavar="PATH", help="add a seed-schema (instruction/input/output) JSON/JSONL file")
    return parser


def main(argv: Sequence[str] | None = None, *, settings_loader: Callable[[], Settings] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    from core.settings import load_settings

    settings = (settings_loader or load_settings)()
    t0 = time.perf_counter()
    try:
        if args.if_stale and not is_stale(settings, medical_o1_spec=args.medical_o1, seed_file=args.seed_file):
            print(f"Prepared data in {settings.prepared_dir} is up to date.")
        else:
            recorded: dict[str, Any] = {}
            if args.if_stale and args.medical_o1 is None and args.seed_file is None:
                try:  # rebuild the same configuration as last time
                    recorded = read_manifest(settings).get("extra_sources", {})
                except (FileNotFoundError, json.JSONDecodeError):
                    recorded = {}
            result = prepare(
                settings,
                medical_o1_spec=args.medical_o1 or recorded.get("medical_o1"),
                seed_file=args.seed_file or recorded.get("seed_file"),
            )
            print(result.summary())
            print(f"Wrote {settings.prepared_dir} in {time.perf_counter() - t0:.1f} s")
        if args.export_seed:
            n = seed.export_seed(load_split(settings, "train"), Path(args.export_seed))
            print(f"Exported {n} training records in the seed schema to {args.export_seed}")
    except DataError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
