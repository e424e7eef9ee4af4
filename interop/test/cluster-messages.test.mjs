// Direct messages across a cluster with the stock socket.io-client: the recipient's node is killed with SIGKILL
// mid-stream; its device comes back on the other node and gets everything it had not acknowledged, in order,
// and nothing it had.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { startNode, startRedis, uniquePrefix } from './cluster-helpers.mjs';
import { awaitConnect, client, closeAllClients, sleep, token, uid } from './helpers.mjs';

const stops = [];
const track = (p) => {
  stops.push(p);
  return p;
};

describe('direct messages across a cluster (socket.io-client)', () => {
  after(async () => {
    closeAllClients();
    for (const p of stops.reverse()) p.kill();
  });

  test('kill -9 of the recipient’s node: its device resumes on another node, nothing lost or repeated after its ack', async () => {
    const redis = track(await startRedis({ durable: true }));
    const prefix = uniquePrefix();
    const a = track(await startNode({ redisUrl: redis.url, prefix, name: `${prefix}-a` }));
    const b = track(await startNode({ redisUrl: redis.url, prefix, name: `${prefix}-b` }));
    const [alice, bob] = [uid('alice'), uid('bob')];

    const sender = client(a, { token: token({ sub: alice, extra: { dm: [bob] } }), auth: { device: 'web' } });
    await awaitConnect(sender);

    // The device on node b acknowledges with the `ack` event, so it knows which receipts were stored.
    const confirmed = new Set();
    const firstSeen = [];
    const onB = client(b, { token: token({ sub: bob }), auth: { device: 'phone' } });
    onB.on('n', async (n, meta) => {
      firstSeen.push(meta.seq);
      const reply = await onB.timeout(2000).emitWithAck('ack', { ids: [meta.id] }).catch(() => null);
      if (reply?.ok) confirmed.add(meta.id);
    });
    await awaitConnect(onB);

    const ids = [];
    const send = async (n) => {
      const reply = await sender.timeout(5000).emitWithAck('dm', { to: bob, event: 'n', data: n });
      assert.equal(reply.ok, true, JSON.stringify(reply));
      ids.push(reply.id);
    };
    for (let n = 0; n < 20; n++) await send(n);
    // Let the device acknowledge most of them, so the check below has receipts to look for.
    const until = Date.now() + 5000;
    while (confirmed.size < 20 && Date.now() < until) await sleep(20);
    for (let n = 20; n < 25; n++) await send(n);
    b.kill('SIGKILL');
    for (let n = 25; n < 40; n++) await send(n);

    // The same device reconnects through node a (as a balancer would send it).
    const secondSeen = [];
    const onA = client(a, { token: token({ sub: bob }), auth: { device: 'phone' } });
    onA.on('n', (n, meta, ack) => {
      secondSeen.push(meta);
      ack();
    });
    await awaitConnect(onA);
    const deadline = Date.now() + 10_000;
    const seen = () => new Set([...firstSeen.map(String), ...secondSeen.map((m) => String(m.seq))]);
    while (seen().size < 40 && Date.now() < deadline) await sleep(50);
    assert.equal(seen().size, 40, `every accepted message reached the device (got ${seen().size})`);
    const again = secondSeen.filter((m) => confirmed.has(m.id));
    assert.deepEqual(again, [], 'nothing whose receipt was stored came back');
    const seqs = secondSeen.map((m) => m.seq);
    assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y), 'in order on the new node');
    assert.ok(confirmed.size > 0, 'receipts were stored on node b before the kill');
  });
});
