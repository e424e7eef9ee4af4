#!/usr/bin/env bash
# Scaling: how server CPU per delivery and memory per connection change with the number of clients and of rooms.
# Uses the measuring kit (../shared/tools: wsload and the peers) and the case runner of bench/rooms.sh; one fresh
# server (or 2-node cluster) per row. Prints a table and writes the section "## Scaling: clients and rooms
# (bench/scaling.sh)" of BENCHMARKS.md.
#
#   bench/scaling.sh                                 # tidings, both series below
#   PEERS="tidings socketioxide" bench/scaling.sh    # the same rows for socketioxide too
#   SIZES="200 400" CLUSTER_SIZES="200 400" ROOM_SIZES="10 20" IDLE_S=2 BENCH_MD=none bench/scaling.sh   # small check
#
# clients series: every client in the one room "bench", CLIENT_RATE (20) msg/s for PUB_S (10) s POSTed to node 1;
#   SIZES (2000 4000 10000) clients on one node and CLUSTER_SIZES (2000 20000) on 2 nodes + one Redis: one process
#   holds at most ~19.9k sockets (open-files hard limit 20000), so 10× (20,000) runs on 2 nodes, with 2,000 on
#   2 nodes as that row's baseline.
# rooms series: PER_ROOM (20) clients in each of ROOM_SIZES (100 200 500 990) rooms on one node, ROOM_RATE (1) msg/s
#   per room, sent round-robin over the rooms (message i to bench-(i mod rooms)) for PUB_S s.
# wsload: --source-ips 4 --ramp 2000, and --procs 2 from 10,000 clients on (--procs 1 below).
# Per row: deliveries / expected, delivery rate, server CPU (utime+stime of the node processes from just before the
# publisher starts until the last delivery, as bench/rooms.sh) per delivery, server RSS after connecting (IDLE_S s
# idle) minus before per client, latency p50 / p99; and both ratios against the first row of the same series and
# node count.
# Environment as bench/rooms.sh (TOOLS, SCRATCH, TIDINGS_BIN, OUT, BASE_PORT, BENCH_MD, PUB_S, IDLE_S, DRAIN_S,
#   STALL_S), plus SERIES ("clients rooms"), the sizes and rates above, PEERS (tidings; also socketioxide, socketio).
# Raw files in OUT (default ${TMPDIR:-/tmp}/tidings-scaling-<UTC time>): <peer>.<row>.* as bench/rooms.sh,
#   cases.jsonl, summary.md. Loopback only; every process started is stopped by pid on exit.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=rooms.sh
. "$(dirname "${BASH_SOURCE[0]}")/rooms.sh"

SERIES=${SERIES:-clients rooms}
SIZES=${SIZES:-2000 4000 10000}
CLUSTER_SIZES=${CLUSTER_SIZES-2000 20000}
ROOM_SIZES=${ROOM_SIZES:-100 200 500 990}
PER_ROOM=${PER_ROOM:-20}
CLIENT_RATE=${CLIENT_RATE:-20}
ROOM_RATE=${ROOM_RATE:-1}
PEERS=${PEERS:-tidings}
HOT_ROOM=-
OUT=${OUT:-${TMPDIR:-/tmp}/tidings-scaling-$(date -u +%Y%m%dT%H%M%S)}

loadgen_for() { # CLIENTS
  LOADGEN_ARGS=(--source-ips 4 --ramp 2000 --procs 1)
  [ "$1" -lt 10000 ] || LOADGEN_ARGS=(--source-ips 4 --ramp 2000 --procs 2)
}

scaling_main() {
  local -a peers series
  local p s n k
  read -ra peers <<< "$PEERS"
  read -ra series <<< "$SERIES"
  for p in "${peers[@]}"; do [ "$p" != rawlimit-sio ] || die "rawlimit-sio has no cluster mode; use tidings, socketioxide or socketio"; done
  for n in $SIZES; do [ "$n" -le 19800 ] || die "$n clients is more than one process holds (19,800); use CLUSTER_SIZES"; done
  for k in $ROOM_SIZES; do [ $((k * PER_ROOM)) -le 19800 ] || die "$k rooms × $PER_ROOM is more than one process holds"; done
  bench_setup
  kit_prepare
  prepare_peers "${peers[@]}"
  if [[ " $SERIES " == *" clients "* ]] && [ -n "$CLUSTER_SIZES" ]; then redis_start; fi
  log "== scaling: SERIES=\"$SERIES\" PEERS=\"$PEERS\" -> $OUT"
  for s in "${series[@]}"; do
    for p in "${peers[@]}"; do
      case $s in
        clients)
          for n in $SIZES; do loadgen_for "$n"; run_case "$p" 1 "$n" 0 "$CLIENT_RATE" 0 clients "clients-$n"; done
          for n in $CLUSTER_SIZES; do loadgen_for "$n"; run_case "$p" 2 "$n" 0 "$CLIENT_RATE" 0 clients "clients-2n-$n"; done
          ;;
        rooms)
          for k in $ROOM_SIZES; do
            loadgen_for $((k * PER_ROOM))
            run_case "$p" 1 $((k * PER_ROOM)) "$k" $((k * ROOM_RATE)) 0 rooms "rooms-$k"
          done
          ;;
        *) die "unknown series $s (clients, rooms)" ;;
      esac
    done
  done
  cleanup
  python3 "$BENCH_DIR/summarize.py" scaling "$OUT" > "$OUT/summary.md"
  local text="" cmd
  if [[ " $SERIES " == *" clients "* ]]; then
    text+="Clients series: every client in one room, $CLIENT_RATE msg/s for ${PUB_S} s POSTed to node 1; $(thousands "${SIZES// /, }")"
    text+=" clients on one node"
    [ -z "$CLUSTER_SIZES" ] || text+=", $(thousands "${CLUSTER_SIZES// /, }") on 2 nodes + Redis (one process holds at most ~19.9k sockets)"
    text+=". "
  fi
  if [[ " $SERIES " == *" rooms "* ]]; then
    text+="Rooms series: $PER_ROOM clients per room, ${ROOM_SIZES// /, } rooms on one node, $ROOM_RATE msg/s per room sent round-robin"
    text+=" over the rooms for ${PUB_S} s. "
  fi
  text+="µs/delivery is the servers' CPU over the publish window per delivery, KiB/conn the server RSS after connecting"
  text+=" (${IDLE_S} s idle) minus before, per client; × first row divides by the first row of the same series, peer and"
  text+=" node count, so 1.00 means the cost per delivery or per connection did not change with size."
  cmd="PEERS=\"$PEERS\" SERIES=\"$SERIES\" SIZES=\"$SIZES\" CLUSTER_SIZES=\"$CLUSTER_SIZES\" ROOM_SIZES=\"$ROOM_SIZES\" bench/scaling.sh"
  { cat "$OUT/summary.md"; echo; echo "$text"; } > "$OUT/section.md"
  cat "$OUT/section.md"
  write_section "## Scaling: clients and rooms (bench/scaling.sh)" "$OUT/section.md" \
    "Measured @WHEN@, commit @COMMIT@, @CORES@ cores; servers, wsload and Redis on loopback on the same cores. Command: \`$cmd\`."
  echo "results in $OUT"
}

scaling_main "$@"
