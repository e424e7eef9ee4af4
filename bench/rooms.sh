#!/usr/bin/env bash
# Case D: many small rooms with a mixed publish load, tidings side by side with the reference peers of the
# measuring kit (../shared/tools: wsload and the peers), one fresh server (or 2-node cluster) per peer. Prints a
# table and writes the section "## Case D: 1000 rooms × 20 clients (<single node|2 nodes + Redis>, bench/rooms.sh)"
# of BENCHMARKS.md.
#
#   bench/rooms.sh                           # single node, no Redis: 990 rooms × 20 = 19,800 clients,
#                                            #   peers "rawlimit-sio tidings socketioxide"
#   MODE=cluster bench/rooms.sh              # 2 nodes + one Redis: 1000 rooms × 20 = 20,000 clients,
#                                            #   peers "tidings socketioxide socketio"
#   ROOMS=50 PER_ROOM=4 RATE=100 HOT_RATE=10 IDLE_S=2 BENCH_MD=none bench/rooms.sh     # small check of the rig
#
# The load: wsload puts client j in room bench-(j mod ROOMS) (--channels), with --source-ips 4 --procs 2 --ramp 2000.
# Once every client is connected, server RSS is read again after IDLE_S s; then two publishers POST to node 1 at
# the same time for PUB_S s: RATE msg/s cycling over all rooms (message i to bench-(i mod ROOMS)) and HOT_RATE msg/s
# to the one room HOT_ROOM. Every message is due at PER_ROOM clients. The single node holds at most ~19.9k sockets
# (the open-files hard limit is per process), hence 990 rooms there. With 2 nodes, wsload's URL list alternates the
# two nodes and has an odd length prime to ROOMS (ROOMS+1 entries when ROOMS is even), so each room's members
# alternate between the nodes and every publish fans out across nodes through Redis.
# Server CPU = utime+stime (/proc/PID/stat) of the node processes, and of redis separately, from just before the
# publishers start until wsload's 1 s progress count last changed (at accepted×PER_ROOM deliveries, after STALL_S s
# without progress, or when wsload ends), as the kit's e2e scripts measure it.
#
# Environment: MODE (single|cluster), PEERS, ROOMS, PER_ROOM (20), RATE (1000), HOT_RATE (20; 0 = no hot room),
#   HOT_ROOM (bench-0), PUB_S (10), IDLE_S (10), DRAIN_S (60: window time allowed after publishing), STALL_S (5),
#   TOOLS (../shared/tools beside the checkout), SCRATCH (writable copy of the kit, default
#   ${TMPDIR:-/tmp}/tidings-bench-kit; created and built when missing), TIDINGS_BIN (default: cargo build --release
#   of this checkout), OUT (raw files, default ${TMPDIR:-/tmp}/tidings-rooms-<UTC time>), BASE_PORT (4001: first
#   port tried for the nodes; each case takes the next free ones), BENCH_MD (BENCHMARKS.md; "none" = do not write).
# Raw files per peer in OUT: <peer>.D.{wsload.json,wsload.err,publish.json,publish.err,publish-hot.json,
#   publish-hot.err,case.json,procmon.txt,node-PORT.txt,
#   redis-commandstats.txt (Redis commands from the publish start to the end of the CPU window)}, cases.jsonl, summary.md.
# Loopback only. Every process started here (nodes, redis, wsload, publishers) is stopped by pid on exit.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
TCK=$(getconf CLK_TCK)

# ---- shared with bench/scaling.sh, which sources this file ------------------------------------------------------

# shellcheck source=bench/kit.sh
. "$BENCH_DIR/kit.sh"
BASE_PORT=${BASE_PORT:-4001}
PUB_S=${PUB_S:-10}
IDLE_S=${IDLE_S:-10}
DRAIN_S=${DRAIN_S:-60}
STALL_S=${STALL_S:-5}
BENCH_MD=${BENCH_MD:-$ROOT/BENCHMARKS.md}
W=$SCRATCH/wsload/target/release/wsload
NEXT_PORT=$BASE_PORT
CUR_DIR=
REDIS_PID=
REDIS_PORT=
CASE_REDIS=
BG_PIDS=()
LOADGEN_ARGS=()
PIDFILE=

