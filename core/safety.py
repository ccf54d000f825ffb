"""Input safety for the case study: validation of case text and a patient-identifier (PHI) detector.

- :func:`check_case_text` cleans and validates what a student typed, before anything is tokenised:
  control characters are stripped (with a note saying so), empty input and input longer than
  ``settings.max_input_chars`` are refused with a message.
- :func:`find_phi` looks for things that identify a real patient: names with titles, dates of
  birth, phone numbers, e-mail addresses and record numbers. It is a heuristic that errs towards
  warning; the page asks the student to confirm before generating, it never blocks.
- :func:`markdown_text` makes model output safe to show with ``st.markdown``: no HTML, no remote
  images, no accidental LaTeX.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Literal

PhiKind = Literal["name", "date_of_birth", "phone", "email", "record_number"]

PHI_LABELS: dict[str, str] = {
    "name": "a name with a title",
    "date_of_birth": "a date of birth",
    "phone": "a phone number",
    "email": "an e-mail address",
    "record_number": "a record or ID number",
}


@dataclass(frozen=True)
class PhiFinding:
    """One suspected identifier: its kind, the matched text and where it is in the input."""

    kind: PhiKind
    text: str
    start: int
    end: int

    @property
    def label(self) -> str:
        return PHI_LABELS[self.kind]


@dataclass(frozen=True)
class InputCheck:
    """The outcome of :func:`check_case_text`: the cleaned text, refusals and notes for the user."""

    text: str
    """The cleaned text (control characters removed, line endings normalised, outer whitespace trimmed)."""
    problems: list[str] = field(default_factory=list)
    """Reasons to refuse the input; empty when it may be generated from."""
    notes: list[str] = field(default_factory=list)
    """Things that were changed and the user should know about (e.g. removed characters)."""

    @property
    def ok(self) -> bool:
        return not self.problems


# -- input validation ------------------------------------------------------------------------------

_KEEP_CONTROLS = {"\n", "\t"}


# Zero-width joiner and non-joiner: invisible, but part of the spelling inside a word or an emoji sequence
# (Persian "می‌خواهم", Indic conjuncts, "👩‍⚕️"); removing them there would change what the student wrote.
_JOINERS = {"\u200c", "\u200d"}


def _is_unwanted(ch: str) -> bool:
    """Control (Cc) and invisible format (Cf: zero-width, bidi overrides) characters, except newline and tab."""
    if ch in _KEEP_CONTROLS:
        return False
    return unicodedata.category(ch) in ("Cc", "Cf")


def _clean(raw: str) -> str:
    """``raw`` without unwanted characters; a joiner stays only between two visible characters."""
    kept: list[str] = []
    for i, ch in enumerate(raw):
        if ch in _JOINERS:
            before = kept[-1] if kept else ""
            after = raw[i + 1] if i + 1 < len(raw) else ""
            if before and after and not before.isspace() and not after.isspace() and not _is_unwanted(after):
                kept.append(ch)
        elif not _is_unwanted(ch):
            kept.append(ch)
    return "".join(kept)


def check_case_text(text: str | None, *, max_chars: int) -> InputCheck:
    """Clean ``text`` and decide whether it may be sent to the model.

    The length limit is checked on the cleaned text, before any tokenisation, so an oversized
    paste costs nothing but this scan.
    """
    raw = (text or "").replace("\r\n", "\n").replace("\r", "\n")
    cleaned = _clean(raw)
    removed = len(raw) - len(cleaned)
    cleaned = cleaned.strip()
    notes: list[str] = []
    problems: list[str] = []
    if removed:
        notes.append(
            f"Removed {removed} invisible control character{'s' if removed != 1 else ''} from the case text."
        )
    if not cleaned:
        problems.append("The case text is empty. Type or paste a clinical case, or pick a random example.")
    elif len(cleaned) > max_chars:
        problems.append(
            f"The case text is {len(cleaned):,} characters long; the limit is {max_chars:,}. "
            "Shorten it to the findings that matter for the question."
        )
    return InputCheck(text=cleaned, problems=problems, notes=notes)


# -- identifier detection ------------------------------------------------------------------------

_TITLE = r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sr|Sra|Mme|Mlle)"
_NAME_WORD = r"[A-Z][a-zA-Z'\-]+"
_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
    r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_DATE = (
    r"(?:\d{1,2}[/.\-]\d{1,2}[/.\-]\d{2,4}"  # 03/04/1975, 3.4.75
    r"|\d{4}-\d{1,2}-\d{1,2}"  # 1975-04-03
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH}\.?,?\s+\d{{4}}"  # 3 April 1975
    rf"|{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})"  # April 3, 1975
)

_PATTERNS: list[tuple[PhiKind, re.Pattern[str]]] = [
    # The local part starts only where a run of local-part characters starts (not at every \b inside
    # one): with \b, a 100k-character "a-a-a-..." paste without an "@" took ~20 s (quadratic backtracking).
    ("email", re.compile(r"(?<![\w.+\-])[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)*\.[A-Za-z]{2,}\b")),
    # Titles are matched case-sensitively: "Dr Smith" is a name, "dr" alone in lower case is not.
    ("name", re.compile(rf"\b{_TITLE}\.?[ \t]+{_NAME_WORD}(?:[ \t]+{_NAME_WORD})?")),
    (
        "name",
        re.compile(rf"(?i:\b(?:patient(?:'s)?\s+name|name)\s*[:=]\s*){_NAME_WORD}(?:[ \t]+{_NAME_WORD})+"),
    ),
    (
        "date_of_birth",
        re.compile(rf"(?i:\b(?:d\.?o\.?b\.?|date\s+of\s+birth|birth\s*date|born(?:\s+on)?)\s*[:=\-]?\s*){_DATE}"),
    ),
    (
        "record_number",
        re.compile(
            r"(?i:\b(?:MRN|medical\s+record(?:\s+(?:number|no\.?|#))?|record\s+(?:number|no\.?|#)|"
            r"patient\s+(?:id|number|no\.?)|hospital\s+(?:id|number|no\.?)|NHS\s+(?:number|no\.?)|"
            r"chart\s+(?:number|no\.?|#)|SSN|social\s+security\s+(?:number|no\.?))\s*[:#=]?\s*)"
            r"[A-Za-z]{0,4}[\-]?\d[\d\-\s]{3,}\d"
        ),
    ),
    ("record_number", re.compile(r"(?<![\d\-])\d{3}-\d{2}-\d{4}(?![\d\-])")),  # US SSN shape
    (
        "phone",
        re.compile(
            r"(?<![\w/.,+\-])"
            r"(?:\+\d{1,3}[\s.\-]?)?"
            r"(?:\(\d{2,5}\)[\s.\-]?|\d{2,5}[\s.\-])"
            r"\d{3,4}[\s.\-]\d{3,4}"
            r"(?![\w/\-]|[.,]\d)"
        ),
    ),
    (
        "phone",
        re.compile(r"(?i:\b(?:phone|tel(?:ephone)?|mobile|cell|fax)\.?\s*(?:no\.?|number)?\s*[:#]?\s*)\+?[\d()][\d()\s.\-]{6,}\d"),
    ),
]


def find_phi(text: str) -> list[PhiFinding]:
    """Suspected patient identifiers in ``text``, in order of position, without overlaps."""
    found: list[PhiFinding] = []
    for kind, pattern in _PATTERNS:
        for m in pattern.finditer(text):
            found.append(PhiFinding(kind=kind, text=m.group(0).strip(), start=m.start(), end=m.end()))
    # Keep the longest of overlapping matches (e.g. an SSN that also looks like a phone number).
    found.sort(key=lambda f: (f.start, -(f.end - f.start)))
    kept: list[PhiFinding] = []
    for f in found:
        if kept and f.start < kept[-1].end:
            continue
        kept.append(f)
    return kept


def describe_phi(findings: list[PhiFinding]) -> str:
    """A short sentence naming the kinds of identifier found, e.g. 'a phone number and an e-mail address'."""
    labels = list(dict.fromkeys(f.label for f in findings))
    if len(labels) <= 1:
        return "".join(labels)
    return ", ".join(labels[:-1]) + " and " + labels[-1]


# -- rendering model and user text -------------------------------------------------------------

_MD_IMAGE = re.compile(r"!\[")
_HTML_CHARS = re.compile(r"([<>$])")
# Every character CommonMark lets a backslash escape, plus '$' (Streamlit's LaTeX) and ':' (emoji / icon
# shortcodes such as :red[...] and :material/...:).
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:&=\"'^])")


def markdown_text(text: str | None, *, formatting: bool = True) -> str:
    """Model or user text made safe for ``st.markdown``: HTML shown literally, no images, no LaTeX.

    ``formatting=True`` (a model's reasoning and answer): Markdown formatting (bold, lists) still
    renders; ``<``, ``>`` and ``$`` are backslash-escaped so tags and dollar amounts appear as typed,
    and image syntax is defused so the page never fetches a remote URL the model made up.
    ``formatting=False`` (titles, labels, item and user text): renders as exactly ``text``, every
    Markdown character escaped. Line breaks are kept as hard breaks either way.
    """
    if not formatting:
        escaped = _MD_SPECIAL.sub(r"\\\1", text or "")
        return "  \n".join(escaped.splitlines()) if "\n" in escaped or "\r" in escaped else escaped
    escaped = _HTML_CHARS.sub(r"\\\1", _MD_IMAGE.sub(r"!\\[", text or ""))
    return escaped.replace("\n", "  \n")  # markdown would join the model's lines
