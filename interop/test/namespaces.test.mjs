// Namespaces from config: isolation of rooms, multiplexing, unknown namespaces.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import {
  api,
  ask,
  assertOk,
  awaitConnect,
  barrier,
  closeAllClients,
  collect,
  connect,
  eventually,
  manager,
  mustPublish,
  startServer,
  token,
  uid,
  waitFor,
} from './helpers.mjs';

const T = { timeout: 15_000 };

const CONFIG = `
[[namespaces]]
name = "/chat"
recovery = true
`;

describe('namespaces', () => {
  let server;
  before(async () => {
    server = await startServer({ config: CONFIG });
  });
  afterEach(closeAllClients);
  after(async () => {
    closeAllClients();
    await server?.stop();
  });

  test('the configured /chat namespace accepts connections', T, async () => {
    const socket = await connect(server, { namespace: '/chat', token: token({ sub: uid('c') }) });
    assert.equal(socket.connected, true);
    assert.equal(socket.nsp, '/chat');
  });

  test('same room name in / and /chat: a publish reaches only its namespace', T, async () => {
    const room = uid('lobby');
    const rootSub = uid('root');
    const chatSub = uid('chat');
    const root = await connect(server, { token: token({ sub: rootSub, rooms: [room] }) });
    const chat = await connect(server, { namespace: '/chat', token: token({ sub: chatSub, rooms: [room] }) });
    assertOk(await ask(root, 'subscribe', room));
    assertOk(await ask(chat, 'subscribe', room));
    const gRoot = collect(root, 'msg');
    const gChat = collect(chat, 'msg');

    await mustPublish(server, { room, event: 'msg', data: 'to-chat', namespace: '/chat' });
    await mustPublish(server, { room, event: 'msg', data: 'to-root' }); // default namespace "/"
    await mustPublish(server, { room, event: 'msg', data: 'to-root-explicit', namespace: '/' });
    await barrier(server, root, rootSub);
    await barrier(server, chat, chatSub, { namespace: '/chat' });
    assert.deepEqual(gChat.items, ['to-chat']);
    assert.deepEqual(gRoot.items, ['to-root', 'to-root-explicit']);

    // the rooms API is per namespace too
    const rootRoom = await api(server, 'GET', `/v1/rooms/${encodeURIComponent(room)}`);
    assert.equal(rootRoom.status, 200, rootRoom.text);
    assert.equal(rootRoom.json.members, 1);
    const list = await api(server, 'GET', `/v1/rooms?namespace=${encodeURIComponent('/chat')}`);
    assert.equal(list.status, 200, list.text);
    const entry = list.json.rooms.find((r) => r.name === room);
    assert.ok(entry, `room ${room} missing from /chat rooms: ${list.text.slice(0, 500)}`);
    assert.equal(entry.members, 1);
  });

  test('join claim and personal room apply in /chat as well', T, async () => {
    const room = uid('chatjoin');
    const sub = uid('cj');
    const chat = await connect(server, { namespace: '/chat', token: token({ sub, join: [room] }) });
    const got = collect(chat, 'x');
    await mustPublish(server, { room, event: 'x', data: 1, namespace: '/chat' });
    await mustPublish(server, { room: `user:${sub}`, event: 'x', data: 2, namespace: '/chat' });
    await got.waitForCount(2);
    assert.deepEqual(got.items, [1, 2]);
  });

  test('broadcast reaches every client of its namespace only', T, async () => {
    const rootSub = uid('br');
    const chatSub = uid('bc');
    const root = await connect(server, { token: token({ sub: rootSub }) });
    const chat = await connect(server, { namespace: '/chat', token: token({ sub: chatSub }) });
    const gRoot = collect(root, 'announce');
    const gChat = collect(chat, 'announce');
    const r1 = await api(server, 'POST', '/v1/broadcast', { body: { event: 'announce', data: 'root-only' } });
    assert.equal(r1.status, 200, r1.text);
    const r2 = await api(server, 'POST', '/v1/broadcast', {
      body: { event: 'announce', data: 'chat-only', namespace: '/chat' },
    });
    assert.equal(r2.status, 200, r2.text);
    await barrier(server, root, rootSub);
    await barrier(server, chat, chatSub, { namespace: '/chat' });
    assert.deepEqual(gRoot.items, ['root-only']);
    assert.deepEqual(gChat.items, ['chat-only']);
  });

  test('one connection multiplexes / and /chat', T, async () => {
    const sub = uid('mx');
    const room = uid('mxroom');
    const tok = token({ sub, join: [room] });
    const m = manager(server, { transports: ['websocket'] });
    const root = m.socket('/', { token: tok });
    const chat = m.socket('/chat', { token: tok });
    await Promise.all([awaitConnect(root), awaitConnect(chat)]);
    assert.equal(root.io, chat.io, 'both sockets share one Manager');
    const gRoot = collect(root, 'mx');
    const gChat = collect(chat, 'mx');
    await mustPublish(server, { room, event: 'mx', data: 'chat', namespace: '/chat' });
    await mustPublish(server, { room, event: 'mx', data: 'root' });
    await barrier(server, root, sub);
    await barrier(server, chat, sub, { namespace: '/chat' });
    assert.deepEqual(gRoot.items, ['root']);
    assert.deepEqual(gChat.items, ['chat']);

    // leaving one namespace keeps the other working on the same connection
    chat.disconnect();
    await eventually(async () => {
      const r = await api(server, 'GET', `/v1/rooms?namespace=${encodeURIComponent('/chat')}`);
      if (r.status !== 200) return false;
      const entry = r.json.rooms.find((x) => x.name === room);
      return !entry || entry.members === 0;
    }, { what: 'the /chat room to be empty after disconnect' });
    const again = waitFor(root, 'still');
    await mustPublish(server, { room, event: 'still', data: 'here' });
    assert.equal(await again, 'here');
  });

  test('unknown namespace → Invalid namespace', T, async () => {
    let err;
    try {
      const s = await connect(server, { namespace: '/nope', token: token({ sub: uid('x') }) });
      s.close();
    } catch (e) {
      err = e;
    }
    assert.ok(err, 'connection to /nope was accepted');
    assert.equal(err.message, 'Invalid namespace');
  });
});
