#!/usr/bin/env bash
# Rolling deploys under load: Redis, NODES tidings nodes in cluster mode and nginx in front of them as a plain
# round-robin balancer (websocket upgrade, no sticky sessions, next upstream on error / timeout / 503). CLIENTS
# stock socket.io-client clients (polling, then the upgrade) connect through nginx, each joined to one of ROOMS
# rooms by its token; a publisher sends RATE events a second round-robin over the rooms through nginx's
# POST /v1/publish. Then every node is restarted in turn (SIGTERM, wait for its exit, start it again on the same
# port, wait for /readyz, settle) while the load runs. The driver (bench/rolling/run.mjs) counts per client the
# events lost, duplicated and out of order, the clients not connected at the end, and per disconnect the time to
# the next connect and whether the session was recovered. Writes the section
# "## Rolling deploys (bench/rolling.sh)".
#
#   bench/rolling.sh                                  # 6000 clients, 100 rooms, 50 events/s, 3 nodes, every row
#   bench/rolling.sh --quick --no-write               # a smoke run of the first row (300 clients, ~30 s)
#   bench/rolling.sh --runs "drain norecovery" --drain-window 8
#
# Rows (--runs): drain (recovery on, clients closed over --drain-window), norecovery (the same with
# `[recovery] enabled = false`: what a Socket.IO deploy does to its clients), nodrain (recovery on, every client
# of a node closed at once). A binary without the drain settings closes every client at once on SIGTERM: then
# only the nodrain and norecovery rows run, both without a drain.
# Options: --clients N --rooms K --rate R --nodes N --drain-window S --unready S --settle S --runs "…" --quick
# --no-write, --from DIR (no runs: the table and section of the results in DIR, given the same options).
# Environment: TIDINGS_BIN (else a release build), OUT. Loopback only; every process it starts is
# stopped by pid.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/kit.sh
. "$ROOT/bench/kit.sh"

CLIENTS=6000 ROOMS=100 RATE=50 NODES=3 DRAIN_WINDOW=20 UNREADY=0 SETTLE=5 RUNS="" WRITE=1 QUICK=0
RAMP=300 WARMUP=5 TAIL=5 DEST_IPS=4 FROM=""
while [ $# -gt 0 ]; do
  case $1 in
    --clients) CLIENTS=$2; shift ;;
    --rooms) ROOMS=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --nodes) NODES=$2; shift ;;
    --drain-window) DRAIN_WINDOW=$2; shift ;;
    --unready) UNREADY=$2; shift ;;
    --settle) SETTLE=$2; shift ;;
    --runs) RUNS=$2; shift ;;
    --quick) QUICK=1 ;;
    --no-write) WRITE=0 ;;
    --from) FROM=$2; shift ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
  esac
  shift
done
if [ "$QUICK" = 1 ]; then
  CLIENTS=300 ROOMS=10 RATE=20 DRAIN_WINDOW=2 SETTLE=3 WARMUP=2 TAIL=3
fi
OUT=${OUT:-${TMPDIR:-/tmp}/tidings-rolling-$(date -u +%Y%m%dT%H%M%S)}
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
if [ -n "$FROM" ]; then
  # The table (and section) of an earlier run's results, with the options it ran with.
  OUT=$FROM RUNS=""
  LOAD_AT_START=$(cat "$OUT/load-at-start")
else
  mkdir -p "$OUT"
  echo "$LOAD_AT_START" > "$OUT/load-at-start"
  : > "$OUT/results.jsonl"
fi
RESULTS=$OUT/results.jsonl
trap kit_stop_all EXIT

[ -n "$FROM" ] || kit_build_tidings
command -v nginx > /dev/null || { echo "bench: nginx is needed (apt-get install -y nginx)" >&2; exit 2; }
if [ ! -d "$ROOT/bench/rolling/node_modules/socket.io-client" ]; then
  (cd "$ROOT/bench/rolling" && npm ci --no-audit --no-fund --silent)
fi
ulimit -n "$(ulimit -Hn)" 2> /dev/null || true

