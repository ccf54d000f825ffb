"""Helpers for page tests that need accounts: a throwaway work dir, users, signed-in AppTests.

Plain functions (not fixtures) so any test module can use them without sharing a conftest.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from argon2 import PasswordHasher
from sqlalchemy import Engine
from sqlmodel import Session
from streamlit.testing.v1 import AppTest

from app import auth, resources
from storage import accounts, passwords
from storage.models import User

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MAIN = PROJECT_ROOT / "app" / "main.py"
TIMEOUT = 60


def app_environment(monkeypatch: pytest.MonkeyPatch, work_dir: Path, **settings: str) -> Iterator[Engine]:
    """Point the settings at ``work_dir`` (SQLite there), use cheap password hashing, fake the model.

    Yields the app's engine; clears every cached resource before and after.
    """
    for name in ("MEDSTUDY_DATABASE_URL", "MEDSTUDY_ALLOW_SELF_REGISTRATION", "MEDSTUDY_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEDSTUDY_WORK_DIR", str(work_dir))
    for name, value in settings.items():
        monkeypatch.setenv(f"MEDSTUDY_{name.upper()}", value)
    monkeypatch.setattr(passwords, "HASHER", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    fake = types.SimpleNamespace(base=types.SimpleNamespace(identity="fake-model"), adapter_name="fake-adapter",
                                 adapter_problem=None, requested_adapter=None, device="cpu", describe=lambda: "fake")
    monkeypatch.setattr(resources, "get_served_model", lambda *args, **kwargs: fake)  # never load the real model
    st.cache_resource.clear()
    engine = resources.get_engine()
    yield engine
    st.cache_resource.clear()
    engine.dispose()


def add_user(engine: Engine, username: str, role: str = "student", password: str = "correct horse") -> User:
    with Session(engine) as session:
        return accounts.create_user(session=session, username=username, password=password, role=role)


def app_as(user: User | None, script: Path | str = MAIN, **state: Any) -> AppTest:
    """An AppTest of ``script`` (relative to the project root) with ``user`` signed in, not yet run."""
    path = Path(script) if Path(script).is_absolute() else PROJECT_ROOT / script
    at = AppTest.from_file(str(path), default_timeout=TIMEOUT)
    if user is not None:
        at.session_state[auth.SESSION_KEY] = user.id
    for key, value in state.items():
        at.session_state[key] = value
    return at


def registered_titles(at: AppTest) -> list[str]:
    """Titles of the pages ``st.navigation`` offered in the last run."""
    return [info["page_name"] for info in at._registered_pages.values()]


def rendered_text(at: AppTest) -> str:
    """Every element of the last run, serialised (what the browser would receive)."""
    parts: list[str] = []

    def walk(node: Any) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            parts.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return "\n".join(parts)


def allows_html(at: AppTest) -> bool:
    """Whether any Markdown element of the last run was rendered with ``unsafe_allow_html``."""
    return any(getattr(getattr(el, "proto", None), "allow_html", False) for el in at.markdown)
