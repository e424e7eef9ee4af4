// The deployment topology of deploy/ run for real: `deploy/local-cluster.sh up` starts Redis master + replica,
// three Sentinels, three tidings nodes and nginx (round robin, no sticky sessions) from deploy/'s own config
// files. Stock socket.io-client clients connect THROUGH nginx (websocket only, polling first, polling only, and
// one over nginx's TLS server); a numbered stream is published through nginx's HTTP API, one event after the
// other, a failed publish retried with the same Idempotency-Key. Under that stream the Redis master is killed
// (SIGKILL: the Sentinels promote the replica), then a tidings node (SIGKILL: its clients reconnect through
// nginx to the others and recover their sessions), then another node is stopped with SIGTERM (it drains: new
// handshakes answered 503 go to another node through nginx, its clients are handed over and recover). Every
// client must end up with every event once, in order. `local-cluster.sh down` must then leave no process behind.
//
// Needs redis-server, redis-sentinel, nginx, openssl and curl (scripts/test.sh installs them).
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { io } from 'socket.io-client';
import { REPO_ROOT, TIDINGS_BIN, eventually, sleep, token } from './helpers.mjs';
import { record, redisCall } from './cluster-helpers.mjs';

const run = promisify(execFile);
const SCRIPT = path.join(REPO_ROOT, 'deploy', 'local-cluster.sh');
const T = { timeout: 90_000 };
const ROOM = 'deploy';
/** How long a node's registry entry lives without a heartbeat (cluster/registry.rs ENTRY_TTL). */
const REGISTRY_ENTRY_TTL_MS = 6500;

const state = mkdtempSync(path.join(tmpdir(), 'tidings-deploy-'));
let keepState = false;
const sockets = new Set();

/** Run local-cluster.sh COMMAND on this test's state directory. */
async function cluster(command) {
  try {
    const { stdout, stderr } = await run(SCRIPT, [command, '--state', state], {
      env: { ...process.env, TIDINGS_BIN, TIDINGS_LOG: process.env.TIDINGS_TEST_LOG || 'info' },
      timeout: 60_000,
    });
    return stdout + stderr;
  } catch (err) {
    throw new Error(`local-cluster.sh ${command} failed (${err.code ?? err.signal}):\n${err.stdout}${err.stderr}`);
  }
}

/** cluster.env as an object. */
function clusterEnv() {
  const env = {};
  for (const line of readFileSync(path.join(state, 'cluster.env'), 'utf8').split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) env[line.slice(0, i)] = line.slice(i + 1);
  }
  return env;
}

/** Every pid file of the state directory: {name: pid}. */
function pidFiles() {
  const dir = path.join(state, 'pids');
  const out = {};
  for (const f of readdirSync(dir)) if (f.endsWith('.pid')) out[f.slice(0, -4)] = Number(readFileSync(path.join(dir, f), 'utf8'));
  return out;
}

/** The process exists and is not a zombie. */
function alive(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Someone accepts TCP connections on 127.0.0.1:port. */
function listening(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** The pids of nginx's workers, children of its master. */
function childrenOf(pid) {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

after(async () => {
  for (const s of sockets) s.close();
  // A failed test may have left the cluster up: stop it by its pid files.
  if (readdirSafe(path.join(state, 'pids')).length) await cluster('down').catch(() => {});
  if (keepState || process.env.TIDINGS_KEEP_LOGS) process.stderr.write(`deploy cluster state and logs kept in ${state}\n`);
  else rmSync(state, { recursive: true, force: true });
});

/** Every node answers /readyz 200 and lists the three nodes of the registry. */
async function healed(env, nodeUrls) {
  for (const url of nodeUrls) {
    const ready = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2000) });
    if (ready.status !== 200) return false;
    const res = await fetch(`${url}/v1/nodes`, { headers: { authorization: `Bearer ${env.TIDINGS_API_KEY}` }, signal: AbortSignal.timeout(2000) });
    if (res.status !== 200 || (await res.json()).nodes?.length !== 3) return false;
  }
  return true;
}

/** {key: count} of `items` by `keyOf`. */
function countBy(items, keyOf) {
  const out = {};
  for (const item of items) out[keyOf(item)] = (out[keyOf(item)] || 0) + 1;
  return out;
}

