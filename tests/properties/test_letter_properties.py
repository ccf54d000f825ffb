"""Properties of the answer-letter parser, core.metrics.extract_choice (evaluation and grading of free text).

tests/core/test_metrics.py has its examples. Here: any text with any letters iterable (odd keys
included) never raises and only returns an offered letter; any option texts with any key set give
an offered letter; the canonical "Final answer: X. <text of X>" line reads as X whatever the
options say; odd Unicode around an answer never changes a clear pick into another letter.
"""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from core.metrics import extract_choice
from core.prompts import format_completion
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
def test_extract_choice_returns_an_offered_letter_for_any_options(text, keys, texts):
    options = dict(zip(keys, texts))
    got = extract_choice(text, keys, options=options)
    assert got is None or got in {k.upper() for k in keys}


@FAST
# Option texts as exams write them: with a letter or digit (a punctuation-only option such as "%" normalises
# to nothing, and then "A. %" reads as an option whose text is "A"), and without an answer cue of their own
# (the last "answer:" in a completion wins by design).
@given(texts=st.lists(printable.filter(lambda t: "answer" not in t.lower() and any(c.isalnum() for c in t)),
                      min_size=2, max_size=6),
       pick=st.integers(0, 5), reasoning=st.one_of(st.just(""), printable), lower=st.booleans())
def test_the_canonical_final_answer_line_reads_as_its_letter(texts, pick, reasoning, lower):
    letters = [chr(65 + i) for i in range(len(texts))]
    options = dict(zip(letters, texts))
    letter = letters[pick % len(letters)]
    # The answer line the trainer writes (core.records.mcq_answer) and the model is taught to produce.
    shown = letter.lower() if lower else letter
    completion = format_completion(reasoning.replace("final answer", "x"), f"{shown}. {options[letter]}")
    assert extract_choice(completion, letters, options=options) == letter


@FAST
@given(letter=st.sampled_from("ABCDE"), before=odd_text, after=odd_text)
def test_odd_unicode_never_turns_a_clear_pick_into_another_letter(letter, before, after):
    text = f"{before}\n\nFinal answer: ({letter})"
    assert extract_choice(text, "ABCDE") in (letter, None)
    assert extract_choice(f"Final answer: ({letter}) {after}", "ABCDE") == letter
