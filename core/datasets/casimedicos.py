"""CasiMedicos (English, Antidote project): Spanish MIR exam cases with a doctor's explanation, CC BY 4.0.

Files: ``casimedicos-en-antidote/{train,dev,test}.tsv``, IOB2 argument-mining files with one
``TOKEN TAG`` per line and a blank line after each sentence or paragraph. A case is the paragraphs
from ``QUESTION TYPE: <SPECIALTY>`` to the next one: ``CLINICAL CASE:``, the case sentences,
options ``1-`` ... ``5-``, ``CORRECT ANSWER: n`` and the explanation. Text is rebuilt by joining
tokens with single spaces (tokens carry their own punctuation).

Records are MCQs with options lettered A-E (the original number is kept in ``origin``). 298 of
the 553 cases come from 4-option exams and carry the text ``nan`` as option 5; that placeholder is
dropped, so those items have options A-D. The
explanation is kept verbatim in ``explanation`` and rewritten into ``reasoning`` in
reasoning-then-answer order: a leading "I think the correct answer is N ..." sentence or clause is
removed (see :func:`reasoning_from_explanation`) and the final answer is the correct letter and its
text. Specialty spellings are folded into a clean ``subject``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from core.datasets.base import LETTERS, DataError, SourceInfo, mcq_answer
from core.records import Record, normalise, stable_id

INFO = SourceInfo(
    name="casimedicos",
    license="CC BY 4.0",
    attribution="CasiMedicos-Arg by IXA/HiTZ, University of the Basque Country (Goenaga et al. 2023; Alonso et al. "
    "2024; Sviridova et al., EMNLP 2024), CC BY 4.0; text rebuilt from tokens, explanation reordered as reasoning",
)
FOLDER = "casimedicos-en-antidote"
SPLITS = ("train", "dev", "test")
DISAGREES_FLAG = "explanation-disagrees"
"""The explanation names another option than the key (the key is used as the final answer)."""

MISSING_OPTION = "nan"
_TAG = re.compile(r"^(?:O|[BI]-[A-Za-z]+)$")
_OPTION = re.compile(r"^([1-9])-\s*(.*)$", re.S)
_CORRECT = re.compile(r"^CORRECT ANSWER:\s*([1-9])\s*$")
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5}
_LEAD = re.compile(
    r"""^\s*(?:(?:in\ this\ case|clearly|obviously),?\s+)?
    (?:i\s+(?:think|believe)(?:\s+that)?\s+)?
    (?:
      (?:the\s+)?(?:correct|right|best|closest)\s+answer(?:\s+to\s+this\s+question)?
        (?:\s+(?:is|would\s+be|seems\s+to\s+be))?
    | the\s+answer(?:\s+to\s+this\s+question)?\s+(?:is|would\s+be|seems\s+to\s+be)
    )\s*:?\s*
    (?:number\s+|option\s+|answer\s+)?
    (?:(?P<num>[1-9])(?![\d,.]\d)|the\s+(?P<ord>first|second|third|fourth|fifth)(?:\s+one)?)""",
    re.I | re.X,
)
_BARE_NUMBER = re.compile(r"^\s*(?P<num>[1-9])\s*\.\s*(?=$|[A-Z])")
_CONNECTOR = re.compile(r"^(?:because|since|as)\s+", re.I)

# Specialty labels in their many spellings -> one clean subject.
_SUBJECTS: dict[str, str] = {
    "ALLERGOLOGY": "Allergology",
    "ANATOMIC PATHOLOGY": "Pathology",
    "PATHOLOGICAL ANATOMY": "Pathology",
    "ANATOMY": "Anatomy",
    "ANESTHESIOLOGY AND CRITICAL CARE": "Anesthesiology and Critical Care",
    "ANESTHESIOLOGY, CRITICAL CARE AND EMERGENCIES": "Anesthesiology and Critical Care",
    "ANESTHESIOLOGY, CRITICAL CARE AND EMERGENCY MEDICINE": "Anesthesiology and Critical Care",
    "CRITICAL CARE": "Critical Care and Emergency Medicine",
    "CRITICAL AND EMERGENCY CARE": "Critical Care and Emergency Medicine",
    "CRITICAL CARE AND EMERGENCY": "Critical Care and Emergency Medicine",
    "CRITICAL CARE AND EMERGENCIES": "Critical Care and Emergency Medicine",
    "CRITICAL, PALLIATIVE AND EMERGENCY CARE": "Critical Care and Emergency Medicine",
    "BIOSTATISTICS": "Biostatistics",
    "STATISTICS": "Biostatistics",
    "CARDIOLOGY": "Cardiology",
    "CARDIOLOGY AND CARDIOVASCULAR SURGERY": "Cardiology",
    "CARDIOLOGY AND VASCULAR SURGERY": "Cardiology",
    "DERMATOLOGY": "Dermatology",
    "DERMATOLOGY AND PLASTIC SURGERY": "Dermatology",
    "DERMATOLOGY, VENEREOLOGY AND PLASTIC SURGERY": "Dermatology",
    "DIGESTIVE": "Gastroenterology",
    "DIGESTIVE SYSTEM": "Gastroenterology",
    "DIGESTIVE TRACT": "Gastroenterology",
    "ENDOCRINOLOGY": "Endocrinology",
    "EPIDEMIOLOGY": "Preventive Medicine and Epidemiology",
    "PREVENTIVE MEDICINE": "Preventive Medicine and Epidemiology",
    "PREVENTIVE MEDICINE AND EPIDEMIOLOGY": "Preventive Medicine and Epidemiology",
    "EPIDEMIOLOGY AND PREVENTIVE MEDICINE": "Preventive Medicine and Epidemiology",
    "GENERAL SURGERY": "General Surgery",
    "SURGERY": "General Surgery",
    "GENETICS": "Genetics and Immunology",
    "GENETICS AND IMMUNOLOGY": "Genetics and Immunology",
    "GYNECOLOGY AND OBSTETRICS": "Obstetrics and Gynecology",
    "OBSTETRICS AND GYNECOLOGY": "Obstetrics and Gynecology",
    "HEMATOLOGY": "Hematology",
    "INFECTIOUS": "Infectious Diseases",
    "INFECTIOUS DISEASES": "Infectious Diseases",
    "INFECTIOUS DISEASES AND MICROBIOLOGY": "Infectious Diseases",
    "INFECTOLOGY": "Infectious Diseases",
    "MICROBIOLOGY": "Infectious Diseases",
    "MEDICAL ONCOLOGY": "Oncology",
    "ONCOLOGY": "Oncology",
    "NEPHROLOGY": "Nephrology",
    "NEUROLOGY": "Neurology",
    "NEUROLOGY AND NEUROSURGERY": "Neurology",
    "NEUROSURGERY": "Neurology",
    # The three cases so labelled are lung-cancer cases: a typo for PNEUMOLOGY AND THORACIC SURGERY.
    "NEUROLOGY AND THORACIC SURGERY": "Pulmonology",
    "OPHTHALMOLOGY": "Ophthalmology",
    "ORTHOPEDIC SURGERY AND TRAUMATOLOGY": "Orthopedics and Traumatology",
    "TRAUMATOLOGY": "Orthopedics and Traumatology",
    "TRAUMATOLOGY AND ORTHOPEDICS": "Orthopedics and Traumatology",
    "OTOLARYNGOLOGY AND MAXILLOFACIAL SURGERY": "Otolaryngology",
    "OTORHINOLARYNGOLOGY AND MAXILLOFACIAL SURGERY": "Otolaryngology",
    "PALLIATIVE CARE": "Palliative Care",
    "PEDIATRICS": "Pediatrics",
    "PHARMACOLOGY": "Pharmacology",
    "PNEUMOLOGY": "Pulmonology",
    "PNEUMOLOGY AND THORACIC SURGERY": "Pulmonology",
    "PULMONOLOGY": "Pulmonology",
    "PULMONOLOGY AND THORACIC SURGERY": "Pulmonology",
    "PRIMARY CARE": "Primary Care",
    "PRIMARY CARE AND SOCIAL NETWORKS": "Primary Care",
    "PSYCHIATRY": "Psychiatry",
    "RHEUMATOLOGY": "Rheumatology",
    "UROLOGY": "Urology",
}


def clean_subject(label: str) -> str:
    """A specialty label in any of its spellings -> one clean subject (unknown labels are title-cased)."""
    key = re.sub(r"\s*\(ECTOPIC\)\s*$", "", " ".join(label.upper().split()))
    if key in _SUBJECTS:
        return _SUBJECTS[key]
    words = key.lower().split()
    return " ".join(w if w in {"and", "of"} else w.capitalize() for w in words)


@dataclass(frozen=True)
class Case:
    """One case as parsed from the token file (options still numbered 1-5)."""

    split: str
    line: int
    specialty: str
    question: str
    options: dict[int, str]
    correct: int
    explanation: str


def _paragraphs(path: Path) -> list[tuple[int, str]]:
    """(start line, text) of each blank-line-separated paragraph, tokens joined by single spaces."""
    paragraphs: list[tuple[int, str]] = []
    tokens: list[str] = []
    start = 0
    try:
        fh = path.open(encoding="utf-8")
        with fh:
            for number, raw in enumerate(fh, start=1):
                line = raw.rstrip("\r\n")
                if not line.strip():
                    if tokens:
                        paragraphs.append((start, " ".join(tokens)))
                        tokens = []
                    continue
                parts = line.split()
                if len(parts) < 2:
                    raise DataError(path, number, "tag", f"expected 'TOKEN TAG', got {line!r}")
                if not _TAG.match(parts[-1]):
                    raise DataError(path, number, "tag", f"not an IOB2 tag: {parts[-1]!r}")
                if not tokens:
                    start = number
                tokens.append(" ".join(parts[:-1]))
    except UnicodeDecodeError as exc:
        raise DataError(path, None, None, f"not UTF-8 text ({exc.reason})") from exc
    if tokens:
        paragraphs.append((start, " ".join(tokens)))
    return paragraphs


def parse_cases(path: Path, split: str) -> list[Case]:
    """All cases of one split file; structural problems raise :class:`DataError` at the case's line."""
    cases: list[Case] = []
    block: list[tuple[int, str]] = []

    def close() -> None:
        if block:
            cases.append(_parse_case(path, split, block))

    for line, text in _paragraphs(path):
        if text.startswith("QUESTION TYPE:"):
            close()
            block = []
        elif not block:
            raise DataError(path, line, "QUESTION TYPE", "text before the first 'QUESTION TYPE:' header")
        block.append((line, text))
    close()
    return cases


