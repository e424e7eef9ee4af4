// Graceful shutdown: SIGTERM drains the node (readiness false first, new clients refused, open ones closed evenly
// over the drain window) and the process exits 0 when the last client is gone.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, describe, test } from 'node:test';
import {
  MANY_CLIENTS_CONFIG,
  closeAllClients,
  connect,
  connectMany,
  sleep,
  startServer,
  token,
  uid,
  waitFor,
  withTimeout,
} from './helpers.mjs';

/** GET `path` on the node with extra headers; resolves `{status, body}` (upgrade answers count as 101). */
function get(server, path, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get(server.url + path, { headers, timeout: 3000 }, (res) => {
      let body = '';
      res.on('data', (chunk) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode, body: '' });
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path} timed out`)));
    req.on('error', reject);
  });
}

const WS_HANDSHAKE = {
  connection: 'Upgrade',
  upgrade: 'websocket',
  'sec-websocket-version': '13',
  'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
};

const CLEAN_REASONS = ['io server disconnect', 'transport close'];
const DRAIN_MS = 12_000;

describe('shutdown', () => {
  const servers = [];
  after(async () => {
    closeAllClients();
    await Promise.all(servers.map((s) => s.stop({ signal: 'SIGKILL' })));
  });

  test('SIGTERM: websocket and polling clients get disconnect, process exits 0', { timeout: 20_000 }, async () => {
    const server = await startServer();
    servers.push(server);
    const ws = await connect(server, { token: token({ sub: uid('ws') }), transports: ['websocket'] });
    const poll = await connect(server, { token: token({ sub: uid('poll') }), transports: ['polling'] });
    const upgraded = await connect(server, { token: token({ sub: uid('up') }) });
    // let the polling → websocket upgrade finish first (a shutdown mid-upgrade is another story)
    if (upgraded.io.engine.transport.name !== 'websocket') await waitFor(upgraded.io.engine, 'upgrade', 5000);

    const reasons = {};
    const disconnects = Object.entries({ ws, poll, upgraded }).map(([name, s]) =>
      waitFor(s, 'disconnect', DRAIN_MS).then((reason) => {
        reasons[name] = reason;
      }),
    );

    const t0 = Date.now();
    server.proc.kill('SIGTERM');
    const exit = await withTimeout(server.exited, DRAIN_MS, 'server exit after SIGTERM');
    await withTimeout(Promise.all(disconnects), 5000, 'client disconnect events');
    const elapsed = Date.now() - t0;

    assert.deepEqual(exit, { code: 0, signal: null }, `server output:\n${server.stderr()}`);
    for (const [name, reason] of Object.entries(reasons)) {
      assert.ok(CLEAN_REASONS.includes(reason), `${name} disconnected with "${reason}", expected one of ${CLEAN_REASONS}`);
    }
    assert.equal(ws.connected, false);
    assert.equal(poll.connected, false);
    console.log(`# shutdown: exited in ${elapsed} ms; reasons ${JSON.stringify(reasons)}`);
  });

  test('drain: readiness false first, then refusals and closes spread over the window, exit when empty', { timeout: 30_000 }, async () => {
    const config = `${MANY_CLIENTS_CONFIG}[shutdown]\nunready_secs = 1\ndrain_window_secs = 2\ndrain_secs = 15\n`;
    const server = await startServer({ config });
    servers.push(server);
    const clients = await connectMany(server, 40, (i) => ({
      token: token({ sub: uid(`d${i}`) }),
      transports: i % 2 ? ['websocket'] : ['polling'],
      reconnection: false,
    }));
    assert.equal((await get(server, '/readyz')).status, 200);
    const closedAt = [];
    const gone = clients.map((socket) =>
      waitFor(socket, 'disconnect', 20_000).then((reason) => closedAt.push({ at: Date.now(), reason })),
    );

    const t0 = Date.now();
    server.proc.kill('SIGTERM');
    await sleep(300);
    const ready = await get(server, '/readyz');
    assert.equal(ready.status, 503, 'readiness goes false at once');
    assert.equal(JSON.parse(ready.body).draining, true);
    // While unready (1 s) the node still takes clients: a balancer may not have noticed yet.
    const late = await connect(server, { token: token({ sub: uid('late') }), reconnection: false });
    gone.push(waitFor(late, 'disconnect', 20_000).then((reason) => closedAt.push({ at: Date.now(), reason })));
    await sleep(Math.max(0, 1300 - (Date.now() - t0)));
    // Then new clients are refused before any upgrade, with 503, so a balancer tries another node.
    const polling = await get(server, '/socket.io/?EIO=4&transport=polling');
    assert.equal(polling.status, 503, `polling handshake while draining: ${polling.body}`);
    const ws = await get(server, '/socket.io/?EIO=4&transport=websocket', WS_HANDSHAKE);
    assert.equal(ws.status, 503, 'websocket handshake while draining');

    const exit = await withTimeout(server.exited, 12_000, 'server exit after the drain');
    const elapsed = Date.now() - t0;
    await withTimeout(Promise.all(gone), 5000, 'every client closed');
    assert.deepEqual(exit, { code: 0, signal: null }, `server output:\n${server.stderr()}`);
    const times = closedAt.map((c) => c.at - t0).sort((a, b) => a - b);
    assert.ok(times[0] >= 900, `no client is closed while unready (first at ${times[0]} ms)`);
    assert.ok(times.at(-1) - times[0] >= 1200, `closes are spread over the window: ${times[0]}..${times.at(-1)} ms`);
    assert.ok(elapsed < 8000, `exits when the last client is gone, not at the deadline (${elapsed} ms)`);
    for (const { reason } of closedAt) assert.ok(CLEAN_REASONS.includes(reason), reason);
    console.log(`# drain: 41 clients closed from ${times[0]} to ${times.at(-1)} ms; exit at ${elapsed} ms`);
  });

  test('a second SIGTERM closes what is left at once', { timeout: 30_000 }, async () => {
    const config = `${MANY_CLIENTS_CONFIG}[shutdown]\ndrain_window_secs = 30\ndrain_secs = 60\n`;
    const server = await startServer({ config });
    servers.push(server);
    const clients = await connectMany(server, 20, (i) => ({ token: token({ sub: uid(`h${i}`) }), reconnection: false }));
    const gone = clients.map((socket) => waitFor(socket, 'disconnect', 20_000));
    const t0 = Date.now();
    server.proc.kill('SIGTERM');
    await sleep(700);
    assert.ok(clients.some((s) => s.connected), 'the 30 s window leaves clients open after 0.7 s');
    server.proc.kill('SIGTERM');
    const exit = await withTimeout(server.exited, 5000, 'server exit after the second signal');
    await withTimeout(Promise.all(gone), 5000, 'every client closed');
    assert.deepEqual(exit, { code: 0, signal: null }, `server output:\n${server.stderr()}`);
    console.log(`# second signal: exit at ${Date.now() - t0} ms`);
  });

  test('SIGTERM with no clients exits 0 promptly', { timeout: 15_000 }, async () => {
    const server = await startServer();
    servers.push(server);
    server.proc.kill('SIGTERM');
    const exit = await withTimeout(server.exited, 5000, 'server exit after SIGTERM');
    assert.deepEqual(exit, { code: 0, signal: null }, `server output:\n${server.stderr()}`);
  });
});
