// Helpers for the cluster tests (cluster.test.mjs, sentinel.test.mjs): Redis, Sentinel and tidings node
// processes, a tiny RESP client, a round-robin TCP balancer standing in for a non-sticky load balancer, and
// recorders that check "every event exactly once, in order" across clients and nodes.
//
// Every process started here is tracked and SIGKILLed at process exit as a safety net; tests stop them in
// their `after` hooks. Node logs (TIDINGS_LOG=info,tidings=debug by default) are written to files in a
// per-run temp directory whose path `logDir()` returns; they are kept when a test failed (the failing test
// prints it) and removed by `cleanupLogs()` otherwise.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { API_KEY, SECRET, TIDINGS_BIN, freePort, sleep } from './helpers.mjs';

export const REDIS_SERVER = process.env.REDIS_SERVER || 'redis-server';
export const REDIS_SENTINEL = process.env.REDIS_SENTINEL || 'redis-sentinel';
const NODE_LOG = process.env.TIDINGS_CLUSTER_LOG || 'info,tidings=debug';
const STARTUP_TIMEOUT_MS = 10_000;
const TAIL_KEEP = 64 * 1024;

// ---------------------------------------------------------------------------
// process bookkeeping

const live = new Set();
process.on('exit', () => {
  for (const p of live) {
    try {
      p.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
});

let runDir = null;
/** A temp directory for this test file's logs and data (created on first use). */
export function logDir() {
  runDir ??= mkdtempSync(path.join(tmpdir(), 'tidings-cluster-'));
  return runDir;
}

/** Remove the log directory (call when every test passed); keeps it when `keep` is true. */
export function cleanupLogs(keep = false) {
  if (runDir && !keep && !process.env.TIDINGS_KEEP_LOGS) rmSync(runDir, { recursive: true, force: true });
  else if (runDir) process.stderr.write(`cluster test logs kept in ${runDir}\n`);
  runDir = null;
}

/** A key prefix unique to one test. */
export function uniquePrefix() {
  return `t${randomBytes(5).toString('hex')}`;
}

/**
 * Spawn a long-running process with its output kept in memory (tail) and written to `logFile`.
 * Returns {proc, exited, output(), kill(signal), stop()}.
 */
function spawnTracked(cmd, args, { env, logFile, label }) {
  const proc = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(proc);
  const file = logFile ? createWriteStream(logFile, { flags: 'a' }) : null;
  let tail = '';
  const keep = (chunk) => {
    tail = (tail + chunk.toString()).slice(-TAIL_KEEP);
    file?.write(chunk);
    if (process.env.TIDINGS_TEST_VERBOSE) process.stderr.write(`[${label}] ${chunk}`);
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  let exitInfo = null;
  const exited = new Promise((resolve) => {
    proc.once('exit', (code, signal) => {
      exitInfo = { code, signal };
      live.delete(proc);
      resolve(exitInfo);
    });
    proc.once('error', (error) => {
      exitInfo ??= { code: null, signal: null, error };
      live.delete(proc);
      resolve(exitInfo);
    });
  });
  exited.then(() => file?.end());
  return {
    proc,
    exited,
    get alive() {
      return exitInfo === null;
    },
    output: () => tail,
    kill(signal = 'SIGKILL') {
      if (exitInfo) return;
      try {
        proc.kill(signal);
      } catch {
        /* gone */
      }
    },
    async stop({ signal = 'SIGTERM', graceMs = 5000 } = {}) {
      if (!exitInfo) {
        try {
          proc.kill(signal);
        } catch {
          /* gone */
        }
        const t = setTimeout(() => {
          try {
            proc.kill('SIGKILL');
          } catch {
            /* gone */
          }
        }, graceMs);
        await exited;
        clearTimeout(t);
      }
      return exitInfo;
    },
  };
}

// ---------------------------------------------------------------------------
// a tiny RESP2 client

/** Encode a command as a RESP array of bulk strings (arguments may be strings, numbers or Buffers). */
function encodeCommand(args) {
  const parts = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    const b = Buffer.isBuffer(a) ? a : Buffer.from(String(a));
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

export class RedisError extends Error {}

/** Parse one RESP reply from `buf` at `pos`; returns [value, nextPos] or null when incomplete. */
function parseReply(buf, pos) {
  const eol = buf.indexOf('\r\n', pos);
  if (eol < 0) return null;
  const type = String.fromCharCode(buf[pos]);
  const line = buf.toString('utf8', pos + 1, eol);
  const next = eol + 2;
  switch (type) {
    case '+':
      return [line, next];
    case '-':
      return [new RedisError(line), next];
    case ':':
      return [Number(line), next];
    case '$': {
      const len = Number(line);
      if (len < 0) return [null, next];
      if (buf.length < next + len + 2) return null;
      return [buf.toString('utf8', next, next + len), next + len + 2];
    }
    case '*': {
      const n = Number(line);
      if (n < 0) return [null, next];
      const items = [];
      let p = next;
      for (let i = 0; i < n; i++) {
        const r = parseReply(buf, p);
        if (!r) return null;
        items.push(r[0]);
        p = r[1];
      }
      return [items, p];
    }
    default:
      throw new Error(`unexpected RESP type byte ${JSON.stringify(type)}`);
  }
}

/**
 * One RESP connection: `await c.call('SET', 'k', 'v')`. Error replies reject with RedisError; a closed
 * connection rejects every pending call.
 */
export async function redisConnect(port, { host = '127.0.0.1', timeoutMs = 2000 } = {}) {
  const sock = net.connect({ host, port });
  sock.setNoDelay(true);
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      sock.destroy();
      reject(new Error(`redis ${host}:${port}: connect timed out`));
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(t);
      resolve();
    });
    sock.once('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
  });
  const pending = [];
  let buf = Buffer.alloc(0);
  let closedErr = null;
  sock.on('data', (chunk) => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    let pos = 0;
    for (;;) {
      const r = parseReply(buf, pos);
      if (!r) break;
      pos = r[1];
      const p = pending.shift();
      if (!p) continue; // push messages (unused)
      if (r[0] instanceof RedisError) p.reject(r[0]);
      else p.resolve(r[0]);
    }
    buf = buf.subarray(pos);
  });
  const fail = (err) => {
    closedErr ??= err || new Error(`redis ${host}:${port}: connection closed`);
    for (const p of pending.splice(0)) p.reject(closedErr);
  };
  sock.on('error', fail);
  sock.on('close', () => fail());
  return {
    call(...args) {
      if (closedErr) return Promise.reject(closedErr);
      return new Promise((resolve, reject) => {
        pending.push({ resolve, reject });
        sock.write(encodeCommand(args));
      });
    },
    close() {
      sock.destroy();
    },
  };
}

