"""Properties of the quiz wording helpers (core.quiz_text) and the metrics log reader (core.metrics).

Here: md_escape(t) renders as exactly t (every Markdown/HTML/LaTeX/shortcode character escaped, and
removing the escapes gives t back) for any text; preview() is one line no longer than its width for
any text; format_duration() takes any number, NaN and infinity included (a page shows whatever
the clock gives it); and
read_metrics() returns exactly the records written, whatever garbage (broken JSON, a 5000-digit
number, 5000-deep nesting, invalid UTF-8) sits on other lines, which it skips.
"""

from __future__ import annotations

import json
import math
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.metrics import MetricsWriter, read_metrics
from core.quiz_text import format_duration, md_escape, preview
from tests.properties.strategies import odd_text

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SPECIAL = set("\\`*_{}[]()<>#+-.!|~$:&=\"'^")


@FAST
@given(text=st.one_of(st.text(max_size=120), odd_text))
def test_md_escape_output_unescapes_to_the_input(text):
    out = md_escape(text)
    single_line = out.replace("  \n", "\n")
    # Every special character is preceded by a backslash, and dropping those gives the text back.
    unescaped = re.sub(r"\\(.)", r"\1", single_line, flags=re.DOTALL)
    assert unescaped == "\n".join(text.splitlines()) if ("\n" in text or "\r" in text) else unescaped == text
    stripped = re.sub(r"\\.", "", single_line, flags=re.DOTALL)
    assert not SPECIAL & set(stripped)


@FAST
@given(text=st.one_of(st.text(max_size=300), odd_text, st.just("word " * 20_000)), width=st.integers(2, 200))
def test_preview_is_one_short_line(text, width):
    line = preview(text, width)
    assert "\n" not in line and len(line) <= width
    words = " ".join(text.split())
    assert line == words or line.endswith("…")


@FAST
@given(seconds=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**9)))
def test_format_duration_takes_any_number(seconds):
    shown = format_duration(seconds)
    if seconds is None or not math.isfinite(seconds):
        assert shown == "–"
    else:
        assert re.fullmatch(r"(\d+:\d{2}:\d{2}|\d+:\d{2})", shown)


garbage = st.one_of(
    st.binary(max_size=40).filter(lambda b: b"\n" not in b and b"\r" not in b),
    st.sampled_from([b'{"a": ' + b"9" * 5000 + b"}", b"[" * 5000, b"\xff\xfe", b"[1, 2]", b'"text"', b"{"]),
)


@FAST
@given(records=st.lists(st.fixed_dictionaries({"step": st.integers(0, 10**6), "loss": st.floats(0, 10)}),
                        max_size=5),
       junk=st.lists(garbage, max_size=3), tail=garbage)
def test_read_metrics_skips_any_garbage_and_keeps_every_record(records, junk, tail, tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.unlink(missing_ok=True)  # tmp_path is shared by every example of this test
    with MetricsWriter(path) as writer:
        for rec in records:
            writer.write(rec)
    with path.open("ab") as fh:
        for piece in junk:
            fh.write(piece + b"\n")
        fh.write(tail)  # a writer killed mid-line
    got = [r for r in read_metrics(path, raw=True) if set(r) == {"step", "loss"}]
    assert got == records
    # A new writer starts on a fresh line, so nothing written after the garbage is lost either.
    with MetricsWriter(path) as writer:
        writer.write({"step": 10**7, "loss": 0.5})
    assert read_metrics(path, raw=True)[-1] == {"step": 10**7, "loss": 0.5}
