#!/usr/bin/env bash
# On the GPU machine (device tool), after setup.sh has assembled .gpu/p1..p3: train the shipped recipe
# and evaluate it with and without references; everything comes back as one archive under $OUT.
#
#   bash scripts/gpu/train_shipped.sh train      # ~3 min on an H100/H200: configs/smollm2_medcot_shipped.yaml
#   bash scripts/gpu/train_shipped.sh evaluate   # base, adapter, base + references, adapter + references
#   bash scripts/gpu/train_shipped.sh pack       # $OUT/shipped.tar.gz: adapter/, eval.*, logs
#
# Each step can be its own device call on the same warm machine (the run folder stays in .work); the
# evaluation caches each model's results (trainer.evaluate), so a call cut off at its limit resumes.
set -uo pipefail
what=${1:?train, evaluate or pack}
OUT=${OUT:-/tmp/out}
RUN=${RUN:-.work/runs/smollm2-medcot-shipped}
gguf=/root/stash/SmolLM2-135M-Instruct.Q4_1.gguf
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# bm25s imports JAX when it is installed (the GPU image has it), and JAX then takes 75% of the GPU's
# memory up front: the first training run here died out of memory with 60 GB held that way.
export JAX_PLATFORMS=cpu XLA_PYTHON_CLIENT_PREALLOCATE=false
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu-$what.txt" 2>&1
cat "$OUT/gpu-$what.txt"
case "$what" in
  train)
    python3 -m trainer --config configs/smollm2_medcot_shipped.yaml --model_name "$gguf" --output_dir "$RUN" \
      > "$OUT/train.log" 2>&1
    echo "trainer exit $?"
    tail -25 "$OUT/train.log"
    ;;
  evaluate)
    timeout "${EVAL_S:-560}" python3 -m trainer.evaluate --adapter "$RUN/adapter" --base "$gguf" --references \
      ${MODELS:+--models "$MODELS"} > "$OUT/evaluate.log" 2>&1
    echo "evaluate exit $?"
    tail -40 "$OUT/evaluate.log"
    ;;
  pack)
    tar -C "$RUN" -czf "$OUT/shipped.tar.gz" --exclude 'checkpoint-*' .
    ls -la "$OUT"
    ;;
esac