def _parse_case(path: Path, split: str, block: list[tuple[int, str]]) -> Case:
    line0, header = block[0]
    header = header[len("QUESTION TYPE:"):]
    rest = block[1:]
    if "CLINICAL CASE:" in header:  # header and case marker in one paragraph
        header, after = header.split("CLINICAL CASE:", 1)
        rest = [(line0, "CLINICAL CASE: " + after)] + rest
    specialty = header.strip()
    if not specialty:
        raise DataError(path, line0, "QUESTION TYPE", "empty specialty")
    question: list[str] = []
    options: dict[int, str] = {}
    correct: int | None = None
    explanation: list[str] = []
    for line, text in rest:
        if correct is not None:
            explanation.append(text)
            continue
        match = _CORRECT.match(text)
        if match:
            correct = int(match.group(1))
            continue
        if text.startswith("CLINICAL CASE:"):
            text = text[len("CLINICAL CASE:"):].strip()
            if text:
                question.append(text)
            continue
        option = _OPTION.match(text)
        if option and int(option.group(1)) == len(options) + 1:
            options[len(options) + 1] = option.group(2).strip()
        elif options:
            options[len(options)] += " " + text  # an option that spans several sentences
        else:
            question.append(text)
    if not question:
        raise DataError(path, line0, "CLINICAL CASE", "case without question text")
    if len(options) != 5:
        raise DataError(path, line0, "options", f"expected options 1- to 5-, found {len(options)}")
    if correct is None:
        raise DataError(path, line0, "CORRECT ANSWER", "missing 'CORRECT ANSWER: n' paragraph")
    if correct not in options:
        raise DataError(path, line0, "CORRECT ANSWER", f"{correct} is not an option number")
    if not explanation:
        raise DataError(path, line0, "explanation", "empty explanation")
    # Later MIR exams have 4 options; the release writes the missing fifth as the text "nan".
    for number in [n for n, text in options.items() if text.lower() == MISSING_OPTION]:
        if number != max(options) or number == correct:
            raise DataError(path, line0, f"option {number}", f"{MISSING_OPTION!r} only allowed as an unused last option")
        del options[number]
    return Case(split, line0, specialty, " ".join(question), options, correct, " ".join(explanation))


