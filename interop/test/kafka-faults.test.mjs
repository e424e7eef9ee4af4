// Kafka ingest under faults, against the real broker of kafka.test.mjs (tansu, memory storage) with records
// produced as a steady stream by the independent producer (kafka_produce.py) and received by stock
// socket.io-client members, which must get every record exactly once and in partition order:
//  - the broker unreachable from the nodes for 10 s in the middle of ingest (the broker's storage is memory only,
//    so it is not restarted: a proxy it advertises cuts the nodes' connections off, see kafka-proxy.mjs, while
//    the producer goes on), and the nodes serve clients and the HTTP API meanwhile;
//  - consumer-group rebalances: a third node joins a 2-node cluster during ingest; then one node is killed
//    (SIGKILL) and a fourth joins.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { cleanupLogs, logDir, metricSum, metrics, startNode, startRedis, uniquePrefix } from './cluster-helpers.mjs';
import { collect, connect, eventually, mustPublish, sleep, startServer, token, uid } from './helpers.mjs';
import { SKIP, ingestConfig, produce, startBroker, startProducing } from './kafka-helpers.mjs';

const T = { timeout: 90_000 };
// Two faults of the test broker's group coordinator (tansu 0.6.0), seen in these tests with KAFKA_PROXY_TRACE and
// KAFKA_BROKER_LOG, stall some scenarios for good whatever the consumers do; those are kept, skipped:
//  - A member whose session expired is dropped when another member's heartbeat notices it, but the group is not
//    sent back to a rebalance: it stays formed with the old assignment (and the dead member as its leader when it
//    was), so the dead member's partitions are read by nobody; SyncGroup in a formed group ignores a new
//    assignment. Apache Kafka expires members on a timer and rebalances the group at once. A new member joining
//    after the dead one was dropped does rebalance the group (with a live leader): the kill test below replaces
//    the killed node, as an orchestrator would.
//  - A heartbeat that arrives after its member's session expired brings that member back instead of being
//    refused (UNKNOWN_MEMBER_ID in Apache Kafka). A consumer cut off past its session timeout (10 s in tidings)
//    rejoins as a new member; if a heartbeat it queued during the cut reaches the broker first, its old member is
//    revived and stays the group's leader, which never syncs: every JoinGroup names it, SyncGroup answers
//    REBALANCE_IN_PROGRESS, ingest stalls (measured: still stalled 390 s later). That happens on every frozen
//    connection ('freeze'), and in 2 of 3 runs when connections held during a black hole are forwarded once it
//    ends; 'blackhole' resets them instead, as a broker host back from an outage resets connections it never
//    knew, and librdkafka drops what it had queued on them.
// KAFKA_TRY_SKIPPED=1 runs them anyway (e.g. against a newer broker).
const trySkipped = Boolean(process.env.KAFKA_TRY_SKIPPED);
const TANSU_KEEPS_DEAD_MEMBERS = !trySkipped && 'tansu 0.6.0 does not rebalance when a member dies: its partitions are read by nobody';
const TANSU_REVIVES_EXPIRED_MEMBER = !trySkipped && 'tansu 0.6.0 keeps a frozen consumer\'s expired member as group leader: the group never forms again';
const CUT_MS = 10_000;
/** Tidings names its consumers `tidings-<node>-<entry>` to the broker. */
const isTidings = (clientId) => clientId.startsWith('tidings-');

/**
 * What is wrong with the `n`s a member got, as an object that is {received: count, duplicates: [], missing: [],
 * outOfOrder: [], unexpected: []} when it got 0..count-1 exactly once each, in order within each partition (a
 * record's partition is its data's `p`, or 0).
 */
function deliveryReport(items, count) {
  const seen = new Set();
  const duplicates = [];
  const outOfOrder = [];
  const last = new Map();
  for (const [i, { n, p = 0 }] of items.entries()) {
    if (seen.has(n)) duplicates.push(n);
    seen.add(n);
    if (last.has(p) && last.get(p) >= n) outOfOrder.push(`#${i}: ${n} after ${last.get(p)} in partition ${p}`);
    last.set(p, Math.max(n, last.get(p) ?? -1));
  }
  const missing = [];
  for (let n = 0; n < count; n += 1) if (!seen.has(n)) missing.push(n);
  const unexpected = [...seen].filter((n) => !(n >= 0 && n < count));
  return {
    received: items.length,
    duplicates: duplicates.slice(0, 20),
    missing: missing.slice(0, 20),
    outOfOrder: outOfOrder.slice(0, 20),
    unexpected: unexpected.slice(0, 20),
  };
}

function assertEveryRecordOnce(got, count, who) {
  assert.deepEqual(deliveryReport(got.items, count), { received: count, duplicates: [], missing: [], outOfOrder: [], unexpected: [] }, who);
}

