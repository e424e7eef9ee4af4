#!/usr/bin/env bash
# Benchmark case E, team tracking, side by side: W workers publish positions from their own connections at R/s
# into T team rooms, each watched by K managers (`tidings bench tracking`, which speaks only the `subscribe` and
# `publish` client events, so the kit's Socket.IO and socketioxide peers take the same load with --no-auth).
#   (a)  every position to every manager: tidings (ephemeral rooms `pos:*`, and durable rooms `dpos:*` with
#        history and offsets), Socket.IO on Node, socketioxide;
#   (b)  tidings only: the same with 1 s conflation by worker (`cpos:*`): managers get each worker's latest.
# Single node, and 2 nodes + Redis (a fresh redis-server per run). Server CPU is read from /proc for the node
# processes (and Redis) over each run. Writes the section "## Case E: team tracking (bench/tracking.sh)".
#
#   bench/tracking.sh                              # W=10000 T=500 K=2 R=2 DURATION=20, both modes, all peers
#   PEERS="tidings" MODES=single W=1000 T=50 bench/tracking.sh --no-write
#
# Environment: TOOLS, SCRATCH (see bench/kit.sh), PEERS, MODES, W, T, K, R, DURATION, SOURCE_IPS, OUT.
# Loopback only; every process it starts is stopped by pid.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/kit.sh
. "$ROOT/bench/kit.sh"
export TIDINGS_CONFIG=$ROOT/bench/tracking.toml
PEERS=${PEERS:-tidings socketioxide socketio}
MODES=${MODES:-single cluster}
W=${W:-10000}
T=${T:-500}
K=${K:-2}
R=${R:-2}
DURATION=${DURATION:-20}
SOURCE_IPS=${SOURCE_IPS:-8}
OUT=${OUT:-${TMPDIR:-/tmp}/tidings-tracking-$(date -u +%Y%m%dT%H%M%S)}
WRITE=1
[ "${1:-}" = --no-write ] && WRITE=0
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: > "$RESULTS"

trap kit_stop_all EXIT

kit_build_tidings
# The peers, from a writable copy of the kit: socketioxide built there, Socket.IO's packages installed there.
if [ ! -d "$SCRATCH/peers" ]; then
  mkdir -p "$SCRATCH"
  cp -r "$TOOLS"/. "$SCRATCH"/
  chmod -R u+w "$SCRATCH"
fi
if [[ " $PEERS " == *" socketioxide "* ]] && [ ! -x "$SCRATCH/peers/socketioxide/target/release/socketioxide-peer" ]; then
  echo "== building the socketioxide peer" >&2
  (cd "$SCRATCH/peers/socketioxide" && cargo build --release --quiet)
fi
if [[ " $PEERS " == *" socketio "* ]] && [ ! -d "$SCRATCH/peers/socketio/node_modules" ]; then
  (cd "$SCRATCH/peers/socketio" && npm install --no-audit --no-fund --silent)
fi
ulimit -n "$(ulimit -Hn)" 2> /dev/null || true

# start_nodes PEER N: N nodes of PEER (sharing REDIS_URL when not none); sets URLS and NODE_PIDS.
start_nodes() {
  local peer=$1 n=$2 port pid prefix="track$RANDOM"
  URLS=""
  NODE_PIDS=()
  for ((i = 0; i < n; i++)); do
    port=$(kit_free_port)
    case $peer in
      tidings)
        local flags=()
        [ "$REDIS_URL" != none ] && flags=(--redis "$REDIS_URL" --redis-key-prefix "$prefix")
        "$TIDINGS_BIN" serve --listen "127.0.0.1:$port" "${flags[@]}" > "$OUT/tidings-$port.log" 2>&1 &
        pid=$!
        kit_wait_http "http://127.0.0.1:$port/healthz"
        ;;
      socketioxide)
        (cd "$SCRATCH/peers/socketioxide" && PORT=$port REDIS_URL=$REDIS_URL \
          exec ./target/release/socketioxide-peer) > "$OUT/socketioxide-$port.log" 2>&1 &
        pid=$!
        kit_wait_http "http://127.0.0.1:$port/stats"
        ;;
      socketio)
        (cd "$SCRATCH/peers/socketio" && PORT=$port REDIS_URL=$REDIS_URL exec node server.js) \
          > "$OUT/socketio-$port.log" 2>&1 &
        pid=$!
        kit_wait_http "http://127.0.0.1:$port/stats"
        ;;
    esac
    KIT_PIDS+=("$pid")
    NODE_PIDS+=("$pid")
    URLS="${URLS:+$URLS,}http://127.0.0.1:$port"
  done
}

