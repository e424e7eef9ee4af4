#!/usr/bin/env bash
# The docker-compose topology as plain processes on loopback, from the same config files: Redis master +
# replica, three Sentinels, three tidings nodes and nginx in front. No container runtime needed; every program
# comes from Debian packages (redis-server, redis-sentinel, nginx, openssl, curl) except the tidings binary.
#
#   deploy/local-cluster.sh up [--state DIR] [--base-port N]   start everything, wait until it is ready
#   deploy/local-cluster.sh status [--state DIR]               every process, its pid and whether it answers
#   deploy/local-cluster.sh down [--state DIR]                 stop everything by pid (SIGTERM, then SIGKILL)
#   deploy/local-cluster.sh render [--state DIR] [--base-port N]
#                                                              only render the config files and check nginx's
#
# The config files of deploy/ (config/tidings.toml, config/redis.conf, config/sentinel.conf, nginx/*.conf) are
# rendered into the state directory by a small substitution: each compose service name (with its port) becomes
# 127.0.0.1 and a loopback port. What compose gives each container on its command line or in its environment
# (ports, replicaof, TIDINGS_PUBLIC_URL) is given here the same way.
#
# Ports: 13 consecutive ones from --base-port, or free ones picked at random. The state directory (default
# $TIDINGS_CLUSTER_STATE, else ${TMPDIR:-/tmp}/tidings-local-cluster) holds the rendered configs, each process's
# data, log and pid file, and cluster.env (URLs, ports, the generated JWT secret and API key) for clients.
#
# Environment: TIDINGS_BIN (default target/release/tidings), TIDINGS_LOG (default info), TIDINGS_JWT_SECRET and
# TIDINGS_API_KEY (default: generated), READY_TIMEOUT (seconds, default 40), DOWN_TIMEOUT (seconds, default 40:
# longer than [shutdown] drain_secs, so nodes finish their drain).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
BIN="${TIDINGS_BIN:-$ROOT/target/release/tidings}"
STATE="${TIDINGS_CLUSTER_STATE:-${TMPDIR:-/tmp}/tidings-local-cluster}"
BASE_PORT=""
READY_TIMEOUT="${READY_TIMEOUT:-40}"
DOWN_TIMEOUT="${DOWN_TIMEOUT:-40}"
NODES=(1 2 3)
SENTINELS=(1 2 3)
# Start order; down stops in the reverse order.
PROCS=(redis-master redis-replica sentinel-1 sentinel-2 sentinel-3 tidings-1 tidings-2 tidings-3 nginx)

die() {
  echo "local-cluster: $*" >&2
  exit 1
}
say() { echo "local-cluster: $*"; }

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
  exit "${1:-0}"
}

# ---------------------------------------------------------------------------------------------------- ports

