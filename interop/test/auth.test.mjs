// JWT authentication at CONNECT time and the room rules carried by the claims.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import {
  ask,
  assertOk,
  assertRefused,
  barrier,
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

/** Expect connect() to fail; returns the connect_error. */
async function refused(promise) {
  let err;
  try {
    const socket = await promise;
    socket.close();
  } catch (e) {
    err = e;
  }
  assert.ok(err, 'connection was accepted but should have been refused');
  return err;
}

describe('auth', () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  afterEach(closeAllClients);
  after(async () => {
    closeAllClients();
    await server?.stop();
  });

  test('a valid token in auth.token is accepted', T, async () => {
    const socket = await connect(server, { token: token({ sub: uid('alice') }) });
    assert.equal(socket.connected, true);
    assert.equal(typeof socket.id, 'string');
  });

  test('no token → unauthorized', T, async () => {
    const err = await refused(connect(server, {}));
    assert.equal(err.message, 'unauthorized');
  });

  test('garbage token → unauthorized', T, async () => {
    const err = await refused(connect(server, { token: 'not-a-jwt' }));
    assert.equal(err.message, 'unauthorized');
  });

  test('wrong signature → unauthorized', T, async () => {
    const bad = token({ sub: uid('mallory'), secret: 'some-other-secret-that-the-server-does-not-know' });
    const err = await refused(connect(server, { token: bad }));
    assert.equal(err.message, 'unauthorized');
  });

  test('tampered payload → unauthorized', T, async () => {
    const good = token({ sub: 'bob', rooms: ['news'] });
    const [h, , s] = good.split('.');
    const forged = Buffer.from(JSON.stringify({ sub: 'bob', rooms: ['*'], exp: Math.floor(Date.now() / 1000) + 3600 }))
      .toString('base64url');
    const err = await refused(connect(server, { token: `${h}.${forged}.${s}` }));
    assert.equal(err.message, 'unauthorized');
  });

  test('token without sub → unauthorized', T, async () => {
    const err = await refused(connect(server, { token: token({ sub: null }) }));
    assert.equal(err.message, 'unauthorized');
  });

  test('expired token → token expired', T, async () => {
    const expired = token({ sub: uid('late'), exp: Math.floor(Date.now() / 1000) - 3600 });
    const err = await refused(connect(server, { token: expired }));
    assert.equal(err.message, 'token expired');
  });

  test('token in the query string is accepted (polling and websocket)', T, async () => {
    for (const transports of [['polling'], ['websocket'], ['polling', 'websocket']]) {
      const room = uid('q');
      const socket = await connect(server, { transports, query: { token: token({ sub: uid('q'), join: [room] }) } });
      assert.equal(socket.connected, true, `transports ${transports}`);
      const got = waitFor(socket, 'hello');
      await mustPublish(server, { room, event: 'hello', data: transports.join('+') });
      assert.equal(await got, transports.join('+'));
      socket.close();
    }
  });

  test('join claim: rooms are joined at connect', T, async () => {
    const [r1, r2] = [uid('j'), uid('j')];
    const socket = await connect(server, { token: token({ sub: uid('j'), join: [r1, r2] }) });
    const got = collect(socket, 'joined');
    await mustPublish(server, { room: r1, event: 'joined', data: r1 });
    await mustPublish(server, { room: r2, event: 'joined', data: r2 });
    await got.waitForCount(2);
    assert.deepEqual(got.items, [r1, r2]);
  });

  test('personal room user:<sub> gets what is addressed to it, another user does not', T, async () => {
    const alice = uid('alice');
    const bob = uid('bob');
    const a = await connect(server, { token: token({ sub: alice }) });
    const a2 = await connect(server, { token: token({ sub: alice }), transports: ['polling'] });
    const b = await connect(server, { token: token({ sub: bob }) });
    const ga = collect(a, 'dm');
    const ga2 = collect(a2, 'dm');
    const gb = collect(b, 'dm');
    await mustPublish(server, { room: `user:${alice}`, event: 'dm', data: { to: 'alice' } });
    await ga.waitForCount(1);
    await ga2.waitForCount(1); // every socket of the user
    await barrier(server, b, bob);
    assert.deepEqual(ga.items, [{ to: 'alice' }]);
    assert.deepEqual(ga2.items, [{ to: 'alice' }]);
    assert.deepEqual(gb.items, [], 'bob received a message addressed to alice');
  });

  test('subscribe: allowed by rooms (exact and trailing-* glob), forbidden otherwise', T, async () => {
    const sub = uid('s');
    const socket = await connect(server, { token: token({ sub, rooms: ['news', 'team:*'] }) });
    assertOk(await ask(socket, 'subscribe', 'news'));
    assertOk(await ask(socket, 'subscribe', 'team:red'));
    assertRefused(await ask(socket, 'subscribe', 'secret'), 'forbidden');
    assertRefused(await ask(socket, 'subscribe', 'teams'), 'forbidden');
    assertRefused(await ask(socket, 'subscribe', 'newsroom'), 'forbidden');
    // someone else's personal room is not joinable
    assertRefused(await ask(socket, 'subscribe', `user:${uid('other')}`), 'forbidden');

    // forbidden subscriptions must not deliver anything
    const got = collect(socket, 'm');
    await mustPublish(server, { room: 'secret', event: 'm', data: 'secret' });
    await mustPublish(server, { room: 'team:red', event: 'm', data: 'team' });
    await barrier(server, socket, sub);
    assert.deepEqual(got.items, ['team']);
  });

  test('subscribe without any rooms claim is forbidden', T, async () => {
    const socket = await connect(server, { token: token({ sub: uid('n') }) });
    assertRefused(await ask(socket, 'subscribe', 'news'), 'forbidden');
  });
});
