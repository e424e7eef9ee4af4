#!/usr/bin/env python3
"""Markdown table of bench/tracking.sh's runs: one JSON line of `tidings bench tracking --json` per run, whose
label is "peer|mode|case"."""

import json
import sys


def fmt(value, digits=1):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def main(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    print("| mode | server | case | accepted / s (of W×R) | deliveries / s | per manager / s | "
          "p50 / p99 / max ms | lost (of expected) or stale | refused, unanswered, failed conns | "
          "server CPU s | **CPU µs / position** | bench CPU s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        peer, mode, case = (r["label"].split("|") + ["", "", ""])[:3]
        target = r["workers"] * r["rate"]
        if r.get("lost") is not None:
            loss = f"{r['lost']:,} of {r['expected']:,}"
        else:
            loss = f"stale {r.get('stale', 0):,}"
        refused = sum(r["refused"].values())
        failed = sum(r["failed"].values())
        server = sum(r["server_cpu_s"].values())
        print(f"| {'1 node' if mode == 'single' else '2 nodes + Redis'} | {peer} | {case} | "
              f"{r['accepted_per_s']:,.0f} ({target:,.0f}) | {r['deliveries_per_s']:,.0f} | "
              f"{r['per_manager_per_s']:.1f} | {r['p50_ms']:.1f} / {r['p99_ms']:.1f} / {r['max_ms']:.0f} | "
              f"{loss} | {refused:,}, {r['unanswered']:,}, {failed:,} | {server:.2f} | "
              f"**{fmt(r.get('cpu_us_per_inbound'))}** | {r['loadgen_cpu_s']:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1])