# Does the binary drain (readiness off, then clients closed over a window)? Otherwise SIGTERM closes all at once.
HAS_DRAIN=0
[ -n "$FROM" ] || ! "$TIDINGS_BIN" genconfig | grep -q '^drain_window_secs' || HAS_DRAIN=1
if [ -z "$RUNS" ] && [ -z "$FROM" ]; then
  if [ "$HAS_DRAIN" = 1 ]; then RUNS="drain norecovery nodrain"; else RUNS="nodrain norecovery"; fi
  [ "$QUICK" = 1 ] && RUNS=${RUNS%% *}
fi

now_ms() { date +%s%3N; }

# forget_pid PID: PID has exited; kit_stop_all must not signal whatever process gets the number next.
forget_pid() {
  local kept=() p
  for p in "${KIT_PIDS[@]}"; do [ "$p" = "$1" ] || kept+=("$p"); done
  KIT_PIDS=("${kept[@]}")
}

# write_config FILE RECOVERY(true|false) WINDOW: the nodes' config of one row.
write_config() {
  {
    echo "# Written by bench/rolling.sh: per-address limits off (all clients come through nginx on loopback)."
    echo "[limits]"
    echo "max_sessions_per_ip = 0"
    echo "handshakes_per_sec_per_ip = 0"
    echo "[recovery]"
    echo "enabled = $2"
    echo "[shutdown]"
    echo "drain_secs = $(($3 + UNREADY + 10))"
    if [ "$HAS_DRAIN" = 1 ]; then
      echo "unready_secs = $UNREADY"
      echo "drain_window_secs = $3"
    fi
  } > "$1"
}

# start_node I: node I on its port (PORTS[I]) in the cluster; waits for /readyz. Sets NODE_PIDS[I].
start_node() {
  local i=$1 port=${PORTS[$1]}
  NODE_LOGS[i]=$OUT/$RUN-node$i-$(now_ms).log
  "$TIDINGS_BIN" serve --config "$CONFIG" --listen "127.0.0.1:$port" --public-url "http://127.0.0.1:$port" \
    --redis "$REDIS_URL" --redis-key-prefix roll > "${NODE_LOGS[i]}" 2>&1 &
  NODE_PIDS[i]=$!
  KIT_PIDS+=("${NODE_PIDS[i]}")
  kit_wait_http "http://127.0.0.1:$port/readyz"
}

# start_nginx DIR: nginx round-robin over PORTS, listening on 127.0.0.1..DEST_IPS on NGINX_PORT (the clients
# spread over the addresses: each has its own range of source ports). max_fails=0: a refused connection or a 503
# sends the request on to the next node, and no node is benched for fail_timeout (with restarts seconds apart,
# nginx would otherwise answer "no live upstreams" while two nodes were benched).
start_nginx() {
  local dir=$1 i
  mkdir -p "$dir/tmp"
  {
    echo "user $(id -un) $(id -gn);"
    echo "worker_processes 2; worker_rlimit_nofile 40000; pid $dir/nginx.pid; error_log $dir/error.log warn;"
    echo "events { worker_connections 20000; multi_accept on; }"
    echo "http {"
    echo "  client_body_temp_path $dir/tmp/body; proxy_temp_path $dir/tmp/proxy; fastcgi_temp_path $dir/tmp/f;"
    echo "  uwsgi_temp_path $dir/tmp/u; scgi_temp_path $dir/tmp/s;"
    echo "  map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }"
    echo "  log_format upstreams '\$msec \$request_time \$status \$request_method \$request_uri up=\$upstream_addr up_status=\$upstream_status';"
    echo "  access_log $dir/access.log upstreams buffer=256k flush=1s;"
    echo "  upstream tidings {"
    for i in "${!PORTS[@]}"; do echo "    server 127.0.0.1:${PORTS[$i]} max_fails=0;"; done
    echo "  }"
    echo "  server {"
    for ((i = 1; i <= DEST_IPS; i++)); do echo "    listen 127.0.0.$i:$NGINX_PORT backlog=4096;"; done
    echo "    location / {"
    echo "      proxy_pass http://tidings; proxy_http_version 1.1; proxy_buffering off;"
    echo "      proxy_set_header Upgrade \$http_upgrade; proxy_set_header Connection \$connection_upgrade;"
    echo "      proxy_set_header Host \$host;"
    echo "      proxy_next_upstream error timeout http_503; proxy_next_upstream_tries $((NODES + 1));"
    echo "      proxy_connect_timeout 2s; proxy_read_timeout 120s; proxy_send_timeout 120s;"
    echo "    }"
    echo "  }"
    echo "}"
  } > "$dir/nginx.conf"
  nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' > "$dir/nginx.out" 2>&1 &
  KIT_PIDS+=("$!")
  kit_wait_http "http://127.0.0.1:$NGINX_PORT/healthz"
}