# port_free PORT: nothing listens on 127.0.0.1:PORT (a connection is refused).
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pick_ports: sets PORTS (13 ports) from --base-port or at random among free ones.
pick_ports() {
  PORTS=()
  local p
  if [[ -n $BASE_PORT ]]; then
    for ((p = BASE_PORT; p < BASE_PORT + 13; p++)); do
      port_free "$p" || die "port $p is taken (--base-port $BASE_PORT needs 13 free ports from there)"
      PORTS+=("$p")
    done
    return
  fi
  # Below the kernel's ephemeral range, so that no outgoing connection (a replica's, a Sentinel's) takes one
  # of them between the pick and the listen.
  local low=32768 tries=0
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  ((low > 12000)) || die "the ephemeral port range starts at $low: pass --base-port"
  while ((${#PORTS[@]} < 13)); do
    ((tries++ < 1000)) || die "no free ports found"
    p=$((10000 + RANDOM % (low - 10000)))
    [[ " ${PORTS[*]} " == *" $p "* ]] && continue
    port_free "$p" && PORTS+=("$p")
  done
}

# assign_ports: names the 13 ports, in a fixed order.
assign_ports() {
  NGINX_PORT=${PORTS[0]}
  NGINX_TLS_PORT=${PORTS[1]}
  REDIS_MASTER_PORT=${PORTS[2]}
  REDIS_REPLICA_PORT=${PORTS[3]}
  SENTINEL_PORT=([1]=${PORTS[4]} [2]=${PORTS[5]} [3]=${PORTS[6]})
  NODE_PORT=([1]=${PORTS[7]} [2]=${PORTS[8]} [3]=${PORTS[9]})
  ADMIN_PORT=([1]=${PORTS[10]} [2]=${PORTS[11]} [3]=${PORTS[12]})
}

# ---------------------------------------------------------------------------------------------------- render

# The substitution: "from|to" pairs, applied in order to every config file.
substitutions() {
  local i
  for i in "${NODES[@]}"; do echo "tidings-$i:3000|127.0.0.1:${NODE_PORT[$i]}"; done
  for i in "${SENTINELS[@]}"; do echo "sentinel-$i:26379|127.0.0.1:${SENTINEL_PORT[$i]}"; done
  echo "redis-master 6379|127.0.0.1 $REDIS_MASTER_PORT"
  echo "listen 8080;|listen 127.0.0.1:$NGINX_PORT;"
  echo "listen 8443 ssl;|listen 127.0.0.1:$NGINX_TLS_PORT ssl;"
  echo "/etc/nginx/|$STATE/nginx/"
}

# render SRC DST: SRC with every substitution applied; fails if a compose name is left over.
render() {
  local src=$1 dst=$2 args=() from to
  while IFS='|' read -r from to; do
    from=${from//./\\.}
    args+=(-e "s|$from|$to|g")
  done < <(substitutions)
  sed "${args[@]}" "$src" >"$dst"
  if grep -nE '(tidings|sentinel)-[0-9]+:[0-9]|redis-(master|replica)|/etc/nginx/|listen (8080|8443)' "$dst" | grep -v '^[0-9]*:[[:space:]]*#' >&2; then
    die "$src: names above were not rendered to loopback addresses"
  fi
}

# nginx_main: the main nginx.conf of the local nginx (its own pid, logs and temp paths in the state dir; the
# compose nginx has these from its image) around the rendered tidings.conf.
nginx_main() {
  local dir="$STATE/nginx"
  if [[ $(id -u) -eq 0 ]]; then echo "user nobody nogroup;"; fi
  cat <<EOF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log info;
events { worker_connections 4096; }
http {
    access_log $dir/access.log;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    include $dir/tidings.conf;
}
EOF
}

# render_all: every config file into the state dir, a self-signed certificate, nginx -t.
render_all() {
  mkdir -p "$STATE"/{config,nginx/tls,nginx/tmp,pids,logs}
  render "$HERE/config/tidings.toml" "$STATE/config/tidings.toml"
  render "$HERE/config/redis.conf" "$STATE/config/redis.conf"
  render "$HERE/config/sentinel.conf" "$STATE/config/sentinel.conf"
  render "$HERE/nginx/tidings.conf" "$STATE/nginx/tidings.conf"
  render "$HERE/nginx/tidings-locations.conf" "$STATE/nginx/tidings-locations.conf"
  nginx_main >"$STATE/nginx/nginx.conf"
  if [[ ! -f $STATE/nginx/tls/tls.crt ]]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
      -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" -keyout "$STATE/nginx/tls/tls.key" -out "$STATE/nginx/tls/tls.crt" 2>/dev/null
  fi
  if [[ $(id -u) -eq 0 ]]; then
    # nginx's workers run as nobody: they must reach their temp directories.
    chmod 711 "$STATE" "$STATE/nginx"
    chown nobody:nogroup "$STATE/nginx/tmp"
  fi
  nginx -t -q -p "$STATE/nginx/" -c "$STATE/nginx/nginx.conf" -e "$STATE/nginx/error.log" ||
    die "nginx -t refused $STATE/nginx/nginx.conf"
  MASTER_NAME=$(awk '$1 == "sentinel" && $2 == "monitor" { print $3 }' "$STATE/config/sentinel.conf")
  [[ -n $MASTER_NAME ]] || die "config/sentinel.conf has no 'sentinel monitor' line"
}

write_env() {
  local i urls=()
  for i in "${NODES[@]}"; do urls+=("http://127.0.0.1:${NODE_PORT[$i]}"); done
  {
    echo "STATE=$STATE"
    echo "NGINX_URL=http://127.0.0.1:$NGINX_PORT"
    echo "NGINX_TLS_URL=https://127.0.0.1:$NGINX_TLS_PORT"
    echo "NODE_URLS=$(
      IFS=,
      echo "${urls[*]}"
    )"
    for i in "${NODES[@]}"; do
      echo "NODE_${i}_URL=http://127.0.0.1:${NODE_PORT[$i]}"
      echo "NODE_${i}_ADMIN_URL=http://127.0.0.1:${ADMIN_PORT[$i]}"
    done
    echo "REDIS_MASTER_PORT=$REDIS_MASTER_PORT"
    echo "REDIS_REPLICA_PORT=$REDIS_REPLICA_PORT"
    echo "SENTINEL_PORTS=${SENTINEL_PORT[1]},${SENTINEL_PORT[2]},${SENTINEL_PORT[3]}"
    echo "MASTER_NAME=$MASTER_NAME"
    echo "PORTS=$(
      IFS=,
      echo "${PORTS[*]}"
    )"
    echo "TIDINGS_JWT_SECRET=$JWT_SECRET"
    echo "TIDINGS_API_KEY=$API_KEY"
  } >"$STATE/cluster.env"
  chmod 600 "$STATE/cluster.env"
}

# ---------------------------------------------------------------------------------------------------- processes

# spawn NAME CMD...: start CMD in the background with its output in logs/NAME.log; its pid in pids/NAME.pid.
spawn() {
  local name=$1
  shift
  "$@" </dev/null >>"$STATE/logs/$name.log" 2>&1 &
  echo $! >"$STATE/pids/$name.pid"
}

pid_of() { cat "$STATE/pids/$1.pid" 2>/dev/null || true; }

# ours PID WORD: PID is alive and its command line mentions WORD (a recycled pid is left alone).
ours() {
  local pid=$1 word=$2
  [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$word"
}

# The word each process's command line holds.
word_of() {
  case $1 in
    redis-*) echo redis-server ;;
    sentinel-*) echo redis-sentinel ;;
    tidings-*) echo "$(basename "$BIN")" ;;
    nginx | nginx-worker-*) echo nginx ;;
  esac
}

