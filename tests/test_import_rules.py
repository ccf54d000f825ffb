"""Enforces STYLE.md's "who may import whom" table by scanning every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "core", "pages", "storage", "trainer")

# package -> module prefixes it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "core": ("streamlit", "storage", "app", "pages"),
    "storage": ("streamlit", "core.inference", "app", "pages", "trainer"),
    "trainer": ("streamlit", "storage", "app", "pages"),
    "app": ("pages",),
    "pages": ("subprocess", "trainer.train", "trainer.callbacks", "trainer.evaluate", "sqlite3"),
}
# heavy libraries core must import inside functions, never at module level
HEAVY = ("torch", "transformers", "peft", "trl", "bitsandbytes", "datasets", "accelerate")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, *, module_level_only: bool) -> list[tuple[int, str]]:
    """(line, dotted module) for each import; module level skips function bodies and TYPE_CHECKING blocks."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if module_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                found.extend((child.lineno, alias.name) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.lineno, child.module))
                found.extend((child.lineno, f"{child.module}.{alias.name}") for alias in child.names)
            visit(child)

    visit(tree)
    return found


def _modules() -> list[tuple[str, Path]]:
    return [(pkg, path) for pkg in PACKAGES for path in sorted((ROOT / pkg).rglob("*.py"))]


def _matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def find_violations() -> list[str]:
    problems = []
    for pkg, path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = path.relative_to(ROOT)
        for line, module in _imports(tree, module_level_only=False):
            for bad in FORBIDDEN[pkg]:
                if _matches(module, bad):
                    problems.append(f"{rel}:{line} imports {module} ({pkg} must not import {bad})")
        if pkg == "core":
            for line, module in _imports(tree, module_level_only=True):
                if any(_matches(module, heavy) for heavy in HEAVY):
                    problems.append(f"{rel}:{line} imports {module} at module level (import it inside the function)")
        if pkg == "pages":
            text = path.read_text(encoding="utf-8")
            for needle in ("shell=True", "unsafe_allow_html=True"):
                if needle in text:
                    problems.append(f"{rel} contains {needle}")
    return problems


def test_every_package_follows_the_import_table():
    assert find_violations() == []


def test_the_scanner_catches_a_forbidden_import(tmp_path, monkeypatch):
    """Guard against a scanner that silently finds nothing."""
    fake_root = tmp_path
    for pkg in PACKAGES:
        (fake_root / pkg).mkdir()
    (fake_root / "core" / "bad.py").write_text("import streamlit as st\nimport torch\n")
    (fake_root / "core" / "ok.py").write_text("def f():\n    import torch\n    return torch\n")
    (fake_root / "pages" / "bad.py").write_text("import subprocess\nfrom trainer.train import main\n")
    import sys

    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake_root)
    problems = find_violations()
    assert any("core/bad.py:1 imports streamlit" in p for p in problems)
    assert any("core/bad.py:2 imports torch at module level" in p for p in problems)
    assert not any("core/ok.py" in p for p in problems)
    assert any("pages/bad.py:1 imports subprocess" in p for p in problems)
    assert any("pages/bad.py:2 imports trainer.train" in p for p in problems)


@pytest.mark.parametrize("pkg", PACKAGES)
def test_every_module_has_a_docstring(pkg):
    missing = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / pkg).rglob("*.py"))
        if path.name != "__init__.py" and "migrations/versions" not in str(path)
        and ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) is None
    ]
    assert missing == []
