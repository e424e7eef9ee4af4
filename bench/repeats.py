#!/usr/bin/env python3
"""Table of bench/repeats.sh: every run of every set, and the medians per peer.

  repeats.py OUTDIR      OUTDIR holds <set>-run<N>/ directories, from the kit's e2e scripts (summary.jsonl and
                         <peer>.<case>.{wsload,publish}.json) or from bench/rooms.sh (cases.jsonl)
"""
import os
import re
import statistics
import sys

from summarize import load, rows_of

SETS = {
    "C-single": "C, single node (19,800 clients, 50/s)",
    "A-cluster": "A, 2 nodes + Redis (2,000 clients, 200/s)",
    "C-cluster": "C, 2 nodes + Redis (20,000 clients, 50/s); rawlimit-pair: 2 floor processes, no Redis",
    "C-cluster-cadence": "C, 2 nodes + Redis, widening write cadence on (engine.write_interval_max_ms)",
    "D-single": "D, single node (990 rooms × 20, 1,020/s)",
    "D-cluster": "D, 2 nodes + Redis (1,000 rooms × 20, 1,020/s)",
}


def runs_of(out):
    """{set: [(run number, directory)]} in run order."""
    found = {}
    for name in os.listdir(out):
        m = re.fullmatch(r"(.+)-run(\d+)", name)
        if m and os.path.isdir(os.path.join(out, name)):
            found.setdefault(m.group(1), []).append((int(m.group(2)), os.path.join(out, name)))
    return {s: sorted(v) for s, v in found.items()}


def results(directory):
    """[(peer, record)] in the order the peers ran, record = µs/delivery, p50, p99, accepted, asked, delivered,
    due."""
    out = []
    kit = rows_of(os.path.join(directory, "summary.jsonl")) + rows_of(os.path.join(directory, "floor-pair.jsonl"))
    for row in kit:
        pre = os.path.join(directory, f"{row['peer']}.{row['case']}")
        w, p = load(pre + ".wsload.json"), load(pre + ".publish.json")
        out.append((row["peer"], {
            "us": row.get("server_cpu_us_per_delivery"), "p50": w.get("p50_ms"), "p99": w.get("p99_ms"),
            "accepted": p.get("ok", 0), "sent": p.get("sent", 0), "asked": p.get("planned", 0),
            "delivered": row.get("deliveries"), "due": row.get("target_deliveries"),
        }))
    for row in rows_of(os.path.join(directory, "cases.jsonl")):
        w = load(row.get("wsload", ""))
        pubs = [load(row.get("publish", ""))] + ([load(row["publish_hot"])] if row.get("publish_hot") else [])
        out.append((row["peer"], {
            "us": row.get("server_cpu_us_per_delivery"), "p50": w.get("p50_ms"), "p99": w.get("p99_ms"),
            "accepted": sum(p.get("ok", 0) for p in pubs), "sent": sum(p.get("sent", 0) for p in pubs),
            "asked": sum(p.get("planned", 0) for p in pubs),
            "delivered": row.get("deliveries"), "due": row.get("target"),
        }))
    return out


def fmt(x, nd=1):
    return "–" if x is None else f"{x:,.{nd}f}"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main():
    out = sys.argv[1]
    runs = runs_of(out)
    print("| case | peer | runs | µs/delivery, each run | **median µs/delivery** | p99 ms, each run | **median p99 ms** "
          "| median p50 ms | accepted / sent / asked (all runs) | delivered / due (all runs) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    orders = []
    for set_name in [s for s in SETS if s in runs] + [s for s in runs if s not in SETS]:
        per_peer = {}
        for number, directory in runs[set_name]:
            got = results(directory)
            try:
                with open(directory + ".order") as f:
                    order = f.read().split()
            except OSError:
                order = [peer for peer, _ in got]
            orders.append(f"{set_name} run {number}: {' → '.join(order)}")
            for peer, record in got:
                per_peer.setdefault(peer, []).append(record)
        for peer, records in per_peer.items():
            us = [r["us"] for r in records]
            p99 = [r["p99"] for r in records]
            print(f"| {SETS.get(set_name, set_name)} | {peer} | {len(records)} "
                  f"| {' / '.join(fmt(v, 2) for v in us)} | **{fmt(median(us), 2)}** "
                  f"| {' / '.join(fmt(v, 0) for v in p99)} | **{fmt(median(p99), 0)}** "
                  f"| {fmt(median([r['p50'] for r in records]), 1)} "
                  f"| {sum(r['accepted'] for r in records):,} / {sum(r['sent'] for r in records):,} "
                  f"/ {sum(r['asked'] for r in records):,} "
                  f"| {sum(r['delivered'] or 0 for r in records):,} / {sum(r['due'] or 0 for r in records):,} |")
    print()
    print("Order of the peers in each run (rotated from run to run):")
    print()
    for line in orders:
        print(f"- {line}")
    print()
    print("µs/delivery is server CPU (user + system of the node processes, from /proc) over the publish window per "
          "delivery; p99 and p50 are wsload's publish→deliver latency. Sent is what the publisher got out within its 10 s "
          "schedule (it drops what it could not send in time: a server slower than the schedule shows there); "
          "accepted is what was answered 2xx; due is accepted × members. Each run is a fresh server (or 2-node cluster "
          "with a flushed Redis) per peer, the same load generator and the same case definition as the single-run "
          "sections above.")


if __name__ == "__main__":
    main()