/** Run one command on a fresh connection. */
export async function redisCall(port, ...args) {
  const c = await redisConnect(port);
  try {
    return await c.call(...args);
  } finally {
    c.close();
  }
}

// ---------------------------------------------------------------------------
// redis-server and redis-sentinel

/**
 * Start redis-server on `port` (free port by default). `durable` = AOF with fsync on every write in `dir`
 * (a new temp dir unless given; reuse it to restart with the same data). `replicaOf` = master port.
 */
export async function startRedis({ port, durable = false, dir, replicaOf, label, args: extra = [] } = {}) {
  port ??= await freePort();
  dir ??= mkdtempSync(path.join(logDir(), `redis-${port}-`));
  mkdirSync(dir, { recursive: true });
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--dir', dir, '--protected-mode', 'no'];
  if (durable) args.push('--appendonly', 'yes', '--appendfsync', 'always');
  else args.push('--appendonly', 'no');
  if (replicaOf) args.push('--replicaof', '127.0.0.1', String(replicaOf));
  // Full syncs start at once (the default waits 5 s for more replicas).
  args.push('--repl-diskless-sync-delay', '0', ...extra);
  const name = label || `redis-${port}`;
  const p = spawnTracked(REDIS_SERVER, args, { logFile: path.join(logDir(), `${name}.log`), label: name });
  const redis = { port, dir, url: `redis://127.0.0.1:${port}`, durable, replicaOf, ...p, restart: null };
  await waitForRedis(port, p, name);
  /** Start again on the same port and data dir (after a kill). */
  redis.restart = () => startRedis({ port, durable, dir, replicaOf, label: name, args: extra });
  return redis;
}

