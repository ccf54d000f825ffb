"""Enforces STYLE.md's "who may import whom" table by scanning every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "core", "pages", "services", "storage", "trainer")

# package -> module prefixes it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "core": ("streamlit", "storage", "services", "app", "pages"),
    "storage": ("streamlit", "services", "core.inference", "core.charts", "app", "pages", "trainer"),
    "trainer": ("streamlit", "storage", "services", "app", "pages"),
    "services": ("streamlit", "app", "pages"),
    "app": ("pages", "trainer.launch", "trainer.train"),
    "pages": ("storage", "subprocess", "sqlite3", "sqlalchemy", "sqlmodel.select", "sqlmodel.text",
              "trainer.launch", "trainer.train", "trainer.callbacks", "trainer.evaluate"),
}
# package -> {imported package: the only modules of it that may be imported}
ONLY: dict[str, dict[str, tuple[str, ...]]] = {
    # plain record types; settings only for the migration command line (storage/migrate.py)
    "storage": {"core": ("core.records", "core.settings")},
    "services": {"trainer": ("trainer.launch", "trainer.config")},
    "pages": {"trainer": ("trainer.config",)},
}
# heavy libraries core must import inside functions, never at module level
HEAVY = ("torch", "transformers", "peft", "trl", "bitsandbytes", "datasets", "accelerate")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, *, module_level_only: bool) -> list[tuple[int, str, bool]]:
    """(line, dotted module, named) for each import; module level skips function bodies and TYPE_CHECKING blocks.

    ``from a import b`` gives ``a`` (named False: what is imported is named by the next entry) and ``a.b``.
    """
    found: list[tuple[int, str, bool]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if module_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                found.extend((child.lineno, alias.name, True) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.lineno, child.module, False))
                found.extend((child.lineno, f"{child.module}.{alias.name}", True) for alias in child.names)
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
        for line, module, named in _imports(tree, module_level_only=False):
            for bad in FORBIDDEN[pkg]:
                if _matches(module, bad):
                    problems.append(f"{rel}:{line} imports {module} ({pkg} must not import {bad})")
            for other, allowed in ONLY.get(pkg, {}).items():
                top = module.split(".")[0]
                if top != other or (not named and module == other):
                    continue
                if not any(_matches(module, ok) for ok in allowed):
                    problems.append(f"{rel}:{line} imports {module} ({pkg} may import only {', '.join(allowed)} "
                                    f"of {other})")
        if pkg == "core":
            for line, module, _ in _imports(tree, module_level_only=True):
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
    (fake_root / "pages" / "bad.py").write_text("import subprocess\nfrom trainer.train import main\nfrom storage import quizzes\n"
                                                "from trainer import launch\nfrom trainer.config import TrainConfig\n")
    (fake_root / "storage" / "bad.py").write_text("from core.charts import TrendPoint\nfrom core import quiz\n"
                                                  "from core.records import Record\nfrom services import quiz\n")
    (fake_root / "services" / "bad.py").write_text("import streamlit\nfrom trainer.status import RUNNING\n"
                                                   "from trainer import launch\n")
    import sys

    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake_root)
    problems = find_violations()
    assert any("core/bad.py:1 imports streamlit" in p for p in problems)
    assert any("core/bad.py:2 imports torch at module level" in p for p in problems)
    assert not any("core/ok.py" in p for p in problems)
    assert any("pages/bad.py:1 imports subprocess" in p for p in problems)
    assert any("pages/bad.py:2 imports trainer.train" in p for p in problems)
    assert any("pages/bad.py:3 imports storage" in p for p in problems)
    assert any("pages/bad.py:4 imports trainer.launch" in p for p in problems)
    assert not any(p.startswith("pages/bad.py:5") for p in problems)
    assert any("storage/bad.py:1 imports core.charts" in p for p in problems)
    assert any("storage/bad.py:2 imports core.quiz" in p for p in problems)
    assert not any(p.startswith("storage/bad.py:3") for p in problems)
    assert any("storage/bad.py:4 imports services" in p for p in problems)
    assert any("services/bad.py:1 imports streamlit" in p for p in problems)
    assert any("services/bad.py:2 imports trainer.status" in p for p in problems)
    assert not any(p.startswith("services/bad.py:3") for p in problems)


@pytest.mark.parametrize("pkg", PACKAGES)
def test_every_module_has_a_docstring(pkg):
    missing = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / pkg).rglob("*.py"))
        if path.name != "__init__.py" and "migrations/versions" not in str(path)
        and ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) is None
    ]
    assert missing == []
