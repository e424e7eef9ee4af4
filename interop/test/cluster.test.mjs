// Cluster mode over Redis: several tidings nodes sharing one redis-server, with the stock socket.io-client.
//
//  - fan-out: every member on every node gets every event of its rooms exactly once, in one cluster-wide
//    order (same offsets everywhere), whether published through any node's HTTP API or the Redis ingest
//    channel; a node subscribes only the rooms it has members in
//  - a node killed with SIGKILL: its clients come back through the balancer on another node and recover
//    their session (same id, recovered, every missed event once and in order)
//  - the node registry (/v1/nodes, /v1/nodes/pick) and a dead node leaving it
//  - no sticky sessions: a polling client whose requests land on any node
//  - Redis restarting under traffic: 503 while it is down, nothing answered 2xx is lost (also on a fresh
//    cluster, where rooms were subscribed before the first event ever)
//  - an event a client emits the instant its CONNECT reply arrives is not lost
//
// Node logs (TIDINGS_LOG=info,tidings=debug) go to a temp directory that is kept (and printed) when a test
// fails; TIDINGS_KEEP_LOGS=1 keeps it always.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, afterEach, describe, test } from 'node:test';
import { MANY_CLIENTS_CONFIG, api, ask, assertOk, awaitConnect, client, closeAllClients, eventually, sleep, token, uid } from './helpers.mjs';
import {
  allReceived,
  checkDelivery,
  cleanupLogs,
  deliveredThoughRefused,
  logDir,
  metricSum,
  metrics,
  owed,
  record,
  redisCall,
  redisConnect,
  received,
  startBalancer,
  startNode,
  startPublisher,
  startRedis,
  tryPublish,
  uniquePrefix,
  PARTITIONS,
  REDIS_CLUSTER,
  mainPrefix,
  partitionOf,
  startNodesOnRedisCluster,
  viaPartition,
} from './cluster-helpers.mjs';

const T = { timeout: 30_000 };
const RECONNECT = { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 300, randomizationFactor: 0 };

/** Everything a test started, stopped in afterEach (SIGKILL: nothing graceful is under test here). */
const started = { procs: [], balancers: [] };
let failed = false;

function track(p) {
  started.procs.push(p);
  return p;
}

/**
 * One redis-server and `nodes` nodes; with TIDINGS_TEST_PARTITIONS=n also n more redis-servers the rooms'
 * events are spread over (`parts`), the first one holding records and the registry as before.
 */
async function cluster({ nodes = 3, durable = false, config = '' } = {}) {
  if (REDIS_CLUSTER > 0) return startNodesOnRedisCluster({ nodes, partitions: REDIS_CLUSTER, config, track });
  const redis = track(await startRedis({ durable }));
  const parts = [];
  for (let i = 0; i < PARTITIONS; i++) parts.push(track(await startRedis({ durable, label: `part${i}-${redis.port}` })));
  if (parts.length > 0) config = `partitions = ${JSON.stringify(parts.map((p) => p.url))}\n${config}`;
  const prefix = uniquePrefix();
  const list = [];
  for (let i = 0; i < nodes; i++) {
    list.push(track(await startNode({ redisUrl: redis.url, prefix, name: `${prefix}-n${i}`, config })));
  }
  return { redis, parts, prefix, nodes: list };
}

/** Where a room's events are published: the redis-server (port) and channel name. */
function roomChannelOf({ redis, parts, prefix }, room, nsp = '/') {
  if (parts.length === 0) return { port: redis.port, name: roomChannel(prefix, room, nsp) };
  const p = partitionOf(room, parts.length, nsp);
  return { port: parts[p].port, name: roomChannel(`${prefix}:p${p}`, room, nsp) };
}

/** Subscribers per room, by room name (PUBSUB NUMSUB on each room's redis-server). */
async function roomSubs(c, ...rooms) {
  const out = {};
  // A Redis Cluster's PUBSUB NUMSUB counts one server's subscribers only: not checked there.
  if (c.onCluster) return Object.fromEntries(rooms.map((r) => [r, 'not counted on a cluster']));
  for (const room of rooms) {
    const { port, name } = roomChannelOf(c, room);
    out[room] = (await numsub(port, name))[name];
  }
  return out;
}

/**
 * A connected client on `target` (a node or balancer) in `rooms`, recording its events. By default the rooms
 * come from the token's `join` claim (joined at connect); `via: 'subscribe'` sends `subscribe` events instead,
 * after a short pause (an event sent the instant the CONNECT reply arrives is its own test, below).
 */
