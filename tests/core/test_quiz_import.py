"""CSV/JSON import validation and CSV export (core.quiz_import)."""

from __future__ import annotations

import csv
import io
import json
import string
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.quiz_import import (
    KNOWN_COLUMNS,
    MAX_CHARS,
    MAX_FILE_BYTES,
    RowError,
    parse_import,
    quiz_set_to_csv,
    results_to_csv,
)
from core.records import Record, stable_id

FIXTURES = Path(__file__).parents[1] / "fixtures" / "quiz"


def load(name: str):
    return parse_import((FIXTURES / name).read_bytes(), name)


def where(result):
    return {(e.row, e.field) for e in result.errors}


def test_valid_csv_fixture():
    res = load("valid.csv")
    assert res.ok and res.rows == 4 and len(res.valid) == 4
    mcq, lower_key, open_, json_opts = res.valid
    assert mcq.kind == "mcq" and mcq.correct == "B" and mcq.answer == "Hyperkalemia"
    assert mcq.options == {"A": "Hypokalemia", "B": "Hyperkalemia", "C": "Hypocalcemia", "D": "Hypercalcemia"}
    assert mcq.id == stable_id("import", mcq.question, mcq.options) and mcq.id.startswith("import:")
    assert mcq.source == "course-2025" and mcq.license == "own work" and mcq.tags == ["step1"]
    assert mcq.origin == "valid.csv row 2" and mcq.split == "bank"
    assert lower_key.correct == "B" and lower_key.kind == "mcq" and '"barking"' in lower_key.question
    assert len(lower_key.options) == 5
    assert open_.kind == "open" and open_.options is None and open_.answer.startswith("Benzodiazepines")
    assert open_.attribution == "Dr. Example" and open_.license == "CC BY 4.0"
    assert json_opts.options == {"A": "Furosemide", "B": "Spironolactone", "C": "Hydrochlorothiazide"}
    assert json_opts.source == "import"


def test_errors_csv_fixture_lists_every_problem_by_row_and_field():
    res = load("errors.csv")
    assert res.rows == 6
    assert where(res) == {
        (3, "question"),  # empty question
        (4, "correct"),  # F not among A-C
        (5, "question"),  # duplicate of row 2
        (6, "license"),  # missing license
        (7, "B"),  # gap in options
    }
    assert len(res.valid) == 1 and res.valid[0].origin == "errors.csv row 2"
    assert res.error_rows == [3, 4, 5, 6, 7]
    dup = next(e for e in res.errors if e.row == 5)
    assert "duplicate of row 2" in dup.message


def test_valid_json_fixture_keeps_markup_as_text():
    res = load("valid.json")
    assert res.ok and len(res.valid) == 3
    bell, murphy, ace = res.valid
    assert bell.tags == ["step1"] and bell.correct == "B"
    assert murphy.kind == "open" and murphy.answer == "Acute cholecystitis."
    assert ace.options == {"A": "Losartan", "B": "Enalapril", "C": "Amlodipine"} and ace.correct == "B"
    assert "<script>alert(1)</script>" in ace.question  # stored verbatim; pages escape on render


def test_wrong_encoding_is_one_clear_file_error():
    res = load("latin1.csv")
    assert res.valid == [] and len(res.errors) == 1
    err = res.errors[0]
    assert (err.row, err.field) == (0, "file") and "not UTF-8" in err.message and "0xe9" in err.message


def test_utf8_bom_is_accepted():
    data = "\ufeffquestion,A,B,correct,license\nQ?,x,y,A,own work\n".encode()
    res = parse_import(data, "bom.csv")
    assert res.ok and res.valid[0].question == "Q?"


@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (b"", "x.csv", "empty"),
        (b"question,license\n", "x.csv", "no items"),
        (b"question,A,B,correct,license\nQ,x,y,A,own\n", "x.xlsx", "unsupported file type"),
        (b"question,A,B,correct,license\nQ,x,y,A,own\n", "noextension", "unsupported file type"),
        (b"[1, 2", "x.json", "malformed JSON at line 1"),
        (b'{"question": "Q"}', "x.json", "expected a JSON list"),
        (b"a\x00b", "x.csv", "NUL"),
    ],
)
def test_file_level_errors(data, name, message):
    res = parse_import(data, name)
    assert res.valid == [] and res.errors and res.errors[0].row == 0
    assert message in res.errors[0].message


