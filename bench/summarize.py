#!/usr/bin/env python3
"""Per-case records, tables and the BENCHMARKS.md section for bench/rooms.sh and bench/scaling.sh.

  summarize.py record CASE.json key=value ...    one case: server CPU, RSS and socket counts -> CASE.json
  summarize.py rooms OUTDIR                      Markdown table of case D (OUTDIR/cases.jsonl)
  summarize.py scaling OUTDIR                    Markdown table of the scaling series (OUTDIR/cases.jsonl)
  summarize.py section BENCH_MD TITLE INTRO_FILE BODY_FILE
                                                 replace (or append) the section TITLE of BENCH_MD (section.py)

record keys (strings of "pid:value" pairs are as the shell scripts print them):
  tck, t0_ms, t1_ms, cpu0, cpu1, sys0, sys1 (utime+stime / stime ticks of the nodes, and of redis in cpu*),
  redis_pid, rss0, rss_idle, rss1, hwm1 (KiB), stats_idle (one /stats JSON per line), ports, wsload, publish,
  publish_hot (file paths), plus any descriptive key (peer, tag, series, node_count, clients, rooms, ...), copied as is.
"""
import json
import os
import sys

import section


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def kv(s):
    return {k: int(v) for k, v in (x.split(":") for x in s.split())} if s and s.strip() else {}


def num(v):
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return v


def fmt(x, nd=0):
    if x is None:
        return "–"
    if isinstance(x, (int, float)):
        return f"{x:,.{nd}f}"
    return str(x)


def room_split(clients, rooms, urls, nodes):
    """min/max members of a room on node 1 when client j goes to URL j mod urls (URL i on node i mod nodes)
    and into room j mod rooms."""
    if nodes < 2 or rooms < 1:
        return None
    on1 = [0] * rooms
    for j in range(clients):
        if (j % urls) % nodes == 0:
            on1[j % rooms] += 1
    return min(on1), max(on1)


def record(path, pairs):
    a = dict(p.split("=", 1) for p in pairs)
    tck = int(a.pop("tck"))
    c0, c1, s0, s1 = kv(a.pop("cpu0")), kv(a.pop("cpu1")), kv(a.pop("sys0", "")), kv(a.pop("sys1", ""))
    r0, ri, r1, h1 = kv(a.pop("rss0")), kv(a.pop("rss_idle", "")), kv(a.pop("rss1")), kv(a.pop("hwm1"))
    redis_pid = a.pop("redis_pid", "")
    t0, t1 = int(a.pop("t0_ms")), int(a.pop("t1_ms"))
    stats = {}
    for line in a.pop("stats_idle", "").splitlines():
        try:
            o = json.loads(line)
        except ValueError:
            continue
        if isinstance(o, dict) and "pid" in o:
            stats[str(o["pid"])] = o
    ports = a.pop("ports", "").split()
    out = {k: num(v) for k, v in a.items()}
    w = load(out.get("wsload", ""))
    nodes = []
    for i, pid in enumerate(r0):
        n = {"pid": int(pid), "port": int(ports[i]) if i < len(ports) else None,
             "cpu_s": (c1[pid] - c0[pid]) / tck, "sys_s": (s1.get(pid, 0) - s0.get(pid, 0)) / tck,
             "rss_before_kib": r0[pid], "rss_idle_kib": ri.get(pid), "rss_after_kib": r1.get(pid),
             "vmhwm_kib": h1.get(pid), "sockets_idle": (stats.get(pid) or {}).get("sockets")}
        nodes.append(n)
    dl = w.get("deliveries") or 0
    cpu = sum(n["cpu_s"] for n in nodes)
    out.update(nodes=nodes, deliveries=dl, connected=w.get("connected"), cpu_window_s=round((t1 - t0) / 1000, 2),
               server_cpu_s=round(cpu, 2), server_sys_s=round(sum(n["sys_s"] for n in nodes), 2),
               server_cpu_us_per_delivery=round(cpu * 1e6 / dl, 3) if dl else None)
    if redis_pid:
        rc = (c1[redis_pid] - c0[redis_pid]) / tck
        out.update(redis_cpu_s=round(rc, 2), redis_cpu_us_per_delivery=round(rc * 1e6 / dl, 3) if dl else None)
    conn = w.get("connected") or 0
    if ri and conn:
        tb = sum(n["rss_before_kib"] for n in nodes)
        ti = sum(n["rss_idle_kib"] or 0 for n in nodes)
        out.update(rss_before_kib=tb, rss_idle_kib=ti, kib_per_conn=round((ti - tb) / conn, 2),
                   kib_per_conn_incl_baseline=round(ti / conn, 2))
    split = room_split(int(out.get("clients", 0)), int(out.get("rooms", 0)), int(out.get("url_count", 1)),
                       int(out.get("node_count", 1)))
    if split:
        out["room_members_on_node1"] = list(split)
    with open(path, "w") as f:
        json.dump(out, f)
        f.write("\n")


def rows_of(path):
    """The JSON lines of a file, [] when it is missing."""
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except OSError:
        return []


def cases(outdir):
    rows = rows_of(os.path.join(outdir, "cases.jsonl"))
    for r in rows:
        r["_w"], r["_p"], r["_h"] = load(r.get("wsload", "")), load(r.get("publish", "")), load(r.get("publish_hot", ""))
    return rows


def fmt_ms(x):
    return fmt(x, 1 if isinstance(x, (int, float)) and x < 10 else 0)


def pub_cell(p, what):
    if not p:
        return "–"
    s = (f'{fmt(p.get("rate"))}/s×{fmt(p.get("duration_s"))} s {what} → {fmt(p.get("ok"))}/{fmt(p.get("planned"))} ok '
         f'({fmt(p.get("achieved_rate"), 1)}/s)')
    for k, label in (("not_sent", "not sent"), ("non_2xx", "non-2xx"), ("errors", "errors")):
        if p.get(k):
            s += f", {label} {fmt(p[k])}"
    return s


