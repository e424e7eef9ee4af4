#!/usr/bin/env bash
# Direct messages under load: starts the release binary itself, runs `tidings bench dm` at a few rates and prints
# one combined table.
#
#   bench/dm.sh                     single node with a data dir (disk store) at RATES
#   bench/dm.sh --cluster           also 2 nodes + a redis-server (Redis store) at CLUSTER_RATES; the devices of
#                                   each user are spread over both nodes
#   bench/dm.sh --kill              also, per mode, one run at the mode's first rate during which one node is
#                                   killed with SIGKILL a third of the way through the sending and started again
#                                   ~1 s later on the same port (single node: the node, same data dir; cluster:
#                                   the first node, same Redis); its row says "kill -9"
#   bench/dm.sh --write "TITLE"     also replace (or append) the section TITLE of BENCHMARKS.md
#
# Environment: RATES (default "1000 5000 10000"), CLUSTER_RATES ("1000 5000"), DURATION (10 s), SENDERS (20),
# RECIPIENTS (100), DEVICES (2), DRAIN (15 s), REDIS_AOF (yes: Redis logs every write, fsynced once a second,
# as the README advises for cluster mode; no: memory only), TIDINGS_BIN (default: cargo build --release).
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
REDIS_AOF=${REDIS_AOF:-yes}
CLUSTER=0
KILL=0
TITLE=""
while [ $# -gt 0 ]; do
  case $1 in
    --cluster) CLUSTER=1 ;;
    --kill) KILL=1 ;;
    --write) TITLE=${2:?--write needs a title}; shift ;;
    *) echo "usage: bench/dm.sh [--cluster] [--kill] [--write TITLE]" >&2; exit 2 ;;
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

# start_node NAME PORT [serve flags...]: starts a node on PORT (a free one when empty), logging to
# $WORK/NAME.log (appended: a restarted node keeps one log); sets NODE_URL and NODE_PID.
start_node() {
  local name=$1 port=${2:-$(kit_free_port)}
  shift 2
  "$TIDINGS_BIN" serve --listen "127.0.0.1:$port" "$@" >> "$WORK/$name.log" 2>&1 &
  NODE_PID=$!
  PIDS+=("$NODE_PID")
  kit_wait_http "http://127.0.0.1:$port/healthz"
  NODE_URL=http://127.0.0.1:$port
}

# forget_pid PID: drops PID from the processes cleanup stops.
forget_pid() {
  local p kept=()
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || kept+=("$p"); done
  PIDS=("${kept[@]}")
}

# record OUT LABEL: appends the table header, row and notes of one bench run's output file; LABEL, when given,
# marks the row's nodes column.
record() {
  local out=$1 label=$2 row
  sed -n '1,2p' "$out" > "$WORK/header"
  row=$(sed -n '3p' "$out")
  [ -n "$label" ] && row=$(printf '%s\n' "$row" | sed "s/^| \([0-9]*\) |/| \1, $label |/")
  printf '%s\n' "$row" >> "$WORK/rows"
  sed -n '4,$p' "$out" | sed '/^$/d' \
    | sed "s/^/($(printf '%s\n' "$row" | awk -F'|' '{ gsub(/ /, "", $4); sub(/^ +/, "", $2); sub(/ +$/, "", $2); print "nodes " $2 "; " $4 " msg\\/s" }')) /" >> "$WORK/notes"
}

# bench_args URLS RATE: the `tidings bench dm` command line of one run.
bench_args() {
  BENCH=("$TIDINGS_BIN" bench dm --url "$1" --senders "$SENDERS" --recipients "$RECIPIENTS"
    --devices "$DEVICES" --rate "$2" --duration "$DURATION" --drain "$DRAIN")
}

# run_rates URLS RATE...: one bench run per rate; appends the table rows to $WORK/rows.
run_rates() {
  local urls=$1 rate
  shift
  for rate in "$@"; do
    echo "== bench dm: $urls at $rate msg/s" >&2
    bench_args "$urls" "$rate"
    "${BENCH[@]}" --quiet > "$WORK/out" \
      || echo "bench dm fell short at $rate msg/s (exit $?); its numbers are in the table" >&2
    record "$WORK/out" ""
  done
}

# run_kill URLS RATE PID RESTART: one bench run during which, a third of the way through the sending, PID gets
# SIGKILL; about a second later the command RESTART starts the node again.
run_kill() {
  local urls=$1 rate=$2 victim=$3 restart=$4 bench_pid
  echo "== bench dm: $urls at $rate msg/s, kill -9 of pid $victim" >&2
  bench_args "$urls" "$rate"
  "${BENCH[@]}" > "$WORK/out" 2> "$WORK/progress" &
  bench_pid=$!
  PIDS+=("$bench_pid")
  for _ in $(seq 1 600); do
    grep -q 'connections open' "$WORK/progress" && break
    sleep 0.1
  done
  sleep "$(awk -v d="$DURATION" 'BEGIN { print d / 3 + 0.1 }')"
  kill -9 "$victim"
  wait "$victim" 2> /dev/null || true
  forget_pid "$victim"
  echo "   killed pid $victim; starting it again in 1 s" >&2
  sleep 1
  $restart
  echo "   node back as pid $NODE_PID" >&2
  wait "$bench_pid" || echo "bench dm fell short during the kill run (exit $?); its numbers are in the table" >&2
  [ -s "$WORK/out" ] || { cat "$WORK/progress" >&2; exit 1; }
  forget_pid "$bench_pid"
  record "$WORK/out" "kill -9"
}

: > "$WORK/rows"
: > "$WORK/notes"

mkdir -p "$WORK/data"
single_port=$(kit_free_port)
restart_single() { start_node single "$single_port" --data-dir "$WORK/data"; }
restart_single
# shellcheck disable=SC2086
run_rates "$NODE_URL" $RATES
if [ "$KILL" = 1 ]; then
  # shellcheck disable=SC2086
  set -- $RATES
  run_kill "$NODE_URL" "$1" "$NODE_PID" restart_single
fi
cleanup

if [ "$CLUSTER" = 1 ]; then
  redis_port=$(kit_free_port)
  mkdir -p "$WORK/redis"
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$WORK/redis" --save '' \
    --appendonly "$REDIS_AOF" --appendfsync everysec > "$WORK/redis.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 50); do redis-cli -p "$redis_port" ping > /dev/null 2>&1 && break; sleep 0.1; done
  node1_port=$(kit_free_port)
  restart_node1() { start_node node1 "$node1_port" --redis "redis://127.0.0.1:$redis_port"; }
  restart_node1
  first=$NODE_URL
  first_pid=$NODE_PID
  start_node node2 "" --redis "redis://127.0.0.1:$redis_port"
  # shellcheck disable=SC2086
  run_rates "$first,$NODE_URL" $CLUSTER_RATES
  if [ "$KILL" = 1 ]; then
    # shellcheck disable=SC2086
    set -- $CLUSTER_RATES
    run_kill "$first,$NODE_URL" "$1" "$first_pid" restart_node1
  fi
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
    "\`bench/dm.sh$([ "$CLUSTER" = 1 ] && echo ' --cluster')$([ "$KILL" = 1 ] && echo ' --kill')\`: $SENDERS senders, $RECIPIENTS users × $DEVICES devices, $DURATION s per rate; 1 node with a data dir (disk store), 2 nodes + Redis (Redis store). Latencies from the send time in the message to the ack / device receipt / status."
fi
