#!/usr/bin/env bash
# Backend ingest paths side by side, on the same load: events at RATE/s into ROOMS rooms (CLIENTS members spread
# over them), published through
#   http   POST /v1/publish (the bench's keep-alive pool, CONCURRENCY requests in flight),
#   redis  PUBLISH on the cluster's ingest channel (2-node rows only: the channel is the cluster's),
#   kafka  records produced to a topic (PARTITIONS partitions, keyed by room, librdkafka batching of 5 ms) that
#          a `[[kafka.ingest]]` entry of the nodes consumes (one consumer group: each record is published once).
# Single node, and 2 nodes + Redis; fresh nodes, Redis and broker per run. Latency is send → delivery at a member
# (the send time is in the data; for Kafka the time the record was handed to the producer). Server CPU: the node
# processes (and redis-server) over the run; the broker's CPU is its own column. Writes the section
# "## Ingest paths: HTTP, Redis, Kafka (bench/ingest.sh)".
#
#   bench/ingest.sh                          # RATE=20000 DURATION=10, both modes, all paths
#   MODES=single PATHS=kafka RATE=5000 bench/ingest.sh --no-write
#
# The broker is tansu 0.6.0 with memory storage (scripts/kafka-tools.sh), not Apache Kafka (which cannot be
# installed here): its fetch lists every stored batch of a partition, so a run uses a fresh topic and the
# producer batches. Environment: MODES, PATHS, RATE, DURATION, WARMUP, CLIENTS, ROOMS, PARTITIONS, CONCURRENCY,
# OUT. Loopback only; every process it starts is stopped by pid.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/kit.sh
. "$ROOT/bench/kit.sh"
MODES=${MODES:-single cluster}
PATHS=${PATHS:-http redis kafka}
RATE=${RATE:-20000}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CLIENTS=${CLIENTS:-40}
ROOMS=${ROOMS:-20}
PARTITIONS=${PARTITIONS:-8}
CONCURRENCY=${CONCURRENCY:-64}
OUT=${OUT:-${TMPDIR:-/tmp}/tidings-ingest-$(date -u +%Y%m%dT%H%M%S)}
WRITE=1
[ "${1:-}" = --no-write ] && WRITE=0
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: > "$RESULTS"

trap kit_stop_all EXIT

kit_build_tidings
if [[ " $PATHS " == *" kafka "* ]]; then
  tools=$("$ROOT/scripts/kafka-tools.sh")
  TANSU_BIN=$(sed -n 's/^TANSU_BIN=//p' <<< "$tools")
  KAFKA_PYTHON=$(sed -n 's/^KAFKA_PYTHON=//p' <<< "$tools")
fi

# One line on stderr per run.
PRINT_RUN='
import json, sys
r = json.loads(sys.stdin.read())
if "deliveries" in r:
    print("   accepted {:,} ({:.0f}/s), delivered {:,} of {:,}, p50 {:.1f} ms, p99 {:.1f} ms, dup {}, out of order {}, "
          "server CPU {:.2f} s".format(r["accepted"], r["publish_rate"], r["deliveries"], r["expected"], r["p50_ms"],
                                       r["p99_ms"], r["duplicates"], r["out_of_order"], r["server_cpu_s"]))
'

# cpu_ticks PID...: user + system clock ticks of the processes, summed.
cpu_ticks() {
  local total=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}

# start_broker: a fresh tansu on a free port with a topic of PARTITIONS partitions (BROKERS, TOPIC, BROKER_PID).
start_broker() {
  local port
  port=$(kit_free_port)
  "$TANSU_BIN" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ > "$OUT/tansu-$port.log" 2>&1 &
  BROKER_PID=$!
  KIT_PIDS+=("$BROKER_PID")
  BROKERS=127.0.0.1:$port
  TOPIC=ingest-$RANDOM
  for _ in $(seq 1 100); do
    "$KAFKA_PYTHON" "$ROOT/interop/test/kafka_produce.py" --brokers "$BROKERS" --topic "$TOPIC" \
      --create "$PARTITIONS" > /dev/null 2>&1 && return
    sleep 0.2
  done
  echo "bench/ingest.sh: the broker did not start" >&2
  exit 1
}

# start_nodes N CONFIG: N tidings nodes (sharing REDIS_URL when set); URLS, NODE_PIDS.
start_nodes() {
  local n=$1 config=$2 port prefix="ingest$RANDOM" flags=()
  [ -n "${REDIS_URL:-}" ] && flags=(--redis "$REDIS_URL" --redis-key-prefix "$prefix")
  REDIS_PREFIX=$prefix
  URLS=""
  NODE_PIDS=()
  for ((i = 0; i < n; i++)); do
    port=$(kit_free_port)
    TIDINGS_CONFIG=$config "$TIDINGS_BIN" serve --listen "127.0.0.1:$port" "${flags[@]}" \
      > "$OUT/tidings-$port.log" 2>&1 &
    KIT_PIDS+=($!)
    NODE_PIDS+=($!)
    kit_wait_http "http://127.0.0.1:$port/healthz"
    URLS="${URLS:+$URLS,}http://127.0.0.1:$port"
  done
}

