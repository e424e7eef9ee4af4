# Shared helpers of the bench/ scripts (sourced, not run): the tidings build, the writable copy of the measuring
# kit, free ports, waiting for a node, and writing one section of BENCHMARKS.md.
#
# Expects ROOT (the checkout). Reads TOOLS (the kit, default ../shared/tools beside the checkout) and SCRATCH (its
# writable copy, default /tmp/tidings-bench-kit). Sets TIDINGS_BIN and KIT_WSLOAD.

TOOLS=${TOOLS:-$ROOT/../shared/tools}
SCRATCH=${SCRATCH:-${TMPDIR:-/tmp}/tidings-bench-kit}

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
# Markdown in BODY_FILE.   kit_write_section TITLE BODY_FILE PREAMBLE
kit_write_section() {
  python3 - "$ROOT/BENCHMARKS.md" "$1" "$2" "$3" <<'PY'
import datetime, os, subprocess, sys
path, title, body_file, preamble = sys.argv[1:]
root = os.path.dirname(path)
commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                        capture_output=True, text=True).stdout.strip()
# BENCHMARKS.md itself changes during a run of several parts: only other changes count.
dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no", "--", ".",
                        ":!BENCHMARKS.md"], capture_output=True, text=True).stdout.strip()
stamp = (f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit}"
         f"{' + local changes' if dirty else ''}, {os.cpu_count()} cores.")
body = open(body_file).read().strip()
section = f"{title}\n\n{stamp} {preamble}\n\n{body}\n"
text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
start = text.find(title + "\n")
if start >= 0:
    end = text.find("\n## ", start + len(title))
    text = text[:start] + section + ("\n" + text[end + 1:] if end >= 0 else "")
else:
    text = text.rstrip() + "\n\n" + section
open(path, "w").write(text)
print(f"updated {path}: {title}")
PY
}
