#!/usr/bin/env python3
"""Single-source handshake flood against a running node, with real clients from another address meanwhile.

The flood: CONNS keep-alive connections from --flood-ip, each sending bare Engine.IO polling handshakes (no
token, no CONNECT) back to back for --seconds. The real clients: one every --client-every seconds from
--client-ip, each doing a polling handshake, a Socket.IO CONNECT with a token and the GET that carries its
reply. Prints one JSON line: handshakes sent by the flood and their statuses, real clients tried, connected and
refused (by status).

Example (a node on 127.0.0.1:8080 with jwt secret S):
  python3 scripts/handshake-flood.py --url http://127.0.0.1:8080 --token "$(tidings gentoken --secret S --sub u)"
"""

import argparse
import asyncio
import collections
import json
import time
import urllib.parse

PATH = "/socket.io/?EIO=4&transport=polling"


async def read_response(reader):
    """Reads one HTTP/1.1 response with a Content-Length body; returns (status, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return status, body


async def flooder(host, port, ip, deadline, counts):
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(host, port, local_addr=(ip, 0))
        except OSError:
            counts["connect_error"] += 1
            await asyncio.sleep(0.01)
            continue
        request = f"GET {PATH} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        try:
            while time.monotonic() < deadline:
                writer.write(request)
                status, _ = await read_response(reader)
                counts[str(status)] += 1
        except (OSError, asyncio.IncompleteReadError):
            counts["dropped"] += 1
        finally:
            writer.close()


async def real_client(host, port, ip, token):
    """One client: handshake, CONNECT, reply. Returns "connected" or the refusing status."""
    reader, writer = await asyncio.open_connection(host, port, local_addr=(ip, 0))
    try:
        writer.write(f"GET {PATH} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        status, body = await read_response(reader)
        if status != 200:
            return str(status)
        sid = json.loads(body.decode()[1:])["sid"]
        url = f"{PATH}&sid={urllib.parse.quote(sid)}"
        connect = ("40" + json.dumps({"token": token})).encode()
        writer.write(
            f"POST {url} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(connect)}\r\n\r\n".encode() + connect)
        status, _ = await read_response(reader)
        if status != 200:
            return f"post_{status}"
        writer.write(f"GET {url} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        status, body = await read_response(reader)
        return "connected" if status == 200 and b"40{" in body else f"connect_{status}"
    finally:
        writer.close()


async def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--token", required=True, help="a valid client token (tidings gentoken)")
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--conns", type=int, default=64, help="keep-alive connections of the flood")
    p.add_argument("--flood-ip", default="127.0.0.2")
    p.add_argument("--client-ip", default="127.0.0.3")
    p.add_argument("--client-every", type=float, default=0.1)
    args = p.parse_args()
    parsed = urllib.parse.urlparse(args.url)
    host, port = parsed.hostname, parsed.port or 80
    started = time.monotonic()
    deadline = started + args.seconds
    flood = collections.Counter()
    tasks = [asyncio.create_task(flooder(host, port, args.flood_ip, deadline, flood)) for _ in range(args.conns)]
    clients = collections.Counter()
    pending = []
    await asyncio.sleep(min(2.0, args.seconds / 4))  # let the flood fill the table first
    while time.monotonic() < deadline:
        pending.append(asyncio.create_task(real_client(host, port, args.client_ip, args.token)))
        await asyncio.sleep(args.client_every)
    for outcome in await asyncio.gather(*pending, return_exceptions=True):
        clients[outcome if isinstance(outcome, str) else type(outcome).__name__] += 1
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    print(json.dumps({
        "seconds": round(elapsed, 1),
        "flood_handshakes": sum(flood.values()),
        "flood_per_sec": round(sum(flood.values()) / elapsed),
        "flood_statuses": dict(flood),
        "clients_tried": sum(clients.values()),
        "clients": dict(clients),
    }))


if __name__ == "__main__":
    asyncio.run(main())
