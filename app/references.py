"""One reference passage as a bordered card: title, source link, credit line, highlighted text.

Shared by the case-study page and the quiz's "Read more"; the Markdown comes from
:mod:`core.citations` and :func:`core.retrieval.highlight`, all of it escaped.
"""

from __future__ import annotations

import streamlit as st

from core import citations, retrieval


def show_passage(passage: retrieval.Passage, query: str) -> None:
    """The passage, credited, with the words of ``query`` in bold."""
    with st.container(border=True):
        st.markdown(citations.title_line(passage))
        st.markdown(citations.source_line(passage))
        st.caption(citations.credit_line(passage))
        st.markdown(retrieval.highlight(passage.text, query))
