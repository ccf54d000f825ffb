"""Properties of the two answer-letter parsers: core.metrics.extract_choice (evaluation) and
core.quiz.parse_choice (the quiz page).

tests/core/test_quiz_grading.py already fuzzes parse_choice's *text* with fixed letters and options;
tests/core/test_metrics.py has only examples for extract_choice. Here: any text with any letters
iterable (odd keys included) never raises in extract_choice and only returns an offered letter;
parse_choice with any valid key set and any option texts returns a key as the caller spelled it,
and refuses bad keys with its documented ValueError; both parsers agree on the canonical
"Final answer: X. <text of X>" line whatever the options say; odd Unicode around an answer never
changes a clear pick into another letter.
"""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.metrics import extract_choice
from core.prompts import format_completion
from core.quiz import parse_choice
from core.records import normalise
from tests.properties.strategies import odd_text, printable

FAST = settings(max_examples=150, deadline=None)

letters_any = st.one_of(
    st.text(max_size=8),
    st.lists(st.one_of(st.text(max_size=3), st.integers(-5, 50), st.none()), max_size=8),
    st.dictionaries(st.text(max_size=2), st.text(max_size=5), max_size=6),
)


def _valid_for_extract(letters) -> set[str]:
    return {str(k).strip().upper() for k in letters if len(str(k).strip()) == 1}


@FAST
@given(text=st.one_of(st.text(max_size=200), odd_text), letters=letters_any)
def test_extract_choice_never_raises_and_returns_an_offered_letter(text, letters):
    got = extract_choice(text, letters)
    assert got is None or (len(got) == 1 and got in _valid_for_extract(letters))


keys = st.lists(st.sampled_from(string.ascii_letters), min_size=2, max_size=8, unique_by=str.upper)


@FAST
@given(text=st.one_of(st.text(max_size=150), odd_text), keys=keys,
       texts=st.lists(st.one_of(printable, odd_text), max_size=8))
def test_parse_choice_returns_a_key_as_spelled_for_any_options(text, keys, texts):
    options = dict(zip(keys, texts))
    got = parse_choice(text, keys, options=options)
    assert got is None or got in keys
    got_plain = extract_choice(text, keys, options=options)
    assert got_plain is None or got_plain in {k.upper() for k in keys}


@settings(max_examples=60, deadline=None)
@given(bad=st.one_of(st.text(min_size=2, max_size=4), st.sampled_from(["", " ", "1", "-", "é", "Ω"]), st.integers()))
def test_parse_choice_refuses_a_key_that_is_not_a_letter(bad):
    with pytest.raises(ValueError, match="single letters"):
        parse_choice("A", ["A", bad])


@FAST
# Option texts as exams write them: with a letter or digit (a punctuation-only option such as "%" normalises
# to nothing, and then "A. %" reads as an option whose text is "A"), and without an answer cue of their own
# (the last "answer:" in a completion wins by design).
@given(texts=st.lists(printable.filter(lambda t: "answer" not in t.lower() and any(c.isalnum() for c in t)),
                      min_size=2, max_size=6),
       pick=st.integers(0, 5), reasoning=st.one_of(st.just(""), printable), lower=st.booleans())
def test_both_parsers_read_the_canonical_final_answer_line(texts, pick, reasoning, lower):
    letters = [chr(65 + i) for i in range(len(texts))]
    options = dict(zip(letters, texts))
    letter = letters[pick % len(letters)]
    # The answer line the trainer writes (core.records.mcq_answer) and the model is taught to produce.
    shown = letter.lower() if lower else letter
    completion = format_completion(reasoning.replace("final answer", "x"), f"{shown}. {options[letter]}")
    assert extract_choice(completion, letters, options=options) == letter
    # parse_choice refuses "C. <text of D>"; when two options share a text it cannot tell, else it must agree.
    same_text = [k for k, t in options.items() if t.casefold() == options[letter].casefold()]
    line_as_text = normalise(f"{letter}. {options[letter]}")
    reads_as_other = any(normalise(t) == line_as_text for k, t in options.items() if k != letter)
    if len(same_text) == 1 and not _ALTERNATIVE.match(options[letter]) and not reads_as_other:
        assert parse_choice(completion, letters, options=options) == letter


_ALTERNATIVE = re.compile(r"(?i)^(?:or|and|/|&)(?:\s|$)")


def test_parse_choice_letter_and_own_text_starting_like_an_alternative():
    options = {"A": "Neither", "B": "& more", "C": "or both"}
    assert parse_choice("Final answer: B. & more", "ABC", options=options) == "B"
    assert parse_choice("C. or both", "ABC", options=options) == "C"


def test_parse_choice_letter_with_its_own_text_beats_another_option_spelled_like_the_line():
    assert parse_choice("Final answer: A. x", "AB", options={"A": "x", "B": "A x"}) == "A"


@FAST
@given(letter=st.sampled_from("ABCDE"), before=odd_text, after=odd_text)
def test_odd_unicode_never_turns_a_clear_pick_into_another_letter(letter, before, after):
    text = f"{before}\n\nFinal answer: ({letter})"
    for got in (extract_choice(text, "ABCDE"), parse_choice(text, "ABCDE")):
        assert got in (letter, None)
    assert extract_choice(f"Final answer: ({letter}) {after}", "ABCDE") == letter
