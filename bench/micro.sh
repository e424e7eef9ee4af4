#!/usr/bin/env bash
# Criterion micro-benchmarks of the packet codecs (benches/codec.rs) and of the hub fan-out (benches/fanout.rs).
#
# Builds and runs both benches with short settings (the run takes under two minutes on 2 cores), prints a
# Markdown table of the median time per iteration and the throughput, and writes it as the
# "## Micro-benchmarks (criterion)" section of BENCHMARKS.md (replaced if present, appended otherwise).
#
# Usage:   bench/micro.sh
# Options (environment):
#   CRITERION_ARGS    criterion settings (default: --warm-up-time 1 --measurement-time 3)
#   CARGO_TARGET_DIR  honoured; results are read from <target dir>/criterion
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

CRITERION_ARGS=${CRITERION_ARGS:---warm-up-time 1 --measurement-time 3}
BENCH_CMD="cargo bench --bench codec --bench fanout -- $CRITERION_ARGS"

target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
results=$target_dir/criterion

echo "== building the benches"
cargo bench --bench codec --bench fanout --no-run

mkdir -p "$results"
marker=$(mktemp "$results/.run-started.XXXXXX")
trap 'rm -f "$marker"' EXIT
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
run_started=$SECONDS

echo "== $BENCH_CMD"
# shellcheck disable=SC2086 # CRITERION_ARGS is a list of arguments.
cargo bench --bench codec --bench fanout -- $CRITERION_ARGS

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
run_seconds=$((SECONDS - run_started))

bench_md=$ROOT/BENCHMARKS.md
[ -f "$bench_md" ] || echo "# Benchmarks" >"$bench_md"
PYTHONPATH=$ROOT/bench python3 - "$bench_md" "$results" "$marker" "$BENCH_CMD" "$load_before" "$load_after" "$run_seconds" <<'PY'
import json, os, subprocess, sys, textwrap

import section as bench_section

path, results, marker, command, load_before, load_after, run_seconds = sys.argv[1:]
title = "## Micro-benchmarks (criterion)"
started = os.path.getmtime(marker)
FANOUT_GROUP = "hub_publish"


def fmt_time(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.2f} {unit}"
    return f"{ns:.1f} ns"


def fmt_rate(per_sec, unit):
    """`1.23 GB/s` for unit `B/s`, `4.56 M deliveries/s` for unit `deliveries/s`."""
    join = "" if unit.startswith("B") else " "
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if per_sec >= scale:
            return f"{per_sec / scale:.2f} {prefix}{join}{unit}"
    return f"{per_sec:.1f} {unit}"


# Benchmarks written by this run, in the order they finished.
runs = []
for directory, _, files in os.walk(results):
    if os.path.basename(directory) != "new" or "benchmark.json" not in files:
        continue
    info_path = os.path.join(directory, "benchmark.json")
    if os.path.getmtime(info_path) < started:
        continue
    with open(info_path) as f:
        info = json.load(f)
    with open(os.path.join(directory, "estimates.json")) as f:
        estimates = json.load(f)
    runs.append((os.path.getmtime(info_path), info, estimates))
runs.sort(key=lambda run: run[0])
if not runs:
    sys.exit("bench/micro.sh: no criterion results from this run under " + results)

rows = ["| benchmark | per iteration | median time | 95% CI of median | throughput | per delivery |",
        "| --- | ---: | ---: | ---: | ---: | ---: |"]
for _, info, estimates in runs:
    median = estimates["median"]
    ns = median["point_estimate"]
    low = median["confidence_interval"]["lower_bound"]
    high = median["confidence_interval"]["upper_bound"]
    name = info.get("title") or info.get("full_id")
    (kind, amount), = (info.get("throughput") or {"": 0}).items()
    size, rate, per_delivery = "", "", ""
    if kind in ("Bytes", "BytesDecimal"):
        size = f"{amount} B"
        rate = fmt_rate(amount * 1e9 / ns, "B/s")
    elif kind == "Elements":
        if info["group_id"] == FANOUT_GROUP:
            size = f"{amount} deliver{'y' if amount == 1 else 'ies'}"
            rate = fmt_rate(amount * 1e9 / ns, "deliveries/s")
            per_delivery = f"{ns / amount:.1f} ns"
        else:
            size = f"{amount} elem"
            rate = fmt_rate(amount * 1e9 / ns, "elem/s")
    interval = f"{fmt_time(low)} – {fmt_time(high)}"
    rows.append(f"| {name} | {size} | {fmt_time(ns)} | {interval} | {rate} | {per_delivery} |")
table = "\n".join(rows)
print(table)

root = os.path.dirname(path)
rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
context = bench_section.fill(
    f"Measured @WHEN@, commit @COMMIT@, @CORES@ cores, {rustc}. Load average (1/5/15 min) before: "
    f"{load_before}, after: {load_after} (other work on the machine adds noise).",
    root,
)
invocation = f"Command: `bench/micro.sh`, which runs\n`{command}` ({run_seconds} s, build excluded)."
method = (
    "Median time per iteration as criterion estimates it, with its 95% confidence interval. Codec rows "
    "(`benches/codec.rs`): throughput is the wire size handled per iteration, in MB/s (10^6 bytes); "
    "`encode_text_header` counts headers. Fan-out rows (`benches/fanout.rs`): one iteration is one "
    "`Hub::publish` of an event with ~100 bytes of data and its offset "
    "(`42[\"message\",{...},\"<offset>\"]`): encode once, append to the room's history (capped at 100 "
    "events, full, so every append also evicts), queue on every member's outbox. Only the publish is timed; "
    "the benchmark drains each recipient's outbox after every publish, untimed, so publishes always find idle "
    "outboxes and none is refused. Per delivery is the median "
    "divided by the member count. `one_room/N` publishes to one room of N members over and over, so its "
    "sessions stay in cache; `round_robin_1000_rooms_x_20` publishes to 1000 rooms of 20 members in turn "
    "(20000 sessions, 100000 events of history), so each publish finds its room, its members and the history "
    "event it evicts out of cache: compare it with `one_room/20`. No metrics recorder is installed, and each "
    "publish is timed on its own (two clock reads, a few tens of ns, visible in the 1-member row only)."
)
wrap = lambda paragraph: textwrap.fill(paragraph, width=110, break_on_hyphens=False)
section = f"{title}\n\n{wrap(context)}\n{invocation}\n\n{wrap(method)}\n\n{table}\n"

bench_section.replace(path, title, section)
PY
