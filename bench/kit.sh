# Shared helpers of the bench/ scripts (sourced, not run): the tidings build, the writable copy of the measuring
# kit, free ports, waiting for a node, and writing one section of BENCHMARKS.md.
#
# Expects ROOT (the checkout). Reads TOOLS (the kit, default ../shared/tools beside the checkout) and SCRATCH (its
# writable copy, default /tmp/tidings-bench-kit). Sets TIDINGS_BIN and KIT_WSLOAD, and exports TIDINGS_CONFIG.

TOOLS=${TOOLS:-$ROOT/../shared/tools}
# The nodes' config (per-address limits off for loopback load; see the file).
export TIDINGS_CONFIG=${TIDINGS_CONFIG:-$ROOT/bench/loopback-limits.toml}
SCRATCH=${SCRATCH:-${TMPDIR:-/tmp}/tidings-bench-kit}

# The dev secret and API key the kit's tidings peer runs with (its defaults.sh keeps values already set). A node
# refuses an HS256 secret under 32 bytes and an API key under 16 (see SECURITY.md).
: "${TIDINGS_JWT_SECRET:=tidings-bench-dev-jwt-secret-0123456789abcdef}"
: "${TIDINGS_API_KEY:=tidings-bench-dev-api-key-0123456789}"
export TIDINGS_JWT_SECRET TIDINGS_API_KEY

# Builds the release binary and exports TIDINGS_BIN (a TIDINGS_BIN already set is used as it is).
kit_build_tidings() {
  if [ -n "${TIDINGS_BIN:-}" ]; then
    export TIDINGS_BIN
    return
  fi
  echo "== building tidings" >&2
  (cd "$ROOT" && cargo build --release --quiet)
  export TIDINGS_BIN=$ROOT/target/release/tidings
}

# Copies the kit to SCRATCH (it is read-only where it is shipped) and builds wsload there; with an argument
# "socketio", also installs the Node peer's packages. Sets KIT_WSLOAD.
kit_prepare() {
  [ -d "$TOOLS/scripts" ] || { echo "bench: no measuring kit at $TOOLS (set TOOLS)" >&2; exit 2; }
  if [ ! -d "$SCRATCH/scripts" ]; then
    echo "== copying the measuring kit to $SCRATCH" >&2
    mkdir -p "$SCRATCH"
    cp -r "$TOOLS"/. "$SCRATCH"/
    chmod -R u+w "$SCRATCH"
  fi
  if [ ! -x "$SCRATCH/wsload/target/release/wsload" ]; then
    echo "== building wsload" >&2
    (cd "$SCRATCH/wsload" && cargo build --release --quiet)
  fi
  if [ "${1:-}" = socketio ] && [ ! -d "$SCRATCH/peers/socketio/node_modules" ]; then
    (cd "$SCRATCH/peers/socketio" && npm install --no-audit --no-fund --silent)
  fi
  KIT_WSLOAD=$SCRATCH/wsload/target/release/wsload
}

# Prints a TCP port on 127.0.0.1 that is free right now.
kit_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits up to 20 s for URL to answer 2xx.
kit_wait_http() {
  for _ in $(seq 1 200); do
    curl -sf --noproxy '*' "$1" > /dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "bench: $1 did not answer" >&2
  exit 1
}

# Replaces (or appends) the section TITLE of BENCHMARKS.md with a dated header, the PREAMBLE text and the
# Markdown in BODY_FILE (bench/section.py).   kit_write_section TITLE BODY_FILE PREAMBLE
kit_write_section() {
  local intro
  intro=$(mktemp)
  printf 'Measured @WHEN@, commit @COMMIT@, @CORES@ cores. %s\n' "$3" > "$intro"
  python3 "$ROOT/bench/section.py" "$ROOT/BENCHMARKS.md" "$1" "$intro" "$2"
  rm -f "$intro"
}

# Processes a bench script started: kit_stop_all stops them by pid (TERM, then KILL after 5 s); scripts call it
# between runs and trap it on exit.
KIT_PIDS=()
kit_stop_all() {
  local p
  for p in "${KIT_PIDS[@]}"; do kill "$p" 2> /dev/null || true; done
  for p in "${KIT_PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2> /dev/null || break; sleep 0.1; done
    kill -9 "$p" 2> /dev/null || true
  done
  KIT_PIDS=()
}

# kit_start_redis DIR: a fresh redis-server without persistence on a free port, working in DIR (created), its
# log beside it; sets REDIS_URL and REDIS_PID (in KIT_PIDS).
kit_start_redis() {
  local port
  port=$(kit_free_port)
  mkdir -p "$1/redis-$port"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$1/redis-$port" \
    > "$1/redis-$port.log" 2>&1 &
  REDIS_PID=$!
  KIT_PIDS+=("$REDIS_PID")
  REDIS_URL=redis://127.0.0.1:$port
  for _ in $(seq 1 100); do redis-cli -p "$port" ping > /dev/null 2>&1 && return; sleep 0.1; done
  echo "bench: redis-server did not start" >&2
  exit 1
}
