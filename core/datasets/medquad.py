"""MedQuAD (Ben Abacha & Demner-Fushman 2019): consumer-health question/answer pairs from NIH sites, CC BY 4.0.

Files: ``medquad/<n>_<Subset>/<doc id>.xml``, one ``Document`` per file (attributes ``id``, ``source``,
``url``) with ``<Focus>``, ``<FocusAnnotations>`` (MedlinePlus adds ``<Synonyms>``) and
``<QAPairs><QAPair pid><Question qid qtype>…</Question><Answer>…</Answer></QAPair></QAPairs>``.
Four NINDS files use an older spelling of the same schema (``doc docid corpus url``,
``doctitle-focus``, ``qaPairs/pair/question/answer``) and one CDC file names its root
``DiseaseFile fid``; all are read.

Only the 9 subsets that still carry answers are present (see the folder's PROVENANCE.md). The
reader drops what is no reference material and keeps counts of what it dropped:

- boilerplate answers "These resources address the diagnosis or management of …" (GARD/GHR link
  lists without medical content, about 1,085),
- empty answers,
- exact duplicate question + answer pairs (question compared case-insensitively).

These pairs are reference passages for retrieval (:mod:`core.retrieval`), never training or quiz items.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from core.datasets.base import DataError, SourceInfo

INFO = SourceInfo(
    name="medquad",
    license="CC BY 4.0",
    attribution="MedQuAD by Asma Ben Abacha and Dina Demner-Fushman, \"A Question-Entailment Approach to Question "
    "Answering\", BMC Bioinformatics 20:511 (2019), CC BY 4.0; whitespace normalised, long answers split into passages",
)
FOLDER = "medquad"

SITES: dict[str, str] = {
    "CancerGov": "NCI cancer.gov",
    "GARD": "GARD (NCATS)",
    "GHR": "Genetics Home Reference",
    "MPlusHealthTopics": "MedlinePlus",
    "NIDDK": "NIDDK",
    "NINDS": "NINDS",
    "NIHSeniorHealth": "NIHSeniorHealth",
    "NHLBI": "NHLBI",
    "CDC": "CDC",
}
"""The ``source`` attribute -> the site's name as a reader knows it."""

_BOILERPLATE = re.compile(r"^\s*These resources address the diagnosis or management of\b", re.I)
_URL = re.compile(r"^https?://\S+$")
@dataclass(frozen=True)
class QAPair:
    """One answered question of a MedQuAD document, with the document's metadata."""

    doc_id: str
    """``<source>-<file name>``: the ``id`` attribute repeats across subsets (``0000001`` is in seven
    of them) and even within CancerGov (``0000013_2`` is in seven files), the file name does not."""
    source: str
    """The ``source`` attribute, e.g. ``GHR``; :data:`SITES` names the site."""
    url: str
    focus: str
    """The disease, drug or test the document is about; empty in three CDC documents."""
    pid: str
    qtype: str
    question: str
    answer: str
    """Whitespace normalised; paragraph and bullet breaks kept as ``\\n``."""
    synonyms: tuple[str, ...] = ()
    origin: str = ""
    """``<subset folder>/<file>`` for error messages and audits."""

    @property
    def site(self) -> str:
        return SITES.get(self.source, self.source)


@dataclass
class ReadResult:
    """What :func:`read_medquad` kept, and how many pairs it dropped for each reason."""

    pairs: list[QAPair]
    documents: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: {"boilerplate": 0, "empty": 0, "duplicate": 0})


def clean_text(text: str) -> str:
    """Whitespace runs folded to one space, or to one ``\\n`` where they stood for a line break.

    The answers are flattened web pages: a run of 3+ spaces (or a newline) stands for a line break,
    so "text.    - item" becomes a "- item" line.
    """
    # str.split, not regular expressions: a pattern scanning ~3 million spaces took seconds.
    lines = []
    for line in text.replace("\r", "\n").replace("\t", " ").split("\n"):
        lines.extend(part for part in (" ".join(run.split()) for run in line.split("   ")) if part)
    return "\n".join(lines)