# run MODE PATH: one bench run, its JSON line (with mode, path and CPU) appended to RESULTS.
run() {
  local mode=$1 path=$2 config=$OUT/node.toml publish=() server_pids broker_pid=""
  REDIS_URL=""
  cp "$ROOT/bench/loopback-limits.toml" "$config"
  if [ "$path" = kafka ]; then
    start_broker
    broker_pid=$BROKER_PID
    printf '\n[[kafka.ingest]]\nbrokers = "%s"\ntopics = ["%s"]\ngroup = "bench"\n' "$BROKERS" "$TOPIC" >> "$config"
    publish=(--kafka-ingest "$BROKERS" --kafka-topic "$TOPIC" --publish-concurrency 4096)
  fi
  if [ "$mode" = cluster ]; then
    kit_start_redis "$OUT"
    start_nodes 2 "$config"
  else
    start_nodes 1 "$config"
  fi
  case $path in
    http) publish=(--publish-concurrency "$CONCURRENCY") ;;
    redis) publish=(--redis-ingest "$REDIS_URL" --redis-prefix "$REDIS_PREFIX" --publish-concurrency "$CONCURRENCY") ;;
  esac
  if [ "$path" = kafka ]; then
    # Every node has joined the group and has its partitions before the clock starts.
    sleep 6
  fi
  local server=("${NODE_PIDS[@]}")
  [ -n "${REDIS_PID:-}" ] && [ "$mode" = cluster ] && server+=("$REDIS_PID")
  echo "== $mode, $path: $RATE/s into $ROOMS rooms ($CLIENTS members), $DURATION s" >&2
  local s0 b0 s1 b1
  s0=$(cpu_ticks "${server[@]}")
  b0=$([ -n "$broker_pid" ] && cpu_ticks "$broker_pid" || echo 0)
  "$TIDINGS_BIN" bench --url "$URLS" --clients "$CLIENTS" --rooms "$ROOMS" --rate "$RATE" --duration "$DURATION" \
    --warmup "$WARMUP" --drain 10 --room-prefix "i$RANDOM" --json -q "${publish[@]}" \
    > "$OUT/run.json" 2> "$OUT/run.err" || echo "   (the run fell short: $(tail -1 "$OUT/run.err"))" >&2
  s1=$(cpu_ticks "${server[@]}")
  b1=$([ -n "$broker_pid" ] && cpu_ticks "$broker_pid" || echo 0)
  python3 - "$OUT/run.json" "$mode" "$path" "$((s1 - s0))" "$((b1 - b0))" "$(getconf CLK_TCK)" << 'EOF' | tee -a "$RESULTS" > /dev/null
import json, sys
text = open(sys.argv[1]).read().strip()
r = json.loads(text) if text else {}
r.update(mode=sys.argv[2], path=sys.argv[3], server_cpu_s=int(sys.argv[4]) / int(sys.argv[6]),
         broker_cpu_s=int(sys.argv[5]) / int(sys.argv[6]))
print(json.dumps(r))
EOF
  tail -1 "$RESULTS" | python3 -c "$PRINT_RUN" >&2
  kit_stop_all
  REDIS_PID=""
  sleep 1
}

for mode in $MODES; do
  for path in $PATHS; do
    [ "$mode" = single ] && [ "$path" = redis ] && continue
    run "$mode" "$path"
  done
done

TABLE=$OUT/summary.md
python3 "$ROOT/bench/ingest_table.py" "$RESULTS" > "$TABLE"
cat "$TABLE"
if [ "$WRITE" = 1 ]; then
  kit_write_section "## Ingest paths: HTTP, Redis, Kafka (bench/ingest.sh)" "$TABLE" \
    "Command: \`bench/ingest.sh\` (RATE=$RATE events/s for $DURATION s after $WARMUP s of warm-up, into ROOMS=$ROOMS rooms with CLIENTS=$CLIENTS members, one \`tidings bench\` publisher per run; fresh nodes, Redis and broker per run, all on the same 2 cores). HTTP: \`POST /v1/publish\`, $CONCURRENCY requests in flight. Redis: \`PUBLISH\` on the cluster's ingest channel. Kafka: records keyed by room into a fresh topic of $PARTITIONS partitions, produced with librdkafka (5 ms linger), consumed by the nodes' \`[[kafka.ingest]]\` group; the broker is tansu 0.6.0 with memory storage, whose CPU is its own column. Latency: send time (in the data) → delivery at a member. Server CPU: node processes (and redis-server) over the run. Lost = expected − delivered; every path answers or acknowledges only what is durable where the configuration keeps history."
fi
