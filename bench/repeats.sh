#!/usr/bin/env bash
# The cases whose single runs swing most on 2 shared cores, run RUNS times each with the peers' order rotated from
# run to run, so that no peer always goes first (or last) after the same neighbour. Prints a table of every run and
# the medians, and writes the section "## Repeated runs: medians (bench/repeats.sh)" of BENCHMARKS.md.
#
#   bench/repeats.sh                     # RUNS=3 of: C single node, A on 2 nodes + Redis, D single and 2-node
#   RUNS=2 SETS="C-single D-single" bench/repeats.sh
#
# Sets (SETS, in this order by default):
#   C-single   case C, one process per peer: rawlimit-sio tidings socketioxide (bench/side-by-side.sh's kit script)
#   A-cluster  case A, 2 nodes + Redis: tidings socketioxide
#   C-cluster  case C, 2 nodes + Redis: tidings socketioxide, and the floor on two processes (bench/floor-pair.sh:
#              two rawlimit processes without Redis, one publisher each, the same deliveries); not in the default
#              sets: bench/run.sh runs it with C-cluster-cadence as its own part (c2)
#   C-cluster-cadence  case C, 2 nodes + Redis: tidings alone, with engine.write_interval_max_ms = $CADENCE_MAX_MS
#              (300; not in the default sets: the widening write cadence is off by default)
#   D-single   case D, 990 rooms x 20: rawlimit-sio tidings socketioxide (bench/rooms.sh)
#   D-cluster  case D, 1000 rooms x 20, 2 nodes + Redis: tidings socketioxide (bench/rooms.sh)
# Socket.IO on Node is left out of the repeats: it is an order of magnitude behind in the single runs.
#
# Environment: RUNS (3), SETS, TOOLS, SCRATCH (bench/kit.sh), TIDINGS_BIN, OUT (raw results, default
#   /tmp/tidings-repeats-<UTC time>; one directory per set and run), BENCH_MD (BENCHMARKS.md; "none" = do not write),
#   SECTION (the heading of the section written), CADENCE_MAX_MS (300).
# Loopback only; every process is started and stopped by pid by the scripts it calls.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/kit.sh
. "$ROOT/bench/kit.sh"
RUNS=${RUNS:-3}
SETS=${SETS:-C-single A-cluster D-single D-cluster}
OUT=${OUT:-${TMPDIR:-/tmp}/tidings-repeats-$(date -u +%Y%m%dT%H%M%S)}
BENCH_MD=${BENCH_MD:-$ROOT/BENCHMARKS.md}
SECTION=${SECTION:-## Repeated runs: medians (bench/repeats.sh)}
CADENCE_MAX_MS=${CADENCE_MAX_MS:-300}

kit_build_tidings
kit_prepare
ulimit -n "$(ulimit -Hn)" 2> /dev/null || true
mkdir -p "$OUT"

# rotate N WORD...: the words starting at the N-th (0-based, modulo their count), wrapping around.
rotate() {
  local n=$1
  shift
  local words=("$@") i out=()
  for ((i = 0; i < ${#words[@]}; i++)); do out+=("${words[(i + n) % ${#words[@]}]}"); done
  echo "${out[*]}"
}

# One run of a set: run_case SET "PEERS IN ORDER" OUT_DIR (log in OUT_DIR.log).
run_case() {
  local set=$1 order=$2 dir=$3
  case $set in
    C-single) (cd "$SCRATCH" && PEERS="$order" CASES=C bash scripts/e2e-single.sh "$dir") > "$dir.log" 2>&1 ;;
    A-cluster) (cd "$SCRATCH" && PEERS="$order" CASES=A bash scripts/e2e-peers.sh "$dir") > "$dir.log" 2>&1 ;;
    C-cluster)
      # The floor pair runs where it falls in the order; the kit's peers next to each other share one call (each
      # call starts its own Redis with a pid file in the directory, which must not be a previous call's).
      : > "$dir.log"
      local peer kit_peers=""
      for peer in $order rawlimit-pair; do
        if [ "$peer" != rawlimit-pair ]; then
          kit_peers="$kit_peers $peer"
          continue
        fi
        if [ -n "$kit_peers" ]; then
          rm -f "$dir/redis.pid"
          (cd "$SCRATCH" && PEERS="$kit_peers" CASES=C bash scripts/e2e-peers.sh "$dir") >> "$dir.log" 2>&1 || return 1
          kit_peers=""
        fi
        [ -f "$dir/floor-pair.jsonl" ] || "$ROOT/bench/floor-pair.sh" "$dir" >> "$dir.log" 2>&1 || return 1
      done
      ;;
    C-cluster-cadence)
      mkdir -p "$dir"
      printf '[engine]\nwrite_interval_max_ms = %s\n' "$CADENCE_MAX_MS" > "$dir.toml"
      cat "$ROOT/bench/loopback-limits.toml" >> "$dir.toml"
      (cd "$SCRATCH" && TIDINGS_CONFIG="$dir.toml" PEERS="$order" CASES=C bash scripts/e2e-peers.sh "$dir") \
        > "$dir.log" 2>&1
      ;;
    D-single) OUT=$dir MODE=single PEERS="$order" ROOMS=990 BENCH_MD=none "$ROOT/bench/rooms.sh" > "$dir.log" 2>&1 ;;
    D-cluster) OUT=$dir MODE=cluster PEERS="$order" ROOMS=1000 BENCH_MD=none "$ROOT/bench/rooms.sh" > "$dir.log" 2>&1 ;;
  esac
}

for set in $SETS; do
  case $set in
    C-single) peers=(rawlimit-sio tidings socketioxide) ;;
    D-single) peers=(rawlimit-sio tidings socketioxide) ;;
    C-cluster) peers=(rawlimit-pair tidings socketioxide) ;;
    A-cluster | D-cluster) peers=(tidings socketioxide) ;;
    C-cluster-cadence) peers=(tidings) ;;
    *) echo "bench/repeats.sh: unknown set $set" >&2; exit 2 ;;
  esac
  for ((run = 1; run <= RUNS; run++)); do
    order=$(rotate $((run - 1)) "${peers[@]}")
    dir=$OUT/$set-run$run
    echo "==== $set run $run/$RUNS: $order ($(date -u +%H:%M:%S) UTC)"
    echo "$order" > "$dir.order"
    if ! run_case "$set" "$order" "$dir"; then
      # A peer's port can still be held by the previous peer's process while it exits; one retry.
      echo "==== $set run $run failed (log kept as $dir.failed.log); running it again"
      mv "$dir.log" "$dir.failed.log"
      rm -rf "$dir"
      sleep 5
      run_case "$set" "$order" "$dir"
    fi
  done
done

python3 "$ROOT/bench/repeats.py" "$OUT" > "$OUT/summary.md"
cat "$OUT/summary.md"
[ "$BENCH_MD" = none ] || kit_write_section "$SECTION" "$OUT/summary.md" \
  "Command: \`RUNS=$RUNS SETS=\"$SETS\" CADENCE_MAX_MS=$CADENCE_MAX_MS bench/repeats.sh\` (raw results stay on the measuring machine)."
