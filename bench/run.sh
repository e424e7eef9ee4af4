#!/usr/bin/env bash
# Reproduces BENCHMARKS.md: runs every benchmark of bench/ one after the other (they must not overlap: the machine's
# cores are shared by the servers and the load generators) and each one rewrites its own section.
#
#   bench/run.sh                      # everything, about 75 minutes on 2 cores
#   bench/run.sh single cluster       # only those parts
#
# Parts, in the order they run:
#   micro       criterion micro-benchmarks of the codecs and the fan-out path (bench/micro.sh)
#   memory      server RSS per idle websocket and long-polling connection (bench/memory.sh)
#   single      cases B A C side by side, one server process per peer (bench/side-by-side.sh)
#   cluster     cases B A C side by side, 2 nodes + Redis per peer (MODE=cluster bench/side-by-side.sh)
#   rooms       case D, 1000 rooms x 20 clients, single node and 2 nodes + Redis (bench/rooms.sh)
#   scaling     1x/2x/5x/10x clients and rooms (bench/scaling.sh)
#   crosscheck  tidings bench against wsload on the same events (bench/crosscheck.sh)
#   recovery    replay after a mass disconnection, history memory (bench/recovery.sh)
#   repeats     the noisiest cases (C single, A on 2 nodes, D both) 3 times each, medians (bench/repeats.sh)
#   c2          case C on 2 nodes 3 times, beside the floor on two processes, and again with the widening write
#               cadence on (bench/repeats.sh, sets C-cluster and C-cluster-cadence)
#
# Environment: TOOLS, SCRATCH (bench/kit.sh); each script documents its own knobs.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/kit.sh
. "$ROOT/bench/kit.sh"
ALL=(micro memory single cluster rooms scaling crosscheck recovery repeats c2)
PARTS=("$@")
[ ${#PARTS[@]} -gt 0 ] || PARTS=("${ALL[@]}")

kit_build_tidings
started=$(date +%s)
for part in "${PARTS[@]}"; do
  echo "==== $part ($(date -u +%H:%M:%S) UTC, load: $(cut -d' ' -f1-3 /proc/loadavg))"
  case $part in
    micro) "$ROOT/bench/micro.sh" ;;
    memory) "$ROOT/bench/memory.sh" ;;
    single) MODE=single "$ROOT/bench/side-by-side.sh" ;;
    cluster) MODE=cluster "$ROOT/bench/side-by-side.sh" ;;
    rooms) MODE=single "$ROOT/bench/rooms.sh" && MODE=cluster "$ROOT/bench/rooms.sh" ;;
    scaling) "$ROOT/bench/scaling.sh" ;;
    crosscheck) "$ROOT/bench/crosscheck.sh" ;;
    recovery) "$ROOT/bench/recovery.sh" ;;
    repeats) "$ROOT/bench/repeats.sh" ;;
    c2)
      SETS="C-cluster C-cluster-cadence" \
        SECTION="## Case C on 2 nodes: the floor on two processes, and the widening write cadence (bench/repeats.sh)" \
        "$ROOT/bench/repeats.sh"
      ;;
    *)
      echo "bench/run.sh: unknown part '$part' (one of: ${ALL[*]})" >&2
      exit 2
      ;;
  esac
done
echo "==== done in $(( $(date +%s) - started )) s; see BENCHMARKS.md"
