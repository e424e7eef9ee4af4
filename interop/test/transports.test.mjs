// Engine.IO transports: websocket only, polling only, polling → websocket upgrade.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import {
  closeAllClients,
  collect,
  connect,
  mustPublish,
  startServer,
  token,
  uid,
  waitFor,
} from './helpers.mjs';

const T = { timeout: 15_000 };

describe('transports', () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  afterEach(closeAllClients);
  after(async () => {
    closeAllClients();
    await server?.stop();
  });

  test('Engine.IO handshake advertises the default timings and the websocket upgrade', T, async () => {
    const res = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`, { signal: AbortSignal.timeout(5000) });
    assert.equal(res.status, 200);
    const body = await res.text();
    assert.equal(body[0], '0', `expected an OPEN packet, got ${JSON.stringify(body.slice(0, 100))}`);
    const open = JSON.parse(body.slice(1));
    assert.equal(typeof open.sid, 'string');
    assert.ok(open.sid.length > 0);
    assert.deepEqual(open.upgrades, ['websocket']);
    assert.equal(open.pingInterval, 25000);
    assert.equal(open.pingTimeout, 20000);
    assert.equal(open.maxPayload, 1000000);
  });

  async function roundTrip(transports) {
    const room = uid('tr');
    const opts = { token: token({ sub: uid('u'), join: [room] }) };
    if (transports) opts.transports = transports;
    const socket = await connect(server, opts);
    assert.equal(socket.connected, true);
    assert.equal(typeof socket.id, 'string');
    const got = waitFor(socket, 'news');
    await mustPublish(server, { room, event: 'news', data: { hello: 'world', n: 1 } });
    assert.deepEqual(await got, { hello: 'world', n: 1 });
    return { socket, room };
  }

  test('websocket only', T, async () => {
    const { socket } = await roundTrip(['websocket']);
    assert.equal(socket.io.engine.transport.name, 'websocket');
  });

  test('polling only', T, async () => {
    const { socket } = await roundTrip(['polling']);
    assert.equal(socket.io.engine.transport.name, 'polling');
  });

  test('polling only: many events in one long-poll payload arrive in order', T, async () => {
    const room = uid('tr');
    const socket = await connect(server, { transports: ['polling'], token: token({ sub: uid('u'), join: [room] }) });
    const seen = collect(socket, 'seq');
    const N = 100;
    for (let i = 0; i < N; i++) await mustPublish(server, { room, event: 'seq', data: { i } });
    await seen.waitForCount(N, 10_000);
    assert.deepEqual(
      seen.items.map((d) => d.i),
      Array.from({ length: N }, (_, i) => i),
    );
    assert.equal(socket.io.engine.transport.name, 'polling');
  });

  test('polling → websocket upgrade, then delivery over websocket', T, async () => {
    const room = uid('tr');
    const sub = uid('u');
    const socket = await connect(server, { token: token({ sub, join: [room] }) });
    const engine = socket.io.engine;
    if (engine.transport.name !== 'websocket') {
      await waitFor(engine, 'upgrade', 5000);
    }
    assert.equal(engine.transport.name, 'websocket');
    const got = waitFor(socket, 'after-upgrade');
    await mustPublish(server, { room, event: 'after-upgrade', data: 'ok' });
    assert.equal(await got, 'ok');
    // and the user's personal room too
    const personal = waitFor(socket, 'dm');
    await mustPublish(server, { room: `user:${sub}`, event: 'dm', data: [1, 2, 3] });
    assert.deepEqual(await personal, [1, 2, 3]);
  });

  test('the event handler also gets a string offset (connection state recovery is on)', T, async () => {
    const room = uid('tr');
    const socket = await connect(server, { transports: ['websocket'], token: token({ sub: uid('u'), join: [room] }) });
    const got = new Promise((resolve) => socket.once('with-offset', (...args) => resolve(args)));
    await mustPublish(server, { room, event: 'with-offset', data: { a: 1 } });
    const args = await got;
    assert.deepEqual(args[0], { a: 1 });
    assert.equal(args.length, 2, `expected (data, offset), got ${JSON.stringify(args)}`);
    assert.equal(typeof args[1], 'string');
  });
});
