#!/usr/bin/env bash
# Cross-check of `tidings bench` against the independent load generator of the measuring kit (wsload): both listen
# to the same event stream of one tidings node at the same time, so their delivery counts and latency percentiles
# must agree. `tidings bench` connects its clients and publishes; wsload's clients subscribe to the same room and
# only count.
#
#   bench/crosscheck.sh                 # 1000 + 1000 clients in one room, rates "20 200" events/s x 10 s
#   CLIENTS=500 RATES="50" bench/crosscheck.sh
#
# Environment: TOOLS (default ../shared/tools beside the checkout), SCRATCH (writable copy of the kit, default
# /tmp/tidings-bench-kit, shared with bench/run.sh), CLIENTS (per tool), RATES, SECS, OUT (raw results).
# Writes the section "## Cross-check: tidings bench and wsload" of BENCHMARKS.md. Loopback only; the node it
# starts is stopped by pid.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/kit.sh
. "$ROOT/bench/kit.sh"
CLIENTS=${CLIENTS:-1000}
RATES=${RATES:-20 200}
SECS=${SECS:-10}
OUT=${OUT:-${TMPDIR:-/tmp}/tidings-crosscheck-$(date -u +%Y%m%dT%H%M%S)}
SECRET=crosscheck-jwt-secret-0123456789abcdef
KEY=crosscheck-api-key-0123456789
mkdir -p "$OUT"

kit_build_tidings
kit_prepare
W=$KIT_WSLOAD
T=$TIDINGS_BIN
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

node_pid=
stop_node() {
  if [ -n "$node_pid" ]; then
    kill "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
    node_pid=
  fi
}
trap stop_node EXIT

token=$("$T" gentoken --secret "$SECRET" --sub crosscheck --rooms 'bench*' --ttl 3600)

for rate in $RATES; do
  port=$(kit_free_port)
  "$T" serve --listen "127.0.0.1:$port" --jwt-secret "$SECRET" --api-key "$KEY" > "$OUT/node-$rate.log" 2>&1 &
  node_pid=$!
  kit_wait_http "http://127.0.0.1:$port/healthz"

  events=$((rate * SECS))
  expect=$((CLIENTS * events))
  ready=$OUT/ready-$rate
  rm -f "$ready"
  echo "== rate $rate/s: wsload $CLIENTS clients + tidings bench $CLIENTS clients, room bench-0, $events events"
  "$W" --url "ws://127.0.0.1:$port" --protocol socketio --sio-token "$token" --sio-subscribe \
    --clients "$CLIENTS" --channel bench-0 --duration $((SECS + 40)) --expect "$expect" --stop-at-expect \
    --ready-file "$ready" -q > "$OUT/wsload-$rate.json" 2> "$OUT/wsload-$rate.err" &
  wsload_pid=$!
  for _ in $(seq 1 300); do [ -e "$ready" ] && break; sleep 0.1; done
  [ -e "$ready" ] || { echo "crosscheck: wsload did not connect" >&2; exit 1; }
  "$T" bench --url "http://127.0.0.1:$port" --clients "$CLIENTS" --rooms 1 --room-prefix bench \
    --rate "$rate" --duration "$SECS" --jwt-secret "$SECRET" --api-key "$KEY" --json -q \
    > "$OUT/tidings-bench-$rate.json" 2> "$OUT/tidings-bench-$rate.err" \
    || echo "tidings bench fell short at $rate/s (exit $?); its numbers are in the table" >&2
  wait "$wsload_pid" || true
  stop_node
done

python3 - "$OUT" "$CLIENTS" "$SECS" "$RATES" > "$OUT/summary.md" <<'PY'
import json, sys
out, clients, secs, rates = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split()
def last_json(path):
    lines = [l for l in open(path) if l.strip().startswith("{")]
    return json.loads(lines[-1])
print("| rate (events/s) | tool | clients | deliveries / expected | p50 / p90 / p99 / p99.9 / max (ms) |")
print("| ---: | --- | ---: | --- | --- |")
for rate in rates:
    w = last_json(f"{out}/wsload-{rate}.json")
    t = last_json(f"{out}/tidings-bench-{rate}.json")
    # wsload counts what the node delivered of the events tidings bench had accepted.
    w_expected = t["accepted"] * w["connected"]
    w_total = w["deliveries"] + w.get("deliveries_outside_window", 0)
    print(f"| {rate} | wsload | {w['connected']:,} | {w_total:,} / {w_expected:,} | "
          f"{w['p50_ms']:.1f} / {w['p90_ms']:.1f} / {w['p99_ms']:.1f} / {w['p999_ms']:.1f} / {w['max_ms']:.1f} |")
    print(f"| {rate} | tidings bench | {t['connected']:,} | {t['deliveries']:,} / {t['expected']:,} | "
          f"{t['p50_ms']:.1f} / {t['p90_ms']:.1f} / {t['p99_ms']:.1f} / {t['p999_ms']:.1f} / {t['max_ms']:.1f} |")
PY
cat "$OUT/summary.md"

kit_write_section "## Cross-check: tidings bench and wsload (bench/crosscheck.sh)" "$OUT/summary.md" \
  "Command: \`CLIENTS=$CLIENTS RATES=\"$RATES\" SECS=$SECS bench/crosscheck.sh\`. One node; \`tidings bench\` connects $CLIENTS clients and publishes through the HTTP API, while wsload's $CLIENTS clients subscribe to the same room, so both tools time the same events (wsload's window includes every delivery after its clients connected)."
