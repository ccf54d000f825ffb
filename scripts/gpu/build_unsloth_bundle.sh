#!/usr/bin/env bash
# Build, on this (CPU) machine, the Unsloth bundle the GPU machine needs for the unsloth-* training recipes (issue 21).
#
#   bash scripts/gpu/build_unsloth_bundle.sh         # after scripts/gpu/build_bundle.sh (needs .venv)
#
# Writes .gpu/bench/site-unsloth.tar.xz (about 9 MB, so .gpu/bench still fits one call): unsloth and unsloth_zoo
# 2026.10.9 with the versions they pin where the project's bundle has others -- TRL 1.15.0 (unsloth: trl<=1.15.0;
# the project runs 1.16.0) and datasets 4.8.5 (unsloth: datasets<5; the project runs 5.2.0) -- and what they import
# that the GPU image lacks: torchao, cut_cross_entropy, xformers, tyro (+ docstring-parser, typeguard, shtab),
# msgspec, hf_transfer, json5, structlog, nest_asyncio. scripts/gpu/bench.sh unpacks it to /tmp/site-unsloth,
# which bench_training puts first on the PYTHONPATH of the unsloth-* child processes only, so our recipes keep
# TRL 1.16 and datasets 5.2 in the same call. Unsloth's web UI ("studio", 82 MB) and its CLI are left out.
#
# Also writes .gpu/fa4a and .gpu/fa4b (flash-attn-4 4.0.0b40 and its CUTE-DSL runtime: one tar split in two) for two
# back-to-back calls: the cu13 runtime wheel alone is 92 MB, over one call's 64 MiB. The DSL's Python front end
# (cutlass.cute) is the separate wheel nvidia-cutlass-dsl-libs-core, which nvidia-cutlass-dsl-libs-base requires:
# the 2026-12-06 run carried the set without it and failed at `import cutlass.cute` (docs/BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
py=.venv/bin/python
out=.gpu
wheels=$out/wheels-unsloth
mkdir -p "$wheels" "$out/bench"
platforms=()
for p in manylinux_2_35_x86_64 manylinux_2_34_x86_64 manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
  manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
download() {
  "$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --abi cp312 --abi abi3 --abi none "${platforms[@]}" --platform any "$@" 2>&1 \
    | grep -v '^WARNING: Location' || true
}
packages=(unsloth==2026.10.9 unsloth_zoo==2026.10.9 trl==1.15.0 datasets==4.8.5 torchao==0.18.0 cut_cross_entropy==25.1.1
  xformers==0.0.35 tyro==1.0.17 docstring-parser==0.18.0 typeguard==4.6.1 shtab==1.13.0 msgspec==0.23.0
  hf_transfer==0.1.9 json5==0.17.3 structlog==26.1.0 nest_asyncio==1.6.0)
download -d "$wheels" "${packages[@]}"

site=$out/site-unsloth
rm -rf "$site" && mkdir -p "$site"
"$py" -m pip install -q --disable-pip-version-check --no-deps --no-compile --target "$site/site-unsloth" \
  --python-version 3.12 --implementation cp --only-binary=:all: "${platforms[@]}" --platform any "$wheels"/*.whl
rm -rf "$site/site-unsloth/studio" "$site/site-unsloth/unsloth_cli" "$site/site-unsloth/bin"
tar -C "$site" -cJf "$out/bench/site-unsloth.tar.xz" site-unsloth

# flash-attn-4 (issue 21, lever 2): the wheel set, split so that each part rides one call.
fa4=$out/fa4-wheels
mkdir -p "$fa4"
"$py" -m pip download -q --disable-pip-version-check --pre --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --abi cp312 --abi abi3 --abi none "${platforms[@]}" --platform any -d "$fa4" \
  flash-attn-4==4.0.0b40 nvidia-cutlass-dsl==4.8.1 nvidia-cutlass-dsl-libs-base==4.8.1 nvidia-cutlass-dsl-libs-cu13==4.8.1 \
  nvidia-cutlass-dsl-libs-core==4.8.1 \
  apache-tvm-ffi==0.1.15.post2 torch-c-dlpack-ext==0.1.5 quack-kernels==0.6.5 2>&1 | grep -v '^WARNING: Location' || true
rm -rf "$out/fa4a" "$out/fa4b" && mkdir -p "$out/fa4a" "$out/fa4b"
tar -C "$fa4" -cf "$out/fa4.tar" .
split -b 48M -d "$out/fa4.tar" "$out/fa4.tar.part"
mv "$out/fa4.tar.part00" "$out/fa4a/" && mv "$out/fa4.tar.part01" "$out/fa4b/"
for extra in "$out"/fa4.tar.part*; do [ -e "$extra" ] && mv "$extra" "$out/fa4b/"; done
sha256sum "$out/fa4.tar" | cut -d' ' -f1 > "$out/fa4b/fa4.tar.sha256"
rm -f "$out/fa4.tar"
du -sh "$out/bench" "$out/bench/site-unsloth.tar.xz" "$out/fa4a" "$out/fa4b"