function readdirSafe(dir) {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/**
 * A publisher of the numbered stream through nginx: `{n}` to ROOM as event `tick`, one at a time; a failed
 * attempt (network error, non-200) is retried with the same Idempotency-Key until it is answered 200.
 */
function startPublisher(env, runId, { intervalMs = 40 } = {}) {
  const pub = { next: 0, attempts: 0, failures: [], retried: new Set(), repeated: [], lastOkAt: 0, stopped: false };
  const once = async (n) => {
    const startedAt = Date.now();
    try {
      const res = await fetch(`${env.NGINX_URL}/v1/publish`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${env.TIDINGS_API_KEY}`,
          'content-type': 'application/json',
          'idempotency-key': `${runId}-${n}`,
        },
        body: JSON.stringify({ room: ROOM, event: 'tick', data: { n } }),
        signal: AbortSignal.timeout(5000),
      });
      const text = await res.text();
      if (res.status === 200) return JSON.parse(text);
      pub.failures.push({ n, status: res.status, text: text.slice(0, 120), at: startedAt });
    } catch (err) {
      pub.failures.push({ n, status: 0, text: String(err).slice(0, 120), at: startedAt });
    }
    return null;
  };
  pub.done = (async () => {
    while (!pub.stopped) {
      const n = pub.next;
      const started = Date.now();
      let answer = null;
      const giveUpAt = Date.now() + 30_000;
      for (let attempt = 0; answer === null; attempt++) {
        if (attempt > 0) {
          pub.retried.add(n);
          if (Date.now() > giveUpAt) throw new Error(`publish #${n} failed for 30 s: ${JSON.stringify(pub.failures.slice(-3))}`);
          await sleep(100);
        }
        pub.attempts += 1;
        answer = await once(n);
      }
      if (answer.repeated) pub.repeated.push(n);
      pub.lastOkAt = Date.now();
      pub.next = n + 1;
      const wait = intervalMs - (Date.now() - started);
      if (wait > 0) await sleep(wait);
    }
  })();
  pub.stop = async () => {
    pub.stopped = true;
    await pub.done;
    return pub.next;
  };
  return pub;
}

/** Does POST /v1/publish honour Idempotency-Key (a second publish with the same key is answered as a repeat)? */
async function idempotencySupported(env) {
  const key = `probe-${randomBytes(6).toString('hex')}`;
  const answers = [];
  for (let i = 0; i < 2; i++) {
    const res = await fetch(`${env.NGINX_URL}/v1/publish`, {
      method: 'POST',
      headers: { authorization: `Bearer ${env.TIDINGS_API_KEY}`, 'content-type': 'application/json', 'idempotency-key': key },
      body: JSON.stringify({ room: 'deploy-probe', event: 'probe', data: {} }),
    });
    const text = await res.text();
    assert.equal(res.status, 200, `probe publish: ${text}`);
    answers.push(JSON.parse(text));
  }
  return answers[1].repeated === true || answers[0].offset === answers[1].offset;
}

