#!/usr/bin/env bash
# Server memory per idle connection: websocket and HTTP long-polling clients, each transport RUNS times on a fresh
# node; prints a table and writes the section "## Memory per idle connection (bench/memory.sh)" of BENCHMARKS.md.
#
#   bench/memory.sh                                   # 10,000 clients per transport, 3 runs each (~5 minutes)
#   CLIENTS=2000 RUNS=1 BENCH_MD=none bench/memory.sh # a quick check; BENCHMARKS.md untouched
#   TRANSPORTS=polling bench/memory.sh                # one transport
#   SERVER_BIN=/path/to/old/tidings bench/memory.sh   # measure another build of the node (the bench is this one)
#   CENSUS=1 CLIENTS=10000 RUNS=1 BENCH_MD=none bench/memory.sh  # + the per-connection budget (alloc census)
#
# Each run: `tidings serve` on a free loopback port (soft open-files limit raised to the hard one); VmRSS of the
# node once it answers; `tidings bench --hold` connects CLIENTS clients of one transport, each subscribed to one
# of ROOMS rooms, and holds them idle; once the node counts CLIENTS sessions and SETTLE s passed, VmRSS and VmHWM
# are read again, with the node's TCP connections (ss) and its `tidings_polls_waiting` gauge (the long-poll GETs
# it holds). KiB per connection = (RSS after - RSS before) / connected clients. The measuring is bench/memory.py.
#
# Environment: CLIENTS (10000), RUNS (3), ROOMS (100), SETTLE (10), TRANSPORTS (websocket,polling), RAMP (2000
# connections/s), TIDINGS_BIN (default: cargo build --release of this checkout), SERVER_BIN (default TIDINGS_BIN),
# BENCH_MD ("none": leave BENCHMARKS.md alone), LOGS (raw files, default ${TMPDIR:-/tmp}/tidings-memory-<UTC time>).
# Loopback only; every process it starts is stopped by its pid.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/kit.sh
. "$ROOT/bench/kit.sh"
CLIENTS=${CLIENTS:-10000}
RUNS=${RUNS:-3}
ROOMS=${ROOMS:-100}
SETTLE=${SETTLE:-10}
TRANSPORTS=${TRANSPORTS:-websocket,polling}
RAMP=${RAMP:-2000}
BENCH_MD=${BENCH_MD:-$ROOT/BENCHMARKS.md}
LOGS=${LOGS:-${TMPDIR:-/tmp}/tidings-memory-$(date -u +%Y%m%dT%H%M%S)}
TITLE="## Memory per idle connection (bench/memory.sh)"

command -v ss > /dev/null || { echo "bench/memory.sh: needs ss (iproute2)" >&2; exit 2; }
kit_build_tidings
SERVER_BIN=${SERVER_BIN:-$TIDINGS_BIN}
CENSUS_ARGS=()
if [ "${CENSUS:-0}" = 1 ]; then
  # A node with the counting allocator (cargo feature alloc-census), copied aside so the release build stays.
  (cd "$ROOT" && cargo build --release --quiet --features alloc-census)
  mkdir -p "$LOGS"
  cp "$ROOT/target/release/tidings" "$LOGS/tidings-census"
  (cd "$ROOT" && cargo build --release --quiet)
  SERVER_BIN=$LOGS/tidings-census
  CENSUS_ARGS=(--census --rows-out "$LOGS/rows.json")
fi

# The node and the bench's client processes each need a descriptor per connection.
ulimit -n "$(ulimit -Hn)" 2> /dev/null || true

mkdir -p "$LOGS"
python3 "$ROOT/bench/memory.py" --bin "$TIDINGS_BIN" --server-bin "$SERVER_BIN" --clients "$CLIENTS" \
  --runs "$RUNS" --rooms "$ROOMS" --settle "$SETTLE" --transports "$TRANSPORTS" --ramp "$RAMP" \
  --logs "$LOGS" --body-out "$LOGS/summary.md" "${CENSUS_ARGS[@]}"
[ "${CENSUS:-0}" = 1 ] && python3 "$ROOT/bench/memory_budget.py" "$LOGS/rows.json" | tee "$LOGS/budget.md"

if [ "$BENCH_MD" != none ]; then
  command_line="CLIENTS=$CLIENTS RUNS=$RUNS TRANSPORTS=$TRANSPORTS bench/memory.sh"
  [ "$SERVER_BIN" = "$TIDINGS_BIN" ] || command_line="SERVER_BIN=<another build> $command_line"
  kit_write_section "$TITLE" "$LOGS/summary.md" "Command: \`$command_line\`."
fi
