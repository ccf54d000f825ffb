"""The quiz core keeps to its layer: no Streamlit, no storage, no app or pages (STYLE.md import table)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
MODULES = ["core/quiz.py", "core/quiz_import.py", "core/review.py", "core/charts.py"]
FORBIDDEN = ("streamlit", "storage", "app", "pages", "sqlmodel", "sqlalchemy")


def imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", MODULES)
def test_no_forbidden_imports(module):
    bad = {n for n in imported_names(ROOT / module) if n.split(".")[0] in FORBIDDEN}
    assert not bad, f"{module} imports {sorted(bad)}"


def test_importing_the_quiz_core_loads_neither_streamlit_nor_storage_nor_torch():
    code = (
        "import sys, core.quiz, core.quiz_import, core.review, core.charts\n"
        "print(sorted(m for m in ('streamlit', 'storage', 'sqlmodel', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