# run PEER MODE CASE PREFIX [bench flags]: fresh nodes (and Redis), one bench run, its JSON line appended.
run() {
  local peer=$1 mode=$2 case=$3 prefix=$4
  shift 4
  REDIS_URL=none
  local pids
  if [ "$mode" = cluster ]; then
    kit_start_redis "$OUT"
    start_nodes "$peer" 2
    pids=$(IFS=,; echo "${NODE_PIDS[*]},$REDIS_PID")
  else
    start_nodes "$peer" 1
    pids=$(IFS=,; echo "${NODE_PIDS[*]}")
  fi
  local auth=()
  [ "$peer" = tidings ] || auth=(--no-auth)
  echo "== $peer $mode ($case): $W workers × $R/s, $T teams × $K managers, $DURATION s" >&2
  "$TIDINGS_BIN" bench tracking --url "$URLS" --workers "$W" --teams "$T" --managers "$K" --rate "$R" \
    --duration "$DURATION" --drain 10 --room-prefix "$prefix" --source-ips "$SOURCE_IPS" \
    --server-pid "$pids" --label "$peer|$mode|$case" --json -q "${auth[@]}" "$@" \
    > "$OUT/run.json" 2> "$OUT/run.err" || echo "   (the run fell short: $(tail -1 "$OUT/run.err"))" >&2
  cat "$OUT/run.json" >> "$RESULTS"
  python3 - "$OUT/run.json" << 'EOF' >&2
import json, sys
r = json.loads(open(sys.argv[1]).read() or "{}")
if r:
    print(f"   accepted {r['accepted_per_s']:.0f}/s, deliveries {r['deliveries_per_s']:.0f}/s, "
          f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, lost {r['lost']}, "
          f"cpu {r['cpu_us_per_inbound']} µs/position")
EOF
  kit_stop_all
  sleep 2
}

for mode in $MODES; do
  for peer in $PEERS; do
    run "$peer" "$mode" a pos:
    if [ "$peer" = tidings ]; then
      run "$peer" "$mode" "a, durable" dpos:
      run "$peer" "$mode" "b, 1 s conflation" cpos: --conflated-ms 1000
    fi
  done
done

TABLE=$OUT/summary.md
python3 "$ROOT/bench/tracking_table.py" "$RESULTS" > "$TABLE"
cat "$TABLE"
if [ "$WRITE" = 1 ]; then
  kit_write_section "## Case E: team tracking (bench/tracking.sh)" "$TABLE" \
    "Command: \`bench/tracking.sh\` (W=$W workers × $R positions/s from their own connections into T=$T team rooms, K=$K managers each, $DURATION s per run, fresh nodes and Redis per run, load generator \`tidings bench tracking\` on the same 2 cores, --source-ips $SOURCE_IPS). Server CPU: the node processes (and redis-server in the 2-node rows) over the run, per accepted position. tidings (a) runs in ephemeral rooms (\`pos:*\`, no history), (a, durable) in rooms with history and offsets (\`dpos:*\`), (b) with 1 s conflation by worker (\`cpos:*\`): there each manager gets at most one position per worker per second, and 'stale' counts (manager, worker) pairs whose last position is not the worker's last. Peers have no authentication (--no-auth); tidings checks a token per connection and the publish right per event. Latency is the position's age at the manager (worker's send time in the data, one clock); every worker stays connected until the run ends, so the window holds the stream only (10,000 workers leaving together while the last positions were on their way had put the disconnection storm into the tail)."
fi
