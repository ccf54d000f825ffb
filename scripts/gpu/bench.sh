#!/usr/bin/env bash
# On the GPU machine (device tool): run the training or the generation benchmark, outputs under $OUT.
#
#   bash scripts/gpu/bench.sh training     # carry .gpu/bench (site.tar.xz, data.tar.xz, tok/)
#   bash scripts/gpu/bench.sh generation   # next call, same warm machine (or a fresh one: it unpacks again)
#   bash scripts/gpu/bench.sh ddp          # on nvidia-h100-x2: 1 process vs 2 DDP processes, same recipe
#   bash scripts/gpu/bench.sh sweep        # on nvidia-h100-x2: two recipe lists at once, one per GPU
#   bash scripts/gpu/bench.sh gputests     # the CUDA tests (pytest -m gpu: the trainer and the compiled decoder step)
#   bash scripts/gpu/bench.sh seedjob      # the seed-size job end to end (benchmarks/seed_job.py): RECIPE, ARCH, JOB_S
#
# .gpu/bench holds the extra Python packages (site.tar.xz: trl, datasets, bitsandbytes with its CUDA 13
# kernels, liger-kernel, ...), the prepared data (data.tar.xz of .work/data) and the embedded model's
# tokenizer files (tok/): about 17 MB, so one call carries it. The models are architectures built in
# code with random weights (benchmarks/archs.py), so the 98 MB GGUF is not needed.
# Environment: TRAIN_S / TRAIN_BUDGET_S (hard timeout / no new recipe after), STEPS, RECIPES, ARCHS, GEN_S, RUNS,
# PROFILE=all or a recipe list (training, sweep: --profile, where two steady steps' time goes);
# sweep: RECIPES0 / ARCHS0 (GPU 0) and RECIPES1 / ARCHS1 (GPU 1), with STEPS, TRAIN_S, TRAIN_BUDGET_S; TESTS_S.
set -uo pipefail
what=${1:?training, ddp, sweep, gputests, seedjob or generation}
B=${BENCH_DIR:-.gpu/bench}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
[ -d /tmp/site/trl ] || tar -C /tmp -xJf "$B/site.tar.xz"
[ -f .work/data/train.jsonl ] || { mkdir -p .work && tar -C .work -xJf "$B/data.tar.xz"; }
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
# bm25s imports JAX when present, and JAX would take 75% of the GPU's memory up front (train_shipped.sh).
export JAX_PLATFORMS=cpu XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$OUT/gpu-$what.txt" 2>&1
cat "$OUT/gpu-$what.txt"
case "$what" in
  training)
    timeout "${TRAIN_S:-420}" python3 -m benchmarks.bench_training --tokenizer "$B/tok" --scratch /tmp/bench \
      --steps "${STEPS:-16}" --budget-s "${TRAIN_BUDGET_S:-360}" --out "$OUT/training" \
      ${RECIPES:+--recipes "$RECIPES"} ${ARCHS:+--archs "$ARCHS"} ${PROFILE:+--profile "$PROFILE"} > "$OUT/training.out" 2> "$OUT/training.err"
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
  sweep)  # on a two-GPU machine: one bench_training per GPU at once, each with its own list, scratch and output.
    # TRAIN_S (500 s): SIGTERM, which ends the running recipe gracefully (it saves and is reported), then
    # SIGKILL 20 s later; with ~40 s of unpacking that fits a 600 s call. No recipe starts after TRAIN_BUDGET_S.
    # GPU 0 runs the seed and the NF4 recipes (so the ratio to the seed is same card, same run), GPU 1 the bf16 ones.
    recipes0=${RECIPES0:-seed,ours-nf4,ours-nf4-b32,ours-nf4-dropout0}
    recipes1=${RECIPES1:-ours-bf16,ours-bf16-b32,ours-bf16-fast,ours-bf16-compile,ours-bf16-packed}
    pids=()
    for gpu in 0 1; do
      if [ "$gpu" = 0 ]; then recipes=$recipes0 archs=${ARCHS0:-llama-1b}; else recipes=$recipes1 archs=${ARCHS1:-llama-1b}; fi
      CUDA_VISIBLE_DEVICES=$gpu timeout -k 20 "${TRAIN_S:-500}" python3 -m benchmarks.bench_training --tokenizer "$B/tok" \
        --scratch "/tmp/bench-$gpu" --steps "${STEPS:-16}" --budget-s "${TRAIN_BUDGET_S:-400}" --out "$OUT/sweep-$gpu" \
        --archs "$archs" --recipes "$recipes" ${PROFILE:+--profile "$PROFILE"} > "$OUT/sweep-$gpu.out" 2> "$OUT/sweep-$gpu.err" &
      pids+=($!)
    done
    for gpu in 0 1; do
      wait "${pids[$gpu]}"
      echo "bench_training on GPU $gpu exit $?"
    done
    for gpu in 0 1; do
      echo "== GPU $gpu"
      grep '^# ' "$OUT/sweep-$gpu.err" | tail -20
      # Killed by the timeout: the tables written after each finished recipe are in bench_training.md.
      if grep -q '^| recipe |' "$OUT/sweep-$gpu.out"; then cat "$OUT/sweep-$gpu.out"; else cat "$OUT/sweep-$gpu/bench_training.md"; fi
    done
    ;;
  gputests)  # the CUDA tests (skipped on the CPU machine): fp16 seed recipe, NF4, packing with flex_attention, the compiled decoder step
    timeout "${TESTS_S:-420}" python3 -m pytest -m gpu -q -p no:cacheprovider ${TEST_PATHS:-tests/trainer tests/core/test_decoder.py} > "$OUT/gputests.out" 2>&1
    echo "pytest -m gpu exit $?"
    tail -40 "$OUT/gputests.out"
    ;;
  seedjob)  # command -> saved adapter for the seed's 5.88 M tokens (issue 21 target: <= 3 min on one H100)
    timeout "${JOB_S:-420}" python3 -m benchmarks.seed_job --tokenizer "$B/tok" --scratch /tmp/seed-job \
      --recipe "${RECIPE:-ours-bf16-pf}" --arch "${ARCH:-llama-1b}" --out "$OUT/seedjob" > "$OUT/seedjob.out" 2>&1
    echo "seed_job exit $?"
    grep -v '^\[trainer\]\|^{' "$OUT/seedjob.out" | tail -20
    ;;
  generation)
    timeout "${GEN_S:-75}" python3 -m benchmarks.bench_generation --device cuda --runs "${RUNS:-3}" \
      --tokenizer "$B/tok" > "$OUT/generation.out" 2> "$OUT/generation.err"
    echo "bench_generation exit $?"
    grep '^# ' "$OUT/generation.err" | tail -20
    grep -v '^# ' "$OUT/generation.err" | tail -15
    cat "$OUT/generation.out"
    ;;
  *) echo "unknown: $what (training, ddp, sweep, gputests, seedjob or generation)" >&2; exit 2 ;;
esac