def is_boilerplate(answer: str) -> bool:
    """True for the GARD/GHR answers that only list other resources."""
    return bool(_BOILERPLATE.match(answer))


def _text(element: ET.Element | None) -> str:
    return "".join(element.itertext()) if element is not None else ""


def _child(element: ET.Element, *names: str) -> ET.Element | None:
    for name in names:
        found = element.find(name)
        if found is not None:
            return found
    return None


def read_document(path: Path, *, relative: str | None = None) -> list[QAPair]:
    """Every QA pair of one file, answers cleaned but not yet filtered; DataError (naming ``path``) for a
    malformed file. ``relative`` is the name kept in each pair's ``origin``."""
    where = relative or str(path)
    # ElementTree is fine for these local, checksummed files: expat refuses external entities and
    # (expat >= 2.4) exponential entity expansion.
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        line = exc.position[0] if exc.position else None
        raise DataError(path, line, None, f"malformed XML ({exc})") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(path, None, None, f"unreadable ({type(exc).__name__}: {str(exc)[:120]})") from exc
    if root.tag in ("Document", "DiseaseFile"):  # one CDC file says DiseaseFile fid=… for Document id=…
        doc_id, source = root.get("id") or root.get("fid"), root.get("source")
        focus_el, pairs_path, q_name, a_name = root.find("Focus"), "QAPairs/QAPair", "Question", "Answer"
    elif root.tag == "doc":
        doc_id, source = root.get("docid"), root.get("corpus")
        focus_el, pairs_path, q_name, a_name = root.find("doctitle-focus"), "qaPairs/pair", "question", "answer"
    else:
        raise DataError(path, None, None, f"expected a <Document> element, got <{root.tag}>")
    url = (root.get("url") or "").strip()
    for name, value in (("id", doc_id), ("source", source)):
        if not value or not value.strip():
            raise DataError(path, None, name, "missing document attribute")
    if not _URL.match(url):
        raise DataError(path, None, "url", f"expected an http(s) URL, got {url[:80]!r}")
    # Three CDC documents have an empty <Focus>; their questions still name the topic.
    focus = " ".join(_text(focus_el).split())
    synonyms = tuple(s for s in (" ".join(_text(el).split()) for el in root.iterfind(".//Synonym")) if s)
    pairs: list[QAPair] = []
    for n, pair in enumerate(root.iterfind(pairs_path), start=1):
        question_el = _child(pair, q_name)
        question = " ".join(_text(question_el).split())
        if not question:
            raise DataError(path, f"QA pair {n}", "Question", "missing or empty")
        pairs.append(
            QAPair(
                doc_id=f"{source.strip()}-{path.stem}",
                source=source.strip(),
                url=url,
                focus=focus,
                pid=(pair.get("pid") or str(n)).strip(),
                qtype=(question_el.get("qtype") or "").strip() if question_el is not None else "",
                question=question,
                answer=clean_text(_text(_child(pair, a_name))),
                synonyms=synonyms,
                origin=where,
            )
        )
    return pairs


def read_medquad(folder: Path) -> ReadResult:
    """All answered, non-boilerplate, de-duplicated QA pairs under ``folder`` (the ``medquad`` folder).

    Files are read in sorted path order, so ids and the kept copy of a duplicate are stable.
    Raises DataError naming the file for a malformed one, FileNotFoundError for a missing folder.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"MedQuAD folder not found: {folder}")
    files = sorted(folder.glob("*/*.xml"))
    if not files:
        raise DataError(folder, None, None, "no MedQuAD XML files (expected <subset>/<id>.xml)")
    result = ReadResult(pairs=[], documents=len(files))
    seen: set[tuple[str, str]] = set()
    for path in files:
        for pair in read_document(path, relative=f"{FOLDER}/{path.parent.name}/{path.name}"):
            if not pair.answer:
                result.dropped["empty"] += 1
            elif is_boilerplate(pair.answer):
                result.dropped["boilerplate"] += 1
            else:
                key = (pair.question.lower(), pair.answer)  # exact duplicates; text is already whitespace-folded
                if key in seen:
                    result.dropped["duplicate"] += 1
                    continue
                seen.add(key)
                result.pairs.append(pair)
    return result
