// Graceful shutdown: SIGTERM closes every client cleanly and the process exits 0.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { closeAllClients, connect, startServer, token, uid, waitFor, withTimeout } from './helpers.mjs';

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

  test('SIGTERM with no clients exits 0 promptly', { timeout: 15_000 }, async () => {
    const server = await startServer();
    servers.push(server);
    server.proc.kill('SIGTERM');
    const exit = await withTimeout(server.exited, 5000, 'server exit after SIGTERM');
    assert.deepEqual(exit, { code: 0, signal: null }, `server output:\n${server.stderr()}`);
  });
});
