#!/usr/bin/env bash
# The project's one test command (CI runs it through .ci/run from a clean clone).
#
#   scripts/test.sh                 # every step
#   scripts/test.sh interop         # only some steps, in the order given
#
# Steps: deps dashboard fmt clippy test fuzz build autobahn interop
#
# The dashboard step installs the front-end's pinned packages (dashboard/package-lock.json) when needed, runs its
# unit tests and checks that the assets the binary embeds (src/dashboard/assets/) are what dashboard/src builds.
#
# The autobahn step (scripts/autobahn.sh: WebSocket conformance with the Autobahn|Testsuite) needs Python 2.7;
# without it (and when pyenv cannot build it) the step says so and passes.
#
# Environment:
#   TIDINGS_TEST_CONCURRENCY   parallel interop test files (default 1)
#   TIDINGS_INTEROP_TIMEOUT    seconds for the whole interop run (default 900)
#   TIDINGS_TEST_VERBOSE=1     echo the servers' output while the interop tests run
#   TIDINGS_TEST_LOG           TIDINGS_LOG for servers started by the interop tests (default warn)
#   TIDINGS_FUZZ_SECONDS       seconds each fuzz target runs in the fuzz step (default 45; scripts/fuzz.sh)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Debian packages the suite needs, as "command:package" pairs: a package is installed
# only when its command is missing. chromium is the headless browser of the apps' tests
# (interop/test/apps-*.test.mjs, driven by playwright-core at /usr/bin/chromium). make and cc build the
# librdkafka that the rdkafka crate compiles from source. nginx is the balancer of deploy/local-cluster.sh
# (interop/test/deploy-*.test.mjs).
APT_NEEDS=(redis-server:redis-server redis-sentinel:redis-sentinel c++:g++ cc:gcc make:make chromium:chromium nginx:nginx)
# Tools the script itself relies on; Debian's packages are the fallback when absent.
TOOL_NEEDS=(node:nodejs npm:npm timeout:coreutils curl:curl openssl:openssl)

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

STEP_LOG=()
RUN_START=$SECONDS

banner() {
  local line='=================================================================='
  printf '\n%s\n== %s\n%s\n' "$line" "$*" "$line"
}

