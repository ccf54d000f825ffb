"""Properties of the quiz importer (core.quiz_import) beyond tests/core/test_quiz_import.py.

That file already proves: arbitrary bytes, CSV tables and JSON values never crash; a CSV export
re-imports unchanged; one defect in one CSV row is reported at its row and field. Here: JSON files
round-trip, several defects in several rows/fields are all reported at once, odd Unicode is kept
verbatim while control characters are refused by field, and oversized numbers, nesting and cells give
a clear file/field error instead of an exception.
"""

from __future__ import annotations

import csv
import io
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.quiz_import import MAX_CHARS, RowError, parse_import
from tests.properties.strategies import COMBINING, CONTROLS, EMOJI, RTL, printable

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def json_items(draw):
    """A valid JSON item (mcq or open) with printable text."""
    question = draw(printable)
    item = {"question": question, "license": draw(printable), "subject": draw(st.one_of(st.just(""), printable))}
    if draw(st.booleans()):
        texts = draw(st.lists(printable, min_size=2, max_size=10, unique_by=str.casefold))
        as_list = draw(st.booleans())
        item["options"] = texts if as_list else {chr(65 + i): t for i, t in enumerate(texts)}
        letter = draw(st.sampled_from([chr(65 + i) for i in range(len(texts))]))
        item["correct"] = draw(st.sampled_from([letter, letter.lower(), f"{letter}.", f"({letter})"]))
    else:
        item["kind"] = "open"
        item["answer"] = draw(printable)
    item["tags"] = draw(st.lists(st.sampled_from(["step1", "step2&3", "cardio"]), max_size=3, unique=True))
    return item


@FAST
@given(items=st.lists(json_items(), min_size=1, max_size=6, unique_by=lambda i: i["question"].casefold()),
       wrapped=st.booleans())
def test_valid_json_items_import_with_every_field_kept(items, wrapped):
    data = {"items": items} if wrapped else items
    res = parse_import(json.dumps(data, ensure_ascii=bool(len(items) % 2)).encode(), "set.json")
    # Different questions can still normalise to the same id (punctuation-only differences):
    # such a pair must be reported as a duplicate, never silently merged.
    if not res.ok:
        assert all("duplicate" in e.message for e in res.errors), [str(e) for e in res.errors]
        return
    assert len(res.valid) == len(items)
    for item, rec in zip(items, res.valid):
        assert rec.question == item["question"] and rec.license == item["license"]
        assert rec.tags == item["tags"]
        if "options" in item:
            texts = item["options"] if isinstance(item["options"], list) else list(item["options"].values())
            assert list(rec.options.values()) == texts
            letter = item["correct"].strip("().").upper()
            assert rec.correct == letter and rec.answer == rec.options[letter]
        else:
            assert rec.kind == "open" and rec.answer == item["answer"] and rec.options is None


# A defect for a field, applied to a valid mcq row; every one must be reported at its own row and field.
DEFECTS = {
    "question": {"question": ""},
    "license": {"license": "  "},
    "correct": {"correct": "Q"},
    "subject": {"subject": "s" * 201},
    "explanation": {"explanation": "x\x1by"},
    "attribution": {"attribution": "a" * (MAX_CHARS["attribution"] + 1)},
    "kind": {"kind": "essay"},
    "C": {"C": "", "D": "later"},
}


@FAST
@given(plan=st.lists(st.sets(st.sampled_from(sorted(DEFECTS)), min_size=1, max_size=3), min_size=1, max_size=5),
       good_between=st.integers(0, 2))
def test_every_defect_in_every_row_is_reported_at_once(plan, good_between):
    header = ["question", "A", "B", "C", "D", "correct", "license", "subject", "explanation", "attribution", "kind"]
    rows, expected = [], set()
    n = 0
    for defects in plan:
        for _ in range(good_between):
            n += 1
            rows.append({"question": f"Fine question {n}", "A": "yes", "B": "no", "C": "", "D": "", "correct": "A",
                         "license": "own work", "subject": "", "explanation": "", "attribution": "", "kind": ""})
        n += 1
        row = {"question": f"Broken question {n}", "A": "yes", "B": "no", "C": "maybe", "D": "", "correct": "A",
               "license": "own work", "subject": "", "explanation": "", "attribution": "", "kind": "mcq"}
        for d in defects:
            row.update(DEFECTS[d])
        rows.append(row)
        expected |= {(len(rows) + 1, d) for d in defects}
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header)
    w.writeheader()
    w.writerows(rows)
    res = parse_import(buf.getvalue().encode(), "many.csv")
    got = {(e.row, e.field) for e in res.errors}
    assert expected <= got, sorted(expected - got)
    assert {r for r, _ in got} == {r for r, _ in expected}  # no good row blamed
    assert len(res.valid) == good_between * len(plan)


