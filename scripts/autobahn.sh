#!/usr/bin/env bash
# WebSocket conformance: the Autobahn|Testsuite fuzzing client against `tidings serve --conformance`, whose
# raw echo endpoint (/ws-echo) runs on the same frame codec and connection code as every Socket.IO client.
# Fails unless every case of groups 1-7 and 9 is OK, NON-STRICT or INFORMATIONAL (behaviour and close).
#
#   scripts/autobahn.sh
#
# It needs Python 2.7 (the test-suite never moved to Python 3): a pyenv 2.7 version, `python2.7` on the PATH,
# or, when neither exists and pyenv does, `pyenv install 2.7.18`. The test-suite goes into its own virtualenv
# (pins in scripts/autobahn-requirements.txt), kept between runs.
#
# Environment:
#   TIDINGS_BIN              server binary (default target/release/tidings, built when missing)
#   AUTOBAHN_DIR             scratch directory: virtualenv, spec, reports (default target/autobahn)
#   AUTOBAHN_CASES           cases to run (default "1.* 2.* 3.* 4.* 5.* 6.* 7.* 9.*")
#   AUTOBAHN_IF_AVAILABLE=1  without Python 2.7, print why and exit 0 instead of failing (scripts/test.sh)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BIN="${TIDINGS_BIN:-$ROOT/target/release/tidings}"
WORK="${AUTOBAHN_DIR:-$ROOT/target/autobahn}"
read -r -a CASES <<<"${AUTOBAHN_CASES:-1.* 2.* 3.* 4.* 5.* 6.* 7.* 9.*}"
# Cases in groups 1-7 and 9 of this test-suite version; a report with fewer means a run cut short.
EXPECTED_CASES=300
if [[ -n ${AUTOBAHN_CASES:-} ]]; then EXPECTED_CASES=1; fi
REQUIREMENTS="$ROOT/scripts/autobahn-requirements.txt"
PY27_VERSION=2.7.18

export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONWARNINGS=ignore

unavailable() {
  if [[ ${AUTOBAHN_IF_AVAILABLE:-0} == 1 ]]; then
    echo "autobahn: skipped: $*"
    exit 0
  fi
  echo "autobahn: $*" >&2
  exit 1
}

# Prints the path of a working Python 2.7 interpreter, or nothing.
find_python27() {
  local candidates=() root
  if command -v pyenv >/dev/null 2>&1; then
    root=$(pyenv root)
    candidates+=("$root"/versions/2.7*/bin/python2.7)
  fi
  if command -v python2.7 >/dev/null 2>&1; then
    candidates+=("$(command -v python2.7)")
  fi
  local py
  for py in "${candidates[@]}"; do
    if [[ -x $py ]] && "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' >/dev/null 2>&1; then
      echo "$py"
      return 0
    fi
  done
}

# Builds Python 2.7 with pyenv (needs the C build dependencies and the CPython sources download).
install_python27() {
  command -v pyenv >/dev/null 2>&1 || return 1
  local deps=(build-essential libssl-dev zlib1g-dev libbz2-dev libreadline-dev libsqlite3-dev libffi-dev)
  local missing=() pkg
  for pkg in "${deps[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  fi
  echo "-- pyenv install $PY27_VERSION"
  timeout 900 pyenv install -s "$PY27_VERSION"
}

# Creates (or refreshes, when the pins changed) the virtualenv with the test-suite.
ensure_venv() {
  local py=$1 venv=$WORK/venv stamp
  stamp=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
  if [[ -x $venv/bin/wstest && -f $venv/.requirements && $(cat "$venv/.requirements") == "$stamp" ]]; then
    echo "-- test-suite virtualenv is up to date ($venv)"
    return 0
  fi
  echo "-- installing the test-suite into $venv"
  rm -rf "$venv" "$WORK/virtualenv"
  "$py" -m pip install -q --target "$WORK/virtualenv" 'virtualenv==16.7.12'
  PYTHONPATH="$WORK/virtualenv" "$py" -m virtualenv -q "$venv"
  "$venv/bin/pip" install --no-python-version-warning -q -r "$REQUIREMENTS"
  echo "$stamp" >"$venv/.requirements"
}