redis_cli() { redis-cli -h 127.0.0.1 -p "$1" "${@:2}" 2>/dev/null; }

# wait_for NAME WHAT CHECK...: retry CHECK until it succeeds; fails when process NAME exits or READY_TIMEOUT
# passes.
wait_for() {
  local name=$1 what=$2 deadline=$((SECONDS + READY_TIMEOUT))
  shift 2
  until "$@" >/dev/null; do
    if ! ours "$(pid_of "$name")" "$(word_of "$name")"; then
      echo "local-cluster: $name exited while waiting for $what; its log:" >&2
      tail -n 20 "$STATE/logs/$name.log" >&2
      return 1
    fi
    if ((SECONDS >= deadline)); then
      echo "local-cluster: timed out waiting for $what" >&2
      return 1
    fi
    sleep 0.2
  done
}

replica_synced() { redis_cli "$REDIS_REPLICA_PORT" info replication | grep -q '^master_link_status:up'; }

# A Sentinel is ready for a failover once it knows the replica and both other Sentinels.
sentinel_ready() {
  local port=$1
  (($(redis_cli "$port" sentinel replicas "$MASTER_NAME" | grep -c '^name$') >= 1)) &&
    (($(redis_cli "$port" sentinel sentinels "$MASTER_NAME" | grep -c '^name$') >= 2))
}

ready() { curl -sf -o /dev/null --max-time 2 "$@"; }

