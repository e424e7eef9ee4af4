#!/usr/bin/env bash
# The 100,000-connection soak: Redis on a free loopback port and NODES (6) `tidings serve` nodes in cluster mode
# (each with its soft open-files limit raised to the hard one), CLIENTS websocket clients from several
# `tidings bench` client processes over 127.0.0.x source addresses, each joined to one of ROOMS rooms, RATE
# events/s POSTed round-robin over the nodes' /v1/publish for DURATION s, while CHURN % of the clients a minute
# drop their TCP connection and resume their session on the next node (`--reconnect-per-min`). Every node's
# VmRSS, the Redis RSS and the load generator's are sampled every SAMPLE_S s into rss.csv. Reports connected,
# deliveries expected / got, lost / duplicated / out of order, reconnects / recovered, latency, per-node RSS after
# the warm-up (WARM_S) against the end and its slope (KiB/min, least squares over the post-warm-up samples), and
# the servers' CPU. Writes the section "## 100,000 connections, 30-minute soak (bench/soak.sh)" of BENCHMARKS.md
# unless --no-write; exits non-zero when anything was lost, repeated, out of order or not recovered.
#
#   bench/soak.sh                       # 100,000 clients, 1000 rooms, 20 events/s, 1800 s, 1%/min
#   bench/soak.sh --quick --no-write    # smoke run: 3000 clients, 30 rooms, 120 s, 30%/min
#   bench/soak.sh --clients 20000 --duration 300 --no-write
#
# Options: --clients N --rooms K --rate R --duration S --churn PERCENT --nodes N --workers P --source-ips N
# --warm S --sample S --quick --no-write. Environment: TIDINGS_BIN (else a release build), OUT (raw files).
# Loopback only; every process it starts is stopped by pid.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/kit.sh
. "$ROOT/bench/kit.sh"

CLIENTS=100000 ROOMS=1000 RATE=20 DURATION=1800 CHURN=1 NODES=6 WORKERS="" SOURCE_IPS=16 WARM=300 SAMPLE=30
WRITE=1 QUICK=0
while [ $# -gt 0 ]; do
  case $1 in
    --clients) CLIENTS=$2; shift ;;
    --rooms) ROOMS=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --churn) CHURN=$2; shift ;;
    --nodes) NODES=$2; shift ;;
    --workers) WORKERS=$2; shift ;;
    --source-ips) SOURCE_IPS=$2; shift ;;
    --warm) WARM=$2; shift ;;
    --sample) SAMPLE=$2; shift ;;
    --quick) QUICK=1 ;;
    --no-write) WRITE=0 ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
  esac
  shift
done
if [ "$QUICK" = 1 ]; then
  CLIENTS=3000 ROOMS=30 DURATION=120 CHURN=30 WARM=30 SAMPLE=10
fi
# One client process per ~16,000 clients (the open-files limit is 20,000 per process), at least 2.
[ -n "$WORKERS" ] || WORKERS=$(( (CLIENTS + 15999) / 16000 < 2 ? 2 : (CLIENTS + 15999) / 16000 ))
OUT=${OUT:-${TMPDIR:-/tmp}/tidings-soak-$(date -u +%Y%m%dT%H%M%S)}
mkdir -p "$OUT"
trap kit_stop_all EXIT
kit_build_tidings
ulimit -n "$(ulimit -Hn)" 2> /dev/null || true

kit_start_redis "$OUT"
PORTS=() NODE_PIDS=() URLS=""
for ((i = 0; i < NODES; i++)); do
  port=$(kit_free_port)
  PORTS+=("$port")
  "$TIDINGS_BIN" serve --listen "127.0.0.1:$port" --public-url "http://127.0.0.1:$port" --redis "$REDIS_URL" \
    --redis-key-prefix soak > "$OUT/node$i.log" 2>&1 &
  NODE_PIDS+=($!)
  KIT_PIDS+=($!)
  URLS+="${URLS:+,}http://127.0.0.1:$port"
done
for port in "${PORTS[@]}"; do kit_wait_http "http://127.0.0.1:$port/readyz"; done
echo "== soak: $CLIENTS clients, $ROOMS rooms, $RATE events/s, $DURATION s, $CHURN%/min, $NODES nodes, $WORKERS client processes -> $OUT" >&2

cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat" 2> /dev/null || echo 0; }
rss_of() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2> /dev/null || echo 0; }
CPU0=0
for p in "${NODE_PIDS[@]}"; do CPU0=$((CPU0 + $(cpu_of "$p"))); done

"$TIDINGS_BIN" bench --url "$URLS" --publish-round-robin --clients "$CLIENTS" --rooms "$ROOMS" --room-prefix soak \
  --rate "$RATE" --duration "$DURATION" --reconnect-per-min "$CHURN" --workers "$WORKERS" \
  --source-ips "$SOURCE_IPS" --ramp 2000/s --connect-timeout 60 --drain 30 --json \
  > "$OUT/bench.json" 2> "$OUT/bench.log" &
BENCH_PID=$!
KIT_PIDS+=("$BENCH_PID")

# rss.csv: seconds since the bench started, then KiB of every node, Redis and the load generator (the bench
# process and its workers).
{
  printf 't_s'
  for ((i = 0; i < NODES; i++)); do printf ',node%d' "$i"; done
  printf ',redis,loadgen\n'
} > "$OUT/rss.csv"
START=$(date +%s)
while kill -0 "$BENCH_PID" 2> /dev/null; do
  line=$(( $(date +%s) - START ))
  for p in "${NODE_PIDS[@]}"; do line+=",$(rss_of "$p")"; done
  gen=$(rss_of "$BENCH_PID")
  for w in $(pgrep -P "$BENCH_PID" || true); do gen=$((gen + $(rss_of "$w"))); done
  echo "$line,$(rss_of "$REDIS_PID"),$gen" >> "$OUT/rss.csv"
  for _ in $(seq 1 "$SAMPLE"); do kill -0 "$BENCH_PID" 2> /dev/null || break; sleep 1; done
done
BENCH_RC=0
wait "$BENCH_PID" || BENCH_RC=$?
CPU1=0
for p in "${NODE_PIDS[@]}"; do CPU1=$((CPU1 + $(cpu_of "$p"))); done
for port in "${PORTS[@]}"; do
  curl -sf --noproxy '*' "http://127.0.0.1:$port/metrics" | grep -E '^tidings_(recoveries|events_replayed)' || true
done > "$OUT/recovery-metrics.txt"
kit_stop_all

python3 "$ROOT/bench/soak.py" --out "$OUT" --warm "$WARM" --server-cpu-s "$(( (CPU1 - CPU0) / $(getconf CLK_TCK) ))" \
  --nodes "$NODES" > "$OUT/summary.md"
cat "$OUT/summary.md"
tail -3 "$OUT/bench.log" >&2
if [ "$WRITE" = 1 ]; then
  cmd="bench/soak.sh --clients $CLIENTS --rooms $ROOMS --rate $RATE --duration $DURATION --churn $CHURN"
  kit_write_section "## 100,000 connections, 30-minute soak (bench/soak.sh)" "$OUT/summary.md" \
    "Command: \`$cmd\`; $NODES nodes + one Redis, $WORKERS client processes, everything on loopback on the same cores."
fi
echo "results in $OUT" >&2
python3 "$ROOT/bench/soak.py" --out "$OUT" --warm "$WARM" --check
[ "$BENCH_RC" = 0 ] || { echo "soak: the bench exited $BENCH_RC" >&2; exit 1; }
