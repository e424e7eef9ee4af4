#!/usr/bin/env python3
"""Adds to each restart of a rolling-deploy run (bench/rolling.sh) what nginx's access log says about the
websockets that passed through the restarted node: a websocket upgrade that reaches a node other than the
session's owner is carried through it to the owner, so a node holds tunnels for other nodes' clients.

  rolling_tunnels.py RUN_JSON NGINX_ACCESS_LOG NODE_LOG...   rewrites RUN_JSON

Per restart: `ws_own_ended` (the node's own clients' websockets that ended between its SIGTERM and its exit),
`ws_tunnels_cut_at_exit` (other nodes' clients' websockets through it that ended within 0.2 s of its exit),
`ws_tunnels_opened_while_draining` (upgrades for other nodes' sessions it took after its SIGTERM). The session id
starts with its owner's node id; node logs give each id's port.
"""
import json
import re
import sys


def owners(node_logs):
    """Node id → port, from the nodes' logs."""
    ports = {}
    for path in node_logs:
        text = open(path).read()
        port = re.search(r"listen=127\.0\.0\.1:(\d+)", text)
        node = re.search(r"joining the cluster node=(\S+)", text)
        if port and node:
            ports[node.group(1)] = port.group(1)
    return ports


def websockets(access_log, ports):
    """(start ms, end ms, upstream port, owner port) of every upgraded websocket in the log."""
    out = []
    for line in open(access_log):
        f = line.split()
        if len(f) < 6 or f[2] != "101" or "transport=websocket" not in f[4]:
            continue
        sid = re.search(r"sid=([^&\s]+)", f[4])
        upstream = f[5].removeprefix("up=").split(",")[-1].strip().rsplit(":", 1)[-1]
        owner = next((p for node, p in ports.items() if sid and sid.group(1).startswith(node)), None)
        end = float(f[0]) * 1000
        out.append((end - float(f[1]) * 1000, end, upstream, owner))
    return out


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    run_json, access_log, node_logs = sys.argv[1], sys.argv[2], sys.argv[3:]
    run = json.loads(open(run_json).read())
    ports = owners(node_logs)
    ws = websockets(access_log, ports)
    for r in run["restarts"]:
        port = r.get("port")
        term, exit_ = r["term_at"], r["exit_at"]
        mine = [w for w in ws if w[2] == str(port)]
        r["ws_own_ended"] = sum(1 for s, e, up, own in mine if own == up and term <= e <= exit_ + 200)
        r["ws_tunnels_cut_at_exit"] = sum(1 for s, e, up, own in mine if own != up and exit_ - 200 <= e <= exit_ + 200)
        r["ws_tunnels_opened_while_draining"] = sum(1 for s, e, up, own in mine if own != up and term <= s <= exit_)
    open(run_json, "w").write(json.dumps(run) + "\n")


if __name__ == "__main__":
    main()
