#!/usr/bin/env python3
"""Per-connection memory budget from an allocation census (bench/memory.sh with CENSUS=1).

Reads the rows bench/memory.py wrote (--rows-out) and, for each run, the two readings of the node's census
allocator (before the first client, after the idle settle). Prints, per transport, the heap blocks each
connection keeps, by size, named where a traced run (TIDINGS_ALLOC_TRACE) showed which code allocates that
size, then the allocator's (jemalloc's) size-class rounding, slab and page slack, metadata, and what RSS
holds beyond them. The rows add up to the RSS delta per connection.

    python3 bench/memory_budget.py ROWS.json

When the census ran with live samples (TIDINGS_ALLOC_LIVE=n in the node's environment), a second table names
the blocks over 160 bytes (the shared tables that grow with the count) by the function of this project that
allocated them.
"""

import json
import re
import sys

# Block sizes an idle websocket/polling connection keeps, and the code that allocates them (from the call
# sites of a TIDINGS_ALLOC_LIVE run at the commit the budget names; two names share a size where two blocks
# per connection have it).
NAMES = {
    512: "polling only: the parked long-poll connection's task (tokio task cell)",
    368: "presence: B-tree leaves of the shared rooms' user lists (`Counts::join`)",
    256: "tokio's registration of the TCP socket with the reactor (`ScheduledIo`); before 34cbf1f also the "
         "engine.io `Session`",
    224: "engine.io `Session` (Arc: sid, outbox, heartbeat clock, rate limit, handler)",
    184: "socket.io `Socket` (Arc: rooms, acks), before 0d6b0d6",
    176: "polling only: the parked long-poll request's state (boxed in its connection task)",
    168: "socket.io `Client` (Arc: namespaces, connect timer), before 0d6b0d6",
    160: "socket.io `Client` (Arc: namespaces, connect timer), before cde8556",
    152: "before 5b31072, d096d65 and 10c1e7a: direct messages `Device`, the parked websocket (`websocket::Parked`), "
         "socket.io `Socket`",
    128: "websocket only: a parked connection's waker with its state (socket, frame decoder, pacer; "
         "`websocket::Parked`); socket.io `Socket` (Arc: rooms, acks); before f53a175 also the direct messages "
         "`Device`",
    120: "socket.io `Client` (Arc: endpoint, sockets, connect timer)",
    112: "direct messages `Device` (Arc: socket, claims, stream); before 734d393 a socket's room list",
    88: "a socket's room list (a thin list of its 24-byte memberships: broadcast, personal and joined rooms)",
    96: "the token's verified claims (Arc), kept for the socket's later authorization checks",
}
SMALL = 160  # blocks up to this size are summed in one row


def census(path):
    first, last = [json.loads(line) for line in open(path).read().splitlines()[:2]]
    return first, last


def budget(row):
    n = row["connected"]
    a, b = census(row["census"])
    before = {s[0]: s for s in a["sizes"]}
    per = {}
    for size, blocks, nbytes in b["sizes"]:
        old = before.get(size, [size, 0, 0])
        per[size] = ((blocks - old[1]) / n, (nbytes - old[2]) / n)
    for size, blocks, nbytes in a["sizes"]:
        if size not in per:
            per[size] = (-blocks / n, -nbytes / n)
    lines = []
    named = 0.0
    for size, name in sorted(NAMES.items(), key=lambda kv: -per.get(kv[0], (0, 0))[1]):
        blocks, nbytes = per.get(size, (0, 0))
        if abs(nbytes) >= 1:
            lines.append((name, f"{blocks:.2f} × {size} B", nbytes))
            named += nbytes
    small = [(s, v) for s, v in per.items() if s not in NAMES and 0 < s <= SMALL]
    small_bytes = sum(v[1] for _, v in small)
    lines.append((f"small blocks ≤ {SMALL} B (room and sid map entries, ids, names, lists)",
                  f"{sum(v[0] for _, v in small):.1f} blocks", small_bytes))
    big = [(s, v) for s, v in per.items() if s not in NAMES and (s == 0 or s > SMALL)]
    big_bytes = sum(v[1] for _, v in big)
    lines.append(("other blocks > 160 B (shared tables growing with the count: session and room maps, "
                  "their rehash spare)", f"{sum(v[0] for _, v in big):.2f} blocks", big_bytes))
    live = (b["live_bytes"] - a["live_bytes"]) / n
    ma, mb = a["malloc"], b["malloc"]
    rss = (row["rss_after"] - row["rss_before"]) * 1024 / n
    per_conn = lambda key: (mb[key] - ma[key]) / n  # noqa: E731
    allocated, active, metadata = per_conn("allocated"), per_conn("active"), per_conn("metadata")
    lines.append(("jemalloc size-class rounding (allocated − asked for)",
                  f"{(b['live_blocks'] - a['live_blocks']) / n:.1f} blocks", allocated - live))
    lines.append(("jemalloc slab and page slack (active − allocated)", "", active - allocated))
    lines.append(("jemalloc metadata", "", metadata))
    lines.append(("RSS beyond the allocator (stacks, runtime, page granularity)", "", rss - active - metadata))
    return n, rss, live, lines


def site_name(site):
    """The first two frames of this project in a sampled call site (allocating function ← its caller), without
    closures and generic arguments."""
    frames = [f for f in site.split(" < ") if "tidings::" in f]
    if not frames:
        return "outside this project's code (runtime, libraries)"

    def short(frame):
        frame = re.sub(r"::\{\{closure\}\}", "", frame)
        frame = re.sub(r"[\w:]*<impl ([^<>]*)>", r"\1", frame)  # module::<impl Type>::f → Type::f
        frame = re.sub(r"<([^<>]*?) as [^<>]*>", r"\1", frame)  # <Type as Trait>::f → Type::f
        frame = re.sub(r"<[^<>]*>", "", frame)
        return frame.replace("tidings::", "")

    return " ← ".join(short(f) for f in frames[:2])


def tables(row):
    """Blocks over SMALL bytes per connection by the code that allocated them, from the live samples."""
    n = row["connected"]
    a, b = census(row["census"])
    if not b.get("live"):
        return []
    every = b.get("live_every") or 1
    per = {}
    for sign, reading in ((-1, a), (1, b)):
        for sample in reading.get("live", []):
            if 0 < sample["size"] <= SMALL:
                continue
            name = site_name(sample["site"])
            per[name] = per.get(name, 0) + sign * sample["bytes"] * every
    return sorted(((v / n, k) for k, v in per.items() if abs(v / n) >= 1), reverse=True)


def main():
    rows = json.load(open(sys.argv[1]))
    for row in rows:
        if not row.get("census"):
            continue
        n, rss, live, lines = budget(row)
        print(f"\n{row['transport']}, {n:,} idle clients: {rss:,.0f} B RSS per connection "
              f"({rss / 1024:.2f} KiB), {live:,.0f} B of it asked for from the allocator\n")
        print("| component | blocks per connection | bytes per connection |")
        print("| --- | --- | ---: |")
        for name, blocks, nbytes in lines:
            print(f"| {name} | {blocks} | {nbytes:,.0f} |")
        print(f"| **total (RSS delta / connections)** | | **{sum(x[2] for x in lines):,.0f}** |")
        sites = tables(row)
        if sites:
            print(f"\nblocks over {SMALL} B, by the function that allocated them (live samples):\n")
            print("| allocated in | bytes per connection |")
            print("| --- | ---: |")
            for nbytes, name in sites:
                print(f"| {name} | {nbytes:,.0f} |")


if __name__ == "__main__":
    main()