log() { printf '%s\n' "$*" >&2; }
die() { log "${0##*/}: $*"; exit 1; }

# prepare_peers PEER...: the writable kit copy with wsload (bench/kit.sh) and the peers built; TIDINGS_BIN, token
# and API key.
prepare_peers() {
  local p
  for p in "$@"; do
    case $p in
      rawlimit-sio) [ -x "$SCRATCH/peers/rawlimit/target/release/rawlimit" ] ||
        (cd "$SCRATCH/peers/rawlimit" && cargo build --release) ;;
      socketioxide) [ -x "$SCRATCH/peers/socketioxide/target/release/socketioxide-peer" ] ||
        (cd "$SCRATCH/peers/socketioxide" && cargo build --release) ;;
      socketio) kit_prepare socketio ;;
      tidings)
        kit_build_tidings
        [ -x "$TIDINGS_BIN" ] || die "TIDINGS_BIN=$TIDINGS_BIN is not executable"
        # shellcheck source=/dev/null
        . "$SCRATCH/peers/tidings/defaults.sh"
        TIDINGS_TOKEN=$(python3 "$SCRATCH/peers/tidings/mint-token.py")
        ;;
      *) die "unknown peer $p (rawlimit-sio, tidings, socketioxide, socketio)" ;;
    esac
  done
}

peer_dir() { case $1 in rawlimit-sio) echo rawlimit ;; *) echo "$1" ;; esac; }

port_free() { ! ss -Htan "sport = :$1" | grep -q .; }

# pick_ports N: N consecutive free ports from NEXT_PORT on -> BASE (a fresh set for every case).
pick_ports() {
  local n=$1 p=$NEXT_PORT i ok
  while :; do
    ok=1
    for ((i = 0; i < n; i++)); do port_free $((p + i)) || { ok=0; break; }; done
    [ $ok = 1 ] && break
    p=$((p + 1))
    [ $p -lt 32000 ] || die "no free ports from $NEXT_PORT"
  done
  BASE=$p
  NEXT_PORT=$((p + n))
}

redis_start() { # one redis-server on a random free loopback port below the ephemeral range
  local p="" i
  for i in $(seq 1 100); do
    p=$((20000 + (RANDOM + i) % 10000))
    port_free "$p" && break
  done
  REDIS_PORT=$p
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --pidfile "$OUT/redis.pid" --logfile "$OUT/redis-log.txt"
  for _ in $(seq 1 50); do [ -s "$OUT/redis.pid" ] && break; sleep 0.1; done
  REDIS_PID=$(cat "$OUT/redis.pid")
  for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping > /dev/null 2>&1 && break; sleep 0.1; done
  log "redis-server $(redis-server --version | awk '{print $3}') pid $REDIS_PID on 127.0.0.1:$REDIS_PORT"
}

stop_nodes() { # PREFIX (node logs are moved to PREFIX.node-PORT.txt)
  [ -n "$CUR_DIR" ] || return 0
  local ports port
  ports=$(awk '{print $2}' "$PIDFILE" 2>/dev/null || true)
  "$SCRATCH/peers/$CUR_DIR/stop-cluster.sh" > /dev/null || true
  for port in $ports; do
    if [ -n "${1:-}" ]; then
      mv -f "$SCRATCH/peers/$CUR_DIR/node-$port.log" "$1.node-$port.txt" 2> /dev/null || true
    else
      rm -f "$SCRATCH/peers/$CUR_DIR/node-$port.log"
    fi
  done
  CUR_DIR=
}

