"""Entrypoint of the medical reasoning study assistant.

Run from the project root:  ``python -m streamlit run app/main.py``  (or ``make run``).
Sets up the page, the shared sidebar and ``st.navigation`` over ``pages/``.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import resources
from core.settings import SettingsError

PAGES_DIR = Path(__file__).resolve().parent.parent / "pages"

DISCLAIMER = (
    "**Educational use only.** This assistant helps medical students practise clinical reasoning. "
    "It is not a medical device and must not be used for patient care. The model is small and "
    "often wrong: check every answer against trusted sources."
)


def main() -> None:
    st.set_page_config(page_title="MedReason Study", page_icon="🩺", layout="wide")
    try:
        settings = resources.get_settings()
    except SettingsError as exc:
        st.error(f"The app cannot start because of its settings.\n\n```\n{exc}\n```")
        st.stop()

    pages = {
        "Study": [
            st.Page(PAGES_DIR / "case_study.py", title="Case study", icon=":material/stethoscope:", default=True),
            st.Page(PAGES_DIR / "quiz.py", title="Quiz", icon=":material/quiz:"),
            st.Page(PAGES_DIR / "history.py", title="History", icon=":material/history:"),
        ],
        "Manage": [
            st.Page(PAGES_DIR / "admin.py", title="Admin", icon=":material/admin_panel_settings:"),
        ],
    }
    page = st.navigation(pages)
    with st.sidebar:
        st.caption(DISCLAIMER)
        st.caption(f"Base model: `{settings.base_model}` · adapter: `{settings.adapter}`")
    page.run()


main()
