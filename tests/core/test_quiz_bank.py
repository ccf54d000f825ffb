"""The in-memory bank and its search (core.quiz_bank), and the item wording helpers (core.quiz_text)."""

from __future__ import annotations

import dataclasses

import pytest

from core.quiz_bank import Bank, browse, query_terms, search_text
from core.quiz_text import credit_line, format_duration, md_escape, notices, option_label, preview
from core.records import Record

ITEMS = [
    Record(id="medqa:1", source="medqa", license="MIT", kind="mcq", question="Peaked T waves suggest?",
           options={"A": "Hypokalemia", "B": "Hyperkalemia"}, correct="B", subject="Cardiology", tags=["step1"]),
    Record(id="medmcqa:2", source="medmcqa", license="MIT", kind="mcq", question="Nerve of the deltoid?",
           options={"A": "Axillary", "B": "Radial"}, correct="A", flags=["ocr-suspect"], explanation="C5-C6 roots."),
    Record(id="medical-o1:3", source="medical-o1", license="Apache-2.0",
           question="Café-au-lait spots and neurofibromas?",
           answer="Neurofibromatosis type 1", subject="Neurology", tags=["reasoning-test"]),
    Record(id="pubmedqa:4", source="pubmedqa", license="MIT", kind="mcq", question="Does it work?",
           options={"A": "yes", "B": "no", "C": "maybe"}, correct="A", context="METHODS: a randomised trial.",
           tags=["step2&3"]),
]


def ids(records: list[Record]) -> list[str]:
    return [r.id for r in records]


def test_search_matches_every_word_anywhere_in_the_item() -> None:
    assert ids(browse(ITEMS, query="hyperkalemia")) == ["medqa:1"]  # an option
    assert ids(browse(ITEMS, query="c5-c6")) == ["medmcqa:2"]  # the explanation
    assert ids(browse(ITEMS, query="randomised")) == ["pubmedqa:4"]  # the context
    assert ids(browse(ITEMS, query="NEUROFIBROMATOSIS café")) == ["medical-o1:3"]  # answer + question, any case
    assert ids(browse(ITEMS, query="medmcqa:2")) == ["medmcqa:2"]  # the id
    assert ids(browse(ITEMS, query="peaked waves")) == ["medqa:1"]
    assert browse(ITEMS, query="peaked nerve") == []  # every word must occur
    assert ids(browse(ITEMS, query="   ")) == ids(ITEMS)


def test_quoted_phrases_must_occur_as_written() -> None:
    assert query_terms('"T waves" Peaked') == ["t waves", "peaked"]
    assert ids(browse(ITEMS, query='"peaked t waves"')) == ["medqa:1"]
    assert browse(ITEMS, query='"waves peaked"') == []


def test_filters_combine_and_none_lets_everything_through() -> None:
    assert ids(browse(ITEMS, sources={"medqa", "pubmedqa"})) == ["medqa:1", "pubmedqa:4"]
    assert browse(ITEMS, sources=set()) == []
    assert ids(browse(ITEMS, kinds={"open"})) == ["medical-o1:3"]
    assert ids(browse(ITEMS, subjects={""})) == ["medmcqa:2", "pubmedqa:4"]
    assert ids(browse(ITEMS, steps={"step2&3"})) == ["pubmedqa:4"]
    assert ids(browse(ITEMS, ocr="only")) == ["medmcqa:2"]
    assert "medmcqa:2" not in ids(browse(ITEMS, ocr="exclude"))
    assert ids(browse(ITEMS, query="nerve", ocr="exclude")) == []
    with pytest.raises(ValueError, match="OCR filter"):
        browse(ITEMS, ocr="some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Step tag"):
        browse(ITEMS, steps={"step3"})


def test_bank_indexes_once_and_searches_edited_copies_afresh() -> None:
    bank = Bank.from_records([*ITEMS, dataclasses.replace(ITEMS[0], question="a repeat with the same id")])
    assert len(bank) == 4 and bank.get("medqa:1") is ITEMS[0] and bank.get("nope") is None
    assert bank.haystack(ITEMS[0]) == search_text(ITEMS[0])
    edited = dataclasses.replace(ITEMS[0], question="Tall tented waves?")
    assert "tented" in bank.haystack(edited) and "tented" not in bank.haystack(ITEMS[0])
    assert ids(browse([edited, *ITEMS[1:]], query="tented", haystack=bank.haystack)) == ["medqa:1"]


@pytest.mark.parametrize("text", ["<script>alert(1)</script>", "**bold** _it_ `code`", "$x^2$ and :red[x]",
                                  "[link](http://x) ![img](y)", "# heading", "1. list\n- item", "a\\b & <b>"])
def test_md_escape_turns_markdown_and_html_into_literal_text(text: str) -> None:
    escaped = md_escape(text)
    # Every special character is preceded by a backslash, so no Markdown construct or tag survives.
    for char in "<>*_`$[]()#!:&":
        assert f"{char}" not in escaped.replace(f"\\{char}", "")
    assert escaped.replace("\\", "").replace("  \n", "\n") == text.replace("\\", "")


def test_option_label_and_preview() -> None:
    assert option_label("B", "<b>x</b>") == "B\\. \\<b\\>x\\</b\\>"
    assert preview("short") == "short"
    assert preview("one two three four five six", width=14) == "one two three…"
    assert preview("a  b\n c") == "a b c"


def test_credit_line_credits_cc_by_and_says_when_credit_is_missing() -> None:
    cc = Record(id="x:1", source="casimedicos", license="CC BY 4.0", question="q", attribution="IXA/HiTZ, CC BY 4.0")
    assert credit_line(cc) == "Source: casimedicos · License: CC BY 4.0 · IXA/HiTZ, CC BY 4.0"
    bare = dataclasses.replace(cc, attribution="")
    assert credit_line(bare).endswith("attribution missing: the importer gave no credit line")
    assert credit_line(dataclasses.replace(bare, license="MIT")) == "Source: casimedicos · License: MIT"


def test_notices_follow_flags() -> None:
    assert notices(ITEMS[0]) == []
    assert len(notices(ITEMS[1])) == 1 and "OCR" in notices(ITEMS[1])[0]


@pytest.mark.parametrize("seconds, text", [(None, "–"), (0, "0:00"), (59.9, "0:59"), (61, "1:01"), (3600, "1:00:00"),
                                           (-5, "0:00")])
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text