/**
 * The tag of the node `socket` is connected to: the first characters of its engine.io session id, which the node
 * also puts in its Kafka client ids (`tidings-<tag>-<entry>`).
 */
const nodeTag = (socket) => socket.io.engine.id.slice(0, 6);

/** GET /readyz (200, or 503 when the node cannot take work): its body. */
async function readyz(node) {
  const res = await fetch(`${node.url}/readyz`, { signal: AbortSignal.timeout(5000) });
  const body = await res.json();
  assert.equal(res.status, body.ready ? 200 : 503);
  return body;
}

/** The Kafka counters of `node`'s /metrics, for the test's diagnostics. */
async function kafkaCounters(node) {
  const samples = await metrics(node);
  return Object.fromEntries(Object.entries(samples).filter(([name]) => name.startsWith('tidings_kafka_')));
}

/**
 * Checks that `node` serves while it cannot reach the broker: a new client connects and joins, and an HTTP
 * publish reaches both it and `member` (already connected).
 */
async function assertServes(node, member) {
  const room = 'news';
  const fresh = await connect(node, { token: token({ sub: uid('late'), rooms: [room], join: [room] }) });
  const notes = [collect(member, 'note'), collect(fresh, 'note')];
  const mark = uid('note');
  await mustPublish(node, { room, event: 'note', data: { mark } });
  for (const got of notes) await got.waitForCount(1, 5000);
  for (const got of notes) assert.deepEqual(got.items, [{ mark }]);
  fresh.close();
}

