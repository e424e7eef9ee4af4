// Connection state recovery with the stock socket.io-client: a client whose transport dies comes back
// with the same socket id and rooms and gets every event it missed exactly once and in order, then live
// events with no gap or duplicate at the seam; or, when the session cannot be recovered (expired, history
// does not cover the gap, server restarted, deliberate disconnect), a clean fresh session and never a
// partial replay.
//
// Clients connect through a TCP proxy (./proxy.mjs) that kills their connections; HTTP publishes go
// straight to the server.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import {
  API_KEY,
  SECRET,
  TIDINGS_BIN,
  api,
  ask,
  assertOk,
  awaitConnect,
  barrier,
  client,
  closeAllClients,
  collect,
  eventually,
  mustPublish,
  sleep,
  startServer,
  token,
  uid,
  waitFor,
} from './helpers.mjs';
import { startProxy } from './proxy.mjs';

const T = { timeout: 15_000 };
const N = 20; // events published while the client is away
const RECONNECT = { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 200 };

// ---------------------------------------------------------------------------
// local helpers

/** A client through `proxy` that reconnects quickly; `socket.connects` logs every connect. */
function recoverableClient(proxy, opts) {
  const socket = client(proxy, { ...RECONNECT, ...opts });
  socket.connects = [];
  socket.on('connect', () => socket.connects.push({ id: socket.id, recovered: socket.recovered }));
  return socket;
}

/** Resolves with {id, recovered} at the socket's next `connect`. */
function nextConnect(socket, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.off('connect', onConnect);
      reject(new Error(`socket did not reconnect within ${timeoutMs} ms`));
    }, timeoutMs);
    function onConnect() {
      clearTimeout(timer);
      socket.off('connect', onConnect);
      resolve({ id: socket.id, recovered: socket.recovered });
    }
    socket.on('connect', onConnect);
  });
}

/**
 * Kill the client's transport via the proxy and keep it away (new connections refused) until
 * `proxy.resume()`. Resolves with the disconnect reason once the client noticed.
 */
async function killAndHold(proxy, socket, side, { lingerMs = 0 } = {}) {
  const disconnected = waitFor(socket, 'disconnect', 8000);
  disconnected.catch(() => {});
  // A polling client may have no request in flight at this very moment (an idle keep-alive connection
  // dies unnoticed); its next request is then refused, which it does notice. Kill again if it did not.
  for (let attempt = 0; ; attempt++) {
    proxy.dropAll({ side, lingerMs });
    proxy.pause({ refuseNew: true });
    const reason = await Promise.race([disconnected, sleep(1500).then(() => null)]);
    if (reason !== null) return reason;
    if (attempt >= 4) return disconnected; // throws the timeout
  }
}

/** Publish `data` to `room`; returns the offset the server assigned. */
async function pub(server, room, data, event = 'ev') {
  const res = await mustPublish(server, { room, event, data });
  assert.equal(res.json?.ok, true, res.text);
  assert.equal(typeof res.json.offset, 'string', `publish answer without a string offset: ${res.text}`);
  return res.json.offset;
}

function assertStrictlyIncreasing(offsets, what = 'offsets') {
  for (let i = 0; i < offsets.length; i++) {
    assert.equal(typeof offsets[i], 'string', `${what}[${i}] is not a string offset: ${JSON.stringify(offsets[i])}`);
    if (i > 0) {
      assert.ok(
        BigInt(offsets[i]) > BigInt(offsets[i - 1]),
        `${what} not strictly increasing at ${i}: ${offsets[i - 1]} then ${offsets[i]} (all: ${offsets.join(',')})`,
      );
    }
  }
}

const range = (from, to) => Array.from({ length: to - from }, (_, i) => from + i);

/** Record every byte the server sends to clients through `proxy` from now on. */
function tapServerToClient(proxy) {
  const chunks = [];
  proxy.onData = (dir, chunk) => {
    if (dir === 's2c') chunks.push(Buffer.from(chunk));
  };
  return { text: () => Buffer.concat(chunks).toString('latin1') };
}

/**
 * Spawn tidings on a given port (helpers.startServer always picks a free port itself). Same defaults
 * as startServer: SECRET, API_KEY, TIDINGS_LOG=warn.
 */