SERVER_PID=
stop_server() {
  if [[ -n $SERVER_PID ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
}
trap stop_server EXIT

# Starts the conformance server on a random loopback port; sets SERVER_PID and PORT.
start_server() {
  local log=$WORK/server.log
  "$BIN" serve --conformance --listen 127.0.0.1:0 >"$log" 2>&1 &
  SERVER_PID=$!
  local _
  for _ in $(seq 100); do
    PORT=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$log" | head -n1)
    if [[ -n $PORT ]]; then return 0; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
    sleep 0.1
  done
  cat "$log" >&2
  echo "autobahn: the conformance server did not start" >&2
  return 1
}

write_spec() {
  local spec=$1 cases="" c
  for c in "${CASES[@]}"; do cases+="${cases:+, }\"$c\""; done
  cat >"$spec" <<EOF
{
  "outdir": "$WORK/reports",
  "servers": [{"agent": "tidings", "url": "ws://127.0.0.1:$PORT/ws-echo"}],
  "cases": [$cases],
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
EOF
}

# Prints behaviours per case group from the report; fails on anything not accepted or on a missing report.
check_report() {
  "$WORK/venv/bin/python" - "$WORK/reports/index.json" "$EXPECTED_CASES" <<'EOF'
import json, sys
ACCEPTED = ("OK", "NON-STRICT", "INFORMATIONAL")
COLUMNS = ACCEPTED + ("UNIMPLEMENTED", "FAILED")
with open(sys.argv[1]) as f:
    cases = json.load(f)["tidings"]
groups, bad = {}, []
for case_id, result in cases.items():
    worst = result["behavior"]
    for b in (result["behavior"], result["behaviorClose"]):
        if b not in ACCEPTED:
            worst = b
    column = worst if worst in COLUMNS else "FAILED"
    row = groups.setdefault(int(case_id.split(".")[0]), dict.fromkeys(COLUMNS, 0))
    row[column] += 1
    if worst not in ACCEPTED:
        bad.append((case_id, result["behavior"], result["behaviorClose"]))
print("%-6s %6s %11s %14s %14s %7s %6s" % (("group",) + COLUMNS + ("total",)))
for group in sorted(groups):
    row = groups[group]
    print("%-6s %6d %11d %14d %14d %7d %6d" % ((group,) + tuple(row[c] for c in COLUMNS) + (sum(row.values()),)))
for case_id, behavior, close in sorted(bad, key=lambda b: [int(p) for p in b[0].split(".")]):
    print("  %s: behaviour %s, close %s" % (case_id, behavior, close))
print("autobahn: %d passed, %d failed" % (len(cases) - len(bad), len(bad)))
if len(cases) < int(sys.argv[2]):
    print("autobahn: only %d cases in the report, expected %s" % (len(cases), sys.argv[2]))
    sys.exit(1)
sys.exit(1 if bad else 0)
EOF
}

main() {
  local start=$SECONDS py
  mkdir -p "$WORK"
  py=$(find_python27)
  if [[ -z $py ]]; then
    install_python27 || unavailable "Python 2.7 is not installed and could not be built (pyenv install $PY27_VERSION)"
    py=$(find_python27)
    [[ -n $py ]] || unavailable "Python 2.7 is not available"
  fi
  echo "-- python: $py"
  ensure_venv "$py"
  local installed=$SECONDS
  if [[ ! -x $BIN ]]; then
    echo "-- building $BIN"
    cargo build --release
  fi
  start_server
  echo "-- server: $BIN on 127.0.0.1:$PORT (pid $SERVER_PID), cases: ${CASES[*]}"
  rm -rf "$WORK/reports"
  write_spec "$WORK/spec.json"
  (cd "$WORK" && timeout 1200 "$WORK/venv/bin/wstest" -m fuzzingclient -s "$WORK/spec.json" >"$WORK/wstest.log" 2>&1) || {
    tail -n 20 "$WORK/wstest.log" >&2
    echo "autobahn: wstest failed (log: $WORK/wstest.log)" >&2
    return 1
  }
  stop_server
  echo "-- reports: $WORK/reports/index.html (setup $((installed - start))s, run $((SECONDS - installed))s)"
  check_report
}

main "$@"