def _segment_end(text: str) -> int:
    """End of the first clause: the first '. ', ', ', '; ' or ': ' (or the end of the text)."""
    ends = [i for i in (text.find(sep) for sep in (". ", ", ", "; ", ": ")) if i >= 0]
    return min(ends) if ends else len(text.rstrip("."))


def reasoning_from_explanation(explanation: str, options: dict[int, str], correct: int) -> tuple[str, int | None]:
    """Drop a leading "the correct answer is N (option text)" sentence or clause.

    Returns the remaining reasoning and the option number the explanation stated (None when it
    did not start with one). The statement is removed even when it names another option; the
    caller flags that case.
    """
    match = _LEAD.match(explanation) or _BARE_NUMBER.match(explanation)
    if not match:
        return explanation.strip(), None
    stated = int(match.group("num")) if match.group("num") else _ORDINALS[match.group("ord").lower()]
    rest = explanation[match.end():].lstrip()
    if rest.startswith("("):  # "... is 2 (option text)."
        close = rest.find(")")
        if close > 0:
            rest = rest[close + 1:].lstrip()
    rest = rest.lstrip(".,;:-– ")
    # "... is: 3. IgA nephropathy. Given that ..." -> also drop the repeated option text.
    option = normalise(options.get(stated, ""))
    end = _segment_end(rest)
    segment = normalise(rest[:end])
    if segment and option and (segment == option or (option.startswith(segment) and len(segment) >= 0.6 * len(option))):
        rest = rest[end:].lstrip(".,;:-– ")
    rest = _CONNECTOR.sub("", rest)
    if rest:
        rest = rest[0].upper() + rest[1:]
    return rest.strip(), stated


def to_record(case: Case, *, relative: str) -> Record:
    options = {LETTERS[n - 1]: text for n, text in sorted(case.options.items())}
    letter = LETTERS[case.correct - 1]
    reasoning, stated = reasoning_from_explanation(case.explanation, case.options, case.correct)
    flags = [DISAGREES_FLAG] if stated is not None and stated != case.correct else []
    return Record(
        id=stable_id(INFO.name, case.question, options),
        source=INFO.name,
        license=INFO.license,
        question=case.question,
        kind="mcq",
        reasoning=reasoning,
        answer=mcq_answer(options, letter),
        options=options,
        correct=letter,
        explanation=case.explanation,
        subject=clean_subject(case.specialty),
        tags=[f"casimedicos-{case.split}"],
        flags=flags,
        attribution=INFO.attribution,
        origin=f"{relative}:{case.line} (specialty {case.specialty}; correct option {case.correct})",
    )


def read(folder: Path, split: str, *, relative: str = FOLDER) -> list[Record]:
    """Records of one official split (``train``, ``dev`` or ``test``)."""
    path = folder / f"{split}.tsv"
    return [to_record(case, relative=f"{relative}/{split}.tsv") for case in parse_cases(path, split)]
