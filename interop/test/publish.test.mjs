// Client publishing (claims and room policies), reserved events and acks, binary
// payloads, HTTP broadcast and batch, HTTP API errors.
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
  isBinary,
  mustPublish,
  rawRequest,
  startServer,
  toBuffer,
  token,
  uid,
  waitFor,
  waitForArgs,
} from './helpers.mjs';

const T = { timeout: 15_000 };

const CONFIG = `
[[rooms]]
pattern = "chat:*"
client_publish = true
`;

describe('publish', () => {
  let server;
  before(async () => {
    server = await startServer({ config: CONFIG });
  });
  afterEach(closeAllClients);
  after(async () => {
    closeAllClients();
    await server?.stop();
  });

  test('client publish allowed by the publish claim reaches every member, sender included', T, async () => {
    const room = uid('news');
    const [sSub, rSub, oSub] = [uid('sender'), uid('reader'), uid('outsider')];
    const sender = await connect(server, { token: token({ sub: sSub, join: [room], publish: [room] }) });
    const reader = await connect(server, { token: token({ sub: rSub, join: [room] }), transports: ['polling'] });
    const outsider = await connect(server, { token: token({ sub: oSub }) });
    const gS = collect(sender, 'chat');
    const gR = collect(reader, 'chat');
    const gO = collect(outsider, 'chat');
    const ack = await ask(sender, 'publish', { room, event: 'chat', data: { text: 'hi', n: [1, 2] } });
    assertOk(ack);
    await gS.waitForCount(1);
    await gR.waitForCount(1);
    await barrier(server, outsider, oSub);
    assert.deepEqual(gS.items, [{ text: 'hi', n: [1, 2] }]);
    assert.deepEqual(gR.items, [{ text: 'hi', n: [1, 2] }]);
    assert.deepEqual(gO.items, []);
  });

  test('publish claim glob (prefix*) is honoured', T, async () => {
    const room = `feed:${uid('x')}`;
    const sender = await connect(server, { token: token({ sub: uid('s'), join: [room], publish: ['feed:*'] }) });
    const got = waitFor(sender, 'feed');
    assertOk(await ask(sender, 'publish', { room, event: 'feed', data: 7 }));
    assert.equal(await got, 7);
  });

  test('client publish allowed by a room policy (chat:* client_publish)', T, async () => {
    const room = `chat:${uid('general')}`;
    const [aSub, bSub] = [uid('a'), uid('b')];
    const a = await connect(server, { token: token({ sub: aSub, rooms: ['chat:*'] }) });
    const b = await connect(server, { token: token({ sub: bSub, rooms: ['chat:*'] }) });
    assertOk(await ask(a, 'subscribe', room));
    assertOk(await ask(b, 'subscribe', room));
    const gB = collect(b, 'say');
    assertOk(await ask(a, 'publish', { room, event: 'say', data: 'hello chat' }));
    await gB.waitForCount(1);
    assert.deepEqual(gB.items, ['hello chat']);
  });

  /** `sender` publishes `room`; expect forbidden and no delivery to `sender` nor to a member of `room`. */
  async function expectForbidden(senderClaims, room, { senderJoins = false } = {}) {
    const [sSub, rSub] = [uid('s'), uid('r')];
    const sender = await connect(server, {
      token: token({ sub: sSub, ...senderClaims, join: senderJoins ? [room] : undefined }),
    });
    const reader = await connect(server, { token: token({ sub: rSub, join: [room] }) });
    const gS = collect(sender, 'nope');
    const gR = collect(reader, 'nope');
    assertRefused(await ask(sender, 'publish', { room, event: 'nope', data: 1 }), 'forbidden');
    await barrier(server, sender, sSub);
    await barrier(server, reader, rSub);
    assert.deepEqual(gS.items, [], 'the sender got the refused event');
    assert.deepEqual(gR.items, [], 'a member got the refused event');
  }

  test('client publish refused: member, but neither claim nor policy', T, async () => {
    await expectForbidden({ publish: ['elsewhere'] }, uid('news'), { senderJoins: true });
  });

  test('client publish refused: no publish claim at all', T, async () => {
    await expectForbidden({}, uid('news'), { senderJoins: true });
  });

  test('client publish allowed by the publish claim without being a member (an announcer)', T, async () => {
    const room = uid('announce');
    const [sSub, rSub] = [uid('s'), uid('r')];
    const sender = await connect(server, { token: token({ sub: sSub, publish: [room] }) });
    const reader = await connect(server, { token: token({ sub: rSub, join: [room] }) });
    const gS = collect(sender, 'news');
    const got = waitFor(reader, 'news');
    assertOk(await ask(sender, 'publish', { room, event: 'news', data: { n: 1 } }));
    assert.deepEqual(await got, { n: 1 });
    await barrier(server, sender, sSub);
    assert.deepEqual(gS.items, [], 'the sender is not a member and must not get the event');
  });

  test('client publish refused: room policy (chat:*), but not a member', T, async () => {
    await expectForbidden({ rooms: ['chat:*'] }, `chat:${uid('x')}`);
  });

  test("client publish refused: someone else's personal room", T, async () => {
    const victim = uid('victim');
    const sSub = uid('s');
    const sender = await connect(server, { token: token({ sub: sSub, publish: ['elsewhere'] }) });
    const reader = await connect(server, { token: token({ sub: victim }) });
    const gR = collect(reader, 'nope');
    assertRefused(await ask(sender, 'publish', { room: `user:${victim}`, event: 'nope', data: 1 }), 'forbidden');
    await barrier(server, reader, victim);
    assert.deepEqual(gR.items, []);
  });

  test('unknown client events are refused and never forwarded', T, async () => {
    const room = uid('r');
    const [aSub, bSub] = [uid('a'), uid('b')];
    const a = await connect(server, { token: token({ sub: aSub, join: [room], publish: [room] }) });
    const b = await connect(server, { token: token({ sub: bSub, join: [room] }) });
    const gA = collect(a, 'hello');
    const gB = collect(b, 'hello');
    assertRefused(await ask(a, 'hello', { room, data: 'x' }), 'unknown event');
    a.emit('hello', 'no ack wanted'); // must be ignored silently
    a.emit('hello', room, 'two', 'more', 'args');
    // the connection is still fine afterwards
    const afterEvt = waitFor(b, 'after');
    assertOk(await ask(a, 'publish', { room, event: 'after', data: 'fine' }));
    assert.equal(await afterEvt, 'fine');
    await barrier(server, a, aSub);
    await barrier(server, b, bSub);
    assert.deepEqual(gA.items, []);
    assert.deepEqual(gB.items, []);
  });

  test('acks: callback, emitWithAck and timeout().emitWithAck', T, async () => {
    const room = uid('ack');
    const socket = await connect(server, { token: token({ sub: uid('k'), rooms: [room], publish: [room] }) });
    // plain callback
    const viaCallback = await new Promise((resolve) => socket.emit('subscribe', room, resolve));
    assertOk(viaCallback);
    // promise form
    assertOk(await socket.emitWithAck('unsubscribe', room));
    // with a timeout: resolves before it
    assertOk(await socket.timeout(2000).emitWithAck('subscribe', room));
    // callback + timeout form: (err, ...args)
    const [err, res] = await new Promise((resolve) =>
      socket.timeout(2000).emit('publish', { room, event: 'acked', data: 1 }, (e, r) => resolve([e, r])),
    );
    assert.equal(err, null);
    assertOk(res);
    // many acks in flight at once come back matched to their requests
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        socket.timeout(5000).emitWithAck(i % 2 ? 'subscribe' : 'unknown-' + i, i % 2 ? room : i),
      ),
    );
    results.forEach((r, i) =>
      i % 2 ? assertOk(r, `ack #${i}`) : assertRefused(r, 'unknown event', `ack #${i}`),
    );
  });

  test('acks over polling work too', T, async () => {
    const room = uid('pack');
    const socket = await connect(server, {
      token: token({ sub: uid('p'), rooms: [room], publish: [room] }),
      transports: ['polling'],
    });
    assertOk(await socket.timeout(3000).emitWithAck('subscribe', room));
    const got = waitFor(socket, 'p');
    assertOk(await socket.timeout(3000).emitWithAck('publish', { room, event: 'p', data: 'x' }));
    assert.equal(await got, 'x');
  });

  test('binary payloads are delivered intact (websocket and polling receivers)', T, async () => {
    const room = uid('bin');
    const sub = uid('s');
    const sender = await connect(server, {
      token: token({ sub, join: [room], publish: [room] }),
      transports: ['websocket'],
    });
    const wsReader = await connect(server, { token: token({ sub: uid('w'), join: [room] }), transports: ['websocket'] });
    const pollReader = await connect(server, { token: token({ sub: uid('p'), join: [room] }), transports: ['polling'] });

    const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const readers = [sender, wsReader, pollReader];

    // top-level binary data
    let waits = readers.map((s) => waitForArgs(s, 'blob'));
    assertOk(await ask(sender, 'publish', { room, event: 'blob', data: bytes }));
    for (const [i, w] of waits.entries()) {
      const [data] = await w;
      assert.ok(isBinary(data), `reader ${i}: not binary: ${typeof data}`);
      assert.ok(toBuffer(data).equals(bytes), `reader ${i}: bytes differ`);
    }

    // binary nested in an object, several attachments, Uint8Array input
    const small = new Uint8Array([0xde, 0xad, 0xbe, 0xef]);
    const payload = { name: 'file.bin', parts: [bytes.subarray(0, 10), { inner: small }], size: 266 };
    waits = readers.map((s) => waitForArgs(s, 'nested'));
    assertOk(await ask(sender, 'publish', { room, event: 'nested', data: payload }));
    for (const [i, w] of waits.entries()) {
      const [data] = await w;
      assert.equal(data.name, 'file.bin', `reader ${i}`);
      assert.equal(data.size, 266, `reader ${i}`);
      assert.ok(toBuffer(data.parts[0]).equals(bytes.subarray(0, 10)), `reader ${i}: parts[0] differs`);
      assert.ok(toBuffer(data.parts[1].inner).equals(Buffer.from(small)), `reader ${i}: inner differs`);
    }

    // a larger binary blob (200 KiB)
    const big = Buffer.alloc(200 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31 + 7) & 0xff;
    waits = readers.map((s) => waitForArgs(s, 'big', 10_000));
    assertOk(await ask(sender, 'publish', { room, event: 'big', data: { big } }, 10_000));
    for (const [i, w] of waits.entries()) {
      const [data] = await w;
      assert.ok(toBuffer(data.big).equals(big), `reader ${i}: big blob differs`);
    }
  });

  test('binary from a polling sender', T, async () => {
    const room = uid('pbin');
    const sender = await connect(server, {
      token: token({ sub: uid('s'), join: [room], publish: [room] }),
      transports: ['polling'],
    });
    const reader = await connect(server, { token: token({ sub: uid('r'), join: [room] }), transports: ['websocket'] });
    const bytes = Buffer.from('binary over long-polling \u00e9\u20ac', 'utf8');
    const got = waitFor(reader, 'pb');
    assertOk(await ask(sender, 'publish', { room, event: 'pb', data: { bytes } }));
    assert.ok(toBuffer((await got).bytes).equals(bytes));
  });

  test('HTTP broadcast reaches every client of the namespace', T, async () => {
    const subs = [uid('b'), uid('b'), uid('b')];
    const sockets = [
      await connect(server, { token: token({ sub: subs[0] }) }),
      await connect(server, { token: token({ sub: subs[1], join: [uid('room')] }), transports: ['polling'] }),
      await connect(server, { token: token({ sub: subs[2] }), transports: ['websocket'] }),
    ];
    const got = sockets.map((s) => collect(s, 'announce'));
    const res = await api(server, 'POST', '/v1/broadcast', { body: { event: 'announce', data: { v: 1 } } });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json?.ok, true, res.text);
    for (let i = 0; i < sockets.length; i++) await barrier(server, sockets[i], subs[i]);
    for (const g of got) assert.deepEqual(g.items, [{ v: 1 }]);
  });

  test('HTTP batch publish delivers every event in order', T, async () => {
    const [ra, rb] = [uid('ba'), uid('bb')];
    const a = await connect(server, { token: token({ sub: uid('a'), join: [ra] }) });
    const b = await connect(server, { token: token({ sub: uid('b'), join: [rb] }) });
    const gA = collect(a, 'e');
    const gB = collect(b, 'e');
    const res = await api(server, 'POST', '/v1/publish/batch', {
      body: {
        events: [
          { room: ra, event: 'e', data: 1 },
          { rooms: [ra, rb], event: 'e', data: 2 },
          { room: rb, event: 'e', data: 3 },
          { room: ra, event: 'e', data: { deep: [4] } },
        ],
      },
    });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json?.ok, true, res.text);
    await gA.waitForCount(3);
    await gB.waitForCount(2);
    assert.deepEqual(gA.items, [1, 2, { deep: [4] }]);
    assert.deepEqual(gB.items, [2, 3]);
  });

  test('HTTP publish with an Idempotency-Key publishes once however often it is retried', T, async () => {
    const room = uid('once');
    const sub = uid('reader');
    const reader = await connect(server, { token: token({ sub, join: [room] }) });
    const got = collect(reader, 'e');
    await ask(reader, 'join', room);
    const key = `order-${uid('k')}`;
    const send = (n) =>
      api(server, 'POST', '/v1/publish', { body: { room, event: 'e', data: n }, headers: { 'idempotency-key': key } });
    const first = await send(1);
    assert.equal(first.status, 200, first.text);
    assert.ok(first.json.offset, first.text);
    const again = await send(1);
    assert.equal(again.status, 200, again.text);
    assert.deepEqual(again.json, { ok: true, repeated: true });
    const other = await api(server, 'POST', '/v1/publish', {
      body: { room, event: 'e', data: 2 },
      headers: { 'idempotency-key': `${key}-2` },
    });
    assert.equal(other.status, 200, other.text);
    await got.waitForCount(2);
    await barrier(server, reader, sub);
    assert.deepEqual(got.items, [1, 2]);
    for (const bad of ['', 'x'.repeat(201), 'has space']) {
      const res = await api(server, 'POST', '/v1/publish', { body: { room, event: 'e' }, headers: { 'idempotency-key': bad } });
      assert.equal(res.status, 400, `key ${JSON.stringify(bad)}: ${res.text}`);
      assert.equal(res.json.error.code, 'invalid_idempotency_key');
    }
    await barrier(server, reader, sub);
    assert.deepEqual(got.items, [1, 2], 'refused keys publish nothing');
  });

  test('HTTP publish with various JSON data types', T, async () => {
    const room = uid('types');
    const socket = await connect(server, { token: token({ sub: uid('t'), join: [room] }) });
    const values = ['text with "quotes" and \u00fcnic\u00f8de \u{1f600}', 0, -1.5, true, false, null, [], {}, { a: [{ b: null }] }];
    const got = collect(socket, 'v');
    for (const data of values) await mustPublish(server, { room, event: 'v', data });
    await got.waitForCount(values.length);
    assert.deepEqual(got.items, values);
  });

  describe('HTTP API errors', () => {
    function assertError(res, status) {
      assert.equal(res.status, status, `expected ${status}, got ${res.status}: ${String(res.text).slice(0, 300)}`);
      assert.equal(typeof res.json?.error?.code, 'string', `error body: ${String(res.text).slice(0, 300)}`);
      assert.equal(typeof res.json.error.message, 'string');
    }

    test('401 without an API key', T, async () => {
      assertError(await api(server, 'POST', '/v1/publish', { body: { room: 'r', event: 'e', data: 1 }, apiKey: null }), 401);
      assertError(await api(server, 'GET', '/v1/rooms', { apiKey: null }), 401);
    });

    test('401 with a wrong API key', T, async () => {
      assertError(await api(server, 'POST', '/v1/publish', { body: { room: 'r', event: 'e', data: 1 }, apiKey: 'wrong' }), 401);
      assertError(await api(server, 'POST', '/v1/broadcast', { body: { event: 'e', data: 1 }, apiKey: 'wrong' }), 401);
      assertError(
        await api(server, 'POST', '/v1/publish', {
          body: { room: 'r', event: 'e', data: 1 },
          apiKey: null,
          headers: { authorization: `Basic ${server.apiKey}` },
        }),
        401,
      );
    });

    test('400 on malformed JSON', T, async () => {
      assertError(await api(server, 'POST', '/v1/publish', { raw: '{"room": "r", "event": ' }), 400);
      assertError(await api(server, 'POST', '/v1/publish/batch', { raw: 'not json at all' }), 400);
    });

    test('400 on a bad room name', T, async () => {
      assertError(await api(server, 'POST', '/v1/publish', { body: { room: '', event: 'e', data: 1 } }), 400);
      assertError(
        await api(server, 'POST', '/v1/publish/batch', { body: { events: [{ room: '', event: 'e', data: 1 }] } }),
        400,
      );
    });

    test('413 when the body is too big', { timeout: 30_000 }, async () => {
      const body = JSON.stringify({ room: 'r', event: 'e', data: 'x'.repeat(4 * 1024 * 1024) });
      const res = await rawRequest(server, 'POST', '/v1/publish', {
        body,
        headers: { 'content-type': 'application/json', authorization: `Bearer ${server.apiKey}` },
      });
      assertError(res, 413);
      // the server is fine afterwards
      const ok = await mustPublish(server, { room: uid('after413'), event: 'e', data: 1 });
      assert.equal(ok.status, 200);
    });
  });
});