fresh_nodes() { # PEER NODES
  local peer=$1 nodes=$2 redis=none
  local -a penv=()
  pick_ports "$nodes"
  if [ "$nodes" -gt 1 ]; then
    redis=redis://127.0.0.1:$REDIS_PORT
    redis-cli -p "$REDIS_PORT" flushall > /dev/null
  fi
  case $peer in
    rawlimit-sio) penv=(PROTO=socketio) ;;
    socketioxide | socketio) penv=(REDIS_URL="$redis") ;;
  esac
  CUR_DIR=$(peer_dir "$peer")
  env "${penv[@]}" "$SCRATCH/peers/$CUR_DIR/run-cluster.sh" "$nodes" "$BASE" "$redis" >&2
  sleep 1
}

stop_bg() { # stop the background processes started here (wsload's worker processes too)
  local p c
  for p in "${BG_PIDS[@]}"; do
    if kill -0 "$p" 2> /dev/null; then
      for c in $(ps -o pid= --ppid "$p" 2> /dev/null); do kill "$c" 2> /dev/null || true; done
      kill "$p" 2> /dev/null || true
    fi
  done
  BG_PIDS=()
}

cleanup() {
  stop_bg
  stop_nodes ""
  if [ -n "$REDIS_PID" ]; then kill "$REDIS_PID" 2> /dev/null || true; REDIS_PID=; fi
}

node_pids() { awk '{print $1}' "$PIDFILE" | paste -sd' '; }
node_ports() { awk '{print $2}' "$PIDFILE" | paste -sd' '; }
rss_line() { local p; for p in $(node_pids); do printf '%s:%s ' "$p" "$(awk '/VmRSS/{print $2}' "/proc/$p/status")"; done; }
hwm_line() { local p; for p in $(node_pids); do printf '%s:%s ' "$p" "$(awk '/VmHWM/{print $2}' "/proc/$p/status")"; done; }
cpu_line() { local p; for p in $(node_pids) ${CASE_REDIS:+"$CASE_REDIS"}; do printf '%s:%s ' "$p" "$(awk '{print $14+$15}' "/proc/$p/stat")"; done; }
sys_line() { local p; for p in $(node_pids); do printf '%s:%s ' "$p" "$(awk '{print $15}' "/proc/$p/stat")"; done; }
stats_lines() { local port; for port in $(node_ports); do curl -s --noproxy '*' "http://127.0.0.1:$port/stats" || true; echo; done; }
last_deliveries() { { grep -o 'window: deliveries [0-9]*' "$1" 2> /dev/null || true; } | tail -1 | awk '{print $3}'; }
now_ms() { date +%s%3N; }
thousands() { printf '%s' "$1" | sed -e ':a' -e 's/\([0-9]\)\([0-9]\{3\}\)\($\|,\)/\1,\2\3/' -e 'ta'; }