summary() {
  local rc=$?
  if ((${#STEP_LOG[@]})); then
    printf '\n== summary (%ss total)\n' "$((SECONDS - RUN_START))"
    printf '   %s\n' "${STEP_LOG[@]}"
  fi
  if ((rc == 0)); then
    printf '== ALL PASSED\n'
  else
    printf '== FAILED (exit %s)\n' "$rc"
  fi
}
trap summary EXIT

# run_step NAME COMMAND...: banner, run, record duration; exit non-zero on failure.
run_step() {
  local name=$1
  shift
  banner "$name"
  local start=$SECONDS rc=0
  # A subshell outside any conditional context, so that `set -e` holds inside the step.
  set +e
  (
    set -e
    "$@"
  )
  rc=$?
  set -e
  local took=$((SECONDS - start))
  if ((rc != 0)); then
    STEP_LOG+=("FAIL  $name (${took}s, exit $rc)")
    printf '\n!! step "%s" failed (exit %s)\n' "$name" "$rc" >&2
    exit "$rc"
  fi
  STEP_LOG+=("ok    $name (${took}s)")
}

# apt_ensure CMD:PKG...: install the packages whose command is missing, nothing otherwise.
apt_ensure() {
  local missing=() pair cmd pkg
  for pair in "$@"; do
    cmd=${pair%%:*}
    pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if ((${#missing[@]} == 0)); then
    echo "all present: ${*:-(nothing needed)}"
    return 0
  fi
  echo "installing missing packages: ${missing[*]}"
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
  "${sudo[@]}" apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}

step_deps() {
  apt_ensure ${TOOL_NEEDS[@]+"${TOOL_NEEDS[@]}"} ${APT_NEEDS[@]+"${APT_NEEDS[@]}"}
  local tool
  for tool in cargo rustfmt cargo-clippy; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      echo "missing Rust tool: $tool (rustup component add rustfmt clippy)" >&2
      return 1
    fi
  done
  local node_major
  node_major=$(node -p 'process.versions.node.split(".")[0]')
  if ((node_major < 20)); then
    echo "node >= 20 is required, found $(node --version)" >&2
    return 1
  fi
  echo "cargo $(cargo --version | cut -d' ' -f2), node $(node --version), npm $(npm --version 2>/dev/null)"
  # The Kafka tests' broker and producer, cached outside the checkout (built once per machine).
  "$ROOT/scripts/kafka-tools.sh"
}

step_fmt() {
  cargo fmt --all -- --check
  cargo fmt --manifest-path fuzz/Cargo.toml --all -- --check
}
step_clippy() { cargo clippy --all-targets -- -D warnings; }
step_test() { cargo test --release; }
step_build() { cargo build --release; }
step_autobahn() { AUTOBAHN_IF_AVAILABLE=1 "$ROOT/scripts/autobahn.sh"; }
# Every decoder's fuzz target from its seed corpus; a crash fails the step and its input path is printed.
step_fuzz() { "$ROOT/scripts/fuzz.sh" "${TIDINGS_FUZZ_SECONDS:-45}"; }

# npm_ci_if_stale DIR: npm ci in DIR when its node_modules is missing or older than its package files.
npm_ci_if_stale() {
  local dir=$1 name=${1#"$ROOT"/}
  if [[ ! -d $dir/node_modules || ! -f $dir/node_modules/.package-lock.json \
    || $dir/package-lock.json -nt $dir/node_modules/.package-lock.json \
    || $dir/package.json -nt $dir/node_modules/.package-lock.json ]]; then
    echo "-- npm ci ($name/node_modules missing or stale)"
    (cd "$dir" && npm ci --no-audit --no-fund)
  else
    echo "-- $name/node_modules is up to date"
  fi
}

# The dashboard's sources build to the committed assets byte for byte, and its pure logic passes its tests.
step_dashboard() {
  local dir="$ROOT/dashboard"
  npm_ci_if_stale "$dir"
  (cd "$dir" && npm test && npm run check)
}

step_interop() {
  local dir="$ROOT/interop"
  npm_ci_if_stale "$dir"
  # The apps the browser tests open serve socket.io-client from their own node_modules.
  local app
  for app in "$ROOT"/examples/*/package.json; do
    if [[ -f $app ]]; then npm_ci_if_stale "$(dirname "$app")"; fi
  done

  local bin="${TIDINGS_BIN:-$ROOT/target/release/tidings}"
  if [[ ! -x $bin ]]; then
    echo "server binary not found: $bin (run the build step)" >&2
    return 1
  fi
  echo "-- server: $bin"

  # The broker and producer of test/kafka.test.mjs.
  local kafka_tools
  kafka_tools=$("$ROOT/scripts/kafka-tools.sh")
  export TANSU_BIN KAFKA_PYTHON
  TANSU_BIN=$(sed -n 's/^TANSU_BIN=//p' <<<"$kafka_tools")
  KAFKA_PYTHON=$(sed -n 's/^KAFKA_PYTHON=//p' <<<"$kafka_tools")

  local files=("$dir"/test/*.test.mjs)
  TIDINGS_BIN="$bin" timeout --kill-after=30 "${TIDINGS_INTEROP_TIMEOUT:-900}" \
    node --test \
    --test-concurrency="${TIDINGS_TEST_CONCURRENCY:-1}" \
    --test-force-exit \
    --test-reporter=spec \
    "${files[@]}"
  # The cluster tests again on partitioned clusters: rooms spread over three more redis-servers, then over six
  # partitions of a Redis Cluster of three masters (with the recovery across partitions).
  echo "-- the cluster tests with redis.partitions (three redis-servers)"
  TIDINGS_BIN="$bin" TIDINGS_TEST_PARTITIONS=3 timeout --kill-after=30 300 \
    node --test --test-concurrency=1 --test-force-exit --test-reporter=spec \
    "$dir/test/cluster.test.mjs"
  echo "-- the cluster and partition tests on a Redis Cluster (redis.cluster_partitions = 6)"
  TIDINGS_BIN="$bin" TIDINGS_TEST_REDIS_CLUSTER=6 timeout --kill-after=30 400 \
    node --test --test-concurrency=1 --test-force-exit --test-reporter=spec \
    "$dir/test/cluster.test.mjs" "$dir/test/partitions.test.mjs"
}

ALL_STEPS=(deps dashboard fmt clippy test fuzz build autobahn interop)
STEPS=("$@")
if ((${#STEPS[@]} == 0)); then STEPS=("${ALL_STEPS[@]}"); fi

for s in "${STEPS[@]}"; do
  case " ${ALL_STEPS[*]} " in
    *" $s "*) ;;
    *)
      echo "unknown step: $s (steps: ${ALL_STEPS[*]})" >&2
      exit 2
      ;;
  esac
done

for s in "${STEPS[@]}"; do
  case $s in
    deps) run_step "deps: required tools and packages" step_deps ;;
    dashboard) run_step "dashboard: unit tests, built assets are current" step_dashboard ;;
    fmt) run_step "cargo fmt --check" step_fmt ;;
    clippy) run_step "cargo clippy --all-targets -- -D warnings" step_clippy ;;
    test) run_step "cargo test --release" step_test ;;
    fuzz) run_step "fuzz every decoder (scripts/fuzz.sh)" step_fuzz ;;
    build) run_step "cargo build --release" step_build ;;
    autobahn) run_step "WebSocket conformance (Autobahn|Testsuite, groups 1-7 and 9)" step_autobahn ;;
    interop) run_step "interop tests (node --test, socket.io-client)" step_interop ;;
    *)
      echo "unknown step: $s (steps: ${ALL_STEPS[*]})" >&2
      exit 2
      ;;
  esac
done
