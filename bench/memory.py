#!/usr/bin/env python3
"""Server memory per idle connection, for websocket and for HTTP long-polling clients (run by bench/memory.sh,
which writes the Markdown this prints into BENCHMARKS.md).

For each transport and run: a fresh `tidings serve` on a free loopback port; its VmRSS once it is up; then
`tidings bench --hold` connects N clients of that transport (each subscribed to one of --rooms rooms) and
holds them idle (nothing published); once the node counts N sessions and --settle seconds passed, VmRSS and
VmHWM are read again, with the node's TCP connections (`ss`) and, for polling, the long-polls the node holds
(`tidings_polls_waiting` on /metrics). KiB per connection = (RSS after - RSS before) / connected clients.
Every process started here is stopped by its pid.
"""

import argparse
import datetime
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

JWT_SECRET = "memory-bench-jwt-secret-0123456789abcdef"
API_KEY = "memory-bench-api-key-0123456789"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid):
    """VmRSS and VmHWM of `pid`, KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def http_get(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def sessions(port):
    try:
        return json.loads(http_get(f"http://127.0.0.1:{port}/healthz"))["connections"]
    except Exception:
        return None


def metric(port, name):
    """Sum of the samples of metric `name` on /metrics (None when absent)."""
    try:
        text = http_get(f"http://127.0.0.1:{port}/metrics")
    except Exception:
        return None
    values = [float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)]
    return sum(values) if values else None


def tcp_connections(port):
    """Established TCP connections on the node's side of `port`."""
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def stop(proc, grace):
    """SIGTERM to `proc` (by pid), SIGKILL after `grace` seconds."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def census_reading(pid, path, n):
    """Asks a node built with `--features alloc-census` for its n-th allocation reading (SIGUSR2) and waits
    until the line is in `path`."""
    os.kill(pid, signal.SIGUSR2)
    # Live-block sampling (TIDINGS_ALLOC_LIVE) resolves every sample's backtrace: give it minutes.
    deadline = time.time() + (600 if os.environ.get("TIDINGS_ALLOC_LIVE") else 10)
    while time.time() < deadline:
        if os.path.exists(path) and sum(1 for _ in open(path)) >= n:
            return
        time.sleep(0.1)
    raise RuntimeError(f"no allocation census reading in {path}: is the node built with --features alloc-census?")


def one_run(args, transport, run, log_dir):
    port = free_port()
    tag = f"{transport}-{run}"
    env = dict(os.environ, TIDINGS_LOG=os.environ.get("TIDINGS_LOG", "warn"))
    census = os.path.join(log_dir, f"census-{tag}.jsonl") if args.census else None
    server_env = dict(env, TIDINGS_ALLOC_CENSUS=census) if census else env
    server_log = open(os.path.join(log_dir, f"server-{tag}.log"), "w")
    server = subprocess.Popen(
        [args.server_bin or args.bin, "serve", "--listen", f"127.0.0.1:{port}", "--jwt-secret", JWT_SECRET, "--api-key", API_KEY],
        stdout=server_log, stderr=subprocess.STDOUT, env=server_env)
    bench = None
    try:
        deadline = time.time() + 20
        while sessions(port) is None:
            if server.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the node did not come up (see {server_log.name})")
            time.sleep(0.1)
        time.sleep(1.0)  # let the runtime's threads and the first metrics render settle
        before = proc_status(server.pid)
        if census:
            census_reading(server.pid, census, 1)
        # Hold long enough for the ramp, the wait for the last sessions and the settle time.
        hold = args.settle + args.clients / args.ramp + 30
        bench_cmd = [
            args.bin, "bench", "--url", f"http://127.0.0.1:{port}", "--clients", str(args.clients),
            "--rooms", str(args.rooms), "--polling-share", "1" if transport == "polling" else "0",
            "--jwt-secret", JWT_SECRET, "--api-key", API_KEY, "--ramp", str(args.ramp),
            "--workers", str(args.workers), "--source-ips", str(args.source_ips),
            "--hold", str(hold), "--rate", "1", "--duration", "1", "--drain", "5", "--json", "--quiet",
        ]
        bench_out = open(os.path.join(log_dir, f"bench-{tag}.json"), "w")
        bench_err = open(os.path.join(log_dir, f"bench-{tag}.log"), "w")
        bench = subprocess.Popen(bench_cmd, stdout=bench_out, stderr=bench_err, env=env)
        # Wait for N sessions (or a count that stopped growing: some clients failed).
        started = time.time()
        last, last_change = -1, time.time()
        while True:
            n = sessions(port) or 0
            if n != last:
                last, last_change = n, time.time()
            if n >= args.clients or (n > 0 and time.time() - last_change > 5):
                break
            if bench.poll() is not None or time.time() - started > args.clients / args.ramp + 60:
                break
            time.sleep(0.25)
        time.sleep(args.settle)
        after = proc_status(server.pid)
        if census:
            census_reading(server.pid, census, 2)
        sess = sessions(port)
        tcp = tcp_connections(port)
        waiting = metric(port, "tidings_polls_waiting")
        try:
            bench.wait(hold + 60)
        except subprocess.TimeoutExpired:
            stop(bench, 5)
        bench_out.close()
        bench_err.close()
        try:
            report = json.loads(open(bench_out.name).read().strip().splitlines()[-1])
        except Exception:
            report = {}
        connected = report.get("connected", sess or 0)
        kib = (after["VmRSS"] - before["VmRSS"]) / connected if connected else float("nan")
        row = {
            "transport": transport, "run": run, "clients": args.clients, "connected": connected,
            "failed": report.get("failed"), "disconnects": report.get("disconnects"), "sessions": sess,
            "tcp": tcp, "polls_waiting": None if waiting is None else int(waiting),
            "rss_before": before["VmRSS"], "rss_after": after["VmRSS"], "hwm": after["VmHWM"], "kib_per_conn": kib,
            "census": census,
        }
        print(f"  {transport} run {run}: {json.dumps(row)}", flush=True)
        return row
    finally:
        if bench is not None:
            stop(bench, 5)
        stop(server, 15)
        server_log.close()


def fmt(n):
    return f"{n:,}"


def tables(rows, transports):
    lines = [
        "| transport | run | clients | connected | node sessions | node TCP conns | polls waiting | "
        "RSS before (KiB) | RSS after (KiB) | VmHWM (KiB) | KiB/conn |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        waiting = "-" if r["polls_waiting"] is None or r["transport"] != "polling" else fmt(r["polls_waiting"])
        lines.append(
            f"| {r['transport']} | {r['run']} | {fmt(r['clients'])} | {fmt(r['connected'])} | "
            f"{fmt(r['sessions'] or 0)} | {fmt(r['tcp'])} | {waiting} | {fmt(r['rss_before'])} | "
            f"{fmt(r['rss_after'])} | {fmt(r['hwm'])} | {r['kib_per_conn']:.2f} |")
    lines += ["", "| transport | clients | KiB/conn per run | median KiB/conn |", "| --- | ---: | --- | ---: |"]
    for t in transports:
        per = [r["kib_per_conn"] for r in rows if r["transport"] == t]
        if per:
            lines.append(f"| {t} | {fmt(rows[0]['clients'])} | {' / '.join(f'{k:.2f}' for k in per)} | "
                         f"**{statistics.median(per):.2f}** |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True, help="the tidings binary (bench, and serve unless --server-bin)")
    p.add_argument("--server-bin", help="another tidings binary for the node (e.g. an older build to compare)")
    p.add_argument("--clients", type=int, default=10000)
    p.add_argument("--rooms", type=int, default=100)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--transports", default="websocket,polling")
    p.add_argument("--settle", type=float, default=10.0, help="seconds between the last session and the reading")
    p.add_argument("--ramp", type=float, default=2000.0, help="new connections per second")
    p.add_argument("--workers", type=int, default=2, help="bench client processes")
    p.add_argument("--source-ips", type=int, default=2)
    p.add_argument("--census", action="store_true",
                   help="also take allocation readings (node built with --features alloc-census); rows name the file")
    p.add_argument("--rows-out", help="write the rows as JSON to this file")
    p.add_argument("--body-out", help="also write the Markdown (method and tables) to this file")
    p.add_argument("--logs", default=None, help="directory for the logs")
    args = p.parse_args()
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    if any(t not in ("websocket", "polling") for t in transports):
        sys.exit("--transports: websocket and/or polling")
    log_dir = args.logs or f"/tmp/tidings-memory-{datetime.datetime.utcnow():%Y%m%dT%H%M%S}"
    os.makedirs(log_dir, exist_ok=True)
    print(f"logs in {log_dir}", flush=True)
    rows = []
    for t in transports:
        for run in range(1, args.runs + 1):
            rows.append(one_run(args, t, run, log_dir))
    if args.rows_out:
        with open(args.rows_out, "w") as f:
            json.dump(rows, f)
    body = (
        f"Each run is a fresh `tidings serve` (default config: ping every 25 s) on loopback, Linux "
        f"{os.uname().release}. `tidings bench --hold` connects {fmt(args.clients)} clients of one transport "
        f"({args.ramp:g}/s, {args.workers} client processes, {args.source_ips} source addresses), each subscribed "
        f"to one of {args.rooms} rooms, and holds them idle (nothing published). RSS is the node's `VmRSS` before "
        f"the first client and {args.settle:g} s after the last session opened; KiB/conn = (after - before) / "
        f"connected. `polls waiting` is the node's `tidings_polls_waiting` gauge (long-poll GETs it holds open) at "
        f"the reading; `node TCP conns` counts established sockets on the node's port (`ss`).\n\n"
        + tables(rows, transports)
    )
    print()
    print(body)
    if args.body_out:
        with open(args.body_out, "w") as f:
            f.write(body + "\n")


if __name__ == "__main__":
    main()
