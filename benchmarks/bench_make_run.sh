#!/usr/bin/env bash
# Time `make run` from the command to a healthy app, at two revisions, interleaved, on this machine.
#
#   bash benchmarks/bench_make_run.sh [BEFORE_REV [AFTER_REV [ROUNDS]]]    (default: HEAD~1 HEAD 3)
#
# Each revision gets its own git worktree, its own copy of .venv (so neither revision's bootstrap
# reinstalls for the other's requirements stamp) and its own copy of .work (prepared data, converted
# model: a revision whose pipeline differs re-prepares its own copy, never this clone's), with
# ../shared beside the worktrees as beside the clone. What is timed is `make run` on a set-up machine:
# the bootstrap check, `core.data prepare --if-stale`, and Streamlit starting until /_stcore/health
# answers "ok". One untimed run per revision settles its venv stamp first. Prints the machine, then a
# table of median (min-max) seconds over the rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
before="${1:-HEAD~1}"
after="${2:-HEAD}"
rounds="${3:-3}"
root=$(mktemp -d /tmp/bench-make-run.XXXXXX)
ln -s "$(cd .. && pwd)/shared" "$root/shared"  # the data folder, where make run looks for it (../shared)
trap 'for d in "$root"/wt-*; do git worktree remove --force "$d" >/dev/null 2>&1 || true; done; rm -rf "$root"' EXIT

echo "command: bash benchmarks/bench_make_run.sh $before $after $rounds"
echo "machine: $(uname -m) · $(nproc) cores · $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) · load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"

declare -A dirs
for rev in "$before" "$after"; do
  sha=$(git rev-parse --short "$rev")
  dir="$root/wt-$sha"
  git worktree add --detach "$dir" "$rev" >/dev/null 2>&1
  cp -a .venv "$dir/.venv"
  cp -a .work "$dir/.work"
  dirs[$rev]="$dir"
  echo "revision $rev = $sha ($(git log -1 --format=%s "$rev" | cut -c1-80))"
done

start_once() {  # prints seconds from `make run` to health ok
  local dir="$1" port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  local t0; t0=$(date +%s.%N)
  (cd "$dir" && exec setsid make run PORT="$port" >"$dir/run.log" 2>&1) &
  local pid=$!
  until curl -fs "http://127.0.0.1:$port/_stcore/health" 2>/dev/null | grep -q ok; do
    if ! kill -0 "$pid" 2>/dev/null; then echo "make run exited early; log:" >&2; tail -20 "$dir/run.log" >&2; exit 1; fi
    sleep 0.1
  done
  local t1; t1=$(date +%s.%N)
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  python3 -c "print(f'{$t1 - $t0:.2f}')"
}

for rev in "$before" "$after"; do start_once "${dirs[$rev]}" >/dev/null; done  # settle the venv stamps
declare -A times
for ((r = 1; r <= rounds; r++)); do
  for rev in "$before" "$after"; do
    s=$(start_once "${dirs[$rev]}")
    times[$rev]="${times[$rev]:-} $s"
    echo "round $r $rev: $s s"
  done
done
echo
echo "| revision | make run -> healthy, s: median (min-max), n=$rounds |"
echo "|---|---|"
for rev in "$before" "$after"; do
  python3 - "$rev" ${times[$rev]} <<'EOF'
import statistics, sys
rev, values = sys.argv[1], [float(v) for v in sys.argv[2:]]
print(f"| {rev} | {statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f}) |")
EOF
done
