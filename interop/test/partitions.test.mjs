// A cluster whose rooms' events are spread over three independent redis-servers (`redis.partitions`), or with
// TIDINGS_TEST_REDIS_CLUSTER=n over n partitions of a Redis Cluster (`redis.cluster_partitions`), with the stock
// socket.io-client. The same cluster tests run on this layout with TIDINGS_TEST_PARTITIONS=3
// (cluster.test.mjs); these are the ones only a partitioned cluster has:
//
//  - recovery across partitions: clients in rooms on every partition, publishes to single rooms and to rooms
//    on several partitions, a node killed with SIGKILL and clients dropping their connection again and again
//    (each time onto another node, no sticky sessions): every event once, each partition's order kept, every
//    reconnect recovered with the same socket id
//  - a partition's Redis down: its rooms' publishes are refused (503), the other partitions' rooms carry on;
//    after its restart nothing answered 2xx is lost
//  - offsets that are not this cluster's (a decimal one, garbage, an oversized one, a vector of the wrong
//    length) start a fresh session and change nothing for the other clients
import assert from 'node:assert/strict';
import { after, afterEach, describe, test } from 'node:test';
import { api, awaitConnect, client, closeAllClients, eventually, sleep, token, uid } from './helpers.mjs';
import {
  allReceived,
  checkDelivery,
  cleanupLogs,
  decodeOffset,
  logDir,
  partitionOf,
  record,
  received,
  startBalancer,
  startNode,
  startPublisher,
  startRedis,
  startNodesOnRedisCluster,
  uniquePrefix,
  viaPartition,
  REDIS_CLUSTER,
} from './cluster-helpers.mjs';

// TIDINGS_TEST_REDIS_CLUSTER=n: the same on a Redis Cluster of three masters, rooms over n partitions (slots).
const GROUPS = REDIS_CLUSTER || 3;
const T = { timeout: 60_000 };
const RECONNECT = { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 300, randomizationFactor: 0 };
const started = { procs: [], balancers: [] };
let failed = false;

function track(p) {
  started.procs.push(p);
  return p;
}

afterEach(async () => {
  closeAllClients();
  await Promise.all(started.balancers.splice(0).map((b) => b.close()));
  await Promise.all(started.procs.splice(0).map((p) => p.stop({ signal: 'SIGKILL' })));
});

after(() => cleanupLogs(failed));

async function cluster({ nodes = 3, durable = false } = {}) {
  if (REDIS_CLUSTER > 0) return startNodesOnRedisCluster({ nodes, partitions: GROUPS, track });
  const redis = track(await startRedis());
  const parts = [];
  for (let i = 0; i < GROUPS; i++) parts.push(track(await startRedis({ durable, label: `part${i}-${redis.port}` })));
  const config = `partitions = ${JSON.stringify(parts.map((p) => p.url))}\n`;
  const prefix = uniquePrefix();
  const list = [];
  for (let i = 0; i < nodes; i++) list.push(track(await startNode({ redisUrl: redis.url, prefix, name: `${prefix}-n${i}`, config })));
  return { redis, parts, prefix, nodes: list };
}

/** A room name on each partition (`<base><n>`, the first n landing there). */
function roomsOnEveryPartition(base) {
  const out = [];
  for (let p = 0; p < GROUPS; p++) {
    for (let n = 0; ; n++) {
      if (partitionOf(`${base}${n}`, GROUPS) === p && !out.includes(`${base}${n}`)) {
        out.push(`${base}${n}`);
        break;
      }
    }
  }
  return out;
}

async function member(target, rooms, { label, transports = ['websocket'], reconnect = true } = {}) {
  const socket = client(target, {
    token: token({ sub: uid('u'), rooms: ['*'], join: rooms }),
    transports,
    ...(reconnect ? RECONNECT : {}),
  });
  const rec = record(socket, label);
  await awaitConnect(socket, 8000);
  rec.rooms = rooms;
  return rec;
}

function owedTo(results, rec) {
  const must = new Set();
  const may = new Set();
  for (const r of results) {
    if (!r.rooms.some((room) => rec.rooms.includes(room))) continue;
    (r.status === 200 ? must : may).add(r.k);
  }
  return { must, may, via: viaPartition(results, GROUPS) };
}

