#!/usr/bin/env bash
# What a reconnect costs: the same cluster and load twice, once with CHURN % of the clients a minute dropping their
# TCP connection and resuming their session on the next node (`--reconnect-per-min`), once with none. Redis on a
# free loopback port and NODES (2) `tidings serve` nodes, CLIENTS websocket clients in ROOMS rooms, RATE events/s
# POSTed round-robin over the nodes. The nodes' and Redis' CPU (user + system, /proc/<pid>/stat) is read at WARM s
# and at DURATION - 10 s; the difference between the two runs over the reconnects in the window is the CPU of one
# reconnect that recovers its session on another node (the new node's handshake, JWT, session take, replay and
# joins; the old node's close and record save; presence), for the nodes and for Redis. Also prints the CPU per
# connection-second and per delivery of the run without churn (an upper bound for each: both are in it). Writes
# the section "## Reconnect cost (bench/reconnect-cost.sh)" of BENCHMARKS.md unless --no-write; exits non-zero
# when a reconnect was not recovered or a delivery was lost.
#
#   bench/reconnect-cost.sh                      # 3000 clients, 30 rooms, 20 events/s, 310 s, 60%/min
#   bench/reconnect-cost.sh --duration 120 --no-write
#
# Options: --clients N --rooms K --rate R --duration S --churn PERCENT --nodes N --warm S --no-write.
# Environment: TIDINGS_BIN (else a release build), OUT (raw files). Loopback only; every process it starts is
# stopped by pid.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/kit.sh
. "$ROOT/bench/kit.sh"

CLIENTS=3000 ROOMS=30 RATE=20 DURATION=310 CHURN=60 NODES=2 WARM=60 WRITE=1
while [ $# -gt 0 ]; do
  case $1 in
    --clients) CLIENTS=$2; shift ;;
    --rooms) ROOMS=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --churn) CHURN=$2; shift ;;
    --nodes) NODES=$2; shift ;;
    --warm) WARM=$2; shift ;;
    --no-write) WRITE=0 ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
  esac
  shift
done
END=$((DURATION - 10))
[ "$END" -gt "$WARM" ] || { echo "--duration must be more than --warm + 10" >&2; exit 2; }
OUT=${OUT:-${TMPDIR:-/tmp}/tidings-reconnect-cost-$(date -u +%Y%m%dT%H%M%S)}
mkdir -p "$OUT"
trap kit_stop_all EXIT
kit_build_tidings
ulimit -n "$(ulimit -Hn)" 2> /dev/null || true

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2> /dev/null || echo 0; }

# run CHURN_PERCENT: one cluster and one bench; writes $OUT/run-<churn>.json with the CPU readings.
run() {
  local churn=$1 dir="$OUT/churn-$1" pids=() urls="" port i
  mkdir -p "$dir"
  kit_start_redis "$dir"
  for ((i = 0; i < NODES; i++)); do
    port=$(kit_free_port)
    "$TIDINGS_BIN" serve --listen "127.0.0.1:$port" --public-url "http://127.0.0.1:$port" --redis "$REDIS_URL" \
      --redis-key-prefix cost > "$dir/node$i.log" 2>&1 &
    pids+=($!)
    KIT_PIDS+=($!)
    urls+="${urls:+,}http://127.0.0.1:$port"
    kit_wait_http "http://127.0.0.1:$port/readyz"
  done
  echo "== reconnect cost: $churn%/min, $CLIENTS clients, $ROOMS rooms, $RATE events/s, $DURATION s -> $dir" >&2
  "$TIDINGS_BIN" bench --url "$urls" --publish-round-robin --clients "$CLIENTS" --rooms "$ROOMS" --room-prefix cost \
    --rate "$RATE" --duration "$DURATION" --reconnect-per-min "$churn" --workers 2 --source-ips 4 --ramp 2000/s \
    --connect-timeout 60 --drain 10 --json > "$dir/bench.json" 2> "$dir/bench.log" &
  local bench=$! start readings="" t p nodes redis
  KIT_PIDS+=("$bench")
  start=$(date +%s)
  for t in "$WARM" "$END"; do
    while [ $(($(date +%s) - start)) -lt "$t" ]; do sleep 1; done
    nodes=0
    for p in "${pids[@]}"; do nodes=$((nodes + $(cpu_ticks "$p"))); done
    redis=$(cpu_ticks "$REDIS_PID")
    readings+="${readings:+,}{\"t\":$t,\"nodes\":$nodes,\"redis\":$redis}"
  done
  local rc=0
  wait "$bench" || rc=$?
  kit_stop_all
  printf '{"churn":%s,"readings":[%s],"bench_rc":%s}\n' "$churn" "$readings" "$rc" > "$OUT/run-$churn.json"
}

