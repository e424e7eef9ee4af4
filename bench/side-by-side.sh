#!/usr/bin/env bash
# Side-by-side benchmark: tidings against the reference peers (the rawlimit floor, socketioxide, and Socket.IO on
# Node for the 2-node runs), identical cases in one run, with the measuring kit in ../shared/tools (wsload and the
# peers). Writes the section "## Side by side (...)" of BENCHMARKS.md for the mode.
#
#   bench/side-by-side.sh                  # single node, cases B A C, peers "rawlimit-sio tidings socketioxide"
#   MODE=cluster bench/side-by-side.sh     # 2 nodes + Redis, peers "tidings socketioxide socketio"
#   CASES="S" bench/side-by-side.sh        # a 200-client smoke case, to check the rig
#
# Environment: TOOLS, SCRATCH (see bench/kit.sh), PEERS, CASES, MODE (single|cluster), OUT (raw results, default
# /tmp/tidings-bench-<UTC time>). Loopback only; every process it starts is stopped by the kit's own scripts.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/kit.sh
. "$ROOT/bench/kit.sh"
MODE=${MODE:-single}
OUT=${OUT:-${TMPDIR:-/tmp}/tidings-bench-$(date -u +%Y%m%dT%H%M%S)}

case $MODE in
  single)
    PEERS=${PEERS:-rawlimit-sio tidings socketioxide}
    CASES=${CASES:-B A C}
    SCRIPT=e2e-single.sh
    TITLE="## Side by side (single node, bench/side-by-side.sh)"
    ;;
  cluster)
    PEERS=${PEERS:-tidings socketioxide socketio}
    CASES=${CASES:-B A C}
    SCRIPT=e2e-peers.sh
    TITLE="## Side by side (2 nodes + Redis, bench/side-by-side.sh)"
    ;;
  *)
    echo "bench/side-by-side.sh: MODE must be single or cluster" >&2
    exit 2
    ;;
esac

kit_build_tidings
if [[ " $PEERS " == *" socketio "* ]]; then kit_prepare socketio; else kit_prepare; fi

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "== $SCRIPT: PEERS=\"$PEERS\" CASES=\"$CASES\" -> $OUT"
(cd "$SCRATCH" && PEERS="$PEERS" CASES="$CASES" bash "scripts/$SCRIPT" "$OUT")

summary=$OUT/summary.md
[ -s "$summary" ] || { echo "bench/side-by-side.sh: no summary produced" >&2; exit 1; }
cat "$summary"
kit_write_section "$TITLE" "$summary" \
  "Command: \`MODE=$MODE PEERS=\"$PEERS\" CASES=\"$CASES\" bench/side-by-side.sh\` (runs \`$SCRIPT\` of the measuring kit; wsload is the load generator, on the same cores)."
