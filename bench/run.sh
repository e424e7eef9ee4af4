#!/usr/bin/env bash
# Side-by-side benchmark: tidings against the reference peers (the rawlimit floor, socketioxide, and Socket.IO on
# Node for the 2-node runs), identical cases in one run, with the measuring kit in ../shared/tools (wsload and the
# peers). Writes the section "## Side by side" of BENCHMARKS.md.
#
#   bench/run.sh                         # single node, cases B A C, peers "rawlimit-sio tidings socketioxide"
#   MODE=cluster bench/run.sh            # 2 nodes + Redis, peers "tidings socketioxide socketio"
#   CASES="S" bench/run.sh               # a 200-client smoke case, to check the rig
#
# Environment: TOOLS (default ../shared/tools beside the checkout), PEERS, CASES, MODE (single|cluster),
# OUT (raw results, default /tmp/tidings-bench-<UTC time>).
# The kit is read-only where it is shipped, so it is copied to a scratch directory and its peers and wsload are
# built there (cargo, npm install); the copy is reused by later runs. Loopback only; every process it starts
# is stopped by the kit's own scripts.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=${TOOLS:-$ROOT/../shared/tools}
MODE=${MODE:-single}
SCRATCH=${SCRATCH:-${TMPDIR:-/tmp}/tidings-bench-kit}
OUT=${OUT:-${TMPDIR:-/tmp}/tidings-bench-$(date -u +%Y%m%dT%H%M%S)}
SECTION="## Side by side"

case $MODE in
  single)
    PEERS=${PEERS:-rawlimit-sio tidings socketioxide}
    CASES=${CASES:-B A C}
    SCRIPT=e2e-single.sh
    ;;
  cluster)
    PEERS=${PEERS:-tidings socketioxide socketio}
    CASES=${CASES:-B A C}
    SCRIPT=e2e-peers.sh
    ;;
  *)
    echo "bench/run.sh: MODE must be single or cluster" >&2
    exit 2
    ;;
esac

[ -d "$TOOLS/scripts" ] || { echo "bench/run.sh: no measuring kit at $TOOLS (set TOOLS)" >&2; exit 2; }

echo "== building tidings"
(cd "$ROOT" && cargo build --release)
export TIDINGS_BIN=$ROOT/target/release/tidings

echo "== preparing the kit in $SCRATCH"
if [ ! -d "$SCRATCH/scripts" ]; then
  mkdir -p "$SCRATCH"
  cp -r "$TOOLS"/. "$SCRATCH"/
  chmod -R u+w "$SCRATCH"
fi
[ -x "$SCRATCH/wsload/target/release/wsload" ] || (cd "$SCRATCH/wsload" && cargo build --release)
if [[ " $PEERS " == *" socketio "* ]] && [ ! -d "$SCRATCH/peers/socketio/node_modules" ]; then
  (cd "$SCRATCH/peers/socketio" && npm install --no-audit --no-fund)
fi

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "== $SCRIPT: PEERS=\"$PEERS\" CASES=\"$CASES\" -> $OUT"
(cd "$SCRATCH" && PEERS="$PEERS" CASES="$CASES" bash "scripts/$SCRIPT" "$OUT")

summary=$OUT/summary.md
[ -s "$summary" ] || { echo "bench/run.sh: no summary produced" >&2; exit 1; }
cat "$summary"

# Replace (or add) this mode's subsection of BENCHMARKS.md.
bench_md=$ROOT/BENCHMARKS.md
[ -f "$bench_md" ] || echo "# Benchmarks" > "$bench_md"
python3 - "$bench_md" "$summary" "$MODE" "$PEERS" "$CASES" "$SCRIPT" <<'PY'
import datetime, os, subprocess, sys
path, summary, mode, peers, cases, script = sys.argv[1:]
title = f"## Side by side ({'single node' if mode == 'single' else '2 nodes + Redis'}, bench/run.sh)"
body = open(summary).read().strip()
commit = subprocess.run(["git", "-C", os.path.dirname(path), "rev-parse", "--short", "HEAD"],
                        capture_output=True, text=True).stdout.strip()
section = (f"{title}\n\n"
           f"Measured {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, commit {commit}, {os.cpu_count()} cores. "
           f"Command: `MODE={mode} PEERS=\"{peers}\" CASES=\"{cases}\" bench/run.sh` "
           f"(runs `{script}` of the measuring kit).\n\n{body}\n")
text = open(path).read()
start = text.find(title)
if start >= 0:
    end = text.find("\n## ", start + len(title))
    text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
else:
    text = text.rstrip() + "\n\n" + section
open(path, "w").write(text)
print(f"updated {path} ({title})")
PY
