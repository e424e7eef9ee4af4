// Load: many concurrent websocket clients in one room, each receiving every event in order.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { MANY_CLIENTS_CONFIG, api, closeAllClients, collect, connectMany, eventually, mustPublish, startServer, token, uid } from './helpers.mjs';

const CLIENTS = Number(process.env.TIDINGS_LOAD_CLIENTS || 200);
const EVENTS = 10;

describe('load', () => {
  let server;
  before(async () => {
    server = await startServer({ config: MANY_CLIENTS_CONFIG });
  });
  after(async () => {
    closeAllClients();
    await server?.stop();
  });

  test(`${CLIENTS} websocket clients in one room each receive ${EVENTS} events in order`, { timeout: 60_000 }, async () => {
    const room = uid('load');
    const started = Date.now();
    const sockets = await connectMany(
      server,
      CLIENTS,
      (i) => ({ token: token({ sub: `load-${i}`, join: [room] }), transports: ['websocket'], timeoutMs: 20_000 }),
      { parallel: 50 },
    );
    const connectMs = Date.now() - started;
    assert.equal(sockets.length, CLIENTS);
    assert.ok(sockets.every((s) => s.connected));
    assert.equal(new Set(sockets.map((s) => s.id)).size, CLIENTS, 'socket ids must be unique');

    await eventually(
      async () => {
        const r = await api(server, 'GET', `/v1/rooms/${encodeURIComponent(room)}`);
        return r.status === 200 && r.json.members === CLIENTS;
      },
      { what: `room ${room} to have ${CLIENTS} members` },
    );

    const collectors = sockets.map((s) => collect(s, 'tick'));
    const pubStarted = Date.now();
    for (let i = 0; i < EVENTS; i++) {
      await mustPublish(server, { room, event: 'tick', data: { seq: i, pad: 'p'.repeat(100) } });
    }
    await Promise.all(collectors.map((c) => c.waitForCount(EVENTS, 30_000)));
    const deliverMs = Date.now() - pubStarted;
    const expected = Array.from({ length: EVENTS }, (_, i) => i);
    collectors.forEach((c, i) => {
      assert.deepEqual(
        c.items.map((d) => d.seq),
        expected,
        `client ${i} got ${JSON.stringify(c.items.map((d) => d.seq))}`,
      );
    });
    // nothing extra arrived
    collectors.forEach((c, i) => assert.equal(c.items.length, EVENTS, `client ${i}`));
    console.log(`# load: ${CLIENTS} clients connected in ${connectMs} ms; ${EVENTS * CLIENTS} deliveries in ${deliverMs} ms`);

    closeAllClients();
    await eventually(
      async () => {
        const r = await api(server, 'GET', `/v1/rooms/${encodeURIComponent(room)}`);
        return r.status === 404 || (r.status === 200 && r.json.members === 0);
      },
      { timeoutMs: 10_000, what: `room ${room} to empty after all clients closed` },
    );
  });
});