/**
 * A Redis Cluster of `masters` redis-servers (no replicas) on free loopback ports, slots spread by
 * `redis-cli --cluster create`. Returns {url: 'redis+cluster://…', nodes: [redis], port (the first node's)}.
 */
export async function startRedisCluster({ masters = 3 } = {}) {
  const nodes = [];
  for (let i = 0; i < masters; i++) {
    const bus = await freePort();
    nodes.push(await startRedis({ label: `cluster-${i}-${bus}`, args: ['--cluster-enabled', 'yes', '--cluster-port', String(bus), '--cluster-config-file', `nodes-${bus}.conf`, '--cluster-node-timeout', '2000'] }));
  }
  const create = spawn('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '0', '--cluster-yes'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  create.stdout.on('data', (d) => (out += d));
  create.stderr.on('data', (d) => (out += d));
  const code = await new Promise((resolve) => create.on('exit', resolve));
  if (code !== 0) throw new Error(`redis-cli --cluster create failed (${code}):\n${out}`);
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  for (;;) {
    const states = await Promise.all(nodes.map((n) => redisCall(n.port, 'CLUSTER', 'INFO').catch(() => '')));
    if (states.every((info) => String(info).includes('cluster_state:ok'))) break;
    if (Date.now() > deadline) throw new Error(`the Redis Cluster did not come up:\n${states.join('\n')}`);
    await sleep(100);
  }
  return { url: `redis+cluster://${nodes.map((n) => `127.0.0.1:${n.port}`).join(',')}`, nodes, port: nodes[0].port };
}

/**
 * `nodes` tidings nodes on a new Redis Cluster of three masters, rooms spread over `partitions` slots; every
 * process started goes through `track` (the test stops them). Returns {redis, parts: [], prefix, nodes,
 * onCluster: true}.
 */
export async function startNodesOnRedisCluster({ nodes, partitions, config = '', track }) {
  const rc = await startRedisCluster();
  for (const n of rc.nodes) track(n);
  const prefix = uniquePrefix();
  const list = [];
  for (let i = 0; i < nodes; i++) {
    list.push(track(await startNode({ redisUrl: rc.url, prefix, name: `${prefix}-n${i}`, config: `cluster_partitions = ${partitions}\n${config}` })));
  }
  return { redis: rc, parts: [], prefix, nodes: list, onCluster: true };
}

async function waitForRedis(port, p, name) {
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  for (;;) {
    if (!p.alive) throw new Error(`${name} exited during startup\n${p.output()}`);
    try {
      if ((await redisCall(port, 'PING')) === 'PONG') return;
    } catch {
      /* not yet */
    }
    if (Date.now() > deadline) {
      p.kill();
      throw new Error(`${name} did not answer PING within ${STARTUP_TIMEOUT_MS} ms\n${p.output()}`);
    }
    await sleep(25);
  }
}

/** Start a redis-sentinel monitoring master `masterName` at `masterPort` (quorum 2, 1 s down-after). */
export async function startSentinel({ masterPort, masterName = 'm', quorum = 2, port } = {}) {
  port ??= await freePort();
  const dir = mkdtempSync(path.join(logDir(), `sentinel-${port}-`));
  const conf = path.join(dir, 'sentinel.conf');
  writeFileSync(
    conf,
    [
      `port ${port}`,
      'bind 127.0.0.1',
      'protected-mode no',
      `dir ${dir}`,
      `sentinel monitor ${masterName} 127.0.0.1 ${masterPort} ${quorum}`,
      `sentinel down-after-milliseconds ${masterName} 1000`,
      `sentinel failover-timeout ${masterName} 5000`,
      `sentinel parallel-syncs ${masterName} 1`,
      'sentinel resolve-hostnames no',
      '',
    ].join('\n'),
  );
  const name = `sentinel-${port}`;
  const p = spawnTracked(REDIS_SENTINEL, [conf], { logFile: path.join(logDir(), `${name}.log`), label: name });
  await waitForRedis(port, p, name);
  return { port, conf, ...p };
}

// ---------------------------------------------------------------------------
// tidings nodes

/**
 * Start a tidings node in cluster mode. `redisUrl` is passed with --redis; `prefix` is the key prefix
 * (one cluster per prefix); `config` is extra TOML appended to the file (top-level keys first, so pass
 * table sections only). Returns a server object usable with helpers.mjs (`url`, `port`, `apiKey`).
 */
export async function startNode({ redisUrl, prefix, name, port, publicUrl, config = '', env = {} } = {}) {
  port ??= await freePort();
  name ??= `node-${port}`;
  const dir = mkdtempSync(path.join(logDir(), `${name}-`));
  const file = path.join(dir, 'tidings.toml');
  let toml = '';
  if (publicUrl) toml += `public_url = ${JSON.stringify(publicUrl)}\n`;
  toml += `[redis]\nkey_prefix = ${JSON.stringify(prefix)}\n${config}\n`;
  writeFileSync(file, toml);
  const argv = [
    'serve',
    '--listen',
    `127.0.0.1:${port}`,
    '--jwt-secret',
    SECRET,
    '--api-key',
    API_KEY,
    '--redis',
    redisUrl,
    '--config',
    file,
  ];
  const p = spawnTracked(TIDINGS_BIN, argv, {
    env: { TIDINGS_LOG: NODE_LOG, ...env },
    logFile: path.join(logDir(), `${name}.log`),
    label: name,
  });
  const node = { name, port, url: `http://127.0.0.1:${port}`, secret: SECRET, apiKey: API_KEY, prefix, ...p };
  node.stderr = p.output;
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  for (;;) {
    if (!p.alive) throw new Error(`${name} exited during startup ${JSON.stringify(await p.exited)}\n${p.output()}`);
    const ok = await fetch(`${node.url}/healthz`, { signal: AbortSignal.timeout(1000) }).then(
      async (r) => {
        await r.arrayBuffer().catch(() => {});
        return r.status === 200;
      },
      () => false,
    );
    if (ok) break;
    if (Date.now() > deadline) {
      p.kill();
      throw new Error(`${name} did not become healthy\n${p.output()}`);
    }
    await sleep(50);
  }
  return node;
}

/** GET /metrics and return {name{labels}: value} for every sample. */
export async function metrics(node) {
  const res = await fetch(`${node.url}/metrics`, { signal: AbortSignal.timeout(5000) });
  const text = await res.text();
  const out = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^(\S+?)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m) out[m[1] + (m[2] || '')] = Number(m[3]);
  }
  return out;
}

