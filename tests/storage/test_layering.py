"""House layering for storage and the account pages: who may import whom (see docs/STYLE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT_PAGES = ["pages/login.py", "pages/users.py", "pages/history.py", "pages/curation.py"]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _hits(names: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden))


@pytest.mark.parametrize("path", sorted((ROOT / "storage").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_storage_never_imports_ui_or_inference(path: Path) -> None:
    assert _hits(_imports(path), ("streamlit", "services", "core.inference", "core.charts", "app", "pages", "trainer",
                                  "torch")) == []


@pytest.mark.parametrize("page", ACCOUNT_PAGES)
def test_account_pages_use_repository_functions_only(page: Path) -> None:
    names = _imports(ROOT / page)
    assert _hits(names, ("subprocess", "sqlalchemy", "trainer.train", "sqlmodel.select", "sqlmodel.text")) == []
    assert "require_role" in (ROOT / page).read_text() or page == "pages/login.py"
    assert "unsafe_allow_html" not in (ROOT / page).read_text()


def test_auth_does_not_import_pages() -> None:
    assert _hits(_imports(ROOT / "app" / "auth.py"), ("pages",)) == []
