"""Properties of the file readers: prepared records (core.records), raw-data readers
(core.datasets.base), stored review cards (core.review), instructor overrides (core.quiz) and the
bank search query (core.quiz_bank).

Here: any Record (odd Unicode, controls, emoji in every text field) round-trips through
write_jsonl/read_jsonl; any file content gives records or one RecordsError naming the file and line
(before: JSONDecodeError/TypeError/KeyError with no line); the raw-data readers give rows or one
DataError for any bytes; load_card, validate_override/apply_override and query_terms take anything
and answer with their documented error or a value.
"""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.datasets.base import DataError, iter_json_items, iter_jsonl
from core.quiz import OverrideError, apply_override, validate_override
from core.quiz_bank import query_terms
from core.records import Record, RecordsError, read_jsonl, write_jsonl
from core.review import load_card, schedule_review
from tests.properties.strategies import odd_text

FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
any_text = st.one_of(st.text(max_size=40), odd_text)


@st.composite
def records(draw):
    options = draw(st.one_of(st.none(), st.dictionaries(st.sampled_from("ABCDE"), any_text, min_size=2, max_size=5)))
    return Record(
        id=draw(any_text), source=draw(any_text), license=draw(any_text), question=draw(any_text),
        kind="mcq" if options else "open", reasoning=draw(any_text), answer=draw(any_text), options=options,
        correct=sorted(options)[0] if options else None, explanation=draw(any_text),
        tags=draw(st.lists(any_text, max_size=3)), flags=draw(st.lists(any_text, max_size=2)),
        split=draw(st.sampled_from(["train", "bank", ""])), origin=draw(any_text),
    )


@FAST
@given(recs=st.lists(records(), max_size=5))
def test_any_records_round_trip_through_jsonl(recs, tmp_path):
    path = tmp_path / "r.jsonl"
    assert write_jsonl(path, recs) == len(recs)
    assert list(read_jsonl(path)) == recs


bad_lines = st.sampled_from([
    '{"id": "x"', "[1, 2]", '"text"', "null", '{"id": 1, "source": "s", "license": "l", "question": "q"}',
    '{"source": "s", "license": "l", "question": "q"}', '{"id": "x", "source": "s", "license": "l", "question": "q", '
    '"options": {"A": 1}}', '{"id": "x", "source": "s", "license": "l", "question": "q", "tags": "t"}',
    "[" * 5000, '{"id": ' + "1" * 5000 + "}",
])


@FAST
@given(good=st.lists(records(), max_size=3), bad=bad_lines, blank=st.booleans())
def test_a_broken_line_is_one_records_error_naming_file_and_line(good, bad, blank, tmp_path):
    path = tmp_path / "broken.jsonl"
    write_jsonl(path, good)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(("\n" if blank else "") + bad + "\n")
    with pytest.raises(RecordsError) as info:
        list(read_jsonl(path))
    line = len(good) + 1 + int(blank)
    assert f"{path}, line {line}:" in str(info.value) and len(str(info.value)) < 500


@FAST
@given(data=st.binary(max_size=300))
def test_any_bytes_give_records_or_a_records_error(data, tmp_path):
    path = tmp_path / "any.jsonl"
    path.write_bytes(data)
    try:
        out = list(read_jsonl(path))
    except RecordsError as exc:
        assert str(path) in str(exc)
    else:
        assert all(isinstance(r, Record) for r in out)


@FAST
@given(data=st.one_of(st.binary(max_size=200), st.sampled_from([b"\xff\xfe{}", b'[{"a": 1}, 2, ]', b"{", b"[]"])))
def test_json_data_reader_gives_rows_or_a_data_error(data, tmp_path):
    path = tmp_path / "raw.json"
    path.write_bytes(data)
    try:
        list(iter_json_items(path))
    except DataError as exc:
        assert str(path) in str(exc)


RAW_CRASHES = {
    "jsonl-not-utf8": ("jsonl", b'{"a": 1}\n\x80\n'),
    "jsonl-deep": ("jsonl", b"[" * 5000 + b"\n"),
    "jsonl-huge-int": ("jsonl", b'{"a": ' + b"9" * 5000 + b"}\n"),
    "json-deep": ("json", b"[" * 5000),
    "json-huge-int": ("json", b"[1, " + b"9" * 5000 + b"]"),
}


@pytest.mark.parametrize("case", sorted(RAW_CRASHES))
def test_raw_data_readers_turn_every_bad_file_into_a_data_error(case, tmp_path):
    reader, data = RAW_CRASHES[case]
    path = tmp_path / f"raw.{reader}"
    path.write_bytes(data)
    with pytest.raises(DataError):
        list((iter_jsonl if reader == "jsonl" else iter_json_items)(path))


@FAST
@given(text=st.one_of(st.text(max_size=60), odd_text, st.sampled_from(["{}", "[]", '{"due": 5}', "null", "1e999"])))
def test_a_stored_review_card_that_is_not_one_is_a_value_error(text):
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    try:
        load_card(text)
    except ValueError as exc:
        assert "not a valid FSRS card" in str(exc)
        with pytest.raises(ValueError):
            schedule_review(text, "good", now)


def _mcq() -> Record:
    return Record(id="t:1", source="t", license="MIT", question="Q?", kind="mcq",
                  options={"A": "x", "B": "y"}, correct="A", answer="x")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | any_text,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
                           max_leaves=6)


@FAST
@given(override=st.dictionaries(st.one_of(st.sampled_from(["question", "options", "correct", "explanation"]),
                                          any_text), json_values, max_size=4),
       open_item=st.booleans())
def test_any_override_is_applied_or_refused_with_every_reason(override, open_item):
    record = _mcq() if not open_item else Record(id="t:2", source="t", license="MIT", question="Q?", answer="a")
    problems = validate_override(record, override)
    assert all(isinstance(p, str) and p for p in problems)
    if problems:
        with pytest.raises(OverrideError) as info:
            apply_override(record, override)
        assert info.value.problems == problems
    else:
        edited = apply_override(record, override)
        assert edited.kind == record.kind and record == (_mcq() if not open_item else record)


@FAST
@given(query=st.one_of(st.text(max_size=80), odd_text, st.just("x" * 100_000), st.just('"unclosed phrase')))
def test_any_search_query_splits_into_folded_terms(query):
    terms = query_terms(query)
    folded = unicodedata.normalize("NFKC", query).casefold()  # NFKC may expand: "ﷲ" -> "الله"
    assert all(t and t == t.strip() and t in folded for t in terms)
    assert sum(len(t) for t in terms) <= len(folded)  # disjoint pieces of the query: nothing invented
