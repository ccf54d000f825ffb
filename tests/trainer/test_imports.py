"""House import rules for the files this package owns: trainer never imports streamlit/storage/app/pages;
core.metrics never imports streamlit/storage/app/pages either."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("streamlit", "storage", "app", "pages")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted((PROJECT / "trainer").glob("*.py")) + [PROJECT / "core" / "metrics.py"],
                         ids=lambda p: p.name)
def test_no_forbidden_imports(path):
    bad = _imports(path) & set(FORBIDDEN)
    assert not bad, f"{path.relative_to(PROJECT)} imports {sorted(bad)}"


def test_every_trainer_module_has_a_docstring():
    for path in sorted((PROJECT / "trainer").glob("*.py")):
        assert ast.get_docstring(ast.parse(path.read_text())), path.name