describe('kafka ingest under faults', { skip: SKIP }, () => {
  let broker;
  let failed = false;
  before(async () => {
    broker = await startBroker({ proxied: true });
  });
  after(() => {
    broker?.stop();
    cleanupLogs(failed);
  });

  /**
   * One partition, 600 records at 40 a second; once the members got some, the nodes (all of them, or only
   * the one consuming with `only: 'consumer'`) are cut off the broker in `mode` for 10 s while the producer
   * goes on. Every member gets 0..599 once, in order.
   */
  async function brokerCut(t, { mode, cluster = false, only = 'all' }) {
    const count = 600;
    const topic = uid('events');
    assert.equal(await produce(broker.brokers, topic, ['--create', '1']), 'created');
    const config = ingestConfig(broker.brokers, topic, uid('g'));
    const redis = cluster ? await startRedis() : null;
    const prefix = uniquePrefix();
    const nodes = cluster
      ? [
          await startNode({ redisUrl: redis.url, prefix, name: 'cut-a', config }),
          await startNode({ redisUrl: redis.url, prefix, name: 'cut-b', config }),
        ]
      : [await startServer({ config })];
    let producer;
    const got = [];
    try {
      const members = [];
      for (const node of nodes) {
        const member = await connect(node, { token: token({ sub: 'm', rooms: ['news'], join: ['news'] }) });
        members.push(member);
        got.push(collect(member, 'update'));
      }
      producer = startProducing(broker.brokers, topic, ['--count', String(count), '--rate', '40']);
      await eventually(() => got[0].items.length >= 60, { timeoutMs: 30_000, what: '60 records before the cut' });

      // Cut the nodes (or the one that consumes the partition) off the broker.
      let victims = isTidings;
      let cutNodes = nodes;
      if (only === 'consumer') {
        const published = [];
        for (const node of nodes) published.push(metricSum(await metrics(node), 'tidings_kafka_records_total', 'result="published"'));
        const consumer = published.indexOf(Math.max(...published));
        const id = `tidings-${nodeTag(members[consumer])}-`;
        victims = (clientId) => clientId.startsWith(id);
        cutNodes = [nodes[consumer]];
        t.diagnostic(`cutting ${nodes[consumer].name} (${id}) only; published so far per node: ${published.join(', ')}`);
      }
      const before = { delivered: got.map((g) => g.items.length), acked: producer.acked(), stats: { ...broker.proxy.stats } };
      broker.proxy.cut(victims, { mode });
      const cutAt = Date.now();
      t.diagnostic(`cut (${mode}) at ${before.delivered.join('/')} delivered, ${before.acked} produced`);

      // Meanwhile every node serves clients and the HTTP API.
      await sleep(1000);
      for (const [i, node] of nodes.entries()) await assertServes(node, members[i]);
      // /readyz and tidings_kafka_connected show which nodes lost the broker; they stay ready. (A frozen
      // connection looks up to the client until its requests time out, 60 s: not checked then.)
      for (const node of mode === 'freeze' ? [] : nodes) {
        const state = cutNodes.includes(node) ? 'down' : 'up';
        const ready = await eventually(
          async () => {
            const answer = await readyz(node);
            return answer.kafka?.['ingest[0]'] === state && answer;
          },
          { timeoutMs: CUT_MS / 2, what: `/readyz of ${node.name ?? 'the node'} to show its Kafka client ${state}` },
        );
        assert.equal(ready.ready, true);
        const samples = await metrics(node);
        assert.equal(metricSum(samples, 'tidings_kafka_connected'), state === 'up' ? 1 : 0);
        t.diagnostic(`during the cut ${node.name ?? 'node'}: /readyz ${JSON.stringify(ready)}; ${JSON.stringify(await kafkaCounters(node))}`);
      }
      await sleep(CUT_MS - (Date.now() - cutAt));
      const during = { delivered: got.map((g) => g.items.length), acked: producer.acked() };
      broker.proxy.restore();
      const cut = Object.fromEntries(['reset', 'frozen', 'held'].map((k) => [k, broker.proxy.stats[k] - before.stats[k]]));
      t.diagnostic(`restored after ${Date.now() - cutAt} ms at ${during.delivered.join('/')} delivered, ${during.acked} produced; nodes' connections ${JSON.stringify(cut)}`);

      // The cut bit: the nodes' connections were cut, and records produced meanwhile waited for the restore.
      assert.ok(cut.reset + cut.frozen + cut.held > 0, `no connection of the nodes was cut: ${JSON.stringify(cut)}`);
      const producedDuring = during.acked - before.acked;
      assert.ok(producedDuring >= 100, `the producer went on during the cut (${producedDuring} records)`);
      if (only === 'all') {
        const deliveredDuring = during.delivered[0] - before.delivered[0];
        assert.ok(deliveredDuring < producedDuring / 2, `${deliveredDuring} of ${producedDuring} records produced during the cut were delivered during it`);
      }

      assert.equal(await producer.done, count);
      const restoredAt = Date.now();
      for (const node of cutNodes) {
        await eventually(async () => (await readyz(node)).kafka?.['ingest[0]'] === 'up', { timeoutMs: 20_000, what: '/readyz: Kafka up again' });
      }
      for (const [i, g] of got.entries()) {
        await eventually(() => g.items.length >= count, { timeoutMs: 40_000, what: `${count} records at member ${i} (has ${g.items.length})` });
      }
      t.diagnostic(`all ${count} delivered ${Date.now() - restoredAt} ms after the producer ended`);
      await sleep(1500); // let duplicates show
      for (const [i, g] of got.entries()) assertEveryRecordOnce(g, count, `member ${i}`);
      for (const node of nodes) t.diagnostic(`after ${node.name ?? 'node'}: ${JSON.stringify(await kafkaCounters(node))}`);
      let published = 0;
      for (const node of nodes) published += metricSum(await metrics(node), 'tidings_kafka_records_total', 'result="published"');
      assert.equal(published, count, 'records published, over the nodes');
    } catch (err) {
      failed = true;
      for (const [i, g] of got.entries()) t.diagnostic(`member ${i}: ${JSON.stringify(deliveryReport(g.items, count))}`);
      if (cluster) t.diagnostic(`logs: ${logDir()}`);
      else t.diagnostic(`node output: ${nodes[0].stderr().slice(-4000)}`);
      throw err;
    } finally {
      broker.proxy.restore();
      producer?.kill();
      for (const node of nodes) await node.stop({ signal: 'SIGKILL' });
      redis?.kill();
    }
  }

  test('broker refused for 10 s mid-ingest (connections reset): every record once, in order; the node serves meanwhile', T, (t) =>
    brokerCut(t, { mode: 'refuse' }));

  test('broker black-holed for 10 s mid-ingest (connections reset, new ones unanswered): every record once, in order', T, (t) =>
    brokerCut(t, { mode: 'blackhole' }));

  test('broker frozen for 10 s mid-ingest (connections silent, new ones unanswered): every record once, in order', { ...T, skip: TANSU_REVIVES_EXPIRED_MEMBER }, (t) =>
    brokerCut(t, { mode: 'freeze' }));

  test('2 nodes: the broker black-holed for both for 10 s mid-ingest: every member gets every record once, in order', T, (t) =>
    brokerCut(t, { mode: 'blackhole', cluster: true }));

  test('2 nodes: only the consuming node cut off the broker for 10 s: every member gets every record once, in order', T, (t) =>
    brokerCut(t, { mode: 'blackhole', cluster: true, only: 'consumer' }));

  /**
   * Four partitions, `count` records at 60 a second spread over them (record n in partition n % 4), all to one
   * room; two nodes consume from the start, a third joins once a quarter was delivered and, with `kill`, the
   * second is killed (SIGKILL) once half was; with `replace`, a fourth node joins once the broker has seen the
   * killed one go (its session timeout, 10 s, and a heartbeat). Every member that lives through the whole
   * stream gets every record once, in partition order; a member of a node that joined mid-stream gets exactly
   * the tail of that sequence (a room has one order on every node).
   */
  async function rebalance(t, { count, kill = false, replace = false }) {
    const topic = uid('events');
    assert.equal(await produce(broker.brokers, topic, ['--create', '4']), 'created');
    const config = ingestConfig(broker.brokers, topic, uid('g'));
    const redis = await startRedis();
    const prefix = uniquePrefix();
    const nodes = [
      await startNode({ redisUrl: redis.url, prefix, name: 'group-a', config }),
      await startNode({ redisUrl: redis.url, prefix, name: 'group-b', config }),
    ];
    let producer;
    const killed = new Set();
    const published = async () => {
      const out = [];
      for (const node of nodes) {
        out.push(`${node.name} ${killed.has(node) ? 'killed' : metricSum(await metrics(node), 'tidings_kafka_records_total', 'result="published"')}`);
      }
      return out.join(', ');
    };
    const got = [];
    try {
      const join = async (node) => {
        const member = await connect(node, { token: token({ sub: 'm', rooms: ['news'], join: ['news'] }) });
        got.push(collect(member, 'update'));
      };
      for (const node of nodes) await join(node);
      producer = startProducing(broker.brokers, topic, ['--count', String(count), '--partitions', '4', '--rate', '60']);

      await eventually(() => got[0].items.length >= count / 4, { timeoutMs: 30_000, what: `${count / 4} records` });
      t.diagnostic(`group-c joins at ${got[0].items.length} delivered; published: ${await published()}`);
      nodes.push(await startNode({ redisUrl: redis.url, prefix, name: 'group-c', config }));
      await join(nodes[2]);

      let whole = [0, 1];
      if (kill) {
        await eventually(() => got[0].items.length >= count / 2, { timeoutMs: 30_000, what: `${count / 2} records` });
        // Not the group's leader, its first member (group-a): see TANSU_KEEPS_DEAD_LEADER.
        t.diagnostic(`group-b killed at ${got[0].items.length} delivered; published: ${await published()}`);
        nodes[1].kill('SIGKILL');
        killed.add(nodes[1]);
        whole = [0];
        if (replace) {
          await sleep(13_000);
          t.diagnostic(`group-d joins at ${got[0].items.length} delivered; published: ${await published()}`);
          nodes.push(await startNode({ redisUrl: redis.url, prefix, name: 'group-d', config }));
          await join(nodes[3]);
        }
      }

      assert.equal(await producer.done, count);
      const endedAt = Date.now();
      for (const i of whole) {
        await eventually(() => got[i].items.length >= count, { timeoutMs: 40_000, what: `${count} records at ${nodes[i].name} (has ${got[i].items.length})` });
      }
      t.diagnostic(`all ${count} delivered ${Date.now() - endedAt} ms after the producer ended; published: ${await published()}`);
      await sleep(1500); // let duplicates show
      for (const i of whole) assertEveryRecordOnce(got[i], count, `member on ${nodes[i].name}`);
      const sequence = got[0].items;
      for (let i = 2; i < nodes.length; i += 1) {
        const late = got[i].items;
        assert.ok(late.length > 0 && late.length < count, `the member on ${nodes[i].name} got ${late.length} records`);
        assert.deepEqual(late, sequence.slice(count - late.length), `the member on ${nodes[i].name}: the tail of the room's sequence`);
      }
      for (const node of nodes) if (!killed.has(node)) t.diagnostic(`${node.name}: ${JSON.stringify(await kafkaCounters(node))}`);
    } catch (err) {
      failed = true;
      for (const [i, g] of got.entries()) t.diagnostic(`member on ${nodes[i].name}: ${JSON.stringify(deliveryReport(g.items, count))}`);
      t.diagnostic(`logs: ${logDir()}`);
      throw err;
    } finally {
      producer?.kill();
      for (const node of nodes) await node.stop({ signal: 'SIGKILL' });
      redis.kill();
    }
  }

  test('consumer-group rebalance: a third node joins during ingest; every record once, in partition order', T, (t) =>
    rebalance(t, { count: 600 }));

  test('consumer-group rebalances: a third node joins, a node is killed, a fourth joins; every record once, in partition order', T, (t) =>
    rebalance(t, { count: 900, kill: true, replace: true }));

  test('consumer-group rebalances: a third node joins, then a node is killed; every record once, in partition order', { ...T, skip: TANSU_KEEPS_DEAD_MEMBERS }, (t) =>
    rebalance(t, { count: 900, kill: true }));
});