run 0
run "$CHURN"

python3 - "$OUT" "$CHURN" "$(getconf CLK_TCK)" "$CLIENTS" > "$OUT/summary.md" <<'PY'
import json, sys
out, churn, hz, clients = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
rows = {}
for c in ("0", churn):
    run = json.load(open(f"{out}/run-{c}.json"))
    bench = json.load(open(f"{out}/churn-{c}/bench.json"))
    a, b = run["readings"]
    window = b["t"] - a["t"]
    ch = bench.get("churn") or {}
    reconnects = ch.get("reconnects", 0) * window / bench["active_s"]
    rows[c] = dict(window=window, nodes=(b["nodes"] - a["nodes"]) / hz, redis=(b["redis"] - a["redis"]) / hz,
                   reconnects=reconnects, recovered=ch.get("recovered", 0), all=ch.get("reconnects", 0),
                   deliveries=bench["deliveries"], expected=bench["expected"],
                   per_s=bench["deliveries_per_s"], lost=ch.get("lost", bench["expected"] - bench["deliveries"]))
base, hot = rows["0"], rows[churn]
print("| run | window s | reconnects in the window | node CPU s (all nodes) | Redis CPU s | deliveries / expected | recovered |")
print("| --- | ---: | ---: | ---: | ---: | --- | --- |")
for c, r in (("no churn", base), (f"{churn}%/min", hot)):
    print(f"| {c} | {r['window']} | {r['reconnects']:,.0f} | {r['nodes']:.2f} | {r['redis']:.2f} | "
          f"{r['deliveries']:,} / {r['expected']:,} | {r['recovered']:,} of {r['all']:,} |")
n = max(hot["reconnects"] - base["reconnects"], 1)
print()
print(f"- per reconnect that recovers on another node: **{(hot['nodes'] - base['nodes']) / n * 1000:.2f} ms** of node CPU, "
      f"**{(hot['redis'] - base['redis']) / n * 1000:.2f} ms** of Redis CPU")
cps = base["nodes"] / base["window"] / clients * 1e6
print(f"- without churn: {cps:.2f} µs of node CPU per connection-second and "
      f"{base['nodes'] / max(base['per_s'] * base['window'], 1) * 1e6:.1f} µs per delivery (each an upper bound: "
      f"the run has both {clients:,} idle connections and {base['per_s']:,.0f} deliveries/s)")
PY
cat "$OUT/summary.md"
if [ "$WRITE" = 1 ]; then
  kit_write_section "## Reconnect cost (bench/reconnect-cost.sh)" "$OUT/summary.md" \
    "Command: \`bench/reconnect-cost.sh --clients $CLIENTS --rooms $ROOMS --rate $RATE --duration $DURATION --churn $CHURN\`; $NODES nodes + one Redis and the load generator on the same cores; CPU from /proc between ${WARM} s and ${END} s of each run."
fi
echo "results in $OUT" >&2
python3 - "$OUT" "$CHURN" <<'PY'
import json, sys
out, churn = sys.argv[1], sys.argv[2]
bad = []
for c in ("0", churn):
    run = json.load(open(f"{out}/run-{c}.json"))
    bench = json.load(open(f"{out}/churn-{c}/bench.json"))
    ch = bench.get("churn") or {}
    if run["bench_rc"] != 0 or bench["deliveries"] != bench["expected"] or ch.get("not_recovered", 0) or ch.get("lost", 0):
        bad.append(c)
sys.exit(f"reconnect cost: runs {bad} lost deliveries, left sessions unrecovered or failed" if bad else 0)
PY