/** Sum of every sample of metric `name` (any labels, optionally filtered by a label substring). */
export function metricSum(samples, name, labelFilter = '') {
  let sum = 0;
  for (const [k, v] of Object.entries(samples)) {
    if ((k === name || k.startsWith(`${name}{`)) && k.includes(labelFilter)) sum += v;
  }
  return sum;
}

// ---------------------------------------------------------------------------
// round-robin balancer

/**
 * A TCP balancer: each new connection goes to the next live target in turn (no stickiness). A target
 * that refuses the connection is skipped (the next is tried) so killed nodes drop out by themselves;
 * `remove(port)` takes one out explicitly. `perTarget` counts connections per target port.
 * `pick(head)`, if given, sees the first bytes a client sent (an HTTP request head) and may return the
 * target port for that connection (undefined = the round-robin turn).
 */
export async function startBalancer(targetPorts, { pick = null } = {}) {
  const targets = [...targetPorts];
  let next = 0;
  const conns = new Set();
  const perTarget = new Map();
  const server = net.createServer({ pauseOnConnect: true }, (client) => {
    client.on('error', () => {});
    client.setNoDelay(true);
    const pair = { client, upstream: null };
    conns.add(pair);
    client.once('close', () => {
      conns.delete(pair);
      pair.upstream?.destroy();
    });
    if (!pick) {
      tryTarget(pair, targets.length, null, undefined);
      return;
    }
    client.once('data', (head) => {
      client.pause();
      tryTarget(pair, targets.length, head, pick(head.toString('latin1')));
    });
    client.resume();
  });
  function tryTarget(pair, attemptsLeft, head, chosen) {
    if (pair.client.destroyed) return;
    if (attemptsLeft <= 0 || targets.length === 0) {
      pair.client.destroy();
      return;
    }
    const port = chosen ?? targets[next++ % targets.length];
    const up = net.connect({ host: '127.0.0.1', port });
    up.setNoDelay(true);
    let connected = false;
    up.once('connect', () => {
      connected = true;
      pair.upstream = up;
      perTarget.set(port, (perTarget.get(port) || 0) + 1);
      if (head) up.write(head);
      pair.client.pipe(up);
      up.pipe(pair.client);
      pair.client.resume();
    });
    up.on('error', () => {
      if (!connected) tryTarget(pair, attemptsLeft - 1, head, undefined);
      else pair.client.destroy();
    });
    up.on('close', () => {
      if (connected) pair.client.destroy();
    });
  }
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = server.address().port;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    perTarget,
    remove(p) {
      const i = targets.indexOf(p);
      if (i >= 0) targets.splice(i, 1);
    },
    close() {
      for (const pair of conns) {
        pair.client.destroy();
        pair.upstream?.destroy();
      }
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

// ---------------------------------------------------------------------------
// recording deliveries

/**
 * Record every event a socket receives: `rec.log` = [{event, data, offset, at}] in arrival order (offset is
 * the trailing string argument, `at` the arrival time). Connects are logged in `rec.connects` as {id, recovered, at}.
 */
export function record(socket, label) {
  const rec = { label, socket, log: [], connects: [], disconnects: [] };
  socket.onAny((event, ...args) => {
    const offset = args.length >= 2 && typeof args[args.length - 1] === 'string' ? args[args.length - 1] : undefined;
    rec.log.push({ event, data: args[0], offset, at: Date.now() });
  });
  socket.on('connect', () => rec.connects.push({ id: socket.id, recovered: socket.recovered, at: Date.now() }));
  socket.on('disconnect', (reason) => rec.disconnects.push({ reason, at: Date.now() }));
  return rec;
}

/** The recorded events with `event` name `ev` and data carrying `key` (the test's unique event key). */
export function received(rec, ev = 'e') {
  return rec.log.filter((x) => x.event === ev && x.data && typeof x.data.k === 'string');
}

/**
 * Check one recorder against the events it must get.
 *  - `must`: keys that must each arrive exactly once (answered 2xx / ingested and confirmed)
 *  - `may`: keys that may arrive at most once (answered 503 / timed out: outcome unknown)
 *  - `offsets`: Map key → offset as the publish answer gave it (checked when present)
 * Always: offsets strictly increasing, no key twice, nothing outside must ∪ may.
 */
export function checkDelivery(rec, { must, may = new Set(), offsets = new Map(), ev = 'e', via }) {
  const got = received(rec, ev);
  const seen = new Map();
  let prev = -1n;
  const prevIn = new Map();
  const where = () => `${rec.label}: got ${got.length} events [${got.map((g) => `${g.data.k}@${g.offset}`).join(' ')}]`;
  for (const [i, g] of got.entries()) {
    assert.equal(typeof g.offset, 'string', `${rec.label}: event ${g.data.k} without an offset`);
    if (g.offset.startsWith('v')) {
      // A partitioned cluster: the offset is a vector; the event's own partition (the lowest of its rooms the
      // member is in) holds the event's sequence there, strictly increasing per partition.
      assert.ok(via, `${rec.label}: vector offset ${g.offset} but the test gave no partition of the events`);
      const part = via(g.data.k, rec.rooms);
      const vector = decodeOffset(g.offset);
      if (PARTITIONS > 0) assert.equal(vector.length, PARTITIONS, `${rec.label}: offset ${g.offset} of ${vector.length} partitions`);
      assert.ok(part < vector.length, `${rec.label}: offset ${g.offset} has no partition ${part}`);
      const off = vector[part];
      const before = prevIn.get(part) ?? -1n;
      assert.ok(off > before, `${rec.label}: partition ${part} not strictly increasing at #${i}: ${before} then ${off} (${g.data.k}); ${where()}`);
      prevIn.set(part, off);
    } else {
      const off = BigInt(g.offset);
      assert.ok(off > prev, `${rec.label}: offsets not strictly increasing at #${i}: ${prev} then ${off} (${g.data.k}); ${where()}`);
      prev = off;
    }
    assert.ok(!seen.has(g.data.k), `${rec.label}: ${g.data.k} delivered twice (offsets ${seen.get(g.data.k)} and ${g.offset}); ${where()}`);
    seen.set(g.data.k, g.offset);
    assert.ok(must.has(g.data.k) || may.has(g.data.k), `${rec.label}: unexpected event ${g.data.k}@${g.offset}; ${where()}`);
    if (offsets.has(g.data.k)) {
      assert.equal(g.offset, offsets.get(g.data.k), `${rec.label}: ${g.data.k} arrived with offset ${g.offset}, the publish answered ${offsets.get(g.data.k)}`);
    }
  }
  const missing = [...must].filter((k) => !seen.has(k));
  assert.deepEqual(missing, [], `${rec.label}: ${missing.length} of ${must.size} owed events missing: ${missing.slice(0, 20).join(' ')}; ${where()}`);
  return seen;
}

// ---------------------------------------------------------------------------
// partitions (TIDINGS_TEST_PARTITIONS=n runs the cluster tests with rooms spread over n more redis-servers)

/**
 * TIDINGS_TEST_REDIS_CLUSTER=n runs the cluster tests on a Redis Cluster of three masters instead, rooms spread
 * over n partitions (hash slots); every key then carries a hash tag.
 */
export const REDIS_CLUSTER = Number(process.env.TIDINGS_TEST_REDIS_CLUSTER || 0);

/** How many partitions the cluster tests spread rooms over (0: one Redis for everything). */
export const PARTITIONS = Number(process.env.TIDINGS_TEST_PARTITIONS || 0) || REDIS_CLUSTER;

/** The prefix of the keys and channels on the main Redis for key prefix `prefix` (hash-tagged on a cluster). */
export const mainPrefix = (prefix) => (REDIS_CLUSTER > 0 ? `{${prefix}}` : prefix);

/** FNV-1a 64 of a string's UTF-8 bytes (as the server computes it). */
function fnv1a(text) {
  let hash = 0xcbf29ce484222325n;
  for (const byte of Buffer.from(text, 'utf8')) {
    hash ^= BigInt(byte);
    hash = (hash * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return hash;
}

/** The partition of `room` in namespace `nsp` among `n` (jump consistent hash, as the server computes it). */
export function partitionOf(room, n = PARTITIONS, nsp = '/') {
  if (n <= 1) return 0;
  let key = fnv1a(`${nsp}\0${room}`);
  let b = -1;
  let j = 0;
  while (j < n) {
    b = j;
    key = (key * 2862933555777941757n + 1n) & 0xffffffffffffffffn;
    j = Math.floor((b + 1) * (Number(1n << 31n) / Number((key >> 33n) + 1n)));
  }
  return b;
}

/** The positions of a partitioned offset (`v` + base64url of LEB128 varints). */
export function decodeOffset(text) {
  const bytes = Buffer.from(text.slice(1), 'base64url');
  const out = [];
  let value = 0n;
  let shift = 0n;
  for (const byte of bytes) {
    value |= BigInt(byte & 0x7f) << shift;
    if (byte & 0x80) shift += 7n;
    else {
      out.push(value);
      value = 0n;
      shift = 0n;
    }
  }
  return out;
}

/**
 * `via` for checkDelivery: the partition an event reaches a member through, the lowest partition among the
 * event's rooms the member is in (`results` as startPublisher gives them; `n` partitions).
 */
export function viaPartition(results, n = PARTITIONS) {
  const roomsOf = new Map(results.map((r) => [r.k, r.rooms]));
  return (k, memberRooms) => Math.min(...roomsOf.get(k).filter((r) => memberRooms.includes(r)).map((r) => partitionOf(r, n)));
}

/** Wait until every recorder in `recs` has at least `countOf(rec)` events (then let duplicates show). */
export async function allReceived(recs, countOf, { timeoutMs = 10_000, settleMs = 300, ev = 'e' } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const short = recs.filter((r) => received(r, ev).length < countOf(r));
    if (short.length === 0) break;
    if (Date.now() > deadline) {
      return { complete: false, short: short.map((r) => `${r.label}: ${received(r, ev).length}/${countOf(r)}`) };
    }
    await sleep(25);
  }
  await sleep(settleMs);
  return { complete: true, short: [] };
}

// ---------------------------------------------------------------------------
// publishing

/**
 * POST /v1/publish without throwing: {status, json, text, startedAt, endedAt}; network errors and
 * timeouts give status 0.
 */
export async function tryPublish(node, body, { timeoutMs = 10_000 } = {}) {
  const startedAt = Date.now();
  try {
    const res = await fetch(`${node.url}/v1/publish`, {
      method: 'POST',
      headers: { authorization: `Bearer ${node.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, json, text, startedAt, endedAt: Date.now() };
  } catch (err) {
    return { status: 0, json: undefined, text: String(err), startedAt, endedAt: Date.now() };
  }
}

/**
 * A paced publisher: publishes `{room(s), event:'e', data:{k, i, ...}}` one request at a time, starting one
 * every `intervalMs` (or right after the previous answer when that took longer), until `stop()`.
 * `results` holds {k, rooms, status, offset, startedAt, endedAt} per request.
 */
export function startPublisher(nodeOf, { rooms, intervalMs = 50, tag = 'p', timeoutMs = 10_000 }) {
  const results = [];
  let stopped = false;
  let i = 0;
  const done = (async () => {
    while (!stopped) {
      const started = Date.now();
      const k = `${tag}-${i}`;
      const rs = typeof rooms === 'function' ? rooms(i) : rooms;
      const node = typeof nodeOf === 'function' ? nodeOf(i) : nodeOf;
      i += 1;
      const body = rs.length === 1 ? { room: rs[0], event: 'e', data: { k, i } } : { rooms: rs, event: 'e', data: { k, i } };
      const r = await tryPublish(node, body, { timeoutMs });
      results.push({ k, rooms: rs, status: r.status, offset: r.json?.offset, text: r.text, startedAt: r.startedAt, endedAt: r.endedAt, node: node.name });
      const wait = intervalMs - (Date.now() - started);
      if (wait > 0 && !stopped) await sleep(wait);
    }
  })();
  return {
    results,
    async stop() {
      stopped = true;
      await done;
      return results;
    },
  };
}

/** Keys of events that were answered something other than 200 yet reached at least one of `recs`. */
export function deliveredThoughRefused(results, recs) {
  const refused = new Set(results.filter((r) => r.status !== 200).map((r) => r.k));
  const got = new Set(recs.flatMap((rec) => received(rec).map((g) => g.data.k)));
  return [...refused].filter((k) => got.has(k));
}

/** Split publish results into must (2xx) / may (anything else) key sets for the rooms a member is in. */
export function owed(results, memberRooms) {
  const must = new Set();
  const may = new Set();
  const offsets = new Map();
  for (const r of results) {
    if (!r.rooms.some((room) => memberRooms.includes(room))) continue;
    if (r.status === 200) {
      must.add(r.k);
      if (r.offset !== undefined) offsets.set(r.k, r.offset);
    } else {
      may.add(r.k);
    }
  }
  // A partitioned cluster's offsets are vectors, not the publish answer's sequence; each partition's order is
  // checked instead.
  if (PARTITIONS > 0) return { must, may, offsets: new Map(), via: viaPartition(results) };
  return { must, may, offsets };
}
