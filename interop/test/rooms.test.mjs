// Rooms: isolation, unsubscribe, the rooms API, exact delivery, ordering, multi-room publish.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import {
  api,
  ask,
  assertOk,
  assertRefused,
  barrier,
  closeAllClients,
  collect,
  connect,
  eventually,
  mustPublish,
  startServer,
  token,
  uid,
  waitFor,
} from './helpers.mjs';

const T = { timeout: 15_000 };

async function roomInfo(server, room) {
  return api(server, 'GET', `/v1/rooms/${encodeURIComponent(room)}`);
}

async function members(server, room) {
  const r = await roomInfo(server, room);
  if (r.status === 404) return 0;
  assert.equal(r.status, 200, r.text);
  return r.json.members;
}

describe('rooms', () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  afterEach(closeAllClients);
  after(async () => {
    closeAllClients();
    await server?.stop();
  });

  test('isolation: members of A never see events of B', T, async () => {
    const [A, B] = [uid('A'), uid('B')];
    const [subA, subB] = [uid('ua'), uid('ub')];
    const a = await connect(server, { token: token({ sub: subA, join: [A] }) });
    const b = await connect(server, { token: token({ sub: subB, join: [B] }), transports: ['polling'] });
    const ga = collect(a, 'msg');
    const gb = collect(b, 'msg');
    for (let i = 0; i < 5; i++) {
      await mustPublish(server, { room: A, event: 'msg', data: `A${i}` });
      await mustPublish(server, { room: B, event: 'msg', data: `B${i}` });
    }
    await barrier(server, a, subA);
    await barrier(server, b, subB);
    assert.deepEqual(ga.items, ['A0', 'A1', 'A2', 'A3', 'A4']);
    assert.deepEqual(gb.items, ['B0', 'B1', 'B2', 'B3', 'B4']);
  });

  test('unsubscribe stops delivery', T, async () => {
    const room = uid('news');
    const sub = uid('u');
    const socket = await connect(server, { token: token({ sub, rooms: [room] }) });
    assertOk(await ask(socket, 'subscribe', room));
    const got = collect(socket, 'n');
    await mustPublish(server, { room, event: 'n', data: 1 });
    await got.waitForCount(1);
    assertOk(await ask(socket, 'unsubscribe', room));
    await mustPublish(server, { room, event: 'n', data: 2 });
    await barrier(server, socket, sub);
    assert.deepEqual(got.items, [1]);
    // subscribing again resumes delivery
    assertOk(await ask(socket, 'subscribe', room));
    await mustPublish(server, { room, event: 'n', data: 3 });
    await got.waitForCount(2);
    assert.deepEqual(got.items, [1, 3]);
  });

  test('unsubscribe from a join-claim room stops delivery too', T, async () => {
    const room = uid('joined');
    const sub = uid('u');
    const socket = await connect(server, { token: token({ sub, join: [room] }) });
    assert.equal(await members(server, room), 1);
    assertOk(await ask(socket, 'unsubscribe', room));
    assert.equal(await members(server, room), 0);
    const got = collect(socket, 'n');
    await mustPublish(server, { room, event: 'n', data: 'late' });
    await barrier(server, socket, sub);
    assert.deepEqual(got.items, []);
  });

  test('GET /v1/rooms and /v1/rooms/{room} report member counts', T, async () => {
    const [red, blue] = [uid('red'), uid('blue')];
    const s1 = await connect(server, { token: token({ sub: uid('u'), join: [red] }) });
    const s2 = await connect(server, { token: token({ sub: uid('u'), join: [red, blue] }), transports: ['polling'] });
    await connect(server, { token: token({ sub: uid('u'), rooms: [blue] }) }).then(async (s3) => {
      assertOk(await ask(s3, 'subscribe', blue));
    });

    const list = await api(server, 'GET', '/v1/rooms');
    assert.equal(list.status, 200, list.text);
    assert.ok(Array.isArray(list.json.rooms), list.text.slice(0, 300));
    const byName = new Map(list.json.rooms.map((r) => [r.name, r.members]));
    assert.equal(byName.get(red), 2);
    assert.equal(byName.get(blue), 2);

    const one = await roomInfo(server, red);
    assert.equal(one.status, 200, one.text);
    assert.equal(one.json.name, red);
    assert.equal(one.json.members, 2);

    // personal rooms are rooms too
    const sub = uid('me');
    await connect(server, { token: token({ sub }) });
    await connect(server, { token: token({ sub }) });
    assert.equal(await members(server, `user:${sub}`), 2);

    // counts follow disconnects
    s1.close();
    await eventually(async () => (await members(server, red)) === 1, { what: `${red} to have 1 member` });
    s2.close();
    await eventually(async () => (await members(server, red)) === 0, { what: `${red} to have 0 members` });
    await eventually(async () => (await members(server, blue)) === 1, { what: `${blue} to have 1 member` });
  });

  test('HTTP publish reaches exactly the members', T, async () => {
    const room = uid('exact');
    const subs = [uid('m'), uid('m'), uid('n'), uid('n')];
    const sockets = [
      await connect(server, { token: token({ sub: subs[0], join: [room] }) }),
      await connect(server, { token: token({ sub: subs[1], join: [room] }), transports: ['polling'] }),
      await connect(server, { token: token({ sub: subs[2] }) }),
      await connect(server, { token: token({ sub: subs[3], join: [uid('other')] }) }),
    ];
    const got = sockets.map((s) => collect(s, 'only'));
    const res = await mustPublish(server, { room, event: 'only', data: { x: 42 } });
    assert.equal(res.json?.ok, true, res.text);
    for (let i = 0; i < sockets.length; i++) await barrier(server, sockets[i], subs[i]);
    assert.deepEqual(got[0].items, [{ x: 42 }]);
    assert.deepEqual(got[1].items, [{ x: 42 }]);
    assert.deepEqual(got[2].items, []);
    assert.deepEqual(got[3].items, []);
  });

  test('publishing to an empty room succeeds', T, async () => {
    const res = await mustPublish(server, { room: uid('nobody'), event: 'e', data: null });
    assert.equal(res.json?.ok, true, res.text);
  });

  test('1000 events arrive complete and in order on one client', { timeout: 60_000 }, async () => {
    const room = uid('seq');
    const socket = await connect(server, { token: token({ sub: uid('s'), join: [room] }), transports: ['websocket'] });
    const got = collect(socket, 'seq');
    const N = 1000;
    // half sequential single publishes, half via one batch call
    for (let i = 0; i < N / 2; i++) await mustPublish(server, { room, event: 'seq', data: { i } });
    const events = [];
    for (let i = N / 2; i < N; i++) events.push({ room, event: 'seq', data: { i } });
    const batch = await api(server, 'POST', '/v1/publish/batch', { body: { events } });
    assert.equal(batch.status, 200, batch.text);
    await got.waitForCount(N, 30_000);
    const seq = got.items.map((d) => d.i);
    assert.equal(seq.length, N);
    assert.deepEqual(seq, Array.from({ length: N }, (_, i) => i));
  });

  test('rooms:[a,b] delivers once to a member of both, once to members of either', T, async () => {
    const [ra, rb] = [uid('a'), uid('b')];
    const subs = [uid('both'), uid('onlyA'), uid('onlyB'), uid('none')];
    const both = await connect(server, { token: token({ sub: subs[0], join: [ra, rb] }) });
    const onlyA = await connect(server, { token: token({ sub: subs[1], join: [ra] }) });
    const onlyB = await connect(server, { token: token({ sub: subs[2], join: [rb] }), transports: ['polling'] });
    const none = await connect(server, { token: token({ sub: subs[3] }) });
    const sockets = [both, onlyA, onlyB, none];
    const got = sockets.map((s) => collect(s, 'multi'));
    await mustPublish(server, { rooms: [ra, rb], event: 'multi', data: 'once' });
    for (let i = 0; i < sockets.length; i++) await barrier(server, sockets[i], subs[i]);
    assert.deepEqual(got[0].items, ['once']);
    assert.deepEqual(got[1].items, ['once']);
    assert.deepEqual(got[2].items, ['once']);
    assert.deepEqual(got[3].items, []);
  });

  test('a socket joined twice to the same room receives an event once', T, async () => {
    const room = uid('dup');
    const sub = uid('d');
    const socket = await connect(server, { token: token({ sub, rooms: [room], join: [room] }) });
    assertOk(await ask(socket, 'subscribe', room));
    assert.equal(await members(server, room), 1);
    const got = collect(socket, 'once');
    await mustPublish(server, { room, event: 'once', data: 1 });
    await barrier(server, socket, sub);
    assert.deepEqual(got.items, [1]);
  });

  test('subscribe with a bad room name is refused with an error', T, async () => {
    const socket = await connect(server, { token: token({ sub: uid('bad'), rooms: ['*'] }) });
    assertRefused(await ask(socket, 'subscribe', ''), undefined, 'empty room name');
    assertRefused(await ask(socket, 'subscribe', 42), undefined, 'non-string room name');
    // still connected and usable
    const room = uid('fine');
    assertOk(await ask(socket, 'subscribe', room));
    const got = waitFor(socket, 'ok');
    await mustPublish(server, { room, event: 'ok', data: true });
    assert.equal(await got, true);
  });
});