def test_oversized_file():
    res = parse_import(b"x" * (MAX_FILE_BYTES + 1), "big.csv")
    assert res.errors[0].row == 0 and "at most" in res.errors[0].message


def test_header_problems_are_reported_once_not_per_row():
    data = b"questoin,A,B,correct\nQ,x,y,A\nQ2,x,y,A\n"
    res = parse_import(data, "h.csv")
    assert where(res) == {(1, "questoin"), (1, "question"), (1, "license")}


def test_duplicate_and_empty_header_columns():
    res = parse_import(b"question,license,License,\nQ,own,own,\n", "h.csv")
    assert (1, "license") in where(res) and (1, "column 4") in where(res)


def test_malformed_csv_quote_is_reported_at_its_row():
    data = b'question,A,B,correct,license\nQ1,x,y,A,own\n"Q2 unclosed,x,y,A,own\n'
    res = parse_import(data, "q.csv")
    assert [v.question for v in res.valid] == ["Q1"]
    assert (3, "file") in where(res) and "malformed CSV" in res.errors[0].message


def test_too_many_cells():
    res = parse_import(b"question,A,B,correct,license\nQ,x,y,A,own,extra\n", "c.csv")
    assert where(res) == {(2, "file")} and "6 cells" in res.errors[0].message


def test_row_level_checks_each_name_the_field():
    rows = [
        # row 2: options both in columns and JSON
        ["Q2", "x", "y", '{"A": "p", "B": "q"}', "A", "", "own", ""],
        # row 3: bad options JSON
        ["Q3", "", "", "{nope", "A", "", "own", ""],
        # row 4: correct is not a letter
        ["Q4", "x", "y", "", "AB", "", "own", ""],
        # row 5: open item without answer
        ["Q5", "", "", "", "", "", "own", "open"],
        # row 6: unknown kind
        ["Q6", "x", "y", "", "A", "", "own", "essay"],
        # row 7: oversized question
        ["Q" * (MAX_CHARS["question"] + 1), "x", "y", "", "A", "", "own", ""],
        # row 8: control character
        ["Q8\x07", "x", "y", "", "A", "", "own", ""],
        # row 9: repeated option text
        ["Q9", "same", "Same", "", "A", "", "own", ""],
        # row 10: mcq without correct
        ["Q10", "x", "y", "", "", "", "own", ""],
        # row 11: answer contradicts the keyed option
        ["Q11", "x", "y", "", "A", "y", "own", ""],
        # row 12: only one option
        ["Q12", "x", "", "", "A", "", "own", ""],
        # row 13: open item with a correct letter
        ["Q13", "", "", "", "A", "ref", "own", "open"],
    ]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["question", "A", "B", "options", "correct", "answer", "license", "kind"])
    w.writerows(rows)
    res = parse_import(buf.getvalue().encode(), "rows.csv")
    assert res.valid == []
    got = where(res)
    for expected in [
        (2, "options"),
        (3, "options"),
        (4, "correct"),
        (5, "answer"),
        (6, "kind"),
        (7, "question"),
        (8, "question"),
        (9, "B"),
        (10, "correct"),
        (11, "answer"),
        (12, "options"),
        (13, "correct"),
    ]:
        assert expected in got, expected
    assert res.error_rows == list(range(2, 14))


def test_json_item_problems():
    items = [
        "not an object",
        {"question": "Q", "options": {"A": "x", "C": "y"}, "correct": "A", "license": "own"},
        {"question": "Q", "options": ["x", "y"], "correct": "A", "license": "own", "colour": "red"},
        {"question": ["list"], "answer": "a", "license": "own"},
        {"question": "Q2", "options": {"A": "x", "B": ""}, "correct": "A", "license": "own"},
        {"question": "Q3", "answer": "ref", "license": "own", "kind": "open", "tags": "step1; step2&3"},
    ]
    res = parse_import(json.dumps(items).encode(), "items.json")
    got = where(res)
    assert (1, "item") in got
    assert (2, "options") in got
    assert (3, "colour") in got
    assert (4, "question") in got
    assert (5, "options.B") in got
    assert [r.question for r in res.valid] == ["Q3"] and res.valid[0].tags == ["step1", "step2&3"]


