#!/usr/bin/env python3
"""CPU of a rolling-deploy run (bench/rolling.sh) by role, sampled from /proc until SIGTERM.

  rolling_cpu.py ROOT_PID OUT_JSON

Every 0.5 s: the processes descended from ROOT_PID (the bench script), by role from their command name
(tidings nodes, nginx, redis-server, the Node driver and its client processes), each process's user + system
time, and the machine's busy time from /proc/stat. On SIGTERM writes OUT_JSON: CPU seconds per role, the
machine's busy CPU seconds (everything, other users' processes included), the wall time, and per second the
busiest moment of each role (in cores).
"""
import json
import os
import signal
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")
ROLES = {"nginx": "nginx", "redis-server": "redis", "node": "clients"}


def role_of(comm):
    """The role of a process by its command name (at most 15 characters in /proc: any "tidings…" binary)."""
    return "nodes" if comm.startswith("tidings") else ROLES.get(comm)


def processes():
    """pid → (ppid, comm, cpu ticks) of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(entry)] = (int(fields[1]), comm, int(fields[11]) + int(fields[12]))
    return out


def busy_ticks():
    """The machine's non-idle CPU ticks since boot."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(f) - f[3] - f[4]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    root, out_path = int(sys.argv[1]), sys.argv[2]
    seen = {}  # pid → (role, first ticks, last ticks)
    peaks, last_role_total, last_t = {}, {}, time.time()
    start_busy, start = busy_ticks(), time.time()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    before = set(processes())  # what ran before the first sample counts from then; later ones from 0
    while not stop:
        procs = processes()
        children = {}
        for pid, (ppid, _, _) in procs.items():
            children.setdefault(ppid, []).append(pid)
        todo, mine = [root], set()
        while todo:
            pid = todo.pop()
            for child in children.get(pid, []):
                if child not in mine:
                    mine.add(child)
                    todo.append(child)
        for pid in mine:
            _, comm, ticks = procs[pid]
            role = role_of(comm)
            if role:
                first = seen.get(pid, (role, ticks if pid in before else 0, ticks))[1]
                seen[pid] = (role, first, ticks)
        totals = {}
        for role, first, last in seen.values():
            totals[role] = totals.get(role, 0) + last - first
        now = time.time()
        for role, total in totals.items():
            rate = (total - last_role_total.get(role, 0)) / TICK / max(1e-3, now - last_t)
            peaks[role] = max(peaks.get(role, 0), rate)
        last_role_total, last_t = totals, now
        time.sleep(0.5)
    totals = {}
    for role, first, last in seen.values():
        totals[role] = totals.get(role, 0) + (last - first) / TICK
    json.dump({
        "cpu_s": {k: round(v, 1) for k, v in sorted(totals.items())},
        "machine_busy_s": round((busy_ticks() - start_busy) / TICK, 1),
        "wall_s": round(time.time() - start, 1),
        "peak_cores": {k: round(v, 2) for k, v in sorted(peaks.items())},
    }, open(out_path, "w"))


if __name__ == "__main__":
    main()
