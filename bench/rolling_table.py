#!/usr/bin/env python3
"""The rolling-deploy benchmark's table (bench/rolling.sh) from the driver's JSON lines.

  rolling_table.py RESULTS_JSONL   the Markdown table and what each column means
  rolling_table.py --line RUN_JSON one line on the run, for the console
"""
import json
import os
import sys

ROWS = {
    "drain": "recovery on, drain",
    "norecovery": "recovery off (Socket.IO-style)",
    "nodrain": "recovery on, no drain",
}


def secs(ms):
    """Milliseconds as seconds with two decimals, or a dash."""
    return "–" if ms is None else f"{ms / 1000:.2f}"


def gaps(r):
    """p50 / p99 / max of disconnect → next connect, in seconds."""
    g = r["gap_ms"]
    return f"{secs(g['p50'])} / {secs(g['p99'])} / {secs(g['max'])}"


def drains(r):
    """Each restarted node's SIGTERM → exit time, in seconds (k: killed at the deadline)."""
    return ", ".join(secs(x["drain_ms"]) + ("k" if x["killed"] else "") for x in r["restarts"]) or "–"


def line(r):
    p = r["published"]
    return (f"   lost {r['lost']:,} of {r['expected']:,} ({r['clients_with_loss']} clients), dup {r['duplicates']}, "
            f"out of order {r['out_of_order']}, never back {r['never_back']}, reconnects {r['reconnects']:,} "
            f"(recovered {r['recovered']:,}), disconnect→connect p50/p99/max {gaps(r)} s, publishes "
            f"{p['accepted']:,} accepted, {p['retries']} retries, {p['failed']} failed, {p['repeats']} repeats; "
            f"connected but still polling at the end {r.get('polling_at_end', '–')}; "
            f"never back: {r.get('never_back_states') or '–'}; CPU {r.get('cpu', '–')}; "
            f"node drains {drains(r)} s; connect errors {r['connect_errors'] or '–'}; "
            f"disconnect reasons {r['disconnect_reasons'] or '–'}")


def table(results):
    out = [
        "| run | drain window | events accepted | publish retries / failed / repeats | deliveries expected "
        "| lost | duplicated | out of order | never back | stuck polling | reconnects | recovered | disconnect → connect "
        "p50 / p99 / max (s) | node drain per restart (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        name, _, window = r["label"].split("|")
        p = r["published"]
        out.append(
            f"| {ROWS.get(name, name)} | {window if window == 'none' else window + ' s'} | {p['accepted']:,} "
            f"| {p['retries']} / {p['failed']} / {p['repeats']} | {r['expected']:,} | {r['lost']:,} "
            f"| {r['duplicates']:,} | {r['out_of_order']:,} | {r['never_back']} of {r['clients']:,} "
            f"| {r.get('polling_at_end', '–')} "
            f"| {r['reconnects']:,} | {r['recovered']:,} | {gaps(r)} | {drains(r)} |")
    out += [
        "",
        "- **events accepted**: publishes answered 2xx through nginx; **retries** counts publishes sent again "
        "after a network error, timeout or non-2xx answer (same `Idempotency-Key`), **failed** those still "
        "unanswered after 12 tries, **repeats** retries the node answered as already published.",
        "- **deliveries expected**: for every client, each accepted event of its room (every client is connected "
        "before the first publish). **lost**: expected deliveries that never arrived; **duplicated**: an event "
        "a client got twice; **out of order**: an event that arrived after a later one of its room.",
        "- **never back**: clients not connected when the run ends (5 s after the last publish). A client whose "
        "namespace the server disconnects (`io server disconnect`, which the library does not retry by itself) "
        "connects again at once, as the README's example does; the other reasons are the library's own retries.",
        "- **stuck polling**: clients connected at the end but still on long-polling: a websocket upgrade cut "
        "after the client paused polling for it leaves the stock client with polling paused and no websocket, "
        "so it hears nothing until its ping timeout (pingInterval + pingTimeout, 45 s) ends the session.",
        "- **reconnects**: disconnects followed by a connect; **recovered**: those whose connect had "
        "`socket.recovered === true` (same session, missed events replayed). **disconnect → connect**: the "
        "client's `disconnect` event to its next `connect` event, over every reconnect of the run.",
        "- **node drain**: SIGTERM to process exit of each node in restart order (k: killed at the deadline).",
        "",
        "Per restart (a disconnect belongs to the restart under way: from its SIGTERM to the next one's):",
        "",
        "| run | node | SIGTERM → exit (s) | SIGTERM → ready again (s) | disconnects | not recovered "
        "| disconnect → connect p50 / p99 / max (s) | own websockets closed | tunnels cut at exit "
        "| tunnels opened while draining |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        name = ROWS.get(r["label"].split("|")[0], r["label"])
        for x in r["restarts"]:
            g = x["gap_ms"]
            out.append(f"| {name} | {x['node']} | {secs(x['drain_ms'])}{'k' if x['killed'] else ''} "
                       f"| {secs(x['down_ms'])} | {x['disconnects']:,} | {x['not_recovered']:,} "
                       f"| {secs(g['p50'])} / {secs(g['p99'])} / {secs(g['max'])} | {x.get('ws_own_ended', '–')} "
                       f"| {x.get('ws_tunnels_cut_at_exit', '–')} | {x.get('ws_tunnels_opened_while_draining', '–')} |")
    out += [
        "",
        "CPU during each run (seconds of CPU from the first node's start to the driver's exit; the machine's busy "
        "time includes other users' processes on the shared cores, and the peak is the busiest half second):",
        "",
        "| run | wall (s) | nodes | nginx | redis | clients (Node) | machine busy | peak cores: nodes / nginx / clients |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        c = r.get("cpu")
        if not c:
            continue
        cpu, peak = c["cpu_s"], c["peak_cores"]
        out.append(f"| {ROWS.get(r['label'].split('|')[0], r['label'])} | {c['wall_s']} | {cpu.get('nodes', 0)} "
                   f"| {cpu.get('nginx', 0)} | {cpu.get('redis', 0)} | {cpu.get('clients', 0)} "
                   f"| {c['machine_busy_s']} of {round((os.cpu_count() or 1) * c['wall_s'])} "
                   f"| {peak.get('nodes', 0)} / {peak.get('nginx', 0)} / {peak.get('clients', 0)} |")
    out += [
        "",
        "A websocket upgrade that nginx sends to a node other than the session's owner is carried through that "
        "node to the owner (no sticky sessions), so each node also holds **tunnels** for other nodes' clients. "
        "**own websockets closed**: the restarted node's own clients' websockets that ended between its SIGTERM "
        "and its exit (the rest of its clients were upgraded through a tunnel); **tunnels cut at exit**: other "
        "nodes' clients whose websocket went through it and ended within 0.2 s of its exit; **tunnels opened "
        "while draining**: upgrades for other nodes' sessions it took after its SIGTERM (from nginx's access log "
        "and the session id's node prefix, bench/rolling_tunnels.py).",
    ]
    return "\n".join(out)


def main():
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "--line":
        print(line(json.loads(open(args[1]).read())))
    elif len(args) == 1:
        results = [json.loads(x) for x in open(args[0]) if x.strip()]
        print(table(results))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
