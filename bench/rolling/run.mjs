// The rolling-deploy driver (bench/rolling.sh runs it): forks the client processes, waits until every client is
// connected, publishes, tells the script it may restart the nodes (writes the phase file), keeps publishing until
// the script says the restarts are over (the done file), lets the last events and reconnects settle, and prints
// one JSON line of measures. Bounded: it gives up waiting after --max-secs.
//
//   node run.mjs --base URL --urls URL,URL --clients N --rooms K --rate R --procs P --phase-file F --done-file F
//                [--restarts-file F] [--label L] [--ramp PER_S] [--warmup S] [--settle S] [--tail S] [--max-secs S]
//                [--trace PREFIX]   (each client process writes PREFIX.<n>.jsonl: every client's connects,
//                                    disconnects and errors, for finding out what happened to one)
// Environment: TIDINGS_JWT_SECRET (clients' tokens), TIDINGS_API_KEY (the publisher).
import { fork } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { Publisher } from "./publisher.mjs";
import { addCounts, quantile } from "./stats.mjs";

const { values: opt } = parseArgs({
  options: {
    base: { type: "string" },
    urls: { type: "string" },
    clients: { type: "string", default: "6000" },
    rooms: { type: "string", default: "100" },
    rate: { type: "string", default: "50" },
    procs: { type: "string", default: "3" },
    ramp: { type: "string", default: "300" },
    warmup: { type: "string", default: "5" },
    settle: { type: "string", default: "5" },
    tail: { type: "string", default: "5" },
    "max-secs": { type: "string", default: "300" },
    "phase-file": { type: "string" },
    "done-file": { type: "string" },
    "restarts-file": { type: "string" },
    label: { type: "string", default: "" },
    trace: { type: "string" },
  },
});
const n = (key) => Number(opt[key]);
const secret = process.env.TIDINGS_JWT_SECRET;
const apiKey = process.env.TIDINGS_API_KEY;
if (!opt.base || !opt.urls || !opt["phase-file"] || !opt["done-file"] || !secret || !apiKey) {
  console.error("run.mjs: --base, --urls, --phase-file, --done-file, TIDINGS_JWT_SECRET and TIDINGS_API_KEY are needed");
  process.exit(2);
}
const started = Date.now();
const deadline = started + n("max-secs") * 1000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const log = (msg) => console.error(`   [${((Date.now() - started) / 1000).toFixed(1)} s] ${msg}`);

// The client processes, each with a contiguous share of the clients.
const total = n("clients");
const procs = Math.max(1, Math.min(n("procs"), total));
const children = [];
for (let p = 0; p < procs; p++) {
  const first = Math.floor((total * p) / procs);
  const count = Math.floor((total * (p + 1)) / procs) - first;
  const cfg = {
    urls: opt.urls.split(","),
    first,
    count,
    rooms: n("rooms"),
    secret,
    rampPerSec: n("ramp") / procs,
    ttlSecs: 3600,
    traceFile: opt.trace ? `${opt.trace}.${p}.jsonl` : undefined,
  };
  const child = fork(new URL("./clients.mjs", import.meta.url), [JSON.stringify(cfg)]);
  const state = { child, connected: 0, report: null };
  child.on("message", (msg) => {
    if (msg.type === "connected") state.connected = msg.connected;
    else if (msg.type === "report") state.report = msg;
  });
  children.push(state);
}
const stopChildren = () => children.forEach((c) => c.child.kill());
process.on("exit", stopChildren);
const connected = () => children.reduce((sum, c) => sum + c.connected, 0);

// 1. Every client connected (or the time for it is up).
const connectLimit = Date.now() + (total / n("ramp") + 60) * 1000;
let lastLog = 0;
while (connected() < total && Date.now() < connectLimit) {
  if (Date.now() - lastLog > 5000) {
    log(`${connected()} of ${total} clients connected`);
    lastLog = Date.now();
  }
  await sleep(100);
}
const connectSecs = (Date.now() - started) / 1000;
log(`${connected()} of ${total} clients connected after ${connectSecs.toFixed(1)} s; publishing`);

