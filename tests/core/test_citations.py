"""Reference credit lines: only a plain http(s) URL becomes a link, and every field is escaped."""

from __future__ import annotations

from dataclasses import dataclass

from core import citations


@dataclass
class _P:
    title: str = "Diabetic *ketoacidosis*"
    site: str = "MedlinePlus"
    url: str = "https://medlineplus.gov/diabeticketoacidosis.html"
    license: str = "CC BY 4.0"
    attribution: str = "MedQuAD (Ben Abacha & Demner-Fushman 2019)"


def test_a_plain_https_url_is_a_link_and_the_title_is_escaped():
    line = citations.source_line(_P())
    assert line.startswith("MedlinePlus · [") and line.endswith("](https://medlineplus.gov/diabeticketoacidosis.html)")
    assert citations.title_line(_P()) == "**Diabetic \\*ketoacidosis\\***"
    assert citations.credit_line(_P()).startswith("CC BY 4\\.0 — MedQuAD \\(")  # escaped Markdown


def test_other_schemes_and_link_breakers_stay_text():
    for url in ("javascript:alert(1)", "https://x.org/a)[b](javascript:alert(1)", "data:text/html,<b>x</b>"):
        line = citations.source_line(_P(url=url))
        assert "](" not in line, url
    assert citations.source_line(_P(url="")) == "MedlinePlus"