start_all() {
  local i dir
  for i in master replica; do mkdir -p "$STATE/redis-$i"; done
  spawn redis-master redis-server "$STATE/config/redis.conf" --port "$REDIS_MASTER_PORT" --bind 127.0.0.1 \
    --dir "$STATE/redis-master" --replica-announce-ip 127.0.0.1
  wait_for redis-master "redis-master" redis_cli "$REDIS_MASTER_PORT" ping || return 1
  spawn redis-replica redis-server "$STATE/config/redis.conf" --port "$REDIS_REPLICA_PORT" --bind 127.0.0.1 \
    --dir "$STATE/redis-replica" --replicaof 127.0.0.1 "$REDIS_MASTER_PORT" --replica-announce-ip 127.0.0.1
  wait_for redis-replica "the replica to sync" replica_synced || return 1

  for i in "${SENTINELS[@]}"; do
    dir="$STATE/sentinel-$i"
    mkdir -p "$dir"
    cp "$STATE/config/sentinel.conf" "$dir/sentinel.conf" # Sentinel rewrites its own copy
    spawn "sentinel-$i" redis-sentinel "$dir/sentinel.conf" --port "${SENTINEL_PORT[$i]}" --bind 127.0.0.1 --dir "$dir"
  done
  for i in "${SENTINELS[@]}"; do
    wait_for "sentinel-$i" "sentinel-$i to know the replica and the other Sentinels" sentinel_ready "${SENTINEL_PORT[$i]}" || return 1
  done

  for i in "${NODES[@]}"; do
    spawn "tidings-$i" env \
      TIDINGS_CONFIG="$STATE/config/tidings.toml" \
      TIDINGS_LISTEN="127.0.0.1:${NODE_PORT[$i]}" \
      TIDINGS_PUBLIC_URL="http://127.0.0.1:${NODE_PORT[$i]}" \
      TIDINGS__ADMIN__LISTEN="127.0.0.1:${ADMIN_PORT[$i]}" \
      TIDINGS_JWT_SECRET="$JWT_SECRET" \
      TIDINGS_API_KEY="$API_KEY" \
      TIDINGS_LOG="${TIDINGS_LOG:-info}" \
      TIDINGS_LOG_FORMAT=json \
      "$BIN" serve
  done
  for i in "${NODES[@]}"; do
    wait_for "tidings-$i" "tidings-$i to be ready (/readyz)" ready "http://127.0.0.1:${NODE_PORT[$i]}/readyz" || return 1
  done

  spawn nginx nginx -p "$STATE/nginx/" -c "$STATE/nginx/nginx.conf" -e "$STATE/nginx/error.log" -g 'daemon off;'
  wait_for nginx "nginx (http)" ready "http://127.0.0.1:$NGINX_PORT/readyz" || return 1
  wait_for nginx "nginx (https)" ready -k "https://127.0.0.1:$NGINX_TLS_PORT/readyz" || return 1
  # Workers are recorded too: they outlive a master killed with SIGKILL, and down stops them by pid.
  local w
  for w in $(pgrep -P "$(pid_of nginx)" || true); do echo "$w" >"$STATE/pids/nginx-worker-$w.pid"; done
}

# ---------------------------------------------------------------------------------------------------- commands

