// One client process of the driver: opens its share of stock socket.io-client clients through the balancer, each
// joined to one room by its token, and keeps per client what arrived (sequence numbers per room) and every
// disconnect with the time to the next connect and whether the session was recovered. Talks to run.mjs over IPC:
//   → {type:"connected", connected, total}       while opening, and when the count changes
//   ← {type:"report", accepted:{room:[seq…]}}     → {type:"report", …} the measures of every client
//   ← {type:"close"}                              closes every client and exits
import { writeFileSync } from "node:fs";
import { io } from "socket.io-client";
import { mintToken } from "./token.mjs";

const cfg = JSON.parse(process.argv[2]);
// {urls, first, count, rooms, secret, rampPerSec, ttlSecs, traceFile?}

/** Per client: its socket and what it saw. */
const clients = [];
let connectedNow = 0;

function open(index) {
  const room = `roll-${index % cfg.rooms}`;
  const url = cfg.urls[index % cfg.urls.length];
  const token = mintToken(cfg.secret, `u${index}`, room, cfg.ttlSecs);
  const socket = io(url, { forceNew: true, auth: { token } });
  const c = {
    index,
    room,
    socket,
    firstConnectAt: null,
    connected: false,
    seen: new Set(),
    duplicates: 0,
    outOfOrder: 0,
    maxSeq: 0,
    pendingDisconnect: null,
    gaps: [], // {at, ms, recovered, reason}
    connectErrors: {},
    reasons: {},
    trace: [], // [kind, at, …] of every connect, disconnect and connect error, for --trace
  };
  socket.io.on("reconnect_attempt", (n) => c.trace.push(["reconnect_attempt", Date.now(), n]));
  socket.on("connect", () => {
    connectedNow++;
    c.connected = true;
    const now = Date.now();
    c.trace.push(["connect", now, socket.io.engine?.id ?? null, socket.recovered === true, c.maxSeq]);
    if (c.firstConnectAt === null) c.firstConnectAt = now;
    if (c.pendingDisconnect) {
      const d = c.pendingDisconnect;
      c.gaps.push({ at: d.at, ms: now - d.at, recovered: socket.recovered === true, reason: d.reason });
      c.pendingDisconnect = null;
    }
  });
  socket.on("disconnect", (reason) => {
    c.trace.push(["disconnect", Date.now(), reason, c.maxSeq]);
    // The library also says "disconnect" when a reconnect attempt fails after its Engine.IO handshake (the
    // socket was not connected): that is not a new disconnect, the first one still waits for its connect.
    if (!c.connected) return;
    c.connected = false;
    connectedNow--;
    c.reasons[reason] = (c.reasons[reason] ?? 0) + 1;
    c.pendingDisconnect = { at: Date.now(), reason };
    // The library does not reconnect after a server-side namespace disconnect; a deployed client would.
    if (reason === "io server disconnect") socket.connect();
  });
  socket.on("connect_error", (err) => {
    const key = err?.message ?? String(err);
    c.trace.push(["connect_error", Date.now(), key]);
    c.connectErrors[key] = (c.connectErrors[key] ?? 0) + 1;
  });
  socket.on("ev", (data) => {
    const seq = data?.seq;
    if (typeof seq !== "number") return;
    if (c.seen.has(seq)) {
      c.duplicates++;
      return;
    }
    c.seen.add(seq);
    if (seq < c.maxSeq) c.outOfOrder++;
    else c.maxSeq = seq;
  });
  clients.push(c);
}

function reportConnected() {
  process.send({ type: "connected", connected: connectedNow, total: cfg.count });
}