# run_case PEER NODES CLIENTS ROOMS RATE HOT_RATE SERIES TAG
#   ROOMS 0: every client in the one room "bench"; ROOMS K: client j in bench-(j mod K) and the main publisher
#   cycles over the K rooms. HOT_RATE > 0 adds a second publisher to HOT_ROOM. Uses LOADGEN_ARGS for wsload.
run_case() {
  local peer=$1 nodes=$2 clients=$3 rooms=$4 rate=$5 hot=$6 series=$7 tag=$8
  local pre=$OUT/$peer.$tag per_room urls="" ucount=1 i wmax expect
  local -a chan=() wargs=() pargs=()
  if [ "$rooms" -gt 0 ]; then
    per_room=$((clients / rooms)); chan=(--channels "$rooms")
  else
    per_room=$clients; chan=(--channel bench)
  fi
  [ "$hot" -gt 0 ] && [ "$rooms" -gt 0 ] || hot=0
  expect=$(((rate + hot) * PUB_S * per_room))
  wmax=$((IDLE_S + PUB_S + DRAIN_S))
  fresh_nodes "$peer" "$nodes"
  CASE_REDIS=
  [ "$nodes" -eq 1 ] || CASE_REDIS=$REDIS_PID
  # URL list: node 1, node 2, ... round-robin; for 2 nodes its length is made prime to the number of rooms.
  if [ "$nodes" -gt 1 ] && [ "$rooms" -gt 1 ] && [ $((rooms % nodes)) -eq 0 ]; then ucount=$((rooms + 1)); else ucount=$nodes; fi
  for ((i = 0; i < ucount; i++)); do urls+="${urls:+,}ws://127.0.0.1:$((BASE + i % nodes))"; done
  # shellcheck disable=SC2016 # $CH, $T and $SEQ are wsload publish placeholders
  case $peer in
    tidings)
      wargs=(--sio-token "$TIDINGS_TOKEN" --sio-subscribe)
      pargs=(--http "http://127.0.0.1:$BASE/v1/publish" --header "Authorization: Bearer $TIDINGS_API_KEY"
        --body-template '{"room":"$CH","event":"message","data":{"t":$T,"seq":$SEQ}}') ;;
    *) pargs=(--http "http://127.0.0.1:$BASE/publish" --body-template '{"channel":"$CH","data":{"t":$T,"seq":$SEQ}}') ;;
  esac
  local rss0 rss_idle stats_idle cpu0 cpu1 sys0 sys1 t0 t1 n
  rss0=$(rss_line)
  rm -f "$pre.ready" "$pre.publish-hot.json"
  local hot_file="" hot_log=""
  if [ "$hot" -gt 0 ]; then hot_file=$pre.publish-hot.json; hot_log=" + $hot msg/s to $HOT_ROOM"; fi
  log "== $peer $tag: $clients clients in $((rooms > 0 ? rooms : 1)) room(s) on $nodes node(s) from :$BASE," \
    "publish $rate msg/s$hot_log for ${PUB_S} s, expect $expect deliveries; node RSS before: $rss0"
  "$W" --url "$urls" --protocol socketio --clients "$clients" "${chan[@]}" "${wargs[@]}" "${LOADGEN_ARGS[@]}" \
    --duration "$wmax" --expect "$expect" --stop-at-expect --ready-file "$pre.ready" --label "$peer-$tag" \
    --out "$OUT/wsload.jsonl" > "$pre.wsload.json" 2> "$pre.wsload.err" &
  local wpid=$!
  BG_PIDS+=("$wpid")
  while [ ! -f "$pre.ready" ]; do
    kill -0 "$wpid" 2> /dev/null || { cat "$pre.wsload.err" >&2; die "wsload ended before all clients resolved"; }
    sleep 0.2
  done
  grep -m1 'all resolved' "$pre.wsload.err" >&2 || true
  sleep "$IDLE_S"
  rss_idle=$(rss_line)
  stats_idle=$(stats_lines)
  # shellcheck disable=SC2046
  "$SCRATCH/scripts/procmon.sh" 2 $(((wmax + 1) / 2)) $(node_pids) ${CASE_REDIS:+"$CASE_REDIS"} "$wpid" > "$pre.procmon.txt" 2>&1 &
  local mpid=$! hpid=""
  BG_PIDS+=("$mpid")
  [ -z "$CASE_REDIS" ] || redis-cli -p "$REDIS_PORT" config resetstat > /dev/null
  cpu0=$(cpu_line); sys0=$(sys_line); t0=$(now_ms)
  if [ "$hot" -gt 0 ]; then
    "$W" publish "${pargs[@]}" --channel "$HOT_ROOM" --rate "$hot" --duration "$PUB_S" --out "$OUT/publish.jsonl" \
      > "$pre.publish-hot.json" 2> "$pre.publish-hot.err" &
    hpid=$!
    BG_PIDS+=("$hpid")
  fi
  "$W" publish "${pargs[@]}" "${chan[@]}" --rate "$rate" --duration "$PUB_S" --out "$OUT/publish.jsonl" \
    > "$pre.publish.json" 2> "$pre.publish.err" || true
  [ -z "$hpid" ] || wait "$hpid" || true
  BG_PIDS=("$wpid" "$mpid")
  local ok ok_hot=0 connected target
  ok=$(jq -r '.ok // 0' "$pre.publish.json" 2> /dev/null || echo 0)
  [ -z "$hpid" ] || ok_hot=$(jq -r '.ok // 0' "$pre.publish-hot.json" 2> /dev/null || echo 0)
  connected=$({ grep -o 'all resolved in [0-9.]*s: [0-9]* connected' "$pre.wsload.err" || true; } | awk '{print $5}')
  connected=${connected:-$clients}
  target=$(((ok + ok_hot) * connected / (rooms > 0 ? rooms : 1)))
  local last_n=-1 last_change end_reason=wsload-exit
  last_change=$(now_ms); cpu1=$(cpu_line); sys1=$(sys_line); t1=$last_change
  while kill -0 "$wpid" 2> /dev/null; do
    n=$(last_deliveries "$pre.wsload.err"); n=${n:-0}
    if [ "$n" != "$last_n" ]; then last_n=$n; cpu1=$(cpu_line); sys1=$(sys_line); t1=$(now_ms); last_change=$t1; fi
    if [ "$n" -ge "$target" ]; then end_reason=target; break; fi
    if [ $(($(now_ms) - last_change)) -gt $((STALL_S * 1000)) ]; then end_reason=stalled; break; fi
    sleep 0.2
  done
  if [ "$end_reason" = wsload-exit ]; then cpu1=$(cpu_line); sys1=$(sys_line); t1=$(now_ms); fi
  local rss1 hwm1 pids ports
  [ -z "$CASE_REDIS" ] || redis-cli -p "$REDIS_PORT" info commandstats > "$pre.redis-commandstats.txt" 2>&1 || true
  rss1=$(rss_line); hwm1=$(hwm_line); pids=$(node_pids); ports=$(node_ports)
  wait "$wpid" || true
  BG_PIDS=("$mpid")
  stop_bg
  stop_nodes "$pre"
  python3 "$BENCH_DIR/summarize.py" record "$pre.case.json" tck="$TCK" t0_ms="$t0" t1_ms="$t1" \
    cpu0="$cpu0" cpu1="$cpu1" sys0="$sys0" sys1="$sys1" redis_pid="$CASE_REDIS" rss0="$rss0" rss_idle="$rss_idle" \
    rss1="$rss1" hwm1="$hwm1" stats_idle="$stats_idle" ports="$ports" node_pids="$pids" cpu_end="$end_reason" \
    peer="$peer" tag="$tag" series="$series" node_count="$nodes" clients="$clients" rooms="$rooms" per_room="$per_room" \
    rate="$rate" hot_rate="$hot" hot_room="$HOT_ROOM" pub_s="$PUB_S" idle_s="$IDLE_S" url_count="$ucount" \
    target="$target" expect="$expect" wsload="$pre.wsload.json" publish="$pre.publish.json" \
    publish_hot="$hot_file"
  cat "$pre.case.json" >> "$OUT/cases.jsonl"
  tail -1 "$pre.publish.err" >&2 || true
  [ "$hot" -eq 0 ] || tail -1 "$pre.publish-hot.err" >&2 || true
  sed -n '/---- wsload summary/,$p' "$pre.wsload.err" >&2
  jq -c '{server_cpu_s, server_cpu_us_per_delivery, redis_cpu_s, kib_per_conn, cpu_window_s, cpu_end}' "$pre.case.json" >&2
}