# restart_node I: SIGTERM, wait for the exit (SIGKILL past the drain deadline + 5 s), start again, wait for
# /readyz; appends the timings to RESTARTS.
restart_node() {
  local i=$1 pid=${NODE_PIDS[$1]} term exited ready killed=false limit remaining
  term=$(now_ms)
  limit=$((term + (DRAIN_WINDOW + UNREADY + 15) * 1000))
  kill -TERM "$pid"
  while kill -0 "$pid" 2> /dev/null; do
    if [ "$(now_ms)" -gt "$limit" ]; then kill -9 "$pid" 2> /dev/null || true; killed=true; fi
    sleep 0.02
  done
  exited=$(now_ms)
  forget_pid "$pid"
  # The node's own count of sessions still open when it stopped (its last log line says "stopped remaining=N").
  remaining=$(sed -n 's/.*stopped.*remaining=\([0-9]*\).*/\1/p' "${NODE_LOGS[i]}" | tail -1)
  start_node "$i"
  ready=$(now_ms)
  printf '{"node":%d,"port":%d,"term_at":%d,"exit_at":%d,"ready_at":%d,"drain_ms":%d,"down_ms":%d,"killed":%s,"remaining":%s}\n' \
    "$i" "${PORTS[$i]}" "$term" "$exited" "$ready" $((exited - term)) $((ready - term)) "$killed" "${remaining:-null}" >> "$RESTARTS"
  echo "   node $i: exited $((exited - term)) ms after SIGTERM$([ "$killed" = true ] && echo ' (killed)'), ready again after $((ready - term)) ms" >&2
}

# stop_nodes: every node stopped by SIGTERM while Redis still runs (so none waits on it), then forgotten.
stop_nodes() {
  local pid
  for pid in "${NODE_PIDS[@]}"; do kill -TERM "$pid" 2> /dev/null || true; done
  for pid in "${NODE_PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2> /dev/null || forget_pid "$pid"
  done
}