@FAST
@given(piece=st.sampled_from(RTL[:2] + EMOJI + COMBINING), where=st.sampled_from(["question", "A", "answer"]))
def test_rtl_emoji_and_combining_text_is_kept_verbatim(piece, where):
    item = {"question": "Which one?", "options": ["first", "second"], "correct": "A", "license": "own"}
    if where == "question":
        item["question"] = f"{piece} — which one?"
    elif where == "A":
        item["options"] = [f"{piece} first", "second"]
    else:
        item = {"question": "Explain", "kind": "open", "answer": piece, "license": "own"}
    res = parse_import(json.dumps([item]).encode(), "u.json")
    assert res.ok, [str(e) for e in res.errors]
    rec = res.valid[0]
    shown = {"question": rec.question, "A": (rec.options or {}).get("A"), "answer": rec.answer}[where]
    assert piece in shown


@FAST
@given(control=st.sampled_from([c for c in CONTROLS if c in "\x00\x1b[31m\x07\x7f"]),
       field=st.sampled_from(["question", "subject", "license", "explanation"]))
def test_control_characters_are_refused_naming_the_field(control, field):
    item = {"question": "Q?", "options": ["a", "b"], "correct": "A", "license": "own", "subject": "", "explanation": ""}
    item[field] = f"before{control}after"
    res = parse_import(json.dumps([item]).encode(), "c.json")
    # JSON escapes a NUL as \u0000, so even that reaches the field check (a raw NUL byte is a file error).
    assert [(e.row, e.field) for e in res.errors] == [(1, field)] and res.valid == []
    assert "control characters" in res.errors[0].message


@settings(max_examples=25, deadline=None)
@given(digits=st.integers(4301, 6000), where=st.sampled_from(["json", "csv-options"]), nest=st.integers(1, 3))
def test_huge_numbers_and_deep_nesting_are_clear_errors(digits, where, nest):
    number = "7" * digits
    if where == "json":
        data, name, field = f'[{{"question": {number}}}]'.encode(), "n.json", "file"
    else:
        data = f'question,options,correct,license\nQ,"{"[" * nest}{number}{"]" * nest}",A,own\n'.encode()
        name, field = "n.csv", "options"
    res = parse_import(data, name)
    assert res.valid == [] and res.errors
    assert field in {e.field for e in res.errors}
    assert all(len(str(e)) < 400 for e in res.errors)  # a 6000-digit number is not echoed back
    deep = parse_import(("[" * 100_000 + "]" * 100_000).encode(), "deep.json")
    assert [(e.row, e.field) for e in deep.errors] == [(0, "file")]


@settings(max_examples=10, deadline=None)
@given(before=st.integers(0, 3))
def test_a_cell_beyond_the_csv_field_limit_is_reported_and_earlier_rows_kept(before):
    lines = ["question,A,B,correct,license"] + [f"Q{i},x,y,A,own" for i in range(before)]
    lines.append("Q-big," + "z" * 200_000 + ",y,A,own")
    res = parse_import("\n".join(lines).encode(), "big.csv")
    assert len(res.valid) == before
    err = next(e for e in res.errors if e.row == before + 2)
    assert err.field == "file" and "longer than" in err.message and len(err.message) < 300


@settings(max_examples=80, deadline=None)
@given(name=st.text(max_size=30), data=st.binary(max_size=50))
def test_any_file_name_gives_a_result_never_an_exception(name, data):
    res = parse_import(data, name)
    assert all(isinstance(e, RowError) for e in res.errors)
    if not name.strip().lower().endswith((".csv", ".json")):
        assert res.valid == [] and "unsupported file type" in res.errors[0].message
