#!/usr/bin/env bash
# Partition scaling: the same NODES nodes and load against one Redis and against PARTITIONS Redis groups
# (`redis.partitions`), the publish rate pushed up RATES until the delivery p99 passes P99_LIMIT_MS (or a publish is
# refused, or an event is not delivered). Prints a table and writes the section "## Partition scaling
# (bench/partitions.sh)" of BENCHMARKS.md.
#
#   bench/partitions.sh                                   # 1 vs 3 groups, 3 nodes, 300 clients in 100 rooms
#   RATES="2000 4000" STEP_S=4 BENCH_MD=none bench/partitions.sh   # a quick check; BENCHMARKS.md untouched
#
# Each setup: a fresh main redis-server (records, registry; with one group also the events) plus PARTITIONS more for a
# partitioned run, NODES `tidings serve` in cluster mode, then per rate one `tidings bench` run: CLIENTS websocket
# clients over the nodes in ROOMS rooms, RATE events/s POSTed for STEP_S s (publish concurrency 64), each delivery
# timed, duplicates and order checked. CPU (utime+stime from /proc) of the Redis servers and of the nodes is read
# around every run: Redis µs per event tells where a single Redis would run out of its one core. Then the
# sequencing capacity alone: the publish script driven straight at 1 and at PARTITIONS redis-servers by
# redis-benchmark (see `sequencing` below), since on a small box the nodes and the load generator run out of CPU
# long before one Redis does.
# Environment: PARTITIONS (3), NODES (3), CLIENTS (300), ROOMS (100), RATES (4000 … 28000), STEP_S (8),
# P99_LIMIT_MS (100), SEQ_EVENTS (400000 per group), SEQ_CLIENTS (32), SEQ_PIPELINE (16), TIDINGS_BIN (default: release build), BENCH_MD ("none": leave BENCHMARKS.md alone), OUT (raw
# files, default ${TMPDIR:-/tmp}/tidings-partitions-<UTC time>). Loopback only; every process started is stopped
# by pid.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/kit.sh
. "$ROOT/bench/kit.sh"
PARTITIONS=${PARTITIONS:-3}
NODES=${NODES:-3}
CLIENTS=${CLIENTS:-300}
ROOMS=${ROOMS:-100}
RATES=${RATES:-4000 8000 12000 16000 20000 24000 28000}
STEP_S=${STEP_S:-8}
P99_LIMIT_MS=${P99_LIMIT_MS:-100}
SEQ_EVENTS=${SEQ_EVENTS:-400000}
SEQ_CLIENTS=${SEQ_CLIENTS:-32}
SEQ_PIPELINE=${SEQ_PIPELINE:-16}
BENCH_MD=${BENCH_MD:-$ROOT/BENCHMARKS.md}
OUT=${OUT:-${TMPDIR:-/tmp}/tidings-partitions-$(date -u +%Y%m%dT%H%M%S)}
TITLE="## Partition scaling (bench/partitions.sh)"

kit_build_tidings
mkdir -p "$OUT"
trap kit_stop_all EXIT
ulimit -n "$(ulimit -Hn)" 2> /dev/null || true

# Sum of utime+stime (clock ticks) of the given pids.
ticks() {
  local total=0 p
  for p in "$@"; do total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$total"
}