async function member(target, rooms, { label, transports = ['websocket'], reconnect = false, sub = uid('u'), via = 'join' } = {}) {
  const socket = client(target, {
    token: token({ sub, rooms: ['*'], ...(via === 'join' ? { join: rooms } : {}) }),
    transports,
    ...(reconnect ? RECONNECT : {}),
  });
  const rec = record(socket, label ?? sub);
  await awaitConnect(socket, 8000);
  if (via === 'subscribe') {
    await sleep(100);
    for (const room of rooms) {
      const t0 = Date.now();
      const ack = await ask(socket, 'subscribe', room, 6000).catch((err) => {
        throw new Error(`${rec.label} (sid ${socket.io.engine?.id}): subscribe ${room}: ${err.message} after ${Date.now() - t0} ms`);
      });
      assertOk(ack, `${rec.label}: subscribe ${room}`);
    }
  }
  rec.rooms = rooms;
  rec.sub = sub;
  return rec;
}

/** Map node id (the tag starting its session ids) → node, from each node's GET /v1/nodes `self`. */
async function nodeIds(nodes) {
  const ids = new Map();
  for (const n of nodes) {
    const res = await api(n, 'GET', '/v1/nodes');
    assert.equal(res.status, 200, res.text);
    ids.set(res.json.self, n);
  }
  return ids;
}

/** `n` GET /healthz requests through `target`, each on a new connection. */
async function throwaway(target, n = 1) {
  for (let i = 0; i < n; i++) {
    await new Promise((resolve, reject) => {
      http.get(`${target.url}/healthz`, { agent: false }, (res) => res.resume().on('end', resolve)).on('error', reject);
    });
  }
}

const roomChannel = (prefix, room, nsp = '/') => `${prefix}:room:${nsp}\0${room}`;

async function numsub(redisPort, ...channels) {
  const reply = await redisCall(redisPort, 'PUBSUB', 'NUMSUB', ...channels);
  const out = {};
  for (let i = 0; i < reply.length; i += 2) out[reply[i]] = reply[i + 1];
  return out;
}

/**
 * The offset every recorder saw for each key must be the same (one cluster-wide order). A partitioned cluster
 * has none: each node's offsets are its own vector of positions (checkDelivery checks each partition's order).
 */
function assertSameOffsets(recs) {
  const offsetOf = new Map();
  if (PARTITIONS > 0) return offsetOf;
  for (const rec of recs) {
    for (const g of received(rec)) {
      const seen = offsetOf.get(g.data.k);
      if (seen === undefined) offsetOf.set(g.data.k, { offset: g.offset, by: rec.label });
      else {
        assert.equal(
          g.offset,
          seen.offset,
          `${g.data.k} arrived at ${rec.label} with offset ${g.offset} but at ${seen.by} with ${seen.offset}`,
        );
      }
    }
  }
  return offsetOf;
}

afterEach(async () => {
  closeAllClients();
  await Promise.all(started.balancers.splice(0).map((b) => b.close()));
  await Promise.all(started.procs.splice(0).map((p) => p.stop({ signal: 'SIGKILL' })));
});

after(() => cleanupLogs(failed));

/**
 * Kill Redis (SIGKILL; AOF with fsync always, so nothing it acknowledged is lost) under three paced
 * publishers, restart it 2 s later on the same port and data. Rooms x and y are busy all along; z has
 * members but gets its first event only once Redis is back (while the nodes may not have resubscribed
 * yet). `warm`: publish one event before the members join, so the cluster sequence is not 0 when the
 * nodes subscribe their rooms.
 */
