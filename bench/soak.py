#!/usr/bin/env python3
"""The table of a bench/soak.sh run from its raw files (bench.json, rss.csv, recovery-metrics.txt).

  soak.py --out DIR --warm S --server-cpu-s CPU --nodes N   prints the Markdown section body
  soak.py --out DIR --warm S --check                        exits 1 when anything was lost, repeated, out of
                                                             order or not recovered, or a client failed
"""
import argparse
import csv
import json
import sys


def slope_kib_per_min(points):
    """Least-squares slope of (seconds, KiB) points, in KiB per minute; 0 with fewer than 2 points."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    if sxx == 0:
        return 0.0
    return sum((t - mx) * (v - my) for t, v in points) / sxx * 60.0


def rss_rows(path, warm):
    """Per series: (RSS at the first sample after the warm-up, RSS at the end, slope after the warm-up)."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    series = [k for k in (rows[0].keys() if rows else []) if k != "t_s"]
    out = {}
    for name in series:
        points = [(float(r["t_s"]), float(r[name])) for r in rows if r[name]]
        after = [p for p in points if p[0] >= warm] or points[-1:]
        out[name] = (after[0][1] if after else 0, points[-1][1] if points else 0, slope_kib_per_min(after),
                     len(after))
    return out


def metrics(path):
    """Sums of the recovery counters over the nodes."""
    sums = {}
    try:
        for line in open(path):
            name, _, value = line.rpartition(" ")
            key = name.split("{")[0]
            sums[key] = sums.get(key, 0) + float(value)
    except FileNotFoundError:
        pass
    return sums


def problems(report):
    """Sentences on what went wrong (empty: clean)."""
    churn = report.get("churn") or {}
    said = []
    for key in ("failed", "publish_failed", "not_sent"):
        if report.get(key):
            said.append(f"{key} = {report[key]}")
    for key in ("lost", "gaps_unfilled", "duplicates", "out_of_order", "not_recovered", "never_back"):
        if churn.get(key):
            said.append(f"{key} = {churn[key]}")
    if report.get("expected", 0) == 0:
        said.append("nothing was expected (no event accepted?)")
    return said


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--warm", type=float, default=300)
    ap.add_argument("--server-cpu-s", type=float, default=0)
    ap.add_argument("--nodes", type=int, default=6)
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    try:
        report = json.load(open(f"{a.out}/bench.json"))
    except (FileNotFoundError, json.JSONDecodeError) as e:
        sys.exit(f"soak: no bench report ({e})")
    if a.check:
        said = problems(report)
        if said:
            sys.exit("soak: " + "; ".join(said))
        return
    churn = report.get("churn") or {}
    m = metrics(f"{a.out}/recovery-metrics.txt")
    print("| what | value |")
    print("| --- | --- |")
    print(f"| clients connected | {report['connected']:,} of {report['clients']:,} ({report['failed']:,} failed) over"
          f" {report['urls']} nodes, {report['rooms']:,} rooms, {report['workers']} client processes |")
    print(f"| publishes | {report['accepted']:,} accepted of {report['planned']:,} planned, {report['publish_rate']:.1f}/s,"
          f" request p99 {report['publish_p99_ms']:.1f} ms |")
    print(f"| deliveries | {report['deliveries']:,} of {report['expected']:,} expected |")
    print(f"| lost / duplicated / out of order | {churn.get('lost', 0):,} / {churn.get('duplicates', 0):,} /"
          f" {churn.get('out_of_order', 0):,} (skipped and never came: {churn.get('gaps_unfilled', 0):,}) |")
    print(f"| reconnects | {churn.get('reconnects', 0):,} ({churn.get('drops', 0):,} dropped on purpose at"
          f" {churn.get('per_min_percent', 0):g}%/min, {churn.get('lost_connections', 0):,} lost otherwise):"
          f" {churn.get('recovered', 0):,} recovered, {churn.get('not_recovered', 0):,} not recovered,"
          f" {churn.get('never_back', 0):,} never back; disconnect → live p50 {churn.get('reconnect_p50_ms', 0):.1f} ms,"
          f" p99 {churn.get('reconnect_p99_ms', 0):.1f} ms |")
    if m:
        print(f"| servers' recovery counters | {m.get('tidings_recoveries_attempted_total', 0):,.0f} attempted,"
              f" {m.get('tidings_recoveries_succeeded_total', 0):,.0f} succeeded,"
              f" {m.get('tidings_recoveries_failed_total', 0):,.0f} failed,"
              f" {m.get('tidings_events_replayed_total', 0):,.0f} events replayed |")
    print(f"| latency publish → client | p50 {report['p50_ms']:.1f} ms, p99 {report['p99_ms']:.1f} ms,"
          f" max {report['max_ms']:.1f} ms |")
    span = report.get("run_s") or 1
    print(f"| server CPU | {a.server_cpu_s:,.0f} CPU s over the run ({a.server_cpu_s / span:.2f} cores on average,"
          f" all {a.nodes} nodes) |")
    print(f"| load generator | {report['cpu_s']:,.0f} CPU s, peak RSS {report['peak_rss_kib'] / 1024:,.0f} MiB |")
    print()
    rss = rss_rows(f"{a.out}/rss.csv", a.warm)
    print(f"| process | RSS after warm-up ({a.warm:g} s), MiB | RSS at the end, MiB | slope after warm-up, KiB/min |")
    print("| --- | --- | --- | --- |")
    for name, (first, last, slope, n) in rss.items():
        print(f"| {name} | {first / 1024:,.1f} | {last / 1024:,.1f} | {slope:+,.1f} ({n} samples) |")


if __name__ == "__main__":
    main()