def test_existing_ids_are_not_imported_twice():
    first = load("valid.csv")
    again = parse_import((FIXTURES / "valid.csv").read_bytes(), "valid.csv", existing_ids={r.id for r in first.valid})
    assert again.valid == [] and len(again.errors) == 4
    assert all(e.field == "question" and "already in the bank" in e.message for e in again.errors)


def test_row_error_str():
    assert str(RowError(3, "correct", "bad")) == "row 3, correct: bad"
    assert str(RowError(0, "file", "empty")) == "file: empty"


# ---------------------------------------------------------------- export


def test_quiz_set_round_trips_through_csv():
    original = load("valid.csv").valid + load("valid.json").valid
    text = quiz_set_to_csv(original)
    again = parse_import(text.encode(), "export.csv")
    assert again.ok
    assert [r.id for r in again.valid] == [r.id for r in original]
    for a, b in zip(original, again.valid):
        for f in ("question", "options", "correct", "answer", "explanation", "subject", "source", "license",
                  "attribution", "kind", "tags"):
            assert getattr(a, f) == getattr(b, f), f


def test_more_than_five_options_go_to_the_options_column():
    opts = {k: f"opt {k}" for k in "ABCDEFG"}
    rec = Record(id="x", source="s", license="own", question="Q", kind="mcq", options=opts, correct="G", answer="opt G")
    row = next(csv.DictReader(io.StringIO(quiz_set_to_csv([rec]))))
    assert json.loads(row["options"]) == opts and row["A"] == ""
    again = parse_import(quiz_set_to_csv([rec]).encode(), "e.csv")
    assert again.ok and again.valid[0].options == opts and again.valid[0].correct == "G"


def test_export_guards_formula_cells_and_import_removes_the_guard():
    rec = Record(
        id="x", source="s", license="own", question="=HYPERLINK(\"http://x\")", kind="mcq",
        options={"A": "-5 mmHg", "B": "+5 mmHg", "C": "@home", "D": "'quoted"}, correct="A", answer="-5 mmHg",
    )
    text = quiz_set_to_csv([rec])
    row = next(csv.DictReader(io.StringIO(text)))
    assert row["question"].startswith("'=") and row["A"] == "'-5 mmHg" and row["D"] == "'quoted"
    back = parse_import(text.encode(), "g.csv").valid[0]
    assert back.question == rec.question and back.options == rec.options


def test_results_to_csv():
    when = datetime(2025, 3, 1, 9, 30, tzinfo=timezone.utc)
    rows = [
        {"student": "ana", "percent": 66.666666666, "passed": True, "finished_at": when},
        {"student": "=cmd|' /C calc'!A0", "percent": 50.0, "passed": False, "wrong": ["t:1", "t:2"]},
    ]
    text = results_to_csv(rows)
    parsed = list(csv.reader(io.StringIO(text)))
    assert parsed[0] == ["student", "percent", "passed", "finished_at", "wrong"]
    assert parsed[1] == ["ana", "66.6667", "true", "2025-03-01T09:30:00+00:00", ""]
    assert parsed[2] == ["'=cmd|' /C calc'!A0", "50", "false", "", "t:1;t:2"]
    only = list(csv.reader(io.StringIO(results_to_csv(rows, columns=["percent"]))))
    assert only == [["percent"], ["66.6667"], ["50"]]


# ---------------------------------------------------------------- properties

# Printable text without control characters, as a person would type it.
_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\u2028\u2029\x85"),
    min_size=1,
    max_size=40,
).map(str.strip).filter(bool)


@st.composite
def records(draw):
    kind = draw(st.sampled_from(["mcq", "open"]))
    question = draw(_TEXT)
    common = dict(
        source=draw(_TEXT.filter(lambda s: len(s) <= 50)),
        license=draw(_TEXT.filter(lambda s: len(s) <= 50)),
        question=question,
        explanation=draw(st.one_of(st.just(""), _TEXT)),
        subject=draw(st.one_of(st.just(""), _TEXT)),
        attribution=draw(st.one_of(st.just(""), _TEXT)),
        tags=draw(
            st.lists(st.text(string.ascii_lowercase + "0123456789&", min_size=1, max_size=8), max_size=3, unique=True)
        ),
        split="bank",
    )
    if kind == "open":
        return Record(id=stable_id("import", question), kind="open", answer=draw(_TEXT), **common)
    texts = draw(st.lists(_TEXT, min_size=2, max_size=7, unique_by=str.casefold))
    options = {chr(65 + i): t for i, t in enumerate(texts)}
    correct = draw(st.sampled_from(sorted(options)))
    return Record(
        id=stable_id("import", question, options), kind="mcq", options=options, correct=correct,
        answer=options[correct], **common,
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recs=st.lists(records(), min_size=1, max_size=5, unique_by=lambda r: r.id))
def test_export_then_import_gives_the_same_items(recs):
    res = parse_import(quiz_set_to_csv(recs).encode(), "roundtrip.csv")
    assert res.ok, [str(e) for e in res.errors]
    assert [r.id for r in res.valid] == [r.id for r in recs]
    for a, b in zip(recs, res.valid):
        assert (a.question, a.options, a.correct, a.answer, a.kind, a.license, a.source, a.tags) == (
            b.question, b.options, b.correct, b.answer, b.kind, b.license, b.source, b.tags,
        )