describe('deploy: the local cluster of deploy/ (nginx, 3 nodes, Redis + Sentinel)', () => {
  test('clients through nginx get every event once, in order, across a Redis failover, a killed node and a drained one; down stops everything', T, async (t) => {
    const t0 = Date.now();
    try {
      await cluster('up');
      const upMs = Date.now() - t0;
      const env = clusterEnv();
      const pids = pidFiles();
      const nodeUrls = env.NODE_URLS.split(',');
      const sentinelPorts = env.SENTINEL_PORTS.split(',').map(Number);
      const ca = readFileSync(path.join(state, 'nginx', 'tls', 'tls.crt'));
      const toml = { drainSecs: Number(/^drain_secs\s*=\s*(\d+)/m.exec(readFileSync(path.join(state, 'config', 'tidings.toml'), 'utf8'))[1]) };

      // The nodes' ids, to tell which node owns a client (an Engine.IO session id starts with its node's id).
      const nodes = await (await fetch(`${env.NGINX_URL}/v1/nodes`, { headers: { authorization: `Bearer ${env.TIDINGS_API_KEY}` } })).json();
      assert.equal(nodes.nodes.length, 3, `nodes seen through nginx: ${JSON.stringify(nodes)}`);
      const nodeOfSid = (sid) => nodes.nodes.find((n) => sid.startsWith(n.id));

      // Clients, all through nginx: two of each transport setup, one more over TLS.
      const kinds = [
        ['ws', { transports: ['websocket'] }],
        ['polling-first', {}],
        ['polling', { transports: ['polling'] }],
      ];
      const recs = [];
      for (let i = 0; i < 7; i++) {
        const [kind, opts] = i < 6 ? kinds[i % 3] : ['tls-polling-first', { ca }];
        const url = i < 6 ? env.NGINX_URL : env.NGINX_TLS_URL;
        const socket = io(url, {
          forceNew: true,
          auth: { token: token({ sub: `user-${i}`, rooms: [ROOM], join: [ROOM], secret: env.TIDINGS_JWT_SECRET }) },
          reconnectionDelay: 100,
          reconnectionDelayMax: 1000,
          timeout: 5000,
          ...opts,
        });
        sockets.add(socket);
        const rec = record(socket, `${kind}#${i}`);
        rec.kind = kind;
        recs.push(rec);
      }
      await eventually(() => recs.every((r) => r.socket.connected), { timeoutMs: 10_000, what: 'every client to connect through nginx' });
      // The polling-first clients upgrade to websocket; let that happen before the faults.
      await eventually(() => recs.filter((r) => r.kind.includes('first')).every((r) => r.socket.io.engine.transport.name === 'websocket'), {
        timeoutMs: 5000,
        what: 'the polling-first clients to upgrade',
      });
      for (const rec of recs) rec.node = nodeOfSid(rec.socket.io.engine.id);
      assert.ok(recs.every((r) => r.node), `a client whose session id names no node: ${recs.map((r) => r.socket.io.engine.id)}`);
      const perNode = new Map();
      for (const rec of recs) perNode.set(rec.node.url, [...(perNode.get(rec.node.url) || []), rec]);
      assert.equal(perNode.size, 3, `round robin spreads the clients over every node: ${[...perNode].map(([u, r]) => `${u}:${r.length}`)}`);

      const strict = await idempotencySupported(env);
      const runId = randomBytes(4).toString('hex');
      const pub = startPublisher(env, runId);
      await eventually(() => pub.next >= 25, { timeoutMs: 10_000, what: 'the first publishes' });

      // 1. The Redis master dies; the Sentinels promote the replica; publishing resumes.
      const masterKilledAt = Date.now();
      process.kill(pids['redis-master'], 'SIGKILL');
      await eventually(
        async () => Number((await redisCall(sentinelPorts[0], 'SENTINEL', 'get-master-addr-by-name', env.MASTER_NAME))?.[1]) === Number(env.REDIS_REPLICA_PORT),
        { timeoutMs: 20_000, intervalMs: 100, what: 'the Sentinels to promote the replica' },
      );
      const failoverMs = Date.now() - masterKilledAt;
      await eventually(() => pub.lastOkAt > masterKilledAt + failoverMs, { timeoutMs: 15_000, what: 'publishing to resume after the failover' });
      const publishGapMs = pub.lastOkAt - masterKilledAt;
      // Two faults, one after the other: the nodes finish reconnecting to the new master before the next one —
      // ready, and each node's registry entry (which forwarding to a session's owner reads) written by a
      // heartbeat since the master died. (Until then an entry may expire and requests forwarded to its node
      // are answered "Session ID unknown".)
      const prefix = /^key_prefix\s*=\s*"([^"]+)"/m.exec(readFileSync(path.join(state, 'config', 'tidings.toml'), 'utf8'))[1];
      await eventually(() => healed(env, nodeUrls), { timeoutMs: 15_000, intervalMs: 200, what: 'every node to be ready' });
      await eventually(
        async () => {
          for (const n of nodes.nodes) {
            const ttl = await redisCall(Number(env.REDIS_REPLICA_PORT), 'PTTL', `${prefix}:node:${n.id}`);
            if (ttl < 0 || Date.now() + ttl < masterKilledAt + REGISTRY_ENTRY_TTL_MS + 200) return false;
          }
          return true;
        },
        { timeoutMs: 15_000, intervalMs: 100, what: 'every node to renew its registry entry on the new master' },
      );
      const healedMs = Date.now() - masterKilledAt;

      // 2. The node holding the most clients dies; its clients reconnect through nginx and recover.
      const [victimUrl, victims] = [...perNode].sort((a, b) => b[1].length - a[1].length)[0];
      const victimName = `tidings-${nodeUrls.indexOf(victimUrl) + 1}`;
      const connectsBefore = new Map(recs.map((r) => [r, r.connects.length]));
      const nodeKilledAt = Date.now();
      process.kill(pids[victimName], 'SIGKILL');
      await eventually(() => victims.every((r) => r.connects.length > connectsBefore.get(r) && r.socket.connected), {
        timeoutMs: 20_000,
        what: `the killed node's clients (${victims.map((r) => r.label)}) to reconnect`,
      });
      const reconnectMs = Math.max(...victims.map((r) => r.connects.at(-1).at)) - nodeKilledAt;
      await sleep(500);

      // 3. Another node is stopped the way an orchestrator stops it (SIGTERM): it turns unready, answers new
      // handshakes 503 (nginx tries the next node, so new clients connect all the same), hands its clients over
      // within drain_window_secs (they reconnect through nginx and recover), and exits.
      for (const rec of recs) rec.node = nodeOfSid(rec.socket.io.engine.id);
      const drained = nodes.nodes.filter((n) => n.url !== victimUrl).sort((a, b) => recs.filter((r) => r.node === b).length - recs.filter((r) => r.node === a).length)[0];
      const drainedRecs = recs.filter((r) => r.node === drained);
      const drainedName = `tidings-${nodeUrls.indexOf(drained.url) + 1}`;
      const drainConnects = new Map(recs.map((r) => [r, r.connects.length]));
      const drainAt = Date.now();
      process.kill(pids[drainedName], 'SIGTERM');
      await eventually(async () => (await fetch(`${drained.url}/readyz`)).status === 503, { timeoutMs: 3000, what: `${drainedName} to turn unready` });
      const newcomers = [];
      for (let i = 0; i < 6; i++) {
        const socket = io(env.NGINX_URL, {
          forceNew: true,
          reconnection: false,
          auth: { token: token({ sub: `late-${i}`, rooms: [ROOM], secret: env.TIDINGS_JWT_SECRET }) },
          ...(i % 2 ? { transports: ['websocket'] } : { transports: ['polling'] }),
        });
        sockets.add(socket);
        newcomers.push(
          new Promise((resolve) => {
            socket.once('connect', () => resolve({ ok: true, node: nodeOfSid(socket.io.engine.id)?.url }));
            socket.once('connect_error', (err) => resolve({ ok: false, error: err.message }));
          }),
        );
      }
      const arrivals = await Promise.all(newcomers);
      assert.deepEqual(arrivals.filter((a) => !a.ok || a.node === drained.url), [], `handshakes through nginx while ${drainedName} drains`);
      await eventually(() => !alive(pids[drainedName]), { timeoutMs: (toml.drainSecs + 5) * 1000, what: `${drainedName} to exit` });
      const drainExitMs = Date.now() - drainAt;
      await eventually(() => drainedRecs.every((r) => r.connects.length > drainConnects.get(r) && r.socket.connected), {
        timeoutMs: 10_000,
        what: `${drainedName}'s clients to reconnect`,
      });
      await sleep(500);
      const total = await pub.stop();

      // Every client ends up with 0..total-1.
      const ticks = (rec) => rec.log.filter((x) => x.event === 'tick');
      const complete = (r) => r.socket.connected && new Set(ticks(r).map((x) => x.data.n)).size >= total;
      await eventually(() => recs.every(complete), { timeoutMs: 15_000, what: `every client to have all ${total} events` }).catch((err) => {
        const short = recs.filter((r) => !complete(r)).map((r) => {
          const have = new Set(ticks(r).map((x) => x.data.n));
          const missing = [...Array(total).keys()].filter((n) => !have.has(n));
          return `${r.label} on ${r.node.url}: connected ${r.socket.connected}, ${have.size}/${total}, missing ${missing.slice(0, 30)}, connects ${JSON.stringify(r.connects)}, disconnects ${JSON.stringify(r.disconnects)}`;
        });
        throw new Error(`${err.message}\n${short.join('\n')}\nmaster killed at ${masterKilledAt}, node killed at ${nodeKilledAt}; publish failures ${JSON.stringify(pub.failures.slice(0, 10))}`);
      });
      await sleep(300); // room for a late duplicate to show

      const retriedAndRepeated = [];
      for (const rec of recs) {
        const got = ticks(rec);
        let prev = -1n;
        for (const g of got) {
          assert.equal(typeof g.offset, 'string', `${rec.label}: event ${g.data.n} without an offset`);
          assert.ok(BigInt(g.offset) > prev, `${rec.label}: offsets not increasing at #${g.data.n}`);
          prev = BigInt(g.offset);
        }
        let ns = got.map((x) => x.data.n);
        if (!strict) {
          // Without Idempotency-Key a retried publish the server had applied arrives twice, back to back.
          const dedup = ns.filter((n, i) => !(i > 0 && ns[i - 1] === n && pub.retried.has(n)));
          if (dedup.length !== ns.length) retriedAndRepeated.push(`${rec.label}:${ns.length - dedup.length}`);
          ns = dedup;
        }
        assert.deepEqual(ns, [...Array(total).keys()], `${rec.label}: events missing, repeated or out of order`);
      }
      for (const rec of [...victims, ...drainedRecs]) {
        assert.equal(rec.connects.at(-1).recovered, true, `${rec.label} (on the killed or drained node) did not recover its session`);
      }
      for (const rec of recs) {
        if (rec.connects.length > 1) assert.equal(rec.connects.at(-1).recovered, true, `${rec.label} reconnected without recovering`);
      }
      // A websocket client of a surviving node has its own TCP path through nginx to that node: untouched.
      for (const rec of recs.filter((r) => r.kind === 'ws' && !victims.includes(r) && !drainedRecs.includes(r))) {
        assert.deepEqual(rec.disconnects, [], `${rec.label} on a surviving node was disconnected`);
      }

      // The HPA's metric, read where Prometheus scrapes it (the admin port of a surviving node).
      const survivor = [1, 2, 3].find((i) => ![victimName, drainedName].includes(`tidings-${i}`));
      const metrics = await (await fetch(`${env[`NODE_${survivor}_ADMIN_URL`]}/metrics`)).text();
      t.diagnostic(`HPA metric tidings_connections on a live node: ${/^tidings_connections[{ ]/m.test(metrics) ? 'present' : 'ABSENT'}`);

      for (const s of sockets) s.close();
      sockets.clear();

      // down: every process of the cluster (and nginx's workers) gone, every port closed.
      const before = pidFiles();
      const workers = childrenOf(before.nginx);
      const downAt = Date.now();
      const downOutput = await cluster('down');
      const downMs = Date.now() - downAt;
      const everyPid = [...Object.values(before), ...workers];
      assert.deepEqual(everyPid.filter(alive), [], 'processes left after down');
      const ports = env.PORTS.split(',').map(Number);
      const open = [];
      for (const p of ports) if (await listening(p)) open.push(p);
      assert.deepEqual(open, [], 'ports still listening after down');

      // The nodes run with TIDINGS_LOG_FORMAT=json, as in compose and Kubernetes: one JSON object per log line
      // (checked when the server has --log-format).
      const jsonLogs = execFileSync(TIDINGS_BIN, ['serve', '--help'], { encoding: 'utf8' }).includes('--log-format');
      if (jsonLogs) {
        for (const i of [1, 2, 3]) {
          const lines = readFileSync(path.join(state, 'logs', `tidings-${i}.log`), 'utf8').split('\n');
          const plain = lines.filter((l) => /^\d{4}-\d\d-\d\dT\S+\s+(TRACE|DEBUG|INFO|WARN|ERROR)\s/.test(l));
          assert.deepEqual(plain, [], `tidings-${i}: log lines that are not JSON`);
          const json = lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
          assert.ok(json.length > 0, `tidings-${i}: no JSON log line`);
        }
      }
      t.diagnostic(`node logs: ${jsonLogs ? 'JSON, checked' : 'plain (this server has no --log-format)'}`);

      t.diagnostic(
        `up ${upMs} ms; ${recs.length} clients (${[...perNode].map(([u, r]) => `${r.length} on ${u}`).join(', ')}); ` +
          `${total} events published in ${pub.attempts} attempts (${pub.failures.length} failed and retried: ` +
          `${JSON.stringify(countBy(pub.failures, (f) => f.status))}); ` +
          `Idempotency-Key ${strict ? `honoured: exactly-once checked (${pub.repeated.length} retries answered as repeats)` : 'not supported by this server: back-to-back repeats of retried events tolerated'}` +
          `${retriedAndRepeated.length ? ` (${retriedAndRepeated.join(' ')})` : ''}; ` +
          `failover ${failoverMs} ms after SIGKILL of the master, publishing resumed after ${publishGapMs} ms, every node ready and registered again after ${healedMs} ms; ` +
          `killed ${victimName} (${victims.length} clients): last one back ${reconnectMs} ms later; ` +
          `SIGTERM to ${drainedName} (${drainedRecs.length} clients): ${arrivals.length} new clients connected elsewhere through nginx meanwhile, ` +
          `it exited after ${drainExitMs} ms; down took ${downMs} ms${downMs > 5000 ? ` (${downOutput.trim().replaceAll('\n', '; ')})` : ''}`,
      );
    } catch (err) {
      keepState = true;
      throw err;
    }
  });
});