async function openAll() {
  const perTick = Math.max(1, Math.round(cfg.rampPerSec / 50));
  for (let i = 0; i < cfg.count; i += perTick) {
    for (let j = i; j < Math.min(cfg.count, i + perTick); j++) open(cfg.first + j);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The measures of every client against the sequence numbers the publisher had accepted, per room. */
function report(accepted) {
  const out = {
    type: "report",
    clients: clients.length,
    connectedAtEnd: 0,
    neverConnected: 0,
    expected: 0,
    received: 0,
    lost: 0,
    duplicates: 0,
    outOfOrder: 0,
    clientsWithLoss: 0,
    clientsWithDuplicates: 0,
    gaps: [], // [at, ms, recovered(0/1)]
    stillDisconnected: [], // [index, disconnectedAt | null]
    stuckPolling: [], // indexes
    neverBackStates: {},
    disconnectReasons: {},
    connectErrors: {},
    unrecoveredReasons: {},
    lossExamples: [],
    cpuSecs: (process.cpuUsage().user + process.cpuUsage().system) / 1e6,
  };
  for (const c of clients) {
    if (c.socket.connected) out.connectedAtEnd++;
    else {
      out.stillDisconnected.push([c.index, c.pendingDisconnect?.at ?? null]);
      // Where it is stuck: Engine.IO open (its Socket.IO CONNECT unanswered) on which node, or still opening.
      const engine = c.socket.io.engine;
      const state = engine?.readyState === "open" ? `connect unanswered on ${engine.id?.slice(0, 6)}` : `engine ${engine?.readyState ?? "none"}`;
      out.neverBackStates[state] = (out.neverBackStates[state] ?? 0) + 1;
    }
    // Connected but still long-polling at the end: an upgrade that failed half-way leaves polling paused.
    if (c.socket.connected && c.socket.io.engine?.transport?.name === "polling") out.stuckPolling.push(c.index);
    if (c.firstConnectAt === null) {
      out.neverConnected++;
      continue;
    }
    const seqs = accepted[c.room] ?? [];
    let lost = 0;
    const missing = [];
    for (const seq of seqs) {
      out.expected++;
      if (c.seen.has(seq)) out.received++;
      else {
        lost++;
        if (missing.length < 5) missing.push(seq);
      }
    }
    out.lost += lost;
    out.duplicates += c.duplicates;
    out.outOfOrder += c.outOfOrder;
    if (lost > 0) {
      out.clientsWithLoss++;
      if (out.lossExamples.length < 10) {
        out.lossExamples.push({ client: c.index, room: c.room, lost, missing, gaps: c.gaps });
      }
    }
    if (c.duplicates > 0) out.clientsWithDuplicates++;
    for (const g of c.gaps) {
      out.gaps.push([g.at, g.ms, g.recovered ? 1 : 0]);
      if (!g.recovered) out.unrecoveredReasons[g.reason] = (out.unrecoveredReasons[g.reason] ?? 0) + 1;
    }
    for (const [k, n] of Object.entries(c.reasons)) out.disconnectReasons[k] = (out.disconnectReasons[k] ?? 0) + n;
    for (const [k, n] of Object.entries(c.connectErrors)) out.connectErrors[k] = (out.connectErrors[k] ?? 0) + n;
  }
  return out;
}

/** With a trace file: one JSON line per client with its room, state at the end and every event of its life. */
function writeTrace(file) {
  const lines = clients.map((c) =>
    JSON.stringify({
      client: c.index,
      room: c.room,
      connected: c.socket.connected,
      engine: c.socket.io.engine?.readyState ?? null,
      transport: c.socket.io.engine?.transport?.name ?? null,
      sid: c.socket.io.engine?.id ?? null,
      attempts: c.socket.io.backoff?.attempts ?? null,
      maxSeq: c.maxSeq,
      received: c.seen.size,
      trace: c.trace,
    }),
  );
  writeFileSync(file, lines.join("\n") + "\n");
}

process.on("message", (msg) => {
  if (msg.type === "report") {
    if (cfg.traceFile) writeTrace(cfg.traceFile);
    process.send(report(msg.accepted));
  }
  else if (msg.type === "close") {
    for (const c of clients) c.socket.close();
    setTimeout(() => process.exit(0), 200);
  }
});
// The coordinator is gone: nothing left to measure for.
process.on("disconnect", () => process.exit(0));

let lastSent = -1;
setInterval(() => {
  if (connectedNow !== lastSent) {
    lastSent = connectedNow;
    reportConnected();
  }
}, 250).unref();
openAll();
