// Direct messages with the stock socket.io-client: `dm` with an ack, the message handler's third argument as
// the delivery receipt, `message:status` on the sender's devices, the offline inbox on reconnect.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startRedis, uniquePrefix } from './cluster-helpers.mjs';
import { api, awaitConnect, client, closeAllClients, startServer, token, uid, waitForArgs } from './helpers.mjs';

/** The three stores a node can keep messages in; every test below runs against each. */
const STORES = [
  ['in memory', async () => ({ server: await startServer(), cleanup: () => {} })],
  [
    'on disk (--data-dir)',
    async () => {
      const dir = mkdtempSync(path.join(tmpdir(), 'tidings-dm-'));
      const server = await startServer({ args: ['--data-dir', dir] });
      return { server, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
    },
  ],
  [
    'in Redis (cluster mode)',
    async () => {
      const redis = await startRedis();
      const server = await startServer({ args: ['--redis', redis.url], config: `[redis]\nkey_prefix = "${uniquePrefix()}"\n` });
      return { server, cleanup: () => redis.kill() };
    },
  ],
];

/** A connected device of `sub`, allowed to message `dm`. */
async function device(server, sub, name, { dm = [], reconnection = false } = {}) {
  const socket = client(server, {
    token: token({ sub, extra: { dm } }),
    auth: { device: name },
    reconnection,
  });
  await awaitConnect(socket);
  return socket;
}

/** Statuses of the sender's device, in order, as `id:status[@device]`. */
function statuses(socket) {
  const seen = [];
  socket.on('message:status', (s) => seen.push(`${s.id}:${s.status}${s.device ? `@${s.device}` : ''}`));
  return seen;
}

async function until(fn, what, timeoutMs = 5000) {
  const end = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

for (const [store, setup] of STORES) describe(`direct messages ${store} (socket.io-client)`, () => {
  let server;
  let cleanup = () => {};
  before(async () => {
    ({ server, cleanup } = await setup());
  });
  after(async () => {
    closeAllClients();
    await server?.stop();
    cleanup();
  });

  test('dm → every device of the recipient; the ack callback is the receipt; statuses reach the sender', async () => {
    const [alice, bob] = [uid('alice'), uid('bob')];
    const sender = await device(server, alice, 'web', { dm: [bob] });
    const seen = statuses(sender);
    const phone = await device(server, bob, 'phone');
    const laptop = await device(server, bob, 'laptop');
    const got = { phone: [], laptop: [] };
    // What the README shows: data, meta, and the ack that marks the message delivered for this device.
    phone.on('chat', (data, meta, ack) => {
      got.phone.push({ data, meta });
      ack();
    });
    laptop.on('chat', (data, meta, ack) => {
      got.laptop.push({ data, meta });
      ack();
    });
    const reply = await sender.timeout(3000).emitWithAck('dm', { to: bob, event: 'chat', data: { text: 'hi' }, id: 'c-1' });
    assert.equal(reply.ok, true);
    assert.equal(reply.status, 'accepted');
    await until(() => got.phone.length === 1 && got.laptop.length === 1, 'both devices');
    for (const { data, meta } of [got.phone[0], got.laptop[0]]) {
      assert.deepEqual(data, { text: 'hi' });
      assert.equal(meta.id, reply.id);
      assert.equal(meta.from, alice);
    }
    await until(() => seen.includes(`${reply.id}:delivered@phone`) && seen.includes(`${reply.id}:delivered@laptop`), 'receipts');
    assert.deepEqual(seen.slice(0, 2), [`${reply.id}:accepted`, `${reply.id}:sent`]);

    const read = await phone.timeout(3000).emitWithAck('read', { from: alice, up_to: reply.id });
    assert.deepEqual(read, { ok: true, read: 1 });
    await until(() => seen.includes(`${reply.id}:read`), 'read');
    const status = await api(server, 'GET', `/v1/messages/${reply.id}`);
    assert.equal(status.status, 200);
    assert.equal(status.json.status, 'read');
    assert.deepEqual(status.json.devices.map((d) => d.device).sort(), ['laptop', 'phone']);

    // The same id again: the same message, not delivered twice.
    const again = await sender.timeout(3000).emitWithAck('dm', { to: bob, event: 'chat', data: { text: 'hi' }, id: 'c-1' });
    assert.equal(again.id, reply.id);
    const refused = await sender.timeout(3000).emitWithAck('dm', { to: uid('carol'), event: 'chat' });
    assert.deepEqual([refused.ok, refused.error], [false, 'forbidden']);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(got.phone.length, 1);
  });

  test('a device offline during the send gets its messages on connect, in order, once acknowledged', async () => {
    const [alice, bob] = [uid('alice'), uid('bob')];
    const sender = await device(server, alice, 'web', { dm: [bob] });
    const ids = [];
    for (let n = 0; n < 5; n++) {
      const reply = await sender.timeout(3000).emitWithAck('dm', { to: bob, event: 'note', data: n });
      ids.push(reply.id);
    }
    const presence = await api(server, 'GET', `/v1/users/${bob}`);
    assert.deepEqual(presence.json, { user: bob, online: false, devices: 0 });

    const first = client(server, { token: token({ sub: bob }), auth: { device: 'tablet' } });
    const got = [];
    // Acknowledge only the first three, then go away.
    first.on('note', (n, meta, ack) => {
      got.push(n);
      if (n < 3) ack();
    });
    await awaitConnect(first);
    await until(() => got.length === 5, 'the inbox');
    assert.deepEqual(got, [0, 1, 2, 3, 4]);
    await new Promise((r) => setTimeout(r, 300));
    first.close();

    const second = client(server, { token: token({ sub: bob }), auth: { device: 'tablet' } });
    const again = [];
    second.on('note', (n, meta, ack) => {
      again.push(n);
      ack();
    });
    await awaitConnect(second);
    await until(() => again.length === 2, 'the unacknowledged rest');
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(again, [3, 4], 'only what this device had not acknowledged, in order');
  });

  test('HTTP send on a user’s behalf, presence, and the inbox listing', async () => {
    const [alice, bob] = [uid('alice'), uid('bob')];
    const sender = await device(server, alice, 'web');
    const seen = statuses(sender);
    const sent = await api(server, 'POST', `/v1/users/${bob}/messages`, { body: { event: 'chat', data: 'x', from: alice } });
    assert.equal(sent.status, 200);
    assert.equal(sent.json.status, 'accepted');
    const listing = await api(server, 'GET', `/v1/users/${bob}/messages?since=0&limit=10`);
    assert.deepEqual(listing.json.messages.map((m) => m.id), [sent.json.id]);
    // Handlers go on before the connection: the inbox comes right after the CONNECT reply.
    const receiver = client(server, { token: token({ sub: bob }), auth: { device: 'watch' } });
    const arrived = waitForArgs(receiver, 'chat');
    await awaitConnect(receiver);
    const [data, meta] = await arrived;
    assert.equal(data, 'x');
    assert.equal(meta.id, sent.json.id);
    const presence = await api(server, 'GET', `/v1/users/${bob}`);
    assert.deepEqual(presence.json, { user: bob, online: true, devices: 1 });
    await until(() => seen.includes(`${sent.json.id}:sent`), 'sent status');
  });
});
