"""Entrypoint of the medical reasoning study assistant.

Run from the project root:  ``python -m streamlit run app/main.py``  (or ``make run``).
Sets up the page, the shared sidebar and ``st.navigation`` over ``pages/``: visitors get only the sign-in
page; a signed-in user gets the pages of their role (``app.auth.PAGES``), and each page checks the
role again itself.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import auth, resources
from core.settings import SettingsError
from storage.engine import MigrationError
from storage.errors import StorageError

PROJECT_ROOT = Path(__file__).resolve().parent.parent

DISCLAIMER = (
    "**Educational use only.** This assistant helps medical students practise clinical reasoning. "
    "It is not a medical device and must not be used for patient care. The model is small and "
    "often wrong: check every answer against trusted sources."
)


def _st_page(spec: auth.PageSpec) -> st.Page:
    return st.Page(PROJECT_ROOT / spec.path, title=spec.title, icon=spec.icon, default=spec.default)


def main() -> None:
    st.set_page_config(page_title="MedReason Study", page_icon="🩺", layout="wide")
    try:
        settings = resources.get_settings()
    except SettingsError as exc:
        st.error(f"The app cannot start because of its settings.\n\n```\n{exc}\n```")
        st.stop()
    try:
        user = auth.current_user()  # opens (and on first start migrates) the database
        resources.reconcile_jobs()
    except MigrationError as exc:
        st.error(f"The app cannot open its database.\n\n```\n{exc}\n```")
        st.stop()
    except StorageError as exc:  # e.g. another program holds the write lock past the busy timeout
        st.error(exc.page_message(), icon=":material/sd_card_alert:")
        st.stop()

    if user is None:
        page = st.navigation([_st_page(auth.LOGIN_PAGE)], position="hidden")
    else:
        sections: dict[str, list[st.Page]] = {}
        for spec in auth.pages_for(user.role):
            sections.setdefault(spec.section, []).append(_st_page(spec))
        page = st.navigation(sections)
    with st.sidebar:
        if user is not None:
            st.caption(f"Signed in as `{user.username}` · {user.role}")
            st.button("Sign out", key="sign_out", on_click=auth.sign_out, icon=":material/logout:")
        st.caption(DISCLAIMER)
        st.caption(f"Base model: `{settings.base_model}` · adapter: `{Path(resources.active_adapter_path()).name}`")
    try:
        page.run()
    except StorageError as exc:  # a read or write the page did not handle itself; widgets keep their values
        st.error(exc.page_message(), icon=":material/sd_card_alert:")


main()