async function startServerOnPort(port, { config = '', args = [] } = {}) {
  const argv = ['serve', '--listen', `127.0.0.1:${port}`, '--jwt-secret', SECRET, '--api-key', API_KEY, ...args];
  let tmp = null;
  if (config) {
    tmp = mkdtempSync(path.join(tmpdir(), 'tidings-recovery-'));
    writeFileSync(path.join(tmp, 'tidings.toml'), config);
    argv.push('--config', path.join(tmp, 'tidings.toml'));
  }
  const proc = spawn(TIDINGS_BIN, argv, {
    env: { ...process.env, TIDINGS_LOG: process.env.TIDINGS_TEST_LOG || 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const keep = (c) => {
    output = (output + c.toString()).slice(-65536);
    if (process.env.TIDINGS_TEST_VERBOSE) process.stderr.write(c);
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  let exitInfo = null;
  const exited = new Promise((resolve) => {
    proc.once('exit', (code, signal) => resolve((exitInfo = { code, signal })));
    proc.once('error', (error) => resolve((exitInfo ??= { code: null, signal: null, error })));
  });
  const kill = () => {
    try {
      proc.kill('SIGKILL');
    } catch {
      /* gone */
    }
  };
  process.once('exit', kill);
  const url = `http://127.0.0.1:${port}`;
  const server = {
    url,
    port,
    secret: SECRET,
    apiKey: API_KEY,
    proc,
    exited,
    stderr: () => output,
    async stop({ signal = 'SIGTERM' } = {}) {
      if (!exitInfo) {
        try {
          proc.kill(signal);
        } catch {
          /* gone */
        }
        const t = setTimeout(kill, 5000);
        await exited;
        clearTimeout(t);
      }
      if (tmp) rmSync(tmp, { recursive: true, force: true });
      tmp = null;
      return exitInfo;
    },
  };
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (exitInfo) throw new Error(`tidings exited during startup ${JSON.stringify(exitInfo)}\n${output}`);
    const ok = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1000) }).then(
      (r) => r.status === 200,
      () => false,
    );
    if (ok) return server;
    if (Date.now() > deadline) {
      await server.stop({ signal: 'SIGKILL' });
      throw new Error(`tidings on port ${port} did not become healthy\n${output}`);
    }
    await sleep(50);
  }
}

// ---------------------------------------------------------------------------

const MODES = [
  ['websocket', ['websocket']],
  ['polling', ['polling']],
];
// default transports: polling, then the upgrade to websocket (killed once the upgrade is done)
const UPGRADE = ['polling→websocket', ['polling', 'websocket']];

/** Wait until a polling → websocket upgrade finished (a kill in the middle of it is another story). */
async function upgraded(socket) {
  if (socket.io.engine.transport.name !== 'websocket') await waitFor(socket.io.engine, 'upgrade', 5000);
}

