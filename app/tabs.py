"""Stateful tabs for the pages: the open tab survives reruns, and only its view runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import streamlit as st


def show_tabs(views: Mapping[str, Callable[[], None]], *, key: str) -> None:
    """One tab per label of ``views``; the open one's view runs (a closed tab costs nothing, so a live view
    in one tab polls only while that tab is open)."""
    for tab, view in zip(st.tabs(list(views), key=key, on_change="rerun"), views.values(), strict=True):
        if tab.open:
            with tab:
                view()