def _check_invariants(res):
    for e in res.errors:
        assert isinstance(e, RowError) and e.row >= 0 and e.field and e.message
    ids = [r.id for r in res.valid]
    assert len(ids) == len(set(ids))
    for r in res.valid:
        assert r.question and r.license and r.kind in ("mcq", "open")
        if r.kind == "mcq":
            assert r.options and len(r.options) >= 2 and r.correct in r.options
            assert r.answer == r.options[r.correct]
        else:
            assert r.options is None and r.answer
    error_rows = {e.row for e in res.errors}
    assert not any(int(r.origin.rsplit(" ", 1)[-1]) in error_rows for r in res.valid)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), ext=st.sampled_from(["csv", "json"]))
def test_any_bytes_never_crash(data, ext):
    _check_invariants(parse_import(data, f"upload.{ext}"))


_CELL = st.one_of(
    st.text(max_size=12), st.sampled_from(["A", "b", "C.", "mcq", "open", "own work", '{"A":"x","B":"y"}'])
)


@settings(max_examples=300, deadline=None)
@given(
    header=st.lists(st.sampled_from(KNOWN_COLUMNS), min_size=1, max_size=8, unique=True),
    cells=st.lists(st.lists(_CELL, max_size=9), max_size=6),
)
def test_any_csv_table_never_crashes(header, cells):
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(cells)
    _check_invariants(parse_import(buf.getvalue().encode("utf-8", "surrogatepass"), "t.csv"))


_JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(
        st.dictionaries(st.sampled_from([*KNOWN_COLUMNS, "other"]), _JSON_VALUE, max_size=8) | _JSON_VALUE,
        max_size=5,
    )
)
def test_any_json_items_never_crash(items):
    _check_invariants(parse_import(json.dumps(items).encode(), "t.json"))


# Each defect, applied to an otherwise valid row, must give an error at that row naming this field.
DEFECTS = {
    "question": lambda row: row.update(question=""),
    "license": lambda row: row.update(license=""),
    "correct": lambda row: row.update(correct="Z"),
    "B": lambda row: row.update(B="", C="third"),
    "A": lambda row: row.update(A="x" * (MAX_CHARS["option"] + 1)),
    "kind": lambda row: row.update(kind="essay"),
    "explanation": lambda row: row.update(explanation="bell\x07"),
    "subject": lambda row: row.update(subject="s" * 201),
}


@settings(max_examples=100, deadline=None)
@given(rec=records(), position=st.integers(0, 3), defect=st.sampled_from(sorted(DEFECTS)))
def test_every_defect_is_reported_at_its_row_and_field(rec, position, defect):
    fields = ["question", "A", "B", "C", "correct", "answer", "license", "kind", "explanation", "subject"]
    good = [
        {"question": f"Good question {i}", "A": "yes", "B": "no", "C": "", "correct": "A", "answer": "",
         "license": "own work", "kind": "", "explanation": "", "subject": ""}
        for i in range(4)
    ]
    bad = {"question": rec.question, "A": "first", "B": "second", "C": "", "correct": "A", "answer": "",
           "license": rec.license, "kind": "mcq", "explanation": "", "subject": ""}
    DEFECTS[defect](bad)
    rows = good[:position] + [bad] + good[position:]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    res = parse_import(buf.getvalue().encode(), "defect.csv")
    bad_row = position + 2
    assert (bad_row, defect) in where(res), [str(e) for e in res.errors]
    assert {e.row for e in res.errors} == {bad_row}
    assert len(res.valid) == 4
