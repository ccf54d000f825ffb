#!/usr/bin/env bash
# Dependency vulnerability audit of the installed virtual environment (run by `make test`, hence .ci/run).
#
#   bash scripts/audit.sh            # exit 1 on any known vulnerability not excused in .ci/audit-ignore.txt
#   AUDIT_STRICT=1 bash scripts/audit.sh   # also exit 1 when a package could not be checked at all
#   AUDIT_REPORT=r.json AUDIT_IGNORE=i.txt AUDIT_OFFLINE=1 bash scripts/audit.sh   # decide on a saved report
#                                          (no pip-audit run, no network; tests/security/test_audit_script.py)
#
# pip-audit (pinned in requirements-dev.txt) checks every installed distribution against PyPI's
# vulnerability data (`-s pypi`: PyPI is the only network this project's CI may reach; OSV is not).
# Where PyPI's per-release endpoint (/pypi/NAME/VERSION/json) is not reachable, e.g. behind a proxy that
# only serves /pypi/NAME/json, pip-audit reports the package as "not found"; for those this script asks
# /pypi/NAME/json, whose vulnerability list is that of the newest release, and uses it when the installed
# version is the newest one. Packages it still cannot check are listed (never silently passed).
# Ignore file: one `VULN-ID  # reason` per line; an entry without a written reason is an error.
# The full pip-audit JSON report is written to test-artifacts/pip-audit.json.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${VENV:-.venv}/bin/python"
ignore_file="${AUDIT_IGNORE:-.ci/audit-ignore.txt}"
report="${AUDIT_REPORT:-}"
if [ -z "$report" ]; then
  mkdir -p test-artifacts
  report="test-artifacts/pip-audit.json"
  echo "==> Dependency audit (pip-audit $("$py" -m pip_audit --version | cut -d' ' -f2), PyPI vulnerability data)"
  # pip-audit exits 1 when it finds a vulnerability; the decision is made below, from its report.
  "$py" -m pip_audit --local --vulnerability-service pypi --format json --progress-spinner off \
    --timeout 30 --output "$report" || true
fi
[ -s "$report" ] || { echo "no pip-audit report at $report; see the output above" >&2; exit 2; }

"$py" - "$report" "$ignore_file" "${AUDIT_STRICT:-0}" "${AUDIT_OFFLINE:-0}" <<'PY'
"""Decide the audit from pip-audit's JSON report and the ignore file."""

import json
import re
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

report_path, ignore_path = Path(sys.argv[1]), Path(sys.argv[2])
strict, offline = sys.argv[3] == "1", sys.argv[4] == "1"
NOT_FOUND = "Dependency not found on PyPI"

ignored: dict[str, str] = {}
problems: list[str] = []
for number, raw in enumerate(ignore_path.read_text().splitlines() if ignore_path.exists() else [], start=1):
    line = raw.strip()
    if not line or line.startswith("#"):
        continue
    match = re.fullmatch(r"(\S+)\s+#\s*(\S.*)", line)
    if match is None:
        problems.append(f"{ignore_path}:{number}: needs `ID  # reason`, got {raw!r}")
        continue
    ignored[match.group(1)] = match.group(2)

dependencies = json.loads(report_path.read_text())["dependencies"]
found: list[tuple[str, str, dict]] = []
retry: list[dict] = []
for dep in dependencies:
    for vuln in dep.get("vulns", []):
        found.append((dep["name"], dep["version"], vuln))
    if NOT_FOUND in dep.get("skip_reason", ""):
        # A skipped entry carries its version only in the reason: "...: NAME (VERSION)".
        version = re.search(r"\(([^()]+)\)$", dep["skip_reason"])
        retry.append({**dep, "version": dep.get("version") or (version.group(1) if version else "?")})


def newest_release_data(dep: dict) -> tuple[dict, str]:
    """(dep, outcome): the vulnerabilities of the newest release, when that is the installed one."""
    url = f"https://pypi.org/pypi/{dep['name']}/json"
    if offline:
        return dep, "not looked up (AUDIT_OFFLINE=1)"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            data = json.load(response)
    except urllib.error.HTTPError as exc:
        return dep, "not on PyPI" if exc.code == 404 else f"PyPI answered {exc.code}"
    except (OSError, ValueError) as exc:
        return dep, f"PyPI unreachable ({type(exc).__name__})"
    newest = data.get("info", {}).get("version")
    if newest != dep["version"]:
        return dep, f"installed {dep['version']}, PyPI only reports on the newest release {newest}"
    for vuln in data.get("vulnerabilities") or []:
        found.append((dep["name"], dep["version"], {
            "id": vuln.get("id"), "aliases": vuln.get("aliases") or [], "fix_versions": vuln.get("fixed_in") or [],
            "description": vuln.get("details") or vuln.get("summary") or "",
        }))
    return dep, "checked"


unchecked: list[str] = []
checked_by_fallback = 0
if retry:
    with ThreadPoolExecutor(max_workers=8) as pool:
        for dep, outcome in pool.map(newest_release_data, retry):
            if outcome == "checked":
                checked_by_fallback += 1
            else:
                unchecked.append(f"{dep['name']} {dep['version']}: {outcome}")

failing, excused, used_ids = [], [], set()
for name, version, vuln in found:
    ids = [vuln["id"], *vuln.get("aliases", [])]
    reason = next((ignored[i] for i in ids if i in ignored), None)
    used_ids.update(i for i in ids if i in ignored)
    line = (f"{name} {version}: {vuln['id']} ({', '.join(vuln.get('aliases', [])) or 'no aliases'}); "
            f"fixed in {', '.join(vuln.get('fix_versions', [])) or 'no release yet'}")
    (excused if reason else failing).append(line + (f"  -- ignored: {reason}" if reason else ""))

total = len(dependencies)
print(f"audited {total - len(unchecked)} of {total} installed distributions "
      f"({total - len(retry)} by pip-audit, {checked_by_fallback} from the newest-release data)")
for line in excused:
    print(f"IGNORED  {line}")
for line in failing:
    print(f"VULNERABLE  {line}")
for entry in sorted(set(ignored) - used_ids):
    print(f"note: {ignore_path} entry {entry} matched nothing; remove it when it is no longer needed")
if unchecked:
    print(f"NOT CHECKED ({len(unchecked)}): no vulnerability data reachable for:")
    for line in unchecked:
        print(f"  {line}")
for problem in problems:
    print(f"ERROR  {problem}")
if failing or problems or (strict and unchecked) or len(unchecked) == total:
    why = ("vulnerabilities without a reason in " + str(ignore_path)) if failing else (
        "ignore file errors" if problems else "packages could not be checked")
    print(f"==> Dependency audit FAILED: {why}")
    sys.exit(1)
print(f"==> Dependency audit passed: {len(excused)} known vulnerabilities excused, none other found")
PY
