#!/usr/bin/env bash
# Case C on two floor processes: what the bare broadcast server of the kit (rawlimit, Socket.IO framing) reaches
# when, like a 2-node cluster, two server processes share the cores with the load generator. rawlimit has no
# cluster adapter, so each of the two processes gets its own publisher at the case's rate: every client still
# receives 50 events/s, 500 in all, the same deliveries as 2-node case C, with no Redis hop. It is a lower bound
# for any two-process server on this machine, and the reference for the 2-node latency target.
#
#   bench/floor-pair.sh OUTDIR
#
# Writes, with the kit's field names (bench/repeats.py reads it beside the kit's own runs):
#   OUTDIR/floor-pair.jsonl (one line appended, peer "rawlimit-pair", case C), OUTDIR/rawlimit-pair.C.wsload.json,
#   OUTDIR/rawlimit-pair.C.publish.json (both publishers added up), and their .err logs. (Not the kit's
#   summary.jsonl: the kit's own summary script expects per-node memory figures there.)
# Server CPU is user + system time of both processes (/proc) from just before publishing until the delivery count
# last moved. Ports are free ones on 127.0.0.1; both processes are stopped by pid at the end.
# Environment: TOOLS, SCRATCH (bench/kit.sh), CLIENTS (20000), RATE (50 per process), SECS (10).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/kit.sh
. "$ROOT/bench/kit.sh"
OUT=${1:?usage: bench/floor-pair.sh OUTDIR}
CLIENTS=${CLIENTS:-20000}
RATE=${RATE:-50}
SECS=${SECS:-10}
PEER=rawlimit-pair
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
kit_prepare
ulimit -n "$(ulimit -Hn)" 2> /dev/null || true
BIN=$SCRATCH/peers/rawlimit/target/release/rawlimit
[ -x "$BIN" ] || (cd "$SCRATCH/peers/rawlimit" && cargo build --release --quiet)

pids=()
wpid=
cleanup() {
  [ -z "$wpid" ] || kill "$wpid" 2> /dev/null || true
  for pid in "${pids[@]}"; do kill "$pid" 2> /dev/null || true; done
}
trap cleanup EXIT

ports=()
for _ in 1 2; do
  port=$(kit_free_port)
  # setsid: each server in its own session, as the kit starts cluster nodes
  PORT=$port PROTO=socketio setsid "$BIN" > "$OUT/$PEER.node-$port.txt" 2>&1 < /dev/null &
  pids+=($!)
  ports+=("$port")
  kit_wait_http "http://127.0.0.1:$port/stats"
done

cpu_of_servers() { for pid in "${pids[@]}"; do awk '{print $14+$15}' "/proc/$pid/stat"; done | paste -sd+ | bc; }
last_deliveries() { grep -o 'window: deliveries [0-9]*' "$1" 2> /dev/null | tail -1 | awk '{print $3}'; }

pre=$OUT/$PEER.C
expect=$((CLIENTS * RATE * SECS))
rm -f "$pre.ready"
"$KIT_WSLOAD" --url "ws://127.0.0.1:${ports[0]},ws://127.0.0.1:${ports[1]}" --protocol socketio --clients "$CLIENTS" \
  --channel bench --duration 150 --expect "$expect" --stop-at-expect --ready-file "$pre.ready" --label "$PEER-C" \
  --source-ips 4 --ramp 2000 > "$pre.wsload.json" 2> "$pre.wsload.err" &
wpid=$!
while [ ! -f "$pre.ready" ]; do
  kill -0 "$wpid" 2> /dev/null || { echo "floor-pair: wsload exited early" >&2; cat "$pre.wsload.err" >&2; exit 1; }
  sleep 0.2
done
sleep 10 # idle, as the kit's case C

tck=$(getconf CLK_TCK)
cpu0=$(cpu_of_servers)
t0=$(date +%s.%N)
pubs=()
for port in "${ports[@]}"; do
  "$KIT_WSLOAD" publish --http "http://127.0.0.1:$port/publish" --rate "$RATE" --duration "$SECS" \
    --body-template '{"channel":"bench","data":{"t":$T,"seq":$SEQ}}' > "$pre.publish-$port.json" \
    2> "$pre.publish-$port.err" &
  pubs+=($!)
done
wait "${pubs[@]}" || true
cpu1=$(cpu_of_servers)
t1=$(date +%s.%N)
last=-1
while kill -0 "$wpid" 2> /dev/null; do
  n=$(last_deliveries "$pre.wsload.err")
  if [ "${n:-0}" != "$last" ]; then
    last=${n:-0}
    cpu1=$(cpu_of_servers)
    t1=$(date +%s.%N)
  fi
  sleep 0.2
done
wait "$wpid" || true
wpid=

python3 - "$OUT" "$PEER" "$tck" "$cpu0" "$cpu1" "$t0" "$t1" "$pre" "${ports[@]}" <<'PY'
import json, sys
out, peer, tck, cpu0, cpu1, t0, t1, pre, *ports = sys.argv[1:]
pubs = [json.load(open(f"{pre}.publish-{p}.json")) for p in ports]
publish = {k: sum(p.get(k, 0) for p in pubs) for k in ("ok", "sent", "planned")}
json.dump(publish, open(f"{pre}.publish.json", "w"))
w = json.load(open(f"{pre}.wsload.json"))
cpu = (int(cpu1) - int(cpu0)) / int(tck)
dl = w.get("deliveries") or 0
row = {"peer": peer, "case": "C", "server_cpu_s": round(cpu, 2), "cpu_window_s": round(float(t1) - float(t0), 2),
       "deliveries": dl, "target_deliveries": publish["ok"] // len(ports) * (w.get("connected") or 0),
       "server_cpu_us_per_delivery": round(cpu * 1e6 / dl, 2) if dl else None,
       "loadgen_cpu_s_window": w.get("loadgen_cpu_s_window")}
with open(f"{out}/floor-pair.jsonl", "a") as f:
    f.write(json.dumps(row) + "\n")
print(json.dumps({**row, "p50_ms": w.get("p50_ms"), "p99_ms": w.get("p99_ms")}))
PY