# write_section TITLE SUMMARY_FILE INTRO_TEXT: replace or append TITLE in BENCH_MD (not with BENCH_MD=none).
write_section() {
  [ "$BENCH_MD" != none ] || return 0
  printf '%s\n' "$3" > "$OUT/intro.md"
  python3 "$BENCH_DIR/summarize.py" section "$BENCH_MD" "$1" "$OUT/intro.md" "$2"
}

bench_setup() { # OUT, ulimit, trap
  OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)
  PIDFILE=$OUT/cluster.pids
  export PIDFILE
  ulimit -n "$(ulimit -Hn)" 2> /dev/null || true
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  command -v jq > /dev/null || die "jq is needed"
}

# ---- case D -------------------------------------------------------------------------------------------------------

rooms_main() {
  MODE=${MODE:-single}
  local nodes title where defaults
  case $MODE in
    single) nodes=1; defaults="rawlimit-sio tidings socketioxide"; ROOMS=${ROOMS:-990}; where="a single node" ;;
    cluster) nodes=2; defaults="tidings socketioxide socketio"; ROOMS=${ROOMS:-1000}; where="2 nodes + Redis" ;;
    *) die "MODE must be single or cluster" ;;
  esac
  PEERS=${PEERS:-$defaults}
  PER_ROOM=${PER_ROOM:-20}
  RATE=${RATE:-1000}
  HOT_RATE=${HOT_RATE:-20}
  HOT_ROOM=${HOT_ROOM:-bench-0}
  OUT=${OUT:-${TMPDIR:-/tmp}/tidings-rooms-$(date -u +%Y%m%dT%H%M%S)}
  local clients=$((ROOMS * PER_ROOM)) p
  [ "$nodes" -eq 1 ] || [[ " $PEERS " != *" rawlimit-sio "* ]] || die "rawlimit-sio has no cluster mode"
  [ "$nodes" -eq 1 ] || [ "$clients" -le 39000 ] || die "$clients clients is more than 2 nodes hold"
  [ "$nodes" -eq 2 ] || [ "$clients" -le 19800 ] || die "$clients clients is more than one process holds (19,800)"
  bench_setup
  local -a peers
  read -ra peers <<< "$PEERS"
  kit_prepare
  prepare_peers "${peers[@]}"
  [ "$nodes" -eq 1 ] || redis_start
  LOADGEN_ARGS=(--source-ips 4 --procs 2 --ramp 2000)
  log "== case D ($where): $ROOMS rooms × $PER_ROOM = $clients clients, peers \"$PEERS\" -> $OUT"
  for p in "${peers[@]}"; do
    run_case "$p" "$nodes" "$clients" "$ROOMS" "$RATE" "$HOT_RATE" rooms D
  done
  cleanup
  python3 "$BENCH_DIR/summarize.py" rooms "$OUT" > "$OUT/summary.md"
  local text cmd kind=server
  [ "$nodes" -eq 1 ] || kind=cluster
  text="$(thousands "$ROOMS") rooms × $PER_ROOM clients ($(thousands "$clients") clients, wsload \`--channels $ROOMS"
  text+=" --source-ips 4 --procs 2 --ramp 2000\`) on $where, a fresh $kind per peer. Once every client was connected"
  text+=" and ${IDLE_S} s idle, $(thousands "$RATE") msg/s went round-robin over the rooms for ${PUB_S} s"
  text+=" ($(thousands $((RATE * PER_ROOM))) deliveries/s due)"
  [ "$HOT_RATE" -eq 0 ] || text+=", and at the same time $HOT_RATE msg/s to the one room $HOT_ROOM"
  text+=", all POSTed to node 1. µs/delivery is the servers' CPU over the publish window per delivery; KiB/conn is"
  text+=" server RSS after connecting minus before, per client."
  if [ "$nodes" -eq 2 ]; then
    text+=" wsload's URL list puts each room's members on both nodes, so every publish crosses nodes through Redis."
  elif [ "$ROOMS" -eq 990 ]; then
    text+=" 990 rooms, not 1000: one server process holds every socket, and the open-files limit is 20,000 per process."
  fi
  cmd="MODE=$MODE PEERS=\"$PEERS\" ROOMS=$ROOMS PER_ROOM=$PER_ROOM RATE=$RATE HOT_RATE=$HOT_RATE bench/rooms.sh"
  { cat "$OUT/summary.md"; echo; echo "$text"; } > "$OUT/section.md"
  cat "$OUT/section.md"
  title="## Case D: 1000 rooms × 20 clients (${where#a }, bench/rooms.sh)"
  write_section "$title" "$OUT/section.md" \
    "Measured @WHEN@, commit @COMMIT@, @CORES@ cores; servers, wsload$([ "$nodes" -eq 1 ] || echo " and Redis") on loopback on the same cores. Command: \`$cmd\`."
  echo "results in $OUT"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  rooms_main "$@"
fi
