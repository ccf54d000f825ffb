#!/usr/bin/env bash
# On the GPU machine (device tool): Unsloth side by side with the seed's and our recipes, and the flash-attn-4 check
# (issue 21). Build the bundles first on the CPU machine: scripts/gpu/build_bundle.sh, then build_unsloth_bundle.sh.
#
#   bash scripts/gpu/unsloth.sh bench     # carry .gpu/bench: seed, unsloth-*, ours-* in one bench_training run
#   bash scripts/gpu/unsloth.sh fa4a      # carry .gpu/fa4a: stash the first half of the flash-attn-4 wheel set
#   bash scripts/gpu/unsloth.sh fa4       # next call, same warm machine, carry .gpu/fa4b: install it, check it,
#                                         # time its varlen kernel against FlexAttention (benchmarks.attention_kernels)
#
# Everything comes back in at most 8 files: the tables (training.out), the GPU, and one archive of every run's
# metrics.jsonl, child logs and stderr (training.tar.gz). Environment: STEPS (16), RECIPES, ARCHS (llama-1b),
# TRAIN_S (hard timeout, 540), TRAIN_BUDGET_S (no new recipe after, 450), UNSLOTH_S (one Unsloth child, 300), PROFILE (recipes to profile);
# fa4: FA4_S (300), FA4_IMPLS (the model check's attn_implementation list, e.g. flash_attention_4).
set -uo pipefail
what=${1:?bench, fa4a or fa4}
B=${BENCH_DIR:-.gpu/bench}
OUT=${OUT:-/tmp/out}
stash=/root/stash
mkdir -p "$OUT" "$stash"
# bm25s imports JAX when present, and JAX would take 75% of the GPU's memory up front (train_shipped.sh).
export JAX_PLATFORMS=cpu XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$OUT/gpu-$what.txt" 2>&1
cat "$OUT/gpu-$what.txt"
case "$what" in
  bench)
    [ -d /tmp/site/trl ] || tar -C /tmp -xJf "$B/site.tar.xz"
    [ -d /tmp/site-unsloth/unsloth ] || tar -C /tmp -xJf "$B/site-unsloth.tar.xz"
    [ -f .work/data/train.jsonl ] || { mkdir -p .work && tar -C .work -xJf "$B/data.tar.xz"; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    res=/tmp/bench-out
    rm -rf "$res" && mkdir -p "$res"
    timeout -k 20 "${TRAIN_S:-540}" python3 -m benchmarks.bench_training --tokenizer "$B/tok" --scratch /tmp/bench \
      --steps "${STEPS:-16}" --budget-s "${TRAIN_BUDGET_S:-450}" --out "$res" --unsloth-site /tmp/site-unsloth \
      --unsloth-timeout-s "${UNSLOTH_S:-300}" --archs "${ARCHS:-llama-1b}" ${PROFILE:+--profile "$PROFILE"} \
      --recipes "${RECIPES:-seed,unsloth-nf4,unsloth-bf16,ours-nf4-fast,ours-bf16-compile}" \
      > "$OUT/training.out" 2> "$res/training.err"
    echo "bench_training exit $?"
    cp /tmp/bench/runs/*.spec.json "$res/" 2>/dev/null
    tar -C /tmp -czf "$OUT/training.tar.gz" bench-out
    grep '^# ' "$res/training.err" | tail -20
    # Killed by the timeout: the tables written after each finished recipe are in bench_training.md.
    if grep -q '^| architecture |' "$OUT/training.out"; then grep -v '^\[trainer\]\|^{' "$OUT/training.out"
    else cat "$res/bench_training.md"; fi
    ;;
  fa4a)
    cp .gpu/fa4a/* "$stash"/ && ls -la "$stash"
    ;;
  fa4)
    cp .gpu/fa4b/* "$stash"/
    cat "$stash"/fa4.tar.part* > /tmp/fa4.tar
    echo "$(cat "$stash/fa4.tar.sha256")  /tmp/fa4.tar" | sha256sum -c || exit 1
    mkdir -p /tmp/fa4w && tar -C /tmp/fa4w -xf /tmp/fa4.tar && ls -la /tmp/fa4w
    # Unzipped one into the other, not `pip install --target`: the CUTE-DSL wheels share the nvidia_cutlass_dsl/ folder
    # and pip --target keeps only the first wheel's copy of a folder that exists already (seen on 2026-12-06). The
    # .pth file that puts dsl_packages/ on sys.path is not read from a --target folder either: PYTHONPATH names it.
    rm -rf /tmp/site-fa4 && mkdir -p /tmp/site-fa4
    for w in /tmp/fa4w/*.whl; do python3 -m zipfile -e "$w" /tmp/site-fa4 || exit 1; done
    ls /tmp/site-fa4 > "$OUT/fa4-install.txt"
    PYTHONPATH=/tmp/site-fa4:/tmp/site-fa4/nvidia_cutlass_dsl/dsl_packages timeout "${FA4_S:-300}" \
      python3 -m benchmarks.attention_kernels ${FA4_IMPLS:+--impls "$FA4_IMPLS"} > "$OUT/fa4.out" 2>&1
    echo "attention_kernels exit $?"
    cat "$OUT/fa4.out" | grep -v '^W1\|Warning' | tail -60
    ;;
  *) echo "unknown: $what (bench, fa4a or fa4)" >&2; exit 2 ;;
esac
