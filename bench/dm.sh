#!/usr/bin/env bash
# Direct messages under load: starts the release binary itself, runs `tidings bench dm` at a few rates and prints
# one combined table.
#
#   bench/dm.sh                     single node with a data dir (disk store) at RATES
#   bench/dm.sh --cluster           also 2 nodes + a redis-server (Redis store) at CLUSTER_RATES; the devices of
#                                   each user are spread over both nodes
#   bench/dm.sh --write "TITLE"     also replace (or append) the section TITLE of BENCHMARKS.md
#
# Environment: RATES (default "1000 5000 10000"), CLUSTER_RATES ("1000 5000"), DURATION (10 s), SENDERS (20),
# RECIPIENTS (100), DEVICES (2), DRAIN (15 s), TIDINGS_BIN (default: cargo build --release).
# Every node, its data dir and redis-server are on loopback and random ports, started here and stopped by pid.
# The nodes run with bench/dm-limits.toml: the per-connection packet rate limit and the per-address limits are
# lifted, since a few dozen loopback connections carry the whole load.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export TIDINGS_CONFIG=$ROOT/bench/dm-limits.toml
# shellcheck source=bench/kit.sh
. "$ROOT/bench/kit.sh"

RATES=${RATES:-1000 5000 10000}
CLUSTER_RATES=${CLUSTER_RATES:-1000 5000}
DURATION=${DURATION:-10}
SENDERS=${SENDERS:-20}
RECIPIENTS=${RECIPIENTS:-100}
DEVICES=${DEVICES:-2}
DRAIN=${DRAIN:-15}
CLUSTER=0
TITLE=""
while [ $# -gt 0 ]; do
  case $1 in
    --cluster) CLUSTER=1 ;;
    --write) TITLE=${2:?--write needs a title}; shift ;;
    *) echo "usage: bench/dm.sh [--cluster] [--write TITLE]" >&2; exit 2 ;;
  esac
  shift
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tidings-dm-bench.XXXXXX")
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2> /dev/null || true; done
  PIDS=()
}
trap 'cleanup; rm -rf "$WORK"' EXIT

kit_build_tidings

# start_node NAME [serve flags...]: starts a node on a free port; sets NODE_URL.
start_node() {
  local name=$1 port
  shift
  port=$(kit_free_port)
  "$TIDINGS_BIN" serve --listen "127.0.0.1:$port" "$@" > "$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  kit_wait_http "http://127.0.0.1:$port/healthz"
  NODE_URL=http://127.0.0.1:$port
}

# run_rates URLS RATE...: one bench run per rate; appends the table rows to $WORK/rows.
run_rates() {
  local urls=$1 rate out
  shift
  for rate in "$@"; do
    echo "== bench dm: $urls at $rate msg/s" >&2
    out=$("$TIDINGS_BIN" bench dm --url "$urls" --senders "$SENDERS" --recipients "$RECIPIENTS" \
      --devices "$DEVICES" --rate "$rate" --duration "$DURATION" --drain "$DRAIN" --quiet)
    printf '%s\n' "$out" | sed -n '1,2p' > "$WORK/header"
    printf '%s\n' "$out" | sed -n '3p' >> "$WORK/rows"
    printf '%s\n' "$out" | sed -n '4,$p' | sed '/^$/d' >> "$WORK/notes"
  done
}

: > "$WORK/rows"
: > "$WORK/notes"

mkdir -p "$WORK/data"
start_node single --data-dir "$WORK/data"
# shellcheck disable=SC2086
run_rates "$NODE_URL" $RATES
cleanup

if [ "$CLUSTER" = 1 ]; then
  redis_port=$(kit_free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no > "$WORK/redis.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 50); do redis-cli -p "$redis_port" ping > /dev/null 2>&1 && break; sleep 0.1; done
  start_node node1 --redis "redis://127.0.0.1:$redis_port"
  first=$NODE_URL
  start_node node2 --redis "redis://127.0.0.1:$redis_port"
  # shellcheck disable=SC2086
  run_rates "$first,$NODE_URL" $CLUSTER_RATES
  cleanup
fi

TABLE=$WORK/table.md
{
  cat "$WORK/header"
  cat "$WORK/rows"
  if [ -s "$WORK/notes" ]; then echo; cat "$WORK/notes"; fi
} > "$TABLE"
cat "$TABLE"

if [ -n "$TITLE" ]; then
  kit_write_section "$TITLE" "$TABLE" \
    "\`bench/dm.sh$([ "$CLUSTER" = 1 ] && echo ' --cluster')\`: $SENDERS senders, $RECIPIENTS users × $DEVICES devices, $DURATION s per rate; 1 node with a data dir (disk store), 2 nodes + Redis (Redis store). Latencies from the send time in the message to the ack / device receipt / status."
fi