# run_setup GROUPS_OF_THIS_RUN: one setup, every rate until the limit; appends rows to $OUT/rows.jsonl.
run_setup() {
  local groups=$1 redis_pids=() node_pids=() urls=() partitions="" i
  kit_start_redis "$OUT/setup-$groups"
  local main=$REDIS_URL
  redis_pids+=("$REDIS_PID")
  if [ "$groups" -gt 1 ]; then
    for i in $(seq 1 "$groups"); do
      kit_start_redis "$OUT/setup-$groups"
      redis_pids+=("$REDIS_PID")
      partitions+="$REDIS_URL,"
    done
  fi
  for i in $(seq 1 "$NODES"); do
    local port
    port=$(kit_free_port)
    TIDINGS_REDIS_PARTITIONS=${partitions%,} "$TIDINGS_BIN" serve --listen "127.0.0.1:$port" --redis "$main" \
      > "$OUT/setup-$groups/node-$i.log" 2>&1 &
    node_pids+=("$!")
    KIT_PIDS+=("$!")
    urls+=("http://127.0.0.1:$port")
    kit_wait_http "http://127.0.0.1:$port/readyz"
  done
  local url_list
  url_list=$(IFS=,; echo "${urls[*]}")
  for rate in $RATES; do
    local r0 n0 r1 n1 busiest=0 before=() p
    r0=$(ticks "${redis_pids[@]}")
    n0=$(ticks "${node_pids[@]}")
    for p in "${redis_pids[@]}"; do before+=("$(ticks "$p")"); done
    echo "== $groups group(s), $rate events/s" >&2
    "$TIDINGS_BIN" bench --url "$url_list" --clients "$CLIENTS" --rooms "$ROOMS" --rate "$rate" \
      --duration "$STEP_S" --drain 3 --publish-concurrency 64 --min-delivered 0 --json -q \
      > "$OUT/setup-$groups/rate-$rate.json" 2> "$OUT/setup-$groups/rate-$rate.err" || true
    r1=$(ticks "${redis_pids[@]}")
    n1=$(ticks "${node_pids[@]}")
    i=0
    for p in "${redis_pids[@]}"; do
      local d=$(($(ticks "$p") - before[i]))
      [ "$d" -gt "$busiest" ] && busiest=$d
      i=$((i + 1))
    done
    python3 "$ROOT/bench/partitions_table.py" row "$OUT/setup-$groups/rate-$rate.json" \
      --groups "$groups" --rate "$rate" --redis-ticks $((r1 - r0)) --busiest-ticks "$busiest" \
      --node-ticks $((n1 - n0)) --tick-hz "$(getconf CLK_TCK)" --limit-ms "$P99_LIMIT_MS" \
      >> "$OUT/rows.jsonl"
    if tail -n 1 "$OUT/rows.jsonl" | grep -q '"within": false'; then break; fi
  done
  kit_stop_all
}

# sequencing GROUPS: the publish script alone (the one in src/cluster/broker.rs, loaded with SCRIPT LOAD), driven by
# one redis-benchmark per group at the same time (SEQ_CLIENTS connections, SEQ_PIPELINE deep, SEQ_EVENTS events
# each, one room of 100 per event, no subscribers): what the groups can number per second, with no node or client
# in the way. Appends one JSON row to $OUT/sequencing.jsonl.
sequencing() {
  local groups=$1 ports=() pids=() sha i
  kit_stop_all
  python3 - "$ROOT/src/cluster/broker.rs" > "$OUT/publish.lua" << 'PY'
import re, sys
print(re.search(r'const PUBLISH_LUA: &str = r#"(.*?)"#;', open(sys.argv[1]).read(), re.S).group(1))
PY
  for i in $(seq 1 "$groups"); do
    kit_start_redis "$OUT/sequencing-$groups"
    ports+=("${REDIS_URL##*:}")
    sha=$(redis-cli -p "${ports[-1]}" SCRIPT LOAD "$(cat "$OUT/publish.lua")")
  done
  local start end
  start=$(date +%s.%N)
  for i in "${!ports[@]}"; do
    redis-benchmark -h 127.0.0.1 -p "${ports[$i]}" -c "$SEQ_CLIENTS" -P "$SEQ_PIPELINE" -n "$SEQ_EVENTS" -r 100 \
      EVALSHA "$sha" 2 t:seq t:stream:__rand_int__ 1000 600000 1700000000000 0 1 0 '{"e":"x","d":{"t":1}}' \
      t:room:__rand_int__ 2> /dev/null | tr '\r' '\n' > "$OUT/sequencing-$groups/bench-$i.txt" &
    pids+=("$!")
  done
  wait "${pids[@]}"
  end=$(date +%s.%N)
  python3 "$ROOT/bench/partitions_table.py" sequencing --groups "$groups" --events "$((SEQ_EVENTS * groups))" \
    --seconds "$(echo "$end - $start" | bc)" "$OUT/sequencing-$groups"/bench-*.txt >> "$OUT/sequencing.jsonl"
  kit_stop_all
}

run_setup 1
run_setup "$PARTITIONS"
sequencing 1
sequencing "$PARTITIONS"
python3 "$ROOT/bench/partitions_table.py" table "$OUT/rows.jsonl" --limit-ms "$P99_LIMIT_MS" \
  --sequencing "$OUT/sequencing.jsonl" > "$OUT/summary.md"
cat "$OUT/summary.md"
if [ "$BENCH_MD" != none ]; then
  kit_write_section "$TITLE" "$OUT/summary.md" \
    "Command: \`PARTITIONS=$PARTITIONS NODES=$NODES CLIENTS=$CLIENTS ROOMS=$ROOMS STEP_S=$STEP_S bench/partitions.sh\`."
fi
