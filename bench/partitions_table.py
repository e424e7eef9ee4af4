#!/usr/bin/env python3
"""Rows and table of bench/partitions.sh.

  partitions_table.py row BENCH_JSON --groups G --rate R --redis-ticks T --busiest-ticks B --node-ticks N
                      --tick-hz HZ --limit-ms L        one JSON row (stdout) from a `tidings bench --json` run
  partitions_table.py sequencing --groups G --events E --seconds S BENCH_TXT...
                                                       one JSON row from concurrent redis-benchmark outputs
  partitions_table.py table ROWS_JSONL --limit-ms L [--sequencing SEQ_JSONL]
                                                       the Markdown tables and summary
"""
import re
import argparse
import json
import sys


def row(args):
    try:
        with open(args.bench) as f:
            bench = json.loads(f.read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        bench = {}
    hz = args.tick_hz
    span = bench.get("run_s") or bench.get("active_s") or 1.0
    accepted = bench.get("accepted", 0)
    planned = bench.get("planned", 0) or 1
    within = (
        bool(bench)
        and bench.get("p99_ms", 1e9) <= args.limit_ms
        and accepted >= planned
        and bench.get("delivered_ratio", 0) >= 1.0
        and bench.get("duplicates", 1) == 0
        and bench.get("out_of_order", 1) == 0
    )
    out = {
        "groups": args.groups,
        "rate": args.rate,
        "achieved": bench.get("publish_rate", 0),
        "accepted": accepted,
        "planned": planned,
        "delivered_ratio": bench.get("delivered_ratio", 0),
        "duplicates": bench.get("duplicates"),
        "out_of_order": bench.get("out_of_order"),
        "p50_ms": bench.get("p50_ms"),
        "p99_ms": bench.get("p99_ms"),
        "publish_p99_ms": bench.get("publish_p99_ms"),
        "redis_core": args.redis_ticks / hz / span,
        "busiest_redis_core": args.busiest_ticks / hz / span,
        "nodes_core": args.node_ticks / hz / span,
        "loadgen_core": bench.get("cpu_s", 0) / span,
        "redis_us_per_event": args.redis_ticks / hz * 1e6 / max(accepted, 1),
        "within": within,
    }
    print(json.dumps(out))


def sequencing(args):
    throughput, p99 = [], []
    for path in args.outputs:
        text = open(path).read()
        m = re.search(r"throughput summary: ([\d.]+) requests per second", text)
        if m:
            throughput.append(float(m.group(1)))
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if "p99" in line and i + 1 < len(lines):
                head, values = line.split(), lines[i + 1].split()
                if len(head) == len(values):
                    p99.append(float(values[head.index("p99")]))
    print(json.dumps({
        "groups": args.groups,
        "events": args.events,
        "seconds": args.seconds,
        "rate": args.events / args.seconds if args.seconds else 0,
        "sum_of_rates": sum(throughput),
        "worst_p99_ms": max(p99) if p99 else None,
        "complete": len(throughput) == len(args.outputs),
    }))


def fmt(x, digits=1):
    return "–" if x is None else f"{x:,.{digits}f}"


def table(args):
    rows = [json.loads(line) for line in open(args.rows) if line.strip()]
    print(
        "| Redis groups | asked /s | published /s | accepted / planned | delivered | dup / out of order "
        "| latency p50 / p99 ms | publish p99 ms | Redis CPU (all / busiest, cores) | Redis µs per event "
        "| nodes CPU (cores) | load generator (cores) | within the limit |"
    )
    print("|" + " --- |" * 13)
    for r in rows:
        print(
            f"| {r['groups']} | {r['rate']:,} | {fmt(r['achieved'], 0)} | {r['accepted']:,} / {r['planned']:,} "
            f"| {r['delivered_ratio']:.4f} | {r['duplicates']} / {r['out_of_order']} "
            f"| {fmt(r['p50_ms'], 2)} / {fmt(r['p99_ms'], 2)} | {fmt(r['publish_p99_ms'], 2)} "
            f"| {r['redis_core']:.2f} / {r['busiest_redis_core']:.2f} | {r['redis_us_per_event']:.1f} "
            f"| {r['nodes_core']:.2f} | {r['loadgen_core']:.2f} | {'yes' if r['within'] else 'no'} |"
        )
    print()
    best = {}
    for r in rows:
        if r["within"]:
            best[r["groups"]] = max(best.get(r["groups"], 0), r["achieved"])
    single = best.get(1, 0)
    for groups, rate in sorted(best.items()):
        ratio = f" ({rate / single:.2f}× one Redis)" if single and groups != 1 else ""
        print(f"- highest rate within p99 ≤ {args.limit_ms} ms, every event delivered once in order, "
              f"{groups} group(s): **{rate:,.0f} events/s**{ratio}")
    cost = [r["redis_us_per_event"] for r in rows if r["groups"] == 1 and r["within"]]
    if cost:
        per_event = min(cost)
        print(f"- one Redis spends {per_event:.1f} µs of its single core per event: it alone would run out at "
              f"about {1e6 / per_event:,.0f} events/s, and each added group adds that much again, as long as "
              "the groups (and the nodes) have cores of their own.")
    top = max(rows, key=lambda r: r["achieved"], default=None)
    if top:
        total = top["redis_core"] + top["nodes_core"] + top["loadgen_core"]
        print(f"- at the highest rate reached the box was busy {total:.2f} cores (Redis {top['redis_core']:.2f}, "
              f"nodes {top['nodes_core']:.2f}, load generator {top['loadgen_core']:.2f}).")
    if args.sequencing:
        seq = [json.loads(line) for line in open(args.sequencing) if line.strip()]
        print()
        print("Sequencing alone (the publish script driven straight at the groups by one redis-benchmark each, "
              "no nodes, no clients):")
        print()
        print("| Redis groups | events numbered | wall s | events/s (all groups) | worst p99 ms | × one Redis |")
        print("| --- | --- | --- | --- | --- | --- |")
        one = next((r["rate"] for r in seq if r["groups"] == 1), 0)
        for r in seq:
            ratio = f"{r['rate'] / one:.2f}×" if one else "–"
            print(f"| {r['groups']} | {r['events']:,} | {r['seconds']:.2f} | {r['rate']:,.0f} "
                  f"| {fmt(r['worst_p99_ms'], 2)} | {ratio} |")


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("row")
    r.add_argument("bench")
    for name in ("groups", "rate", "redis_ticks", "busiest_ticks", "node_ticks", "tick_hz"):
        r.add_argument("--" + name.replace("_", "-"), type=int, required=True)
    r.add_argument("--limit-ms", type=float, required=True)
    t = sub.add_parser("table")
    t.add_argument("rows")
    t.add_argument("--limit-ms", type=float, required=True)
    t.add_argument("--sequencing")
    q = sub.add_parser("sequencing")
    q.add_argument("--groups", type=int, required=True)
    q.add_argument("--events", type=int, required=True)
    q.add_argument("--seconds", type=float, required=True)
    q.add_argument("outputs", nargs="+")
    args = parser.parse_args()
    {"row": row, "table": table, "sequencing": sequencing}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