function assertRecovered(rec, firstId) {
  const [first, ...later] = rec.connects;
  assert.equal(first.recovered, false, `${rec.label}: first connect`);
  for (const c of later) {
    assert.equal(c.recovered, true, `${rec.label}: reconnect ${JSON.stringify(c)} not recovered (connects ${JSON.stringify(rec.connects)})`);
    assert.equal(c.id, firstId, `${rec.label}: socket id changed on recovery`);
  }
}

describe('rooms spread over three redis-servers', () => {
  test('recovery across partitions: a node SIGKILLed and clients hopping nodes get every event once, in each partition’s order', T, async (t) => {
    try {
      const { nodes } = await cluster();
      const lb = await startBalancer(nodes.map((n) => n.port));
      started.balancers.push(lb);
      const [p0, p1, p2] = roomsOnEveryPartition('room');
      const plans = [[p0], [p1], [p2], [p0, p1], [p1, p2], [p0, p1, p2]];
      const recs = [];
      for (let i = 0; i < 12; i++) recs.push(await member(lb, plans[i % plans.length], { label: `ws${i}/${plans[i % plans.length].join('+')}` }));
      for (let i = 0; i < 2; i++) recs.push(await member(lb, plans[5], { label: `poll${i}`, transports: ['polling'] }));
      const ids = new Map(recs.map((r) => [r, r.socket.id]));
      await sleep(300); // session records reach Redis

      // Single rooms and rooms on several partitions, from two nodes.
      const cycle = [[p0], [p1], [p2], [p0, p2], [p1, p2], [p0, p1, p2]];
      const pubA = startPublisher(nodes[0], { rooms: (i) => cycle[i % cycle.length], intervalMs: 15, tag: 'a' });
      const pubB = startPublisher(nodes[1], { rooms: (i) => cycle[(i + 3) % cycle.length], intervalMs: 15, tag: 'b' });
      // Hoppers: four clients drop their connection every 400 ms and come back through the balancer, on
      // whichever node its turn gives them, with the offset vector of the node they left.
      const hoppers = recs.slice(0, 4);
      const hopping = (async () => {
        for (let round = 0; round < 4; round++) {
          await sleep(400);
          for (const rec of hoppers) rec.socket.io.engine.close();
        }
      })();
      await sleep(900);
      const victim = nodes[2];
      victim.kill('SIGKILL');
      await victim.exited;
      await hopping;
      await eventually(() => recs.every((r) => r.socket.connected), { timeoutMs: 10_000, what: 'every client to be connected again' });
      await sleep(800);
      const results = (await Promise.all([pubA.stop(), pubB.stop()])).flat();
      assert.deepEqual(results.filter((r) => r.status !== 200).map((r) => `${r.k}:${r.status}`), [], 'publishes through the surviving nodes answered 200');

      const done = await allReceived(recs, (rec) => owedTo(results, rec).must.size, { timeoutMs: 10_000 });
      for (const rec of recs) checkDelivery(rec, owedTo(results, rec));
      assert.ok(done.complete, done.short.join(', '));
      for (const rec of recs) assertRecovered(rec, ids.get(rec));
      for (const rec of hoppers) assert.ok(rec.connects.length >= 5, `${rec.label} reconnected only ${rec.connects.length - 1} times`);
      const moved = recs.filter((r) => r.connects.length > 1).length;
      const vectors = recs.flatMap((r) => received(r)).map((g) => g.offset);
      assert.ok(vectors.every((o) => o.startsWith('v') && decodeOffset(o).length === GROUPS), 'every offset is a vector of the three partitions');
      const longest = Math.max(...vectors.map((o) => o.length));
      t.diagnostic(`${results.length} events; ${moved} clients reconnected (${hoppers.length} hopping 4 times); offsets up to ${longest} characters`);
    } catch (err) {
      failed = true;
      t.diagnostic(`logs: ${logDir()}`);
      throw err;
    }
  });

  // (A Redis Cluster with a master down stops taking writes for every slot: not this test's layout.)
  test('one partition’s Redis down: its rooms are refused, the others carry on; after its restart nothing answered 2xx is lost', { ...T, skip: REDIS_CLUSTER > 0 && 'independent groups only' }, async (t) => {
    try {
      const { parts, nodes } = await cluster({ nodes: 2, durable: true });
      const [p0, p1, p2] = roomsOnEveryPartition('r');
      const recs = [];
      for (const [j, n] of nodes.entries()) {
        recs.push(await member(n, [p0, p1, p2], { label: `n${j}/all` }));
        recs.push(await member(n, [p0], { label: `n${j}/p0` }));
        recs.push(await member(n, [p1], { label: `n${j}/p1` }));
      }
      const pubs = [p0, p1, p2].map((room, i) => startPublisher(nodes[i % 2], { rooms: [room], intervalMs: 25, tag: `to-${room}`, timeoutMs: 8000 }));
      await sleep(500);
      const downAt = Date.now();
      parts[1].kill('SIGKILL');
      await parts[1].exited;
      await sleep(1500);
      const restartAt = Date.now();
      track(await parts[1].restart());
      await eventually(() => pubs[1].results.some((r) => r.startedAt > restartAt && r.status === 200), { timeoutMs: 8000, what: 'partition 1 to take publishes again' });
      await sleep(800);
      const results = (await Promise.all(pubs.map((p) => p.stop()))).flat();
      const during = (room) => results.filter((r) => r.rooms[0] === room && r.startedAt > downAt + 50 && r.endedAt < restartAt);
      assert.ok(during(p1).length > 0 && during(p1).every((r) => r.status !== 200), `a publish to ${p1} answered 200 while its Redis was down`);
      assert.ok(during(p1).some((r) => r.status === 503), 'no 503 while the partition was down');
      for (const room of [p0, p2]) {
        assert.ok(during(room).length > 5, `too few publishes to ${room} while partition 1 was down`);
        assert.deepEqual(during(room).filter((r) => r.status !== 200).map((r) => r.status), [], `publishes to ${room} refused while another partition was down`);
      }
      const done = await allReceived(recs, (rec) => owedTo(results, rec).must.size, { timeoutMs: 8000 });
      for (const rec of recs) checkDelivery(rec, owedTo(results, rec));
      assert.ok(done.complete, done.short.join(', '));
      for (const rec of recs) assert.deepEqual(rec.disconnects, [], `${rec.label} disconnected`);
      t.diagnostic(`${results.length} publishes; ${results.filter((r) => r.status !== 200).length} refused, all to ${p1}`);
    } catch (err) {
      failed = true;
      t.diagnostic(`logs: ${logDir()}`);
      throw err;
    }
  });

  test('offsets that are not this cluster’s start a fresh session; the node and its other clients carry on', T, async (t) => {
    try {
      const { nodes } = await cluster({ nodes: 1 });
      const [p0, p1] = roomsOnEveryPartition('q');
      const watcher = await member(nodes[0], [p0, p1], { label: 'watcher', reconnect: false });
      const sub = uid('u');
      const tok = token({ sub, rooms: ['*'], join: [p0, p1] });
      const first = client(nodes[0], { token: tok });
      await awaitConnect(first);
      const pid = first.io.engine && first._pid;
      assert.ok(pid, 'the server handed out a private id');
      first.io.engine.close();
      await sleep(200);
      const bad = ['17', 'v', 'v!!!', `v${'A'.repeat(5000)}`, `v${Buffer.from([1, 2]).toString('base64url')}`, 'v////////////////'];
      for (const offset of bad) {
        const s = client(nodes[0], { token: tok, auth: { pid, offset } });
        await awaitConnect(s);
        assert.equal(s.recovered, false, `offset ${offset.slice(0, 20)} recovered a session`);
        s.close();
      }
      const res = await api(nodes[0], 'POST', '/v1/publish', { body: { room: p0, event: 'e', data: { k: 'after' } } });
      assert.equal(res.status, 200, res.text);
      await eventually(() => received(watcher).some((g) => g.data.k === 'after'), { what: 'the watcher to get the event after the bad offsets' });
      assert.deepEqual(watcher.disconnects, []);
      t.diagnostic(`${bad.length} foreign offsets refused`);
    } catch (err) {
      failed = true;
      t.diagnostic(`logs: ${logDir()}`);
      throw err;
    }
  });
});
