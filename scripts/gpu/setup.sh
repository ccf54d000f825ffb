#!/usr/bin/env bash
# On the GPU machine (device tool): assemble what the calls carried, idempotently.
#   - .gpu/p1, .gpu/p2: the embedded GGUF in two parts, the extra Python packages (site.tar.xz:
#     trl, datasets, bitsandbytes trimmed to its CUDA 13 kernels, gguf, rouge-score, pytest, ...)
#     and the prepared data (data.tar.xz of .work/data), copied to /root/stash and unpacked.
# Each device call carries one folder (64 MiB limit), so the calls run back to back while the
# machine is warm. Usage: bash scripts/gpu/setup.sh && export PYTHONPATH=/tmp/site
set -euo pipefail
stash=/root/stash
gguf=$stash/SmolLM2-135M-Instruct.Q4_1.gguf
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
mkdir -p "$stash"
for part in .gpu/p1 .gpu/p2; do
  if [ -d "$part" ]; then cp -n "$part"/* "$stash"/; fi
done
if [ ! -f "$gguf" ] && [ -f "$stash/gguf.part1" ] && [ -f "$stash/gguf.part2" ]; then
  cat "$stash/gguf.part1" "$stash/gguf.part2" > "$gguf.tmp"
  echo "$sha  $gguf.tmp" | sha256sum -c --quiet && mv "$gguf.tmp" "$gguf"
fi
if [ ! -d /tmp/site ] && [ -f "$stash/site.tar.xz" ]; then tar -C /tmp -xJf "$stash/site.tar.xz"; fi
if [ ! -d .work/data ] && [ -f "$stash/data.tar.xz" ]; then mkdir -p .work && tar -C .work -xJf "$stash/data.tar.xz"; fi
ls -la "$stash"
[ -f "$gguf" ] && echo "GGUF ready: $gguf" || echo "GGUF not complete yet"