# run NAME RECOVERY WINDOW: fresh Redis, nodes and nginx; the driver; every node restarted in turn.
run() {
  RUN=$1
  local recovery=$2 window=$3 i
  CONFIG=$OUT/$RUN.toml
  write_config "$CONFIG" "$recovery" "$window"
  python3 "$ROOT/bench/rolling_cpu.py" $$ "$OUT/$RUN-cpu.json" &
  local sampler=$!
  KIT_PIDS+=("$sampler")
  kit_start_redis "$OUT"
  PORTS=() NODE_PIDS=() NODE_LOGS=()
  for ((i = 0; i < NODES; i++)); do PORTS[i]=$(kit_free_port); done
  for ((i = 0; i < NODES; i++)); do start_node "$i"; done
  NGINX_PORT=$(kit_free_port)
  start_nginx "$OUT/$RUN-nginx"
  RESTARTS=$OUT/$RUN-restarts.jsonl
  : > "$RESTARTS"
  local phase=$OUT/$RUN.phase done=$OUT/$RUN.done urls="" label
  rm -f "$phase" "$done"
  for ((i = 1; i <= DEST_IPS; i++)); do urls="${urls:+$urls,}http://127.0.0.$i:$NGINX_PORT"; done
  label="$RUN|$recovery|$([ "$HAS_DRAIN" = 1 ] && echo "$window" || echo none)"
  echo "== $RUN: recovery $recovery, drain window $([ "$HAS_DRAIN" = 1 ] && echo "$window s" || echo "none (binary)"), $CLIENTS clients, $ROOMS rooms, $RATE events/s, $NODES nodes" >&2
  node "$ROOT/bench/rolling/run.mjs" --base "http://127.0.0.1:$NGINX_PORT" --urls "$urls" --clients "$CLIENTS" \
    --rooms "$ROOMS" --rate "$RATE" --ramp "$RAMP" --warmup "$WARMUP" --settle "$SETTLE" --tail "$TAIL" \
    --max-secs 180 --phase-file "$phase" --done-file "$done" --restarts-file "$RESTARTS" --label "$label" \
    --trace "$OUT/$RUN-clients" > "$OUT/$RUN.json" &
  local driver=$!
  KIT_PIDS+=("$driver")
  while [ ! -f "$phase" ]; do
    kill -0 "$driver" 2> /dev/null || { echo "bench: the driver stopped before the restarts" >&2; exit 1; }
    sleep 0.2
  done
  for ((i = 0; i < NODES; i++)); do
    restart_node "$i"
    sleep "$SETTLE"
  done
  touch "$done"
  wait "$driver" || { echo "bench: the driver failed" >&2; exit 1; }
  forget_pid "$driver"
  kill -TERM "$sampler"
  wait "$sampler" || true
  forget_pid "$sampler"
  sleep 1.5 # nginx writes its access log every second
  python3 "$ROOT/bench/rolling_tunnels.py" "$OUT/$RUN.json" "$OUT/$RUN-nginx/access.log" "$OUT/$RUN"-node*.log
  python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); r["cpu"] = json.load(open(sys.argv[2])); open(sys.argv[1], "w").write(json.dumps(r) + "\n")' \
    "$OUT/$RUN.json" "$OUT/$RUN-cpu.json"
  cat "$OUT/$RUN.json" >> "$RESULTS"
  python3 "$ROOT/bench/rolling_table.py" --line "$OUT/$RUN.json" >&2
  awk '$3 >= 400 { n++ } END { print "   nginx answers ≥ 400: " n + 0 }' "$OUT/$RUN-nginx/access.log" >&2 || true
  stop_nodes
  kit_stop_all
  sleep 1
}

for r in $RUNS; do
  case $r in
    drain) run drain true "$DRAIN_WINDOW" ;;
    norecovery) run norecovery false "$DRAIN_WINDOW" ;;
    nodrain) run nodrain true 0 ;;
    *) echo "bench: unknown run $r (drain, norecovery, nodrain)" >&2; exit 2 ;;
  esac
done

TABLE=$OUT/summary.md
python3 "$ROOT/bench/rolling_table.py" "$RESULTS" > "$TABLE"
cat "$TABLE"
echo "results: $OUT" >&2
if [ "$WRITE" = 1 ]; then
  kit_write_section "## Rolling deploys (bench/rolling.sh)" "$TABLE" \
    "Command: \`bench/rolling.sh --clients $CLIENTS --rooms $ROOMS --rate $RATE --nodes $NODES --drain-window $DRAIN_WINDOW\` ($NODES nodes in cluster mode + redis-server + nginx 1.x round-robin in front, websocket upgrade, no sticky sessions, \`proxy_next_upstream error timeout http_503\`; $CLIENTS stock socket.io-client 4.8.1 clients with default transports (polling, then upgrade) in 3 Node processes, each joined by its token to one of $ROOMS rooms; a publisher sends $RATE events/s round-robin over the rooms through nginx \`POST /v1/publish\`, retrying a failed publish with the same \`Idempotency-Key\`; every node is restarted in turn under load: SIGTERM, exit, start on the same port, \`/readyz\` 200, $SETTLE s settle). Everything runs on the same $(nproc) shared cores (load average at the start: $LOAD_AT_START), so the times include the load generator's own CPU and the nodes' restarts."
fi
