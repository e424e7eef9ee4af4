#!/usr/bin/env bash
# Makes sure the Kafka tests' tools exist, cached outside the checkout so a machine builds them once:
#   $TIDINGS_TOOLS/bin/tansu    a Kafka-wire-compatible broker (Rust; `cargo install`, ~9 minutes once)
#   $TIDINGS_TOOLS/venv         Python with confluent-kafka, the independent producer of the tests
# TIDINGS_TOOLS defaults to ~/.cache/tidings-tools. Prints the two paths as shell assignments.
set -euo pipefail
TOOLS=${TIDINGS_TOOLS:-$HOME/.cache/tidings-tools}
mkdir -p "$TOOLS"
if [[ ! -x $TOOLS/bin/tansu ]]; then
  echo "-- building the tansu broker into $TOOLS (once per machine)" >&2
  cargo install tansu --version 0.6.0 --locked --no-default-features --features dynostore \
    --root "$TOOLS" >&2
fi
if ! "$TOOLS/venv/bin/python" -c 'import confluent_kafka' 2>/dev/null; then
  echo "-- installing confluent-kafka into $TOOLS/venv" >&2
  python3 -m venv "$TOOLS/venv" >&2
  "$TOOLS/venv/bin/pip" install --quiet 'confluent-kafka==2.*' >&2
fi
echo "TANSU_BIN=$TOOLS/bin/tansu"
echo "KAFKA_PYTHON=$TOOLS/venv/bin/python"