// 2. Publish; after the warm-up the script restarts the nodes; publish until it is done, and `settle` more.
const publisher = new Publisher({
  base: opt.base,
  apiKey,
  rooms: n("rooms"),
  rate: n("rate"),
  runId: `run${started}`,
});
publisher.start();
await sleep(n("warmup") * 1000);
writeFileSync(opt["phase-file"], "steady\n");
log("steady: the nodes may restart");
let timedOut = false;
while (!existsSync(opt["done-file"])) {
  if (Date.now() > deadline) {
    timedOut = true;
    log("gave up waiting for the restarts (--max-secs)");
    break;
  }
  await sleep(200);
}
await sleep(n("settle") * 1000);
await publisher.stop();
log(`publishing stopped (${publisher.counts.accepted} accepted); ${connected()} of ${total} connected`);

// 3. The last deliveries and reconnects, then every client's measures.
await sleep(n("tail") * 1000);
children.forEach((c) => c.child.send({ type: "report", accepted: publisher.accepted }));
while (children.some((c) => !c.report) && Date.now() < deadline + 30000) await sleep(100);
children.forEach((c) => c.child.send({ type: "close" }));

const restarts = opt["restarts-file"] && existsSync(opt["restarts-file"])
  ? readFileSync(opt["restarts-file"], "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l))
  : [];
console.log(JSON.stringify(summarize(children.map((c) => c.report).filter(Boolean), restarts)));
stopChildren();
process.exit(0);

/** One JSON object of measures from the client processes' reports and the script's restart records. */
function summarize(reports, restarts) {
  const sum = (key) => reports.reduce((s, r) => s + r[key], 0);
  const gaps = reports.flatMap((r) => r.gaps);
  const ms = gaps.map((g) => g[1]);
  const recoveredMs = gaps.filter((g) => g[2] === 1).map((g) => g[1]);
  const stat = (values) => ({
    p50: quantile(values, 0.5),
    p99: quantile(values, 0.99),
    max: values.length ? Math.max(...values) : null,
  });
  // Each disconnect belongs to the restart under way when it happened (from its SIGTERM to the next one's).
  const perRestart = restarts.map((r, i) => {
    const end = restarts[i + 1]?.term_at ?? Infinity;
    const mine = gaps.filter((g) => g[0] >= r.term_at && g[0] < end);
    return {
      ...r,
      disconnects: mine.length,
      not_recovered: mine.filter((g) => g[2] === 0).length,
      gap_ms: stat(mine.map((g) => g[1])),
    };
  });
  const outside = restarts.length ? gaps.filter((g) => g[0] < restarts[0].term_at).length : 0;
  const still = reports.flatMap((r) => r.stillDisconnected);
  return {
    label: opt.label,
    clients: total,
    rooms: n("rooms"),
    rate: n("rate"),
    connect_s: connectSecs,
    timed_out: timedOut,
    wall_s: (Date.now() - started) / 1000,
    published: { ...publisher.counts, answer_ms: stat(publisher.answerMs) },
    expected: sum("expected"),
    received: sum("received"),
    lost: sum("lost"),
    duplicates: sum("duplicates"),
    out_of_order: sum("outOfOrder"),
    clients_with_loss: sum("clientsWithLoss"),
    clients_with_duplicates: sum("clientsWithDuplicates"),
    never_connected: sum("neverConnected"),
    never_back: still.length,
    never_back_examples: still.slice(0, 10),
    never_back_states: reports.reduce((acc, r) => addCounts(acc, r.neverBackStates), {}),
    polling_at_end: reports.reduce((s, r) => s + r.stuckPolling.length, 0),
    polling_at_end_examples: reports.flatMap((r) => r.stuckPolling).slice(0, 10),
    reconnects: gaps.length,
    recovered: recoveredMs.length,
    not_recovered: gaps.length - recoveredMs.length,
    disconnects_before_restarts: outside,
    gap_ms: stat(ms),
    recovered_ms: stat(recoveredMs),
    disconnect_reasons: reports.reduce((acc, r) => addCounts(acc, r.disconnectReasons), {}),
    unrecovered_reasons: reports.reduce((acc, r) => addCounts(acc, r.unrecoveredReasons), {}),
    connect_errors: reports.reduce((acc, r) => addCounts(acc, r.connectErrors), {}),
    client_cpu_s: reports.reduce((s, r) => s + r.cpuSecs, 0),
    loss_examples: reports.flatMap((r) => r.lossExamples).slice(0, 10),
    restarts: perRestart,
  };
}
