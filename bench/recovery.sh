#!/usr/bin/env bash
# Recovery and history benchmark.
#
#   bench/recovery.sh [recovery_bench args...]      (default: --clients 1000 --events 1000 --payload 100)
#
# Builds examples/recovery_bench.rs, runs it RUNS times (default 3) with the given arguments, then RUNS more
# times replay-only with the reconnection wave paced to PACED clients connecting at once (default 100; PACED=0
# skips these) and once replay-only with events published during the wave (a correctness check of the
# replay/live seam, not tabulated; SEAM=0 skips it), prints a table with the median of each metric and writes it as the section
# "## Recovery and history" of BENCHMARKS.md (created if missing; only that section is replaced).
# Any correctness failure (a client not recovered, an event missing, out of order or duplicated) stops the
# script with the run's output and leaves BENCHMARKS.md untouched.
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
PACED=${PACED:-100}
SECTION="## Recovery and history"
ARGS=("$@")
if [ ${#ARGS[@]} -eq 0 ]; then
    ARGS=(--clients 1000 --events 1000 --payload 100)
fi
SEAM=${SEAM:-100}
PACED_ARGS=("${ARGS[@]}" --skip-memory --wave-concurrency "$PACED")
SEAM_ARGS=("${ARGS[@]}" --skip-memory --live-during "$SEAM" --live-interval-ms 5)

# Every client is a file descriptor on both ends (the example raises its own soft limit too).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo build --release --example recovery_bench
BIN=target/release/examples/recovery_bench
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# run NAME COUNT ARGS...: COUNT runs; JSON lines to $OUT/NAME.jsonl.
run() {
    local name=$1 count=$2
    shift 2
    : >"$OUT/$name.jsonl"
    for i in $(seq 1 "$count"); do
        echo "== $name run $i/$count: recovery_bench $* --json"
        if ! "$BIN" "$@" --json >"$OUT/run.log" 2>&1; then
            cat "$OUT/run.log"
            echo "recovery_bench failed ($name run $i): see the output above" >&2
            exit 1
        fi
        sed '$d' "$OUT/run.log"
        tail -n 1 "$OUT/run.log" >>"$OUT/$name.jsonl"
    done
}

run main "$RUNS" "${ARGS[@]}"
if [ "$PACED" != 0 ]; then
    run paced "$RUNS" "${PACED_ARGS[@]}"
fi
if [ "$SEAM" != 0 ]; then
    run seam 1 "${SEAM_ARGS[@]}"
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# rows FILE SPEC...: markdown rows "| label | run 1 | … | median |"; SPEC is "label|jq path|decimals".
rows() {
    local file=$1
    shift
    local spec label path decimals
    for spec in "$@"; do
        IFS='|' read -r label path decimals <<<"$spec"
        jq -r "$path // \"nan\"" "$file" | paste -sd' ' - |
            awk -v label="$label" -v d="$decimals" '{
                n = split($0, v, " ")
                f = "%." d "f"
                line = "| " label " |"
                for (i = 1; i <= n; i++) {
                    s[i] = v[i] + 0
                    line = line sprintf(" " f " |", v[i])
                }
                for (i = 2; i <= n; i++) {        # insertion sort for the median
                    x = s[i]
                    for (j = i - 1; j >= 1 && s[j] > x; j--) s[j + 1] = s[j]
                    s[j + 1] = x
                }
                med = s[int((n + 1) / 2)]
                printf "%s **" f "** |\n", line, med
            }'
    done
}

header() {
    local cols="| metric |" sep="| --- |"
    for i in $(seq 1 "$RUNS"); do
        cols="$cols run $i |"
        sep="$sep ---: |"
    done
    printf '%s median |\n%s ---: |\n' "$cols" "$sep"
}

J="$OUT/main.jsonl"
first() { head -n 1 "$J" | jq -r "$1"; }
CLIENTS=$(first .args.clients)
EVENTS=$(first .args.events)
PAYLOAD=$(first .args.payload)
PRE=$(first .args.pre_events)
HEVENTS=$(first .args.history_events)
HROOMS=$(first .args.history_rooms)
BACKLOG=$(first '.replay.listen_backlog // "?"')
CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//' || echo unknown)
MEM_GIB=$(awk '/MemTotal/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
COMMIT=$(PYTHONPATH=bench python3 -c 'import section; print(section.commit_label("."))')

{
    echo "$SECTION"
    echo
    echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') by \`bench/recovery.sh\` on $(nproc) cores ($CPU_MODEL), ${MEM_GIB} GiB RAM,"
    echo "Linux $(uname -r), $(rustc --version | cut -d' ' -f1-2), commit $COMMIT. Node and clients share one process"
    echo "(\`examples/recovery_bench.rs\`): the node on its own Tokio runtime (2 threads), the clients on another (2 threads)."
    echo "Each column is one run; **bold** is the median of $RUNS. Load average (1/5/15 min) before: $LOAD_BEFORE, after:"
    echo "$LOAD_AFTER (other work on the machine adds noise to the timings)."
    echo
    echo "Command ($RUNS runs): \`cargo run --release --example recovery_bench -- ${ARGS[*]}\`"
    if [ "$PACED" != 0 ]; then
        echo "Paced wave ($RUNS runs): \`cargo run --release --example recovery_bench -- ${PACED_ARGS[*]}\`"
    fi
    echo
    echo "### Replay after a mass disconnection"
    echo
    echo "$CLIENTS websocket clients in one room each receive $PRE live event(s), then their TCP connections are dropped"
    echo "(no close frame). Once \`/healthz\` shows 0 connections (sessions parked), $EVENTS events of $PAYLOAD bytes of padding"
    echo "are published; then all clients reconnect at once with \`40{token,pid,offset}\`. Time runs until every client"
    echo "has its CONNECT reply with its old sid and all $EVENTS events, byte-checked in order (a duplicate during a"
    echo "300 ms grace period afterwards also fails the run). CPU is per thread group over that interval."
    echo
    header
    rows "$J" \
        "clients recovered (same sid, all events)|.replay.recovered|0" \
        "replay time, all clients (ms)|.replay.total_ms|0" \
        "events replayed / s (N x E / time)|.replay.events_per_sec|0" \
        "per-client time to complete p50 (ms)|.replay.client_complete_p50_ms|0" \
        "per-client time to complete p99 (ms)|.replay.client_complete_p99_ms|0" \
        "per-client CONNECT reply p50 (ms)|.replay.client_connect_p50_ms|0" \
        "per-client CONNECT reply to last event p99 (ms)|.replay.client_replay_p99_ms|1" \
        "process CPU during the replay (ms, upper bound)|.replay.process_cpu_ms|0" \
        "server threads CPU (ms)|.replay.server_threads_cpu_ms|0" \
        "server CPU per replayed event (us)|.replay.server_cpu_us_per_event|2" \
        "event packet on the wire (B)|.replay.packet_bytes|0" \
        "kernel listen-queue overflows during the wave|.replay.tcp_counters.ListenOverflows|0"
    echo
    echo "The node listens with an accept queue of $BACKLOG (\`ss -ltn\` Send-Q). Listen-queue overflows drop handshakes"
    echo "that the client retransmits after 1 s, which then dominates the all-at-once p99."
    if [ "$PACED" != 0 ]; then
        echo
        echo "Same, with at most $PACED clients between TCP connect and CONNECT reply at once (\`--wave-concurrency $PACED\`):"
        echo
        header
        rows "$OUT/paced.jsonl" \
            "clients recovered (same sid, all events)|.replay.recovered|0" \
            "replay time, all clients (ms)|.replay.total_ms|0" \
            "events replayed / s (N x E / time)|.replay.events_per_sec|0" \
            "per-client time to complete p99 (ms)|.replay.client_complete_p99_ms|0" \
            "server threads CPU (ms)|.replay.server_threads_cpu_ms|0" \
            "server CPU per replayed event (us)|.replay.server_cpu_us_per_event|2" \
            "kernel listen-queue overflows during the wave|.replay.tcp_counters.ListenOverflows|0"
    fi
    if [ "$SEAM" != 0 ]; then
        echo
        echo "Seam check (1 run, \`cargo run --release --example recovery_bench -- ${SEAM_ARGS[*]}\`): $SEAM more events"
        echo "published one by one during the all-at-once wave: $(jq -r '.replay | "\(.recovered) of \(.clients) clients"' \
            "$OUT/seam.jsonl") recovered with all $(first .args.events) + $SEAM events in order, none twice."
    fi
    echo
    echo "### History memory per stored event"
    echo
    echo "A fresh node with no clients stores $HEVENTS events ($PAYLOAD bytes of padding each) over $HROOMS rooms, published"
    echo "in batches of 1000. RSS is \`VmRSS\` before/after (after one warm-up batch); heap is what the process requested from"
    echo "the allocator meanwhile (a counting global allocator, so allocator overhead excluded); accounted is the store's"
    echo "own \`tidings_history_bytes\` (what \`history.max_bytes\` is compared with)."
    echo
    header
    rows "$J" \
        "RSS per stored event (B)|.memory.rss_bytes_per_event|0" \
        "RSS per stored event after malloc_trim (B)|.memory.rss_trimmed_bytes_per_event|0" \
        "heap requested per stored event (B)|.memory.heap_bytes_per_event|0" \
        "heap blocks per stored event|.memory.heap_blocks_per_event|2" \
        "accounted per stored event (B)|.memory.accounted_bytes_per_event|0" \
        "encoded event packet (B)|.memory.packet_bytes_per_event|0" \
        "publish rate, batch API (events/s)|.memory.publish_events_per_sec|0"
    echo
    echo "Largest retained heap blocks per event (run 1): $(head -n 1 "$J" |
        jq -r '[.memory.heap_blocks_by_size[] | "\(.size) B x \(.per_event * 100 | round / 100)"] | join(", ")')."
    echo
} >"$OUT/section.md"

echo
cat "$OUT/section.md"

python3 bench/section.py --whole BENCHMARKS.md "$SECTION" "$OUT/section.md"