async function redisRestart(t, { warm }) {
  try {
    const { redis, prefix, nodes } = await cluster({ durable: true });
    if (warm) assert.equal((await tryPublish(nodes[0], { room: 'warm-up', event: 'e', data: {} })).status, 200);
    const recs = [];
    const plan = [['x'], ['y'], ['x', 'y', 'z'], ['z']];
    for (const [j, n] of nodes.entries()) {
      for (let i = 0; i < 2; i++) recs.push(await member(n, plan[(j + i) % 4], { label: `n${j}/${plan[(j + i) % 4].join('')}` }));
    }
    recs.push(await member(nodes[0], ['x', 'z'], { label: 'n0/xz-polling', transports: ['polling'] }));
    // x and y are busy all along; z gets its first event only once Redis is back.
    let zOn = false;
    const pubs = [
      startPublisher(nodes[0], { rooms: (i) => [['x'], ['y'], ['x', 'y']][i % 3], intervalMs: 25, tag: 'p0', timeoutMs: 8000 }),
      startPublisher(nodes[1], { rooms: (i) => [['y'], ['x']][i % 2], intervalMs: 25, tag: 'p1', timeoutMs: 8000 }),
      startPublisher(nodes[2], { rooms: () => (zOn ? ['z'] : ['x']), intervalMs: 25, tag: 'p2', timeoutMs: 8000 }),
    ];
    await sleep(700);
    const killedAt = Date.now();
    redis.kill('SIGKILL');
    await redis.exited;
    await sleep(2000);
    const restartAt = Date.now();
    const redis2 = track(await redis.restart());
    zOn = true;
    const upAt = Date.now();
    // Publishing works again…
    await eventually(() => pubs.every((p) => p.results.some((r) => r.startedAt > upAt && r.status === 200)), {
      timeoutMs: 8000,
      what: 'publishes to succeed again after the restart',
    });
    // …and the nodes resubscribed their rooms.
    await eventually(
      async () => {
        const subs = await numsub(redis2.port, roomChannel(prefix, 'x'), roomChannel(prefix, 'y'), roomChannel(prefix, 'z'));
        return subs[roomChannel(prefix, 'x')] === 3 && subs[roomChannel(prefix, 'y')] === 3 && subs[roomChannel(prefix, 'z')] === 3;
      },
      { timeoutMs: 10_000, what: 'every node to resubscribe x, y and z' },
    );
    const resubscribedAt = Date.now();
    await sleep(800);
    const results = (await Promise.all(pubs.map((p) => p.stop()))).flat();

    const during = results.filter((r) => r.startedAt > killedAt + 50 && r.endedAt < restartAt);
    assert.ok(during.length > 0, 'no publish attempted while Redis was down');
    assert.deepEqual(during.filter((r) => r.status >= 200 && r.status < 300), [], 'a publish answered 2xx while Redis was down');
    const statuses = {};
    for (const r of results) statuses[r.status] = (statuses[r.status] || 0) + 1;
    assert.ok(during.some((r) => r.status === 503), `no 503 while Redis was down: ${JSON.stringify(during.slice(0, 5))}`);
    assert.deepEqual(
      results.filter((r) => ![200, 503].includes(r.status)).map((r) => `${r.k}:${r.status}:${r.text.slice(0, 80)}`),
      [],
      'publishes answered something other than 200 or 503',
    );

    const owedTo = (rec) => owed(results, rec.rooms);
    const done = await allReceived(recs, (rec) => owedTo(rec).must.size, { timeoutMs: 6000 });
    for (const rec of recs) checkDelivery(rec, owedTo(rec));
    assert.ok(done.complete, done.short.join(', '));
    assertSameOffsets(recs);
    for (const rec of recs) assert.deepEqual(rec.disconnects, [], `${rec.label} disconnected`);
    const firstOk = Math.min(...results.filter((r) => r.startedAt > killedAt && r.status === 200).map((r) => r.endedAt));
    const refused = results.filter((r) => r.status !== 200);
    t.diagnostic(
      `statuses ${JSON.stringify(statuses)}; redis down ${restartAt - killedAt} ms; first 2xx answered ${firstOk - restartAt} ms after the restart began (refused from ${Math.min(...refused.map((r) => r.endedAt)) - killedAt} to ${Math.max(...refused.map((r) => r.endedAt)) - killedAt} ms after the kill); ` +
        `all rooms resubscribed ${resubscribedAt - upAt} ms after restart; refused yet delivered: ${deliveredThoughRefused(results, recs).length}`,
    );
  } catch (err) {
    failed = true;
    t.diagnostic(`logs: ${logDir()}`);
    throw err;
  }
}