def kib_cell(r):
    if r.get("kib_per_conn") is None:
        return "–"
    return f'{r["kib_per_conn"]:.1f} ({r["kib_per_conn_incl_baseline"]:.1f})'


def rooms_table(outdir):
    rows = cases(outdir)
    print("| peer | connected (per node) / failed (connect s) | publish asked → accepted (achieved) | "
          "deliveries / accepted×members | delivery rate while flowing (/s, over s) | latency p50 / p90 / p99 / max (ms) | "
          "server CPU s (nodes) → **µs/delivery** | redis CPU s | **server KiB/conn** idle (incl. baseline) | disconnects |")
    print("| --- " * 10 + "|")
    for r in rows:
        w, p, h = r["_w"], r["_p"], r["_h"]
        socks = [n.get("sockets_idle") for n in r["nodes"]]
        per_node = f' ({"+".join(fmt(s) for s in socks)})' if len(socks) > 1 else ""
        pub = pub_cell(p, f'over {fmt(r.get("rooms"))} rooms')
        if h:
            pub += " + " + pub_cell(h, f'to {r.get("hot_room")}')
        lat = " / ".join(fmt_ms(w.get(k)) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms"))
        print(f'| {r["peer"]} | {fmt(w.get("connected"))}{per_node} / {fmt(w.get("failed_connects"))} '
              f'({fmt(w.get("connect_time_s"), 2)}) | {pub} | {fmt(w.get("deliveries"))} / {fmt(r.get("target"))} | '
              f'{fmt(w.get("active_deliveries_per_s"))} over {fmt(w.get("active_s"), 1)} | {lat} | '
              f'{fmt(r.get("server_cpu_s"), 2)} → **{fmt(r.get("server_cpu_us_per_delivery"), 2)}** | '
              f'{fmt(r.get("redis_cpu_s"), 2)} | {kib_cell(r)} | {fmt(w.get("disconnects"))} |')
    print()
    for r in rows:
        rss = ", ".join(f'pid {n["pid"]} :{n["port"]}: {fmt(n["rss_before_kib"])} → {fmt(n["rss_idle_kib"])} KiB idle, '
                        f'VmHWM {fmt(n["vmhwm_kib"])} KiB, {fmt(n["sockets_idle"])} sockets, CPU {n["cpu_s"]:.2f} s '
                        f'(sys {n["sys_s"]:.2f})' for n in r["nodes"])
        split = r.get("room_members_on_node1")
        extra = (f'; every room has {split[0]}–{split[1]} of its {r.get("per_room")} members on node 1, the rest on node 2'
                 if split else "")
        print(f'- {r["peer"]}: {rss}; CPU measured over {r["cpu_window_s"]} s from publish start '
              f'(end: {r.get("cpu_end")}){extra}.')


def scaling_table(outdir):
    rows = cases(outdir)
    print("| series | peer | size | clients | rooms | nodes | publish accepted (msg/s) | deliveries / expected | "
          "deliveries/s while flowing | server **µs/delivery** | × first row | server **KiB/conn** idle | × first row | "
          "latency p50 / p99 (ms) | disconnects |")
    print("| --- " * 15 + "|")
    base = {}
    for r in rows:
        w, p = r["_w"], r["_p"]
        key = (r.get("series"), r["peer"], r.get("node_count"))
        b = base.setdefault(key, r)
        size_unit = "clients" if r.get("series") == "clients" else "rooms"
        size = r.get(size_unit, 0) / max(b.get(size_unit, 1), 1)
        us, b_us = r.get("server_cpu_us_per_delivery"), b.get("server_cpu_us_per_delivery")
        kib, b_kib = r.get("kib_per_conn"), b.get("kib_per_conn")
        ratio = lambda x, y: f"{x / y:.2f}" if x is not None and y else "–"
        print(f'| {r.get("series")} | {r["peer"]} | {size:g}× | {fmt(r.get("clients"))} | {fmt(max(r.get("rooms"), 1))} | '
              f'{r.get("node_count")} | {fmt(p.get("ok"))} ({fmt(p.get("achieved_rate"), 1)}) | '
              f'{fmt(w.get("deliveries"))} / {fmt(r.get("target"))} | {fmt(w.get("active_deliveries_per_s"))} | '
              f'**{fmt(us, 2)}** | {ratio(us, b_us)} | **{fmt(kib, 2)}** | {ratio(kib, b_kib)} | '
              f'{fmt_ms(w.get("p50_ms"))} / {fmt_ms(w.get("p99_ms"))} | {fmt(w.get("disconnects"))} |')
    print()
    for r in rows:
        per = ", ".join(f'{fmt(n["rss_before_kib"])} → {fmt(n["rss_idle_kib"])} KiB ({fmt(n["sockets_idle"])} sockets)'
                        for n in r["nodes"])
        red = f', redis CPU {r["redis_cpu_s"]:.2f} s' if r.get("redis_cpu_s") is not None else ""
        print(f'- {r.get("series")} {r["peer"]} {fmt(r.get("clients"))} clients / {fmt(max(r.get("rooms"), 1))} rooms / '
              f'{r.get("node_count")} node(s): RSS {per}; server CPU {r["server_cpu_s"]:.2f} s (sys {r["server_sys_s"]:.2f}){red} '
              f'over {r["cpu_window_s"]} s (end: {r.get("cpu_end")}).')


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "record":
        record(args[0], args[1:])
    elif cmd == "rooms":
        rooms_table(args[0])
    elif cmd == "scaling":
        scaling_table(args[0])
    elif cmd == "section":
        section.write(*args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
