"""How a reference passage is credited on a page: its source line and its credit line, as Markdown.

The case-study page and the quiz's "Read more" show passages the same way; everything shown is
escaped (:func:`core.quiz_text.md_escape`), and only a plain http(s) URL becomes a link.
"""

from __future__ import annotations

import re
from typing import Protocol

from core.quiz_text import md_escape

# Only a plain http(s) URL becomes a link: nothing that could end the Markdown link early or smuggle
# in another scheme (javascript:, data:) or markup.
LINKABLE_URL = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]+)?(?:/[^\s()<>\[\]{}\"'`\\]*)?")


class Credited(Protocol):
    """What a passage needs for its credit (``core.retrieval.Passage`` has it)."""

    title: str
    site: str
    url: str
    license: str
    attribution: str


def title_line(passage: Credited) -> str:
    return f"**{md_escape(passage.title)}**"


def source_line(passage: Credited) -> str:
    """The passage's site and URL: a link where the URL is a plain http(s) one, else the URL as text."""
    site = md_escape(passage.site or "Source")
    url = passage.url.strip()
    if not url:
        return site
    if LINKABLE_URL.fullmatch(url):
        return f"{site} · [{md_escape(url)}]({url})"
    return f"{site} · {md_escape(url)}"


def credit_line(passage: Credited) -> str:
    """License and attribution, e.g. ``CC BY 4.0 — MedQuAD (Ben Abacha & Demner-Fushman 2019)``."""
    return md_escape(" — ".join(part for part in (passage.license, passage.attribution) if part))
