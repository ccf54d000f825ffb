"""Tests for core.safety: input validation, the identifier detector and safe rendering of model output."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.safety import check_case_text, describe_phi, find_phi, markdown_text

VIGNETTE = (
    "A 54-year-old woman presents with 3 days of fever (38.9 °C), dysuria and right flank pain. "
    "BP 100/60 mm Hg, HR 112/min, RR 22/min. WBC 15,600/mm3, platelets 150 000/µL, creatinine 1.4 mg/dL, "
    "pH 7.31, HbA1c 8.2%. She takes metformin 500 mg twice daily. Ultrasound 2 years ago was normal. "
    "Murphy's sign is negative; Dr. visits were monthly. Options: A. 1-2 days B. 10-14 days. "
    "What is the most likely diagnosis and the next step?"
)


# -- input validation ------------------------------------------------------------------------------


def test_empty_and_whitespace_only_are_refused():
    for text in ("", "   ", "\n\t \r\n", None):
        check = check_case_text(text, max_chars=1000)
        assert not check.ok
        assert "empty" in check.problems[0]


def test_oversized_is_refused_with_the_limit_in_the_message():
    check = check_case_text("x" * 1001, max_chars=1000)
    assert not check.ok
    assert "1,001" in check.problems[0] and "1,000" in check.problems[0]
    assert check_case_text("x" * 1000, max_chars=1000).ok


def test_control_characters_are_stripped_with_a_note():
    raw = "Fever\x00 and\x07 cough\u200b\u202e for 3 days.\r\nNo rash.\tStable."
    check = check_case_text(raw, max_chars=1000)
    assert check.ok
    assert check.text == "Fever and cough for 3 days.\nNo rash.\tStable."
    assert check.notes and "4 invisible control characters" in check.notes[0]


def test_clean_text_has_no_notes_and_is_trimmed():
    check = check_case_text("  A case.  \n", max_chars=100)
    assert check.ok and check.text == "A case." and check.notes == []


def test_limit_counts_the_cleaned_text():
    # 5 visible characters padded with control characters fit a 5-character limit.
    assert check_case_text("ab\x00\x01cde\x02", max_chars=5).ok


@given(st.text(max_size=300))
def test_cleaned_text_never_contains_controls_and_respects_the_limit(text):
    check = check_case_text(text, max_chars=120)
    # Joiners (ZWNJ, ZWJ) stay only inside words and emoji sequences, where they are part of the spelling.
    assert all(ch in "\n\t\u200c\u200d" or unicodedata.category(ch) not in ("Cc", "Cf") for ch in check.text)
    assert not check.text.startswith(("\u200c", "\u200d")) and not check.text.endswith(("\u200c", "\u200d"))
    if check.ok:
        assert 0 < len(check.text) <= 120
    else:
        assert check.problems


# -- identifier detection ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "matched"),
    [
        ("Seen today: Mr. John Smith, 67, with chest pain.", "name", "Mr. John Smith"),
        ("Referred by Dr Alvarez for dyspnoea.", "name", "Dr Alvarez"),
        ("Patient name: Maria Lopez Garcia", "name", "Patient name: Maria Lopez Garcia"),
        ("DOB: 03/04/1975, presenting with fever", "date_of_birth", "DOB: 03/04/1975"),
        ("date of birth 1975-04-03", "date_of_birth", "date of birth 1975-04-03"),
        ("She was born on 3 April 1975 in Lyon.", "date_of_birth", "born on 3 April 1975"),
        ("Call (555) 123-4567 for results.", "phone", "(555) 123-4567"),
        ("Mobile: +44 20 7946 0958", "phone", "Mobile: +44 20 7946 0958"),
        ("Tel +1 555 123 4567", "phone", "Tel +1 555 123 4567"),
        ("Results at 555.123.4567.", "phone", "555.123.4567"),
        ("Contact jane.doe@example.org today", "email", "jane.doe@example.org"),
        ("MRN: 00123456, admitted Tuesday", "record_number", "MRN: 00123456"),
        ("NHS number 943 476 5919", "record_number", "NHS number 943 476 5919"),
        ("SSN 123-45-6789 on file", "record_number", "SSN 123-45-6789"),
        ("id 123-45-6789 on file", "record_number", "123-45-6789"),
    ],
)
def test_each_kind_of_identifier_is_found(text, kind, matched):
    findings = find_phi(text)
    assert [f.kind for f in findings] == [kind]
    assert findings[0].text == matched
    assert text[findings[0].start : findings[0].end].strip() == matched


def test_a_typical_vignette_has_no_findings():
    assert find_phi(VIGNETTE) == []


def test_several_findings_come_in_order_and_are_described():
    text = "Mrs Jane Roe (DOB 12/05/1950), phone 555-123-4567, email jr@mail.com."
    findings = find_phi(text)
    assert [f.kind for f in findings] == ["name", "date_of_birth", "phone", "email"]
    assert describe_phi(findings) == (
        "a name with a title, a date of birth, a phone number and an e-mail address"
    )
    assert describe_phi(findings[:1]) == "a name with a title"


def test_lower_case_title_word_is_not_a_name():
    assert find_phi("the dr said to rest; mr imaging is pending") == []


# -- rendering -----------------------------------------------------------------------------------


def test_markdown_text_neutralises_html_images_and_latex():
    out = markdown_text('<script>alert(1)</script> costs $5 and $10 ![x](http://evil.example/p.png)')
    assert "<script>" not in out and "\\<script\\>" in out
    assert "\\$5" in out and "\\$10" in out
    assert "![" not in out and "!\\[x]" in out


def test_markdown_text_keeps_line_breaks_and_emphasis():
    assert markdown_text("**Step 1**\nFever") == "**Step 1**  \nFever"
