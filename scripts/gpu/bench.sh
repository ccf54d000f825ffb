#!/usr/bin/env bash
# On the GPU machine (device tool): run the training or the generation benchmark, outputs under $OUT.
#
#   bash scripts/gpu/bench.sh training     # carry .gpu/bench (site.tar.xz, data.tar.xz, tok/)
#   bash scripts/gpu/bench.sh generation   # next call, same warm machine (or a fresh one: it unpacks again)
#   bash scripts/gpu/bench.sh ddp          # on nvidia-h100-x2: 1 process vs 2 DDP processes, same recipe
#
# .gpu/bench holds the extra Python packages (site.tar.xz: trl, datasets, bitsandbytes with its CUDA 13
# kernels, liger-kernel, ...), the prepared data (data.tar.xz of .work/data) and the embedded model's
# tokenizer files (tok/): about 17 MB, so one call carries it. The models are architectures built in
# code with random weights (benchmarks/archs.py), so the 98 MB GGUF is not needed.
# Environment: TRAIN_S / TRAIN_BUDGET_S (hard timeout / no new recipe after), STEPS, RECIPES, ARCHS, GEN_S, RUNS.
set -uo pipefail
what=${1:?training, ddp or generation}
B=${BENCH_DIR:-.gpu/bench}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
[ -d /tmp/site/trl ] || tar -C /tmp -xJf "$B/site.tar.xz"
[ -f .work/data/train.jsonl ] || { mkdir -p .work && tar -C .work -xJf "$B/data.tar.xz"; }
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$OUT/gpu-$what.txt" 2>&1
cat "$OUT/gpu-$what.txt"
case "$what" in
  training)
    timeout "${TRAIN_S:-420}" python3 -m benchmarks.bench_training --tokenizer "$B/tok" --scratch /tmp/bench \
      --steps "${STEPS:-16}" --budget-s "${TRAIN_BUDGET_S:-360}" --out "$OUT/training" \
      ${RECIPES:+--recipes "$RECIPES"} ${ARCHS:+--archs "$ARCHS"} > "$OUT/training.out" 2> "$OUT/training.err"
    echo "bench_training exit $?"
    grep '^# ' "$OUT/training.err" | tail -20
    cat "$OUT/training.out"
    ;;
  ddp)  # on a two-GPU machine: the same recipe as 1 process and as 2 DDP processes (torchrun)
    for n in 1 2; do
      timeout "${TRAIN_S:-420}" python3 -m benchmarks.bench_training --tokenizer "$B/tok" --scratch /tmp/bench \
        --archs "${ARCHS:-llama-1b}" --recipes "${RECIPES:-ours-bf16}" --steps "${STEPS:-16}" --processes "$n" \
        --out "$OUT/ddp-$n" > "$OUT/ddp-$n.out" 2> "$OUT/ddp-$n.err"
      echo "bench_training --processes $n exit $?"
      grep '^|' "$OUT/ddp-$n.out"
    done
    ;;
  generation)
    timeout "${GEN_S:-75}" python3 -m benchmarks.bench_generation --device cuda --runs "${RUNS:-3}" \
      --tokenizer "$B/tok" > "$OUT/generation.out" 2> "$OUT/generation.err"
    echo "bench_generation exit $?"
    grep '^# ' "$OUT/generation.err" | tail -20
    grep -v '^# ' "$OUT/generation.err" | tail -15
    cat "$OUT/generation.out"
    ;;
  *) echo "unknown: $what (training, ddp or generation)" >&2; exit 2 ;;
esac
