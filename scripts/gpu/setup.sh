#!/usr/bin/env bash
# On the GPU machine (device tool): assemble what the calls carried, idempotently.
#   .gpu/p1, .gpu/p2, .gpu/p3 (built by scripts/gpu/build_bundle.sh): the embedded GGUF in three parts,
#   the extra Python packages (site.tar.xz) and the prepared data with its reference index
#   (data.tar.xz of .work/data), copied to /root/stash and unpacked. Each device call carries one
#   folder (64 MiB limit), so three calls run back to back while the machine is warm, e.g.
#     bash scripts/gpu/setup.sh            (carry [".gpu/p1"]), then [".gpu/p2"], then [".gpu/p3"]
# Then: export PYTHONPATH=/tmp/site
set -euo pipefail
stash=/root/stash
gguf=$stash/SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p "$stash"
for part in .gpu/p1 .gpu/p2 .gpu/p3; do
  if [ -d "$part" ]; then cp -rn "$part"/* "$stash"/; fi
done
if [ ! -f "$gguf" ] && [ -f "$stash/gguf.part1" ] && [ -f "$stash/gguf.part2" ] && [ -f "$stash/gguf.part3" ]; then
  cat "$stash/gguf.part1" "$stash/gguf.part2" "$stash/gguf.part3" > "$gguf.tmp"
  echo "$(cat "$stash/gguf.sha256")  $gguf.tmp" | sha256sum -c --quiet && mv "$gguf.tmp" "$gguf"
fi
if [ ! -d /tmp/site/trl ] && [ -f "$stash/site.tar.xz" ]; then tar -C /tmp -xJf "$stash/site.tar.xz"; fi
if [ ! -f .work/data/manifest.json ] && [ -f "$stash/data.tar.xz" ]; then mkdir -p .work && tar -C .work -xJf "$stash/data.tar.xz"; fi
ls -la "$stash"
[ -f "$gguf" ] && echo "GGUF ready: $gguf" || echo "GGUF not complete yet"
