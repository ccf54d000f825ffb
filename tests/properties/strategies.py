"""Hypothesis strategies for odd human input shared by the property tests: the kinds of text a paste can hold."""

from __future__ import annotations

from hypothesis import strategies as st

RTL = ["مريض يعاني من حمى وسعال", "המטופל סובל מחום", "\u202eevil\u202c", "ﷺ"]
EMOJI = ["🩺", "👩‍⚕️", "🏳️‍🌈", "🧑🏽‍🔬", "💊💉"]
COMBINING = ["e\u0301", "n\u0303", "a\u0300\u0301\u0302", "Z\u0336\u0337"]
CONTROLS = ["\x00", "\x1b[31m", "\x07", "\x7f", "\u202e", "\u200b", "\ufeff"]

# What people really paste: scripts, emoji, combining marks, bidi and C0/C1 controls, next to ASCII.
odd_pieces = st.sampled_from(RTL + EMOJI + COMBINING + CONTROLS + ["  ", "\t", "\n", "\r\n", "Ⅻ", "ǅ", "ß", "İ"])
odd_text = st.lists(st.one_of(odd_pieces, st.text(max_size=8)), max_size=12).map("".join)

# Printable text as a person types it: no controls, no surrogates, no line separators.
printable = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Cf", "Zl", "Zp"), blacklist_characters="\x85"),
    min_size=1,
    max_size=30,
).map(str.strip).filter(bool)