describe('connection state recovery', () => {
  let server;
  const proxies = [];
  const servers = [];

  async function proxyTo(target) {
    const p = await startProxy(target);
    proxies.push(p);
    return p;
  }
  async function extraServer(opts) {
    const s = await startServer(opts);
    servers.push(s);
    return s;
  }

  before(async () => {
    server = await startServer();
  });
  afterEach(async () => {
    closeAllClients();
    await Promise.all(proxies.splice(0).map((p) => p.close()));
    await Promise.all(servers.splice(0).map((s) => s.stop({ signal: 'SIGKILL' })));
  });
  after(async () => {
    closeAllClients();
    await server?.stop();
  });

  for (const [mode, transports] of [...MODES, UPGRADE]) {
    for (const side of ['client', 'server']) {
      test(`${mode}, killed on the ${side} side: same id, the ${N} missed events once and in order, no seam`, T, async () => {
        const proxy = await proxyTo(server);
        const room = uid('rec');
        const sub = uid('u');
        const socket = recoverableClient(proxy, { token: token({ sub, rooms: [room] }), transports });
        await awaitConnect(socket);
        const id0 = socket.id;
        assert.equal(socket.recovered, false);
        assertOk(await ask(socket, 'subscribe', room));
        const got = collect(socket, 'ev');
        const published = [];

        for (let seq = 0; seq < 3; seq++) published.push(await pub(server, room, { seq, phase: 'live' }));
        await got.waitForCount(3);
        if (transports.length > 1) await upgraded(socket);

        const reconnected = nextConnect(socket);
        const reason = await killAndHold(proxy, socket, side);
        assert.equal(socket.connected, false);
        for (let seq = 3; seq < 3 + N; seq++) published.push(await pub(server, room, { seq, phase: 'gap' }));
        proxy.resume();
        const c = await reconnected;
        assert.equal(c.recovered, true, `not recovered after "${reason}" (new id ${c.id}, old ${id0})`);
        assert.equal(c.id, id0);
        await got.waitForCount(3 + N, 5000);

        for (let seq = 3 + N; seq < 3 + N + 5; seq++) published.push(await pub(server, room, { seq, phase: 'after' }));
        await got.waitForCount(3 + N + 5, 5000);
        await barrier(server, socket, sub);

        assert.deepEqual(got.items.map((d) => d.seq), range(0, 3 + N + 5));
        const offsets = got.args.map((a) => a[1]);
        assertStrictlyIncreasing(offsets);
        assert.deepEqual(offsets, published, 'client offsets differ from the offsets the publishes returned');
        assert.deepEqual(socket.connects, [
          { id: id0, recovered: false },
          { id: id0, recovered: true },
        ]);
      });
    }
  }

  test('old connection not yet known dead (server-facing socket lingers open): taken over and recovered', T, async () => {
    const proxy = await proxyTo(server);
    const room = uid('linger');
    const sub = uid('u');
    const socket = recoverableClient(proxy, { token: token({ sub, join: [room] }), transports: ['websocket'] });
    await awaitConnect(socket);
    const id0 = socket.id;
    const got = collect(socket, 'ev');
    const published = [];
    for (let seq = 0; seq < 3; seq++) published.push(await pub(server, room, { seq }));
    await got.waitForCount(3);

    const reconnected = nextConnect(socket);
    await killAndHold(proxy, socket, 'client', { lingerMs: 8000 });
    for (let seq = 3; seq < 3 + N; seq++) published.push(await pub(server, room, { seq }));
    proxy.resume();
    const c = await reconnected;
    assert.equal(c.recovered, true);
    assert.equal(c.id, id0);
    for (let seq = 3 + N; seq < 3 + N + 5; seq++) published.push(await pub(server, room, { seq }));
    await got.waitForCount(3 + N + 5, 5000);
    await barrier(server, socket, sub);
    assert.deepEqual(got.items.map((d) => d.seq), range(0, 3 + N + 5));
    assert.deepEqual(got.args.map((a) => a[1]), published);
  });

  for (const [mode, transports] of MODES) {
    test(`${mode}: a client that received no event yet (pid, no offset) recovers the gap`, T, async () => {
      const proxy = await proxyTo(server);
      const room = uid('fresh');
      const sub = uid('u');
      const socket = recoverableClient(proxy, { token: token({ sub, rooms: [room] }), transports });
      await awaitConnect(socket);
      const id0 = socket.id;
      assertOk(await ask(socket, 'subscribe', room));
      const got = collect(socket, 'ev');
      const published = [];

      const reconnected = nextConnect(socket);
      await killAndHold(proxy, socket, 'server');
      for (let seq = 0; seq < N; seq++) published.push(await pub(server, room, { seq }));
      proxy.resume();
      const c = await reconnected;
      assert.equal(c.recovered, true);
      assert.equal(c.id, id0);
      await got.waitForCount(N, 5000);
      for (let seq = N; seq < N + 3; seq++) published.push(await pub(server, room, { seq }));
      await got.waitForCount(N + 3, 5000);
      await barrier(server, socket, sub);
      assert.deepEqual(got.items.map((d) => d.seq), range(0, N + 3));
      assert.deepEqual(got.args.map((a) => a[1]), published);
    });
  }

  for (const [mode, transports] of MODES) {
    test(`${mode}: events of two rooms are replayed in global order`, T, async () => {
      const proxy = await proxyTo(server);
      const [ra, rb] = [uid('ra'), uid('rb')];
      const sub = uid('u');
      const socket = recoverableClient(proxy, { token: token({ sub, rooms: [ra, rb] }), transports });
      await awaitConnect(socket);
      const id0 = socket.id;
      assertOk(await ask(socket, 'subscribe', ra));
      assertOk(await ask(socket, 'subscribe', rb));
      const got = collect(socket, 'ev');
      const published = [];
      let g = 0;
      const both = async (count) => {
        for (let i = 0; i < count; i++, g++) {
          const room = g % 2 === 0 ? ra : rb;
          published.push(await pub(server, room, { room, g }));
        }
      };

      await both(4);
      await got.waitForCount(4);
      const reconnected = nextConnect(socket);
      await killAndHold(proxy, socket, 'client');
      await both(N);
      proxy.resume();
      const c = await reconnected;
      assert.equal(c.recovered, true);
      assert.equal(c.id, id0);
      await got.waitForCount(4 + N, 5000);
      await both(4);
      await got.waitForCount(8 + N, 5000);
      await barrier(server, socket, sub);

      assert.deepEqual(got.items.map((d) => d.g), range(0, 8 + N));
      assert.deepEqual(got.items.map((d) => d.room), range(0, 8 + N).map((i) => (i % 2 === 0 ? ra : rb)));
      const offsets = got.args.map((a) => a[1]);
      assertStrictlyIncreasing(offsets);
      assert.deepEqual(offsets, published);
    });
  }

  /**
   * Connect (join claim on `room`), get a few live events, go away, let `duringGap` publish (tagged
   * GAPMARK) and wait, come back: expect a fresh, unrecovered session, no gap event (neither at the
   * client nor on the wire), and a working client.
   */
  async function expectFreshSession(srv, transports, duringGap, { side = 'server' } = {}) {
    const proxy = await proxyTo(srv);
    const room = uid('lost');
    const sub = uid('u');
    const socket = recoverableClient(proxy, { token: token({ sub, join: [room] }), transports });
    await awaitConnect(socket);
    const id0 = socket.id;
    const got = collect(socket, 'ev');
    for (let seq = 0; seq < 3; seq++) await pub(srv, room, { seq, tag: 'LIVEMARK' });
    await got.waitForCount(3);

    const reconnected = nextConnect(socket);
    await killAndHold(proxy, socket, side);
    const wire = tapServerToClient(proxy);
    await duringGap(room);
    proxy.resume();
    const c = await reconnected;
    assert.equal(c.recovered, false, 'recovered although the session could not be');
    assert.notEqual(c.id, id0, 'a fresh session must have a new socket id');

    // still works: the join claim put the fresh session in the room again
    await pub(srv, room, { seq: 'after', tag: 'AFTERMARK' });
    await got.waitForCount(4, 5000);
    await barrier(srv, socket, sub);
    assert.deepEqual(got.items.map((d) => d.seq), [0, 1, 2, 'after'], 'gap events delivered to a fresh session');
    const bytes = wire.text();
    assert.ok(bytes.includes('AFTERMARK'), 'the wire tap did not see the live event (tap broken?)');
    assert.ok(!bytes.includes('GAPMARK'), `a gap event went over the wire to the fresh session:\n${bytes.slice(0, 2000)}`);
    return socket;
  }

  for (const [mode, transports] of MODES) {
    test(`${mode}: gap beyond history (max_events = 5, ${N} missed) → fresh session, no partial replay`, T, async () => {
      const srv = await extraServer({ config: '[history]\nmax_events = 5\n' });
      await expectFreshSession(srv, transports, async (room) => {
        for (let seq = 3; seq < 3 + N; seq++) await pub(srv, room, { seq, tag: 'GAPMARK' });
      });
    });
  }

  test(`gap exactly as long as the history (max_events = 5, 5 missed) → recovered, all 5 replayed`, T, async () => {
    const srv = await extraServer({ config: '[history]\nmax_events = 5\n' });
    const proxy = await proxyTo(srv);
    const room = uid('edge');
    const sub = uid('u');
    const socket = recoverableClient(proxy, { token: token({ sub, join: [room] }), transports: ['websocket'] });
    await awaitConnect(socket);
    const id0 = socket.id;
    const got = collect(socket, 'ev');
    const published = [];
    for (let seq = 0; seq < 3; seq++) published.push(await pub(srv, room, { seq }));
    await got.waitForCount(3);
    const reconnected = nextConnect(socket);
    await killAndHold(proxy, socket, 'server');
    // the client's own last event leaves the history; everything after it is still there
    for (let seq = 3; seq < 8; seq++) published.push(await pub(srv, room, { seq }));
    proxy.resume();
    const c = await reconnected;
    assert.equal(c.recovered, true);
    assert.equal(c.id, id0);
    published.push(await pub(srv, room, { seq: 8 }));
    await got.waitForCount(9, 5000);
    await barrier(srv, socket, sub);
    assert.deepEqual(got.items.map((d) => d.seq), range(0, 9));
    assert.deepEqual(got.args.map((a) => a[1]), published);
  });

  test('websocket: killed again in the middle of a replay → resumes from where the client got to', T, async () => {
    const proxy = await proxyTo(server);
    const room = uid('mid');
    const sub = uid('u');
    const socket = recoverableClient(proxy, { token: token({ sub, join: [room] }), transports: ['websocket'] });
    await awaitConnect(socket);
    const id0 = socket.id;
    const got = collect(socket, 'ev');
    const M = 600;
    const big = 'x'.repeat(2000); // ~1.2 MB of replay: it takes a while to arrive
    const reconnected = nextConnect(socket);
    await killAndHold(proxy, socket, 'server');
    const published = [];
    const events = [];
    for (let seq = 0; seq < M; seq++) events.push({ room, event: 'ev', data: { seq, big } });
    for (let i = 0; i < M; i += 200) {
      const res = await api(server, 'POST', '/v1/publish/batch', { body: { events: events.slice(i, i + 200) } });
      assert.equal(res.status, 200, res.text);
      published.push(...res.json.results.map((r) => r.offset));
    }
    proxy.resume();
    const c = await reconnected;
    assert.equal(c.recovered, true);
    // kill as soon as the replay started to arrive
    const again = nextConnect(socket);
    await eventually(() => got.items.length > 0, { timeoutMs: 5000, intervalMs: 1, what: 'the replay to start' });
    const before = got.items.length;
    await killAndHold(proxy, socket, 'client');
    const midway = got.items.length;
    proxy.resume();
    const c2 = await again;
    assert.equal(c2.recovered, true);
    assert.equal(c2.id, id0);
    await got.waitForCount(M, 10_000);
    await barrier(server, socket, sub);
    assert.deepEqual(got.items.map((d) => d.seq), range(0, M));
    assert.deepEqual(got.args.map((a) => a[1]), published);
    console.log(`# mid-replay kill: ${before}..${midway} of ${M} events had arrived when the transport died`);
  });

  test('websocket: gap aged out of history (max_age_secs = 1) → fresh session, no partial replay', T, async () => {
    const srv = await extraServer({ config: '[history]\nmax_age_secs = 1\n' });
    await expectFreshSession(srv, ['websocket'], async (room) => {
      for (let seq = 3; seq < 8; seq++) await pub(srv, room, { seq, tag: 'GAPMARK' });
      await sleep(2500);
    });
  });

  for (const [mode, transports] of MODES) {
    test(`${mode}: session expired (max_disconnection_secs = 1, away 3 s) → fresh session`, T, async () => {
      // short heartbeats so that the server notices a dead polling transport quickly too
      const srv = await extraServer({
        config: '[recovery]\nmax_disconnection_secs = 1\n[engine]\nping_interval_ms = 300\nping_timeout_ms = 300\n',
      });
      await expectFreshSession(srv, transports, async (room) => {
        for (let seq = 3; seq < 6; seq++) await pub(srv, room, { seq, tag: 'GAPMARK' });
        await sleep(3000);
      });
    });
  }

  test('server restart on the same port → not recovered, the client keeps working', T, async () => {
    const first = await extraServer();
    const port = first.port;
    const proxy = await proxyTo(first);
    const room = uid('restart');
    const sub = uid('u');
    const socket = recoverableClient(proxy, { token: token({ sub, join: [room] }), transports: ['websocket'] });
    await awaitConnect(socket);
    const id0 = socket.id;
    const got = collect(socket, 'ev');
    await pub(first, room, { seq: 0 });
    await got.waitForCount(1);

    const disconnected = waitFor(socket, 'disconnect', 5000);
    const reconnected = nextConnect(socket);
    await first.stop({ signal: 'SIGKILL' }); // a crash: every in-memory session and history is gone
    await disconnected;
    const second = await startServerOnPort(port);
    try {
      const c = await reconnected;
      assert.equal(c.recovered, false);
      assert.notEqual(c.id, id0);
      await pub(second, room, { seq: 1 });
      await got.waitForCount(2, 5000);
      await barrier(second, socket, sub);
      assert.deepEqual(got.items.map((d) => d.seq), [0, 1]);
    } finally {
      closeAllClients();
      await second.stop({ signal: 'SIGKILL' });
    }
  });

  // With a data directory, room history and sessions outlive the process: a stock client comes back to the
  // restarted node with its session and gets what was published while it was away, in order, once; offsets
  // keep increasing across the restart (after a crash they jump: numbers handed out live but never committed
  // are not reused).
  for (const [how, signal] of [
    ['graceful restart (SIGTERM)', 'SIGTERM'],
    ['kill -9 and restart', 'SIGKILL'],
  ]) {
    test(`data dir, ${how}: the client resumes its session and gets what it missed, in order, once`, T, async () => {
      const dir = mkdtempSync(path.join(tmpdir(), 'tidings-restart-'));
      const first = await extraServer({ args: ['--data-dir', dir] });
      const port = first.port;
      const room = uid('kept');
      const sub = uid('u');
      // Straight to the node: the restart itself drops the connection. The client stays away 1.5 s, so the
      // events published right after the restart are owed to it by recovery, not live.
      const socket = recoverableClient(first, {
        token: token({ sub, join: [room] }),
        transports: ['websocket'],
        reconnectionDelay: 1500,
        reconnectionDelayMax: 1500,
        randomizationFactor: 0,
      });
      await awaitConnect(socket);
      const id0 = socket.id;
      const got = collect(socket, 'ev');
      const offsets = [];
      for (let seq = 0; seq < 3; seq++) offsets.push(await pub(first, room, { seq }));
      await got.waitForCount(3);
      const disconnected = waitFor(socket, 'disconnect', 5000);
      const reconnected = nextConnect(socket, 12_000);
      await first.stop({ signal });
      await disconnected;
      const second = await startServerOnPort(port, { args: ['--data-dir', dir] });
      try {
        for (let seq = 3; seq < 6; seq++) offsets.push(await pub(second, room, { seq }));
        const c = await reconnected;
        assert.equal(c.recovered, true, 'the session was not recovered across the restart');
        assert.equal(c.id, id0);
        offsets.push(await pub(second, room, { seq: 6 }));
        await got.waitForCount(7, 5000);
        await barrier(second, socket, sub);
        assert.deepEqual(got.items.map((d) => d.seq), [0, 1, 2, 3, 4, 5, 6]);
        assertStrictlyIncreasing(offsets);
        assert.deepEqual(got.args.map((a) => a[a.length - 1]), offsets, 'offsets seen by the client');
        const history = await api(second, 'GET', `/v1/rooms/${room}/history?limit=100`);
        assert.deepEqual(
          history.json.events.map((e) => e.data.seq),
          [0, 1, 2, 3, 4, 5, 6],
          'the room history across the restart',
        );
      } finally {
        closeAllClients();
        await second.stop({ signal: 'SIGKILL' });
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }

  for (const [mode, transports] of MODES) {
    test(`${mode}: deliberate disconnect() then connect() → new session, nothing replayed`, T, async () => {
      const proxy = await proxyTo(server);
      const room = uid('bye');
      const sub = uid('u');
      const socket = recoverableClient(proxy, { token: token({ sub, join: [room] }), transports });
      await awaitConnect(socket);
      const id0 = socket.id;
      const got = collect(socket, 'ev');
      await pub(server, room, { seq: 0 });
      await got.waitForCount(1);

      socket.disconnect();
      // let the server process the DISCONNECT before publishing
      await sleep(200);
      for (let seq = 1; seq <= 5; seq++) await pub(server, room, { seq, tag: 'GAPMARK' });
      const reconnected = nextConnect(socket);
      socket.connect();
      const c = await reconnected;
      assert.equal(c.recovered, false);
      assert.notEqual(c.id, id0);
      await pub(server, room, { seq: 'after' });
      await got.waitForCount(2, 5000);
      await barrier(server, socket, sub);
      assert.deepEqual(got.items.map((d) => d.seq), [0, 'after']);
    });
  }
});
