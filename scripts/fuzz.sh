#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder (libFuzzer through libfuzzer-sys, on the stable toolchain).
#
#   scripts/fuzz.sh                      # every target, 60 s each
#   scripts/fuzz.sh 45                   # every target, 45 s each (CI)
#   scripts/fuzz.sh 3600 ws_frame jwt    # a longer campaign on some targets
#   scripts/fuzz.sh --list               # the targets
#
# Each target starts from its committed seed corpus (fuzz/corpus/<target>/) plus what earlier runs on this
# machine found (fuzz/work/<target>/, not committed). A crash, a panic, an allocation above the cap, an input
# that runs longer than the timeout or a process above the RSS limit fails the run; the input is saved under
# fuzz/artifacts/<target>/ and the command that replays it is printed.
#
# Environment:
#   TIDINGS_FUZZ_MAX_ALLOC_MB   largest single allocation, in MiB (default 8)
#   TIDINGS_FUZZ_RSS_MB         RSS limit of a fuzzing process, in MiB (default 2048)
#   TIDINGS_FUZZ_TIMEOUT        seconds one input may take (default 10)
#   TIDINGS_FUZZ_ARGS           extra libFuzzer flags, e.g. "-jobs=2 -workers=2"
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ="$ROOT/fuzz"
cd "$FUZZ"

TARGETS=(engineio_packet engineio_payload ws_frame socketio_packet socketio_session jwt http_publish redis_ingest)

# Longest input per target: the server's own limits are larger, but long inputs slow the search down and the
# decoders' length checks are reached with short ones (a header declares the length).
max_len() {
  case $1 in
    jwt) echo 20000 ;; # past the 16 KiB token limit
    http_publish | redis_ingest | socketio_session) echo 16384 ;;
    *) echo 4096 ;;
  esac
}

if [[ ${1:-} == --list ]]; then
  printf '%s\n' "${TARGETS[@]}"
  exit 0
fi

SECS=60
if [[ ${1:-} =~ ^[0-9]+$ ]]; then
  SECS=$1
  shift
fi
SELECTED=("$@")
if ((${#SELECTED[@]} == 0)); then SELECTED=("${TARGETS[@]}"); fi
for t in "${SELECTED[@]}"; do
  case " ${TARGETS[*]} " in
    *" $t "*) ;;
    *)
      echo "unknown fuzz target: $t (targets: ${TARGETS[*]})" >&2
      exit 2
      ;;
  esac
done

# libFuzzer's C++ sources are compiled by the libfuzzer-sys build script.
if ! command -v c++ >/dev/null 2>&1; then
  echo "-- installing a C++ compiler (g++) for libFuzzer"
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
  "${sudo[@]}" apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends g++
fi

# What `cargo fuzz` passes, minus the sanitizer (-Zsanitizer needs nightly): SanitizerCoverage counters and
# comparison tracing for libFuzzer, `cfg(fuzzing)`, and debug assertions and overflow checks on.
HOST=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
-Cdebug-assertions -Coverflow-checks"
export CARGO_TARGET_DIR="$FUZZ/target"
export TIDINGS_FUZZ_MAX_ALLOC_MB="${TIDINGS_FUZZ_MAX_ALLOC_MB:-8}"

echo "-- building ${#SELECTED[@]} fuzz target(s) for $HOST"
build_start=$SECONDS
bins=()
for t in "${SELECTED[@]}"; do bins+=(--bin "$t"); done
# --target keeps the coverage flags off build scripts and proc macros.
nice cargo build --release --locked --target "$HOST" "${bins[@]}"
echo "-- built in $((SECONDS - build_start))s"

BIN_DIR="$CARGO_TARGET_DIR/$HOST/release"
declare -a REPORT=()
failed=0
total_execs=0
for t in "${SELECTED[@]}"; do
  work="$FUZZ/work/$t"
  artifacts="$FUZZ/artifacts/$t"
  log="$FUZZ/work/$t.log"
  mkdir -p "$work" "$artifacts"
  echo
  echo "== $t: ${SECS}s from fuzz/corpus/$t ($(find "$FUZZ/corpus/$t" -type f | wc -l) seeds) and fuzz/work/$t"
  rc=0
  # shellcheck disable=SC2086 # TIDINGS_FUZZ_ARGS is a list of flags
  timeout --kill-after=30 $((SECS + 120)) \
    "$BIN_DIR/$t" "$work" "$FUZZ/corpus/$t" \
    -max_total_time="$SECS" \
    -max_len="$(max_len "$t")" \
    -timeout="${TIDINGS_FUZZ_TIMEOUT:-10}" \
    -rss_limit_mb="${TIDINGS_FUZZ_RSS_MB:-2048}" \
    -artifact_prefix="$artifacts/" \
    -print_final_stats=1 \
    -dict="$FUZZ/tidings.dict" \
    ${TIDINGS_FUZZ_ARGS:-} >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2 || true)
  corpus=$(find "$work" -type f | wc -l)
  total_execs=$((total_execs + ${execs:-0}))
  if ((rc == 0)); then
    tail -n 3 "$log" | sed 's/^/   /'
    REPORT+=("$(printf 'ok    %-18s %10s execs %8s/s  cov %6s  corpus %5s' "$t" "${execs:-?}" "${speed:-?}" "${cov:-?}" "$corpus")")
  else
    failed=1
    echo "!! $t failed (exit $rc); the fuzzer's report:"
    { grep -vE '^#[0-9]+' "$log" || true; } | tail -n 60 | sed 's/^/   /'
    crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    if [[ -n $crash ]]; then
      echo "!! input saved to: $crash"
      echo "!! replay it with: $BIN_DIR/$t $crash"
    fi
    echo "!! full log: $log"
    REPORT+=("$(printf 'FAIL  %-18s %10s execs  exit %s  input %s' "$t" "${execs:-?}" "$rc" "${crash:-none (see $log)}")")
  fi
done

echo
echo "== fuzz summary (${SECS}s per target, largest allocation ${TIDINGS_FUZZ_MAX_ALLOC_MB} MiB)"
printf '   %s\n' "${REPORT[@]}"
echo "   total executions: $total_execs"
if ((failed)); then
  echo "== fuzzing FAILED: a target crashed, panicked, allocated past the cap, timed out or ran out of memory" >&2
  exit 1
fi
echo "== fuzzing passed"