describe('cluster over redis-server', () => {
  test('3 nodes: every member gets every event of its rooms once, in one order; nodes subscribe only their rooms', T, async (t) => {
    try {
      const c = await cluster();
      const { redis, prefix, nodes } = c;
      const [n0, n1, n2] = nodes;
      // n0 and n1 serve a and b, n2 serves only a.
      const recs = [
        await member(n0, ['a'], { label: 'n0/a' }),
        await member(n0, ['a', 'b'], { label: 'n0/ab', via: 'subscribe' }),
        await member(n0, ['b'], { label: 'n0/b' }),
        await member(n1, ['a'], { label: 'n1/a' }),
        await member(n1, ['b'], { label: 'n1/b' }),
        await member(n1, ['a', 'b'], { label: 'n1/ab', via: 'subscribe' }),
        await member(n2, ['a'], { label: 'n2/a' }),
        await member(n2, ['a'], { label: 'n2/a2', transports: ['polling'] }),
      ];

      // One subscription per node serving the room.
      if (!c.onCluster) assert.deepEqual(await roomSubs(c, 'a', 'b'), { a: 3, b: 2 }, 'PUBSUB NUMSUB a/b');

      const before = await Promise.all(nodes.map(metrics));

      // Three publishers in parallel, one per node: a, b, a+b in turn.
      const cycle = [['a'], ['b'], ['a', 'b']];
      const pubs = nodes.map((n, j) => startPublisher(n, { rooms: (i) => cycle[i % 3], intervalMs: 0, tag: `http${j}` }));
      // Meanwhile the ingest channel, from a plain Redis client.
      const ingest = [];
      const rc = await redisConnect(redis.port);
      for (let i = 0; i < 12; i++) {
        const rooms = cycle[i % 3];
        const k = `ing-${i}`;
        const msg = rooms.length === 1 ? { room: rooms[0], event: 'e', data: { k } } : { rooms, event: 'e', data: { k } };
        const receivers = await rc.call('PUBLISH', `${mainPrefix(prefix)}:publish`, JSON.stringify(msg));
        // (A Redis Cluster counts only the subscribers of the server the PUBLISH reached.)
        if (!c.onCluster) assert.equal(receivers, 3, 'every node listens on the ingest channel');
        ingest.push({ k, rooms, status: 200 });
        await sleep(10);
      }
      rc.close();
      await sleep(300);
      const results = (await Promise.all(pubs.map((p) => p.stop()))).flat();
      const failures = results.filter((r) => r.status !== 200);
      assert.deepEqual(failures, [], 'every HTTP publish answered 200');
      assert.ok(results.length >= 30, `only ${results.length} HTTP publishes`);
      const all = [...results, ...ingest];

      const owedTo = (rec) => owed(all, rec.rooms);
      const done = await allReceived(recs, (rec) => owedTo(rec).must.size, { timeoutMs: 10_000 });
      for (const rec of recs) checkDelivery(rec, owedTo(rec));
      assert.ok(done.complete, done.short.join(', '));
      const offsetOf = assertSameOffsets(recs);
      // Every event got one cluster-wide offset.
      assert.equal(new Set([...offsetOf.values()].map((v) => v.offset)).size, offsetOf.size, 'distinct events share an offset');
      if (PARTITIONS > 0 && !c.onCluster) {
        // Each group numbered exactly the events that had a room on it; the main Redis none.
        assert.equal(await redisCall(redis.port, 'GET', `${prefix}:seq`), null, 'the main redis numbered events');
        for (const [p, part] of c.parts.entries()) {
          const count = all.filter((r) => r.rooms.some((room) => partitionOf(room) === p)).length;
          assert.equal(Number((await redisCall(part.port, 'GET', `${prefix}:p${p}:seq`)) ?? 0), count, `events numbered by partition ${p}`);
        }
      }

      // Node-level traffic: each node received exactly the channel messages of its rooms; n2 nothing of b.
      const after = await Promise.all(nodes.map(metrics));
      const delta = nodes.map((_, i) =>
        metricSum(after[i], 'tidings_cluster_events_received_total') - metricSum(before[i], 'tidings_cluster_events_received_total'),
      );
      const count = (room) => all.filter((r) => r.rooms.includes(room)).length;
      assert.deepEqual(delta, [count('a') + count('b'), count('a') + count('b'), count('a')], 'tidings_cluster_events_received_total per node');

      // The last b member leaving n0 ends n0's b subscription.
      const n0b = recs.filter((r) => r.label.startsWith('n0/') && r.rooms.includes('b'));
      for (const rec of n0b) assertOk(await ask(rec.socket, 'unsubscribe', 'b'));
      await eventually(async () => c.onCluster || (await roomSubs(c, 'b')).b === 1, {
        timeoutMs: 3000,
        what: 'n0 to unsubscribe room b',
      });
      t.diagnostic(`${results.length} HTTP + ${ingest.length} ingest events, per-node received ${delta.join('/')}`);
    } catch (err) {
      failed = true;
      t.diagnostic(`logs: ${logDir()}`);
      throw err;
    }
  });

  test('the ingest channel keeps the order messages were sent in, whichever node publishes each', T, async (t) => {
    try {
      const { redis, prefix, nodes } = await cluster();
      const recs = await Promise.all(nodes.map((n, i) => member(n, ['ord'], { label: `n${i}/ord` })));
      const rc = await redisConnect(redis.port);
      const COUNT = 300;
      // Back to back, without waiting for one to be published before sending the next.
      await Promise.all(
        Array.from({ length: COUNT }, (_, i) =>
          rc.call('PUBLISH', `${mainPrefix(prefix)}:publish`, JSON.stringify({ room: 'ord', event: 'e', data: { k: `o${i}` } })),
        ),
      );
      rc.close();
      const done = await allReceived(recs, () => COUNT, { timeoutMs: 15_000 });
      assert.ok(done.complete, done.short.join(', '));
      const expected = Array.from({ length: COUNT }, (_, i) => `o${i}`);
      for (const rec of recs) {
        assert.deepEqual(received(rec).map((x) => x.data.k), expected, `${rec.label}: every message once, in the order sent`);
      }
    } catch (err) {
      failed = true;
      t.diagnostic(`logs: ${logDir()}`);
      throw err;
    }
  });

  test('a node killed with SIGKILL mid-stream: its clients recover on the other nodes (same id, nothing lost)', T, async (t) => {
    try {
      const { nodes } = await cluster();
      const ids = await nodeIds(nodes);
      const lb = await startBalancer(nodes.map((n) => n.port));
      started.balancers.push(lb);
      const plan = [['r'], ['r2'], ['r', 'r2']];
      const recs = [];
      for (let i = 0; i < 9; i++) recs.push(await member(lb, plan[i % 3], { label: `ws${i}`, reconnect: true }));
      for (let i = 0; i < 2; i++) recs.push(await member(lb, plan[i % 3], { label: `poll${i}`, reconnect: true, transports: ['polling'] }));
      const ownerOf = (rec) => ids.get(rec.socket.io.engine.id.slice(0, 6));
      const victim = nodes[2];
      const victims = recs.filter((r) => ownerOf(r) === victim);
      assert.ok(victims.length >= 3, `only ${victims.length} clients on the victim node: ${recs.map((r) => `${r.label}@${ownerOf(r)?.name}`).join(' ')}`);
      const idsBefore = new Map(recs.map((r) => [r, r.socket.id]));
      await sleep(300); // session records reach Redis

      const rooms = (i) => [['r'], ['r2'], ['r', 'r2']][i % 3];
      const pubA = startPublisher(nodes[0], { rooms, intervalMs: 20, tag: 'a' });
      const pubB = startPublisher(nodes[1], { rooms: (i) => rooms(i + 1), intervalMs: 20, tag: 'b' });
      await sleep(800);
      const killedAt = Date.now();
      victim.kill('SIGKILL');
      await victim.exited;
      await eventually(() => victims.every((r) => r.connects.length >= 2 && r.socket.connected), {
        timeoutMs: 10_000,
        what: 'the victim node clients to reconnect',
      });
      const back = Math.max(...victims.map((r) => r.connects[1].at)) - killedAt;
      await sleep(800);
      const results = (await Promise.all([pubA.stop(), pubB.stop()])).flat();
      assert.deepEqual(results.filter((r) => r.status !== 200), [], 'publishes through the surviving nodes answered 200');

      const owedTo = (rec) => owed(results, rec.rooms);
      const done = await allReceived(recs, (rec) => owedTo(rec).must.size, { timeoutMs: 10_000 });
      for (const rec of recs) checkDelivery(rec, owedTo(rec));
      assert.ok(done.complete, done.short.join(', '));
      assertSameOffsets(recs);
      for (const rec of recs) {
        const [first, ...later] = rec.connects;
        assert.equal(first.recovered, false, `${rec.label}: first connect`);
        for (const c of later) {
          assert.equal(c.recovered, true, `${rec.label}: reconnect ${JSON.stringify(c)} not recovered (connects ${JSON.stringify(rec.connects)})`);
          assert.equal(c.id, idsBefore.get(rec), `${rec.label}: socket id changed on recovery`);
        }
      }
      for (const rec of victims) {
        assert.ok(rec.connects.length >= 2, `${rec.label} was on the killed node but never reconnected`);
        assert.notEqual(ownerOf(rec), victim, `${rec.label} still owned by the killed node`);
      }
      t.diagnostic(
        `${results.length} events; ${victims.length} clients moved off the killed node, all back ${back} ms after the kill; ` +
          `other reconnects: ${recs.filter((r) => !victims.includes(r) && r.connects.length > 1).map((r) => r.label).join(',') || 'none'}`,
      );
    } catch (err) {
      failed = true;
      t.diagnostic(`logs: ${logDir()}`);
      throw err;
    }
  });

  test('node registry: /v1/nodes lists the nodes with their connections, /v1/nodes/pick the least loaded, a dead node leaves', T, async (t) => {
    try {
      const { nodes } = await cluster();
      const [n0, n1, n2] = nodes;
      const ids = await nodeIds(nodes);
      const idOf = new Map([...ids].map(([id, n]) => [n, id]));
      for (let i = 0; i < 3; i++) await member(n0, [], { label: `n0-${i}` });
      for (let i = 0; i < 2; i++) await member(n1, [], { label: `n1-${i}` });
      await member(n2, [], { label: 'n2-0' });

      const expected = (n) => ({ [idOf.get(n0)]: 3, [idOf.get(n1)]: 2, [idOf.get(n2)]: 1 });
      for (const n of nodes) {
        // Each node reports its own count live and the others' as of their last heartbeat (every 2 s).
        await eventually(
          async () => {
            const res = await api(n, 'GET', '/v1/nodes');
            if (res.status !== 200) throw new Error(`GET /v1/nodes → ${res.status} ${res.text}`);
            const counts = Object.fromEntries(res.json.nodes.map((x) => [x.id, x.connections]));
            assert.equal(res.json.self, idOf.get(n));
            for (const x of res.json.nodes) assert.equal(x.url, ids.get(x.id)?.url, `url of ${x.id}`);
            assert.deepEqual(counts, expected(n));
            return true;
          },
          { timeoutMs: 6000, what: `GET /v1/nodes on ${n.name} to list 3/2/1 connections` },
        );
      }
      const pick = await api(n0, 'GET', '/v1/nodes/pick');
      assert.equal(pick.status, 200, pick.text);
      assert.deepEqual(pick.json, { id: idOf.get(n2), url: n2.url, connections: 1 });

      const killedAt = Date.now();
      n2.kill('SIGKILL');
      await n2.exited;
      await eventually(
        async () => {
          const res = await api(n0, 'GET', '/v1/nodes');
          return res.status === 200 && !res.json.nodes.some((x) => x.id === idOf.get(n2));
        },
        { timeoutMs: 9000, intervalMs: 100, what: 'the killed node to leave /v1/nodes' },
      );
      const gone = Date.now() - killedAt;
      assert.ok(gone <= 7000, `the killed node left /v1/nodes only after ${gone} ms`);
      const list = await api(n1, 'GET', '/v1/nodes');
      assert.deepEqual(list.json.nodes.map((x) => x.id).sort(), [idOf.get(n0), idOf.get(n1)].sort());
      const pick2 = await api(n0, 'GET', '/v1/nodes/pick');
      assert.equal(pick2.json?.id, idOf.get(n1), pick2.text);
      t.diagnostic(`killed node left /v1/nodes ${gone} ms after SIGKILL`);
    } catch (err) {
      failed = true;
      t.diagnostic(`logs: ${logDir()}`);
      throw err;
    }
  });

  test('no sticky sessions: polling requests spread over 2 nodes (and a websocket upgrade on the other node) still work', T, async (t) => {
    try {
      const { nodes } = await cluster({ nodes: 2 });
      const lb = await startBalancer(nodes.map((n) => n.port));
      started.balancers.push(lb);
      const before = await Promise.all(nodes.map(metrics));
      const ids = await nodeIds(nodes);
      const ownerOf = (rec) => ids.get(rec.socket.io.engine.id.slice(0, 6));
      // Polling clients until each node owns at least one session (the handshake lands where the turn is).
      const recs = [];
      for (let i = 0; i < 6 && new Set(recs.map(ownerOf)).size < 2; i++) {
        if (i > 0) await throwaway(lb, i); // shift the balancer's turn
        recs.push(await member(lb, ['s'], { label: `polling${i}`, transports: ['polling'] }));
      }
      assert.equal(new Set(recs.map(ownerOf)).size, 2, 'sessions owned by both nodes');
      // A polling → websocket client whose upgrade request goes to the node that does not own its session
      // (with two nodes and this client's request pattern, plain round-robin always sends it to the owner).
      const lbWs = await startBalancer(nodes.map((n) => n.port), {
        pick(head) {
          const m = /^GET \S*transport=websocket\S*sid=([\w-]{6})/.exec(head);
          return m ? nodes.find((n) => ids.get(m[1]) !== n)?.port : undefined;
        },
      });
      started.balancers.push(lbWs);
      const upgraded = await member(lbWs, ['s'], { label: 'upgrade', transports: ['polling', 'websocket'] });
      recs.push(upgraded);
      await eventually(() => upgraded.socket.io.engine.transport.name === 'websocket', { timeoutMs: 5000, what: 'the upgrade to websocket' });
      const spliced = (await Promise.all(nodes.map(metrics))).reduce((a, m) => a + metricSum(m, 'tidings_forwarded_websockets'), 0);
      assert.equal(spliced, 1, 'forwarded (spliced) websockets');
      const pub = startPublisher((i) => nodes[i % 2], { rooms: ['s'], intervalMs: 20, tag: 's' });
      // A client event through whichever node the request lands on.
      for (const rec of recs) assertOk(await ask(rec.socket, 'subscribe', 'extra', 6000));
      await sleep(1500);
      const results = await pub.stop();
      assert.deepEqual(results.filter((r) => r.status !== 200), []);
      const owedTo = (rec) => owed(results, rec.rooms);
      const done = await allReceived(recs, (rec) => owedTo(rec).must.size, { timeoutMs: 10_000 });
      for (const rec of recs) checkDelivery(rec, owedTo(rec));
      assert.ok(done.complete, done.short.join(', '));
      for (const rec of recs) assert.deepEqual(rec.disconnects, [], `${rec.label} disconnected`);
      const after = await Promise.all(nodes.map(metrics));
      const forwarded = nodes.map(
        (_, i) =>
          metricSum(after[i], 'tidings_forwarded_requests_total', 'outcome="ok"') -
          metricSum(before[i], 'tidings_forwarded_requests_total', 'outcome="ok"'),
      );
      assert.ok(forwarded[0] > 5 && forwarded[1] > 5, `requests forwarded per node: ${forwarded.join('/')}`);
      assert.ok([...lb.perTarget.values()].every((n) => n > 3), `connections per node: ${JSON.stringify([...lb.perTarget])}`);
      const notOk = nodes.map((_, i) => metricSum(after[i], 'tidings_forwarded_requests_total') - metricSum(after[i], 'tidings_forwarded_requests_total', 'outcome="ok"'));
      t.diagnostic(`${results.length} events; forwarded ok per node ${forwarded.join('/')}, other outcomes ${notOk.join('/')}; connections per node ${[...lb.perTarget.values()].join('/')}`);
    } catch (err) {
      failed = true;
      t.diagnostic(`logs: ${logDir()}`);
      throw err;
    }
  });

  test('a draining node moves the websockets it splices: new ones 503, open ones closed over its window, recovered on the owner', T, async (t) => {
    try {
      const config = '[shutdown]\ndrain_window_secs = 2\ndrain_secs = 15\n';
      const { nodes } = await cluster({ nodes: 2, config });
      const ids = await nodeIds(nodes);
      const [drained, owner] = nodes;
      // Sessions owned by `owner`, upgraded to websocket through `drained` (spliced there).
      const lb = await startBalancer([owner.port], {
        pick(head) {
          return /^GET \S*transport=websocket/.test(head) ? drained.port : owner.port;
        },
      });
      started.balancers.push(lb);
      const recs = [];
      for (let i = 0; i < 4; i++) {
        recs.push(await member(lb, ['t'], { label: `spliced${i}`, transports: ['polling', 'websocket'], reconnect: true }));
      }
      await eventually(() => recs.every((r) => r.socket.io.engine.transport.name === 'websocket'), { what: 'the upgrades' });
      assert.ok(recs.every((r) => ids.get(r.socket.io.engine.id.slice(0, 6)) === owner), 'sessions owned by the other node');
      assert.equal(metricSum(await metrics(drained), 'tidings_forwarded_websockets'), 4, 'spliced through the drained node');
      const idsBefore = new Map(recs.map((r) => [r, r.socket.id]));
      await sleep(300); // session records reach Redis
      const pub = startPublisher(owner, { rooms: ['t'], intervalMs: 20, tag: 't' });
      await sleep(300);

      const t0 = Date.now();
      drained.kill('SIGTERM');
      await sleep(200);
      // A new upgrade for one of the owner's sessions is refused before any upgrade, so a balancer retries.
      const sid = recs[0].socket.io.engine.id;
      const refused = await new Promise((resolve, reject) => {
        const req = http.get(`http://127.0.0.1:${drained.port}/socket.io/?EIO=4&transport=websocket&sid=${sid}`, {
          headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' },
        });
        req.on('response', (res) => resolve(res.statusCode));
        req.on('upgrade', (res, socket) => {
          socket.destroy();
          resolve(res.statusCode);
        });
        req.on('error', reject);
      });
      assert.equal(refused, 503, 'a draining node takes no new spliced websocket');
      // The open ones are closed over the window while the node still runs; it exits once they are gone.
      const closedAt = [];
      await eventually(() => recs.every((r) => r.disconnects.length >= 1), { timeoutMs: 8000, what: 'the spliced clients moved' });
      for (const r of recs) closedAt.push(r.disconnects[0].at - t0);
      const exit = await drained.exited;
      const exitedAt = Date.now() - t0;
      assert.equal(exit.code, 0, JSON.stringify(exit));
      assert.ok(Math.max(...closedAt) < exitedAt, `clients moved before the exit (${closedAt} vs ${exitedAt} ms)`);
      await eventually(() => recs.every((r) => r.connects.length >= 2 && r.socket.connected), { timeoutMs: 10_000, what: 'the clients back' });
      await sleep(500);
      const results = await pub.stop();
      assert.deepEqual(results.filter((r) => r.status !== 200), []);
      const owedTo = (rec) => owed(results, rec.rooms);
      const done = await allReceived(recs, (rec) => owedTo(rec).must.size, { timeoutMs: 10_000 });
      for (const rec of recs) checkDelivery(rec, owedTo(rec));
      assert.ok(done.complete, done.short.join(', '));
      for (const rec of recs) {
        for (const c of rec.connects.slice(1)) {
          assert.equal(c.recovered, true, `${rec.label}: reconnect not recovered ${JSON.stringify(rec.connects)}`);
          assert.equal(c.id, idsBefore.get(rec), `${rec.label}: socket id changed`);
        }
      }
      t.diagnostic(`spliced clients moved at ${closedAt.sort((a, b) => a - b).join('/')} ms, node exit at ${exitedAt} ms`);
    } catch (err) {
      failed = true;
      t.diagnostic(`logs: ${logDir()}`);
      throw err;
    }
  });

  // With partitions the main Redis carries no events: its restart is not this test's (see partitions.test.mjs).
  const single = { ...T, skip: PARTITIONS > 0 && 'events go through the partitions' };
  test('redis restarts under traffic: 503 while it is down, every event answered 2xx reaches every member once, in order', single, (t) =>
    redisRestart(t, { warm: true }),
  );

  test('redis restarts on a fresh cluster: rooms subscribed before the first event ever still catch up after the restart', single, (t) =>
    redisRestart(t, { warm: false }),
  );

  // In cluster mode a CONNECT is decided asynchronously (rooms are subscribed in Redis first); the client
  // gets the CONNECT reply and may emit at once. An event that reaches the server before the socket is
  // registered for its namespace must still be handled (here: the subscribe ack must come).
  test('a client event sent the instant the CONNECT reply arrives is answered (async cluster connect)', T, async (t) => {
    try {
      // Rounds of handshakes from one address for seconds: past the per-address handshake rate.
      const { nodes } = await cluster({ durable: true, config: MANY_CLIENTS_CONFIG });
      const results = [];
      // The window is short and its width depends on scheduling: keep connecting rounds of 12 clients
      // (per node 3 polling, where it shows most, and 1 websocket) for a few seconds or until one goes
      // unanswered.
      const until = Date.now() + 8000;
      for (let round = 0; Date.now() < until && !results.some((r) => r.ack?.ok !== true); round++) {
        const sockets = [];
        await Promise.all(
          nodes.flatMap((n, j) =>
            [0, 1, 2, 3].map(async (i) => {
              const transports = i === 0 ? ['websocket'] : ['polling'];
              const label = `r${round}/n${j}/${i}/${transports[0]}`;
              const socket = client(n, { token: token({ sub: uid('u'), rooms: ['*'] }), transports });
              sockets.push(socket);
              // What the README shows: subscribe from the connect handler.
              const acked = new Promise((resolve) => {
                socket.on('connect', () => {
                  socket.timeout(5000).emit('subscribe', 'q', (err, ack) => resolve(err ? `no ack (${err.message})` : ack));
                });
              });
              await awaitConnect(socket);
              results.push({ label, sid: socket.io.engine.id, ack: await acked });
            }),
          ),
        );
        for (const socket of sockets) socket.close();
      }
      t.diagnostic(`${results.length} clients`);
      const bad = results.filter((r) => r.ack?.ok !== true);
      assert.deepEqual(bad, [], `${bad.length} of ${results.length} subscribes sent right after connect were not answered {ok:true}`);
    } catch (err) {
      failed = true;
      t.diagnostic(`logs: ${logDir()}`);
      throw err;
    }
  });
});
