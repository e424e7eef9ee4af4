#!/usr/bin/env python3
"""Markdown table of bench/ingest.sh's runs: one JSON line of `tidings bench --json` per run, with the mode,
path, server and broker CPU seconds the script added."""

import json
import sys

PATHS = {"http": "HTTP `POST /v1/publish`", "redis": "Redis ingest channel", "kafka": "Kafka topic"}


def main(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    print("| nodes | path | accepted / s | delivered (of expected) | p50 / p99 / p99.9 / max ms | lost | "
          "duplicates, out of order | server CPU s | server µs / event | broker CPU s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        nodes = "1" if r["mode"] == "single" else "2 + Redis"
        if "deliveries" not in r:
            print(f"| {nodes} | {PATHS[r['path']]} | run failed | | | | | | | |")
            continue
        lost = max(r["expected"] - r["deliveries"], 0)
        # Events published in the whole run, warm-up included, over which the server CPU was read.
        events = r["accepted"] + r["warmup_deliveries"] * r["accepted"] / max(r["deliveries"], 1)
        per_event = r["server_cpu_s"] * 1e6 / events if events else 0
        print(f"| {nodes} | {PATHS[r['path']]} | {r['publish_rate']:,.0f} | "
              f"{r['deliveries']:,} ({r['expected']:,}) | "
              f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f} / {r['p999_ms']:.1f} / {r['max_ms']:.0f} | {lost:,} | "
              f"{r['duplicates']}, {r['out_of_order']} | {r['server_cpu_s']:.2f} | {per_event:.1f} | "
              f"{r['broker_cpu_s']:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1])
