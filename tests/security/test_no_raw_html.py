"""Static scan: no page, app or core code asks Streamlit to render raw HTML.

User text (quiz items, imports, overrides, history) and model text reach the browser only through
Streamlit elements that escape it. This AST scan of ``app/``, ``pages/`` and ``core/`` fails on
``unsafe_allow_html`` set to anything but ``False``, ``st.html(...)``, ``components.html(...)`` /
``components.iframe(...)`` and imports of those functions under another name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("app", "pages", "core")
RAW_HTML_FUNCTIONS = {"html", "iframe", "declare_component"}
STREAMLIT_ROOTS = {"st", "streamlit", "components", "stc", "v1"}


def _dotted(node: ast.AST) -> list[str]:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return parts[::-1]


def raw_html_uses(source: str, filename: str = "<source>") -> list[str]:
    """Every place in ``source`` that would render raw HTML, as ``file:line: what``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.keyword) and node.arg == "unsafe_allow_html":
            if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                found.append(f"{where}: unsafe_allow_html={ast.unparse(node.value)}")
        elif isinstance(node, ast.Constant) and node.value == "unsafe_allow_html":  # passed in a **kwargs dict
            found.append(f"{where}: 'unsafe_allow_html' as a string")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if len(name) >= 2 and name[-1] in RAW_HTML_FUNCTIONS and STREAMLIT_ROOTS & set(name[:-1]):
                found.append(f"{where}: {'.'.join(name)}(...)")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("streamlit"):
            for alias in node.names:
                if alias.name in RAW_HTML_FUNCTIONS:
                    found.append(f"{where}: from {node.module} import {alias.name}")
    return found


def _files() -> list[Path]:
    return sorted(p for folder in SCANNED for p in (ROOT / folder).rglob("*.py"))


def test_the_scan_covers_the_ui_code() -> None:
    names = {str(p.relative_to(ROOT)) for p in _files()}
    assert {"app/main.py", "pages/quiz.py", "pages/curation.py", "pages/history.py", "core/safety.py"} <= names


@pytest.mark.parametrize("snippet", [
    'st.markdown(text, unsafe_allow_html=True)',
    'st.write(text, unsafe_allow_html=flag)',
    'st.caption(text, **{"unsafe_allow_html": True})',
    'st.html("<b>x</b>")',
    'streamlit.html(x)',
    'components.html(x, height=200)',
    'st.components.v1.html(x)',
    'import streamlit.components.v1 as components\ncomponents.iframe(url)',
    'from streamlit.components.v1 import html\nhtml(x)',
    'from streamlit import html as h',
])
def test_the_scan_catches_raw_html(snippet: str) -> None:
    assert raw_html_uses(snippet), snippet


@pytest.mark.parametrize("snippet", [
    'st.markdown(md_escape(text))', 'st.text(text)', 'st.markdown(x, unsafe_allow_html=False)',
    'html.escape(text)', 'page.html()',
])
def test_the_scan_lets_escaped_output_through(snippet: str) -> None:
    assert raw_html_uses(snippet) == []


def test_no_raw_html_in_app_pages_or_core() -> None:
    found = [hit for path in _files() for hit in raw_html_uses(path.read_text(), str(path.relative_to(ROOT)))]
    assert found == [], "raw HTML rendering found:\n" + "\n".join(found)
