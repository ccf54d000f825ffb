"""scripts/audit.sh decides on pip-audit's report: unexcused vulnerabilities fail, excuses need a reason.

Runs the script on crafted reports (AUDIT_REPORT, AUDIT_OFFLINE: no pip-audit run, no network).
The real audit runs in `make test` (see the Makefile); here only its decision is tested.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VULN = {"id": "GHSA-aaaa-bbbb-cccc", "aliases": ["CVE-2099-0001"], "fix_versions": ["2.0"], "description": "bad"}


def _audit(tmp_path: Path, dependencies: list[dict], ignore: str | None = None, **env: str):
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"dependencies": dependencies, "fixes": []}))
    ignore_file = tmp_path / "ignore.txt"
    if ignore is not None:
        ignore_file.write_text(ignore)
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "audit.sh")], capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "AUDIT_REPORT": str(report), "AUDIT_IGNORE": str(ignore_file),
             "AUDIT_OFFLINE": "1", **env},
    )


CLEAN = [{"name": "safe-lib", "version": "1.0", "vulns": []}]


def test_a_clean_report_passes(tmp_path: Path) -> None:
    result = _audit(tmp_path, CLEAN)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Dependency audit passed" in result.stdout


def test_an_unexcused_vulnerability_fails(tmp_path: Path) -> None:
    result = _audit(tmp_path, CLEAN + [{"name": "bad-lib", "version": "1.0", "vulns": [VULN]}])
    assert result.returncode == 1
    assert "VULNERABLE  bad-lib 1.0: GHSA-aaaa-bbbb-cccc (CVE-2099-0001); fixed in 2.0" in result.stdout


@pytest.mark.parametrize("entry", ["GHSA-aaaa-bbbb-cccc", "CVE-2099-0001"])
def test_a_vulnerability_excused_with_a_reason_passes(tmp_path: Path, entry: str) -> None:
    ignore = f"# comments and blank lines are fine\n\n{entry}  # only the CLI uses bad-lib, never on user input\n"
    result = _audit(tmp_path, CLEAN + [{"name": "bad-lib", "version": "1.0", "vulns": [VULN]}], ignore)
    assert result.returncode == 0, result.stdout
    assert "IGNORED  bad-lib 1.0" in result.stdout and "never on user input" in result.stdout


def test_an_excuse_without_a_reason_is_an_error(tmp_path: Path) -> None:
    result = _audit(tmp_path, CLEAN + [{"name": "bad-lib", "version": "1.0", "vulns": [VULN]}],
                    "GHSA-aaaa-bbbb-cccc\n")
    assert result.returncode == 1
    assert "needs `ID  # reason`" in result.stdout


def test_unchecked_packages_are_listed_and_fail_when_strict_or_when_nothing_was_checked(tmp_path: Path) -> None:
    skipped = {"name": "mystery", "skip_reason": "Dependency not found on PyPI and could not be audited: mystery (0.1)"}
    result = _audit(tmp_path, CLEAN + [skipped])
    assert result.returncode == 0
    assert "NOT CHECKED (1)" in result.stdout and "mystery 0.1" in result.stdout
    assert _audit(tmp_path, CLEAN + [skipped], AUDIT_STRICT="1").returncode == 1
    assert _audit(tmp_path, [skipped]).returncode == 1  # a data source that answers nothing is not a pass