cmd_up() {
  command -v redis-server >/dev/null || die "redis-server is missing (apt-get install redis-server)"
  command -v redis-sentinel >/dev/null || die "redis-sentinel is missing (apt-get install redis-sentinel)"
  command -v nginx >/dev/null || die "nginx is missing (apt-get install nginx)"
  command -v openssl >/dev/null || die "openssl is missing (apt-get install openssl)"
  command -v curl >/dev/null || die "curl is missing (apt-get install curl)"
  if compgen -G "$STATE/pids/*.pid" >/dev/null; then
    die "$STATE holds a running cluster (run down first, or use another --state)"
  fi
  [[ -x $BIN ]] || die "tidings binary not found: $BIN (cargo build --release, or set TIDINGS_BIN)"
  JWT_SECRET=${TIDINGS_JWT_SECRET:-$(openssl rand -hex 32)}
  API_KEY=${TIDINGS_API_KEY:-$(openssl rand -hex 16)}
  local attempt
  for attempt in 1 2 3; do
    pick_ports
    assign_ports
    render_all
    write_env
    if start_all; then break; fi
    # A port free when picked may have been taken before a process bound it: pick others and start again.
    if ((attempt < 3)) && grep -qs 'Address already in use' "$STATE"/logs/*.log; then
      say "a port was taken meanwhile ($(grep -ls 'Address already in use' "$STATE"/logs/*.log | xargs -n1 basename | tr '\n' ' ')); starting again on other ports"
      cmd_down >/dev/null
      mkdir -p "$STATE/logs.failed-$attempt" && mv "$STATE"/logs/*.log "$STATE/logs.failed-$attempt/" 2>/dev/null || true
      continue
    fi
    echo "local-cluster: up failed; last log lines:" >&2
    tail -n 5 "$STATE"/logs/*.log >&2 || true
    cmd_down >&2 || true
    exit 1
  done
  say "up: nginx at http://127.0.0.1:$NGINX_PORT and https://127.0.0.1:$NGINX_TLS_PORT (state: $STATE)"
  say "clients' settings: $STATE/cluster.env"
}

cmd_render() {
  pick_ports
  assign_ports
  render_all
  say "rendered into $STATE (nginx -t passed)"
}

cmd_status() {
  [[ -d $STATE/pids ]] || die "no cluster state in $STATE"
  local name pid word bad=0 f
  for f in "$STATE"/pids/*.pid; do
    [[ -e $f ]] || continue
    name=$(basename "$f" .pid)
    pid=$(cat "$f")
    word=$(word_of "$name")
    if ours "$pid" "$word"; then
      printf '%-16s pid %-8s running\n' "$name" "$pid"
    else
      printf '%-16s pid %-8s GONE\n' "$name" "$pid"
      bad=1
    fi
  done
  if [[ -f $STATE/cluster.env ]]; then
    # shellcheck disable=SC1091
    source "$STATE/cluster.env"
    local url
    for url in ${NODE_URLS//,/ } "$NGINX_URL"; do
      if ready "$url/readyz"; then printf '%-34s ready\n' "$url"; else printf '%-34s NOT READY\n' "$url" && bad=1; fi
    done
    local master
    master=$(redis_cli "${SENTINEL_PORTS%%,*}" sentinel get-master-addr-by-name "$MASTER_NAME" | tr '\n' ' ')
    echo "redis master (sentinel says): ${master:-unknown}"
  fi
  return "$bad"
}

cmd_down() {
  [[ -d $STATE/pids ]] || {
    say "nothing to stop in $STATE"
    return 0
  }
  local i name pid word pids=() names=()
  # nginx's current workers, in case the master respawned some since up.
  pid=$(pid_of nginx)
  if ours "$pid" nginx; then
    for i in $(pgrep -P "$pid" || true); do echo "$i" >"$STATE/pids/nginx-worker-$i.pid"; done
  fi
  local order=()
  for ((i = ${#PROCS[@]} - 1; i >= 0; i--)); do order+=("${PROCS[$i]}"); done
  for f in "$STATE"/pids/nginx-worker-*.pid; do [[ -e $f ]] && order+=("$(basename "$f" .pid)"); done
  for name in "${order[@]}"; do
    pid=$(pid_of "$name")
    word=$(word_of "$name")
    if ours "$pid" "$word"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
      names+=("$name")
    fi
    rm -f "$STATE/pids/$name.pid"
  done
  local deadline=$((SECONDS + DOWN_TIMEOUT)) next_note=$((SECONDS + 5)) left waiting
  while :; do
    left=()
    for i in "${!pids[@]}"; do
      ours "${pids[$i]}" "$(word_of "${names[$i]}")" && left+=("$i")
    done
    ((${#left[@]} == 0)) && break
    if ((SECONDS >= next_note)); then
      waiting=()
      for i in "${left[@]}"; do waiting+=("${names[$i]}"); done
      say "waiting for ${waiting[*]} to exit"
      next_note=$((SECONDS + 5))
    fi
    if ((SECONDS >= deadline)); then
      for i in "${left[@]}"; do
        say "${names[$i]} (pid ${pids[$i]}) still running after ${DOWN_TIMEOUT}s: SIGKILL"
        kill -KILL "${pids[$i]}" 2>/dev/null || true
      done
      sleep 0.2
      break
    fi
    sleep 0.1
  done
  say "down: stopped ${#pids[@]} processes (logs stay in $STATE/logs)"
}

# ---------------------------------------------------------------------------------------------------- main

CMD=${1:-}
[[ -n $CMD ]] || usage 2
shift
while (($#)); do
  case $1 in
    --state) STATE=$2 && shift 2 ;;
    --base-port) BASE_PORT=$2 && shift 2 ;;
    -h | --help) usage ;;
    *) die "unknown argument: $1" ;;
  esac
done
STATE=$(mkdir -p "$STATE" && cd "$STATE" && pwd)

case $CMD in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  render) cmd_render ;;
  -h | --help | help) usage ;;
  *) usage 2 ;;
esac
