// Kafka ingest against a real broker: tansu (a Kafka-wire-compatible broker, memory storage, on a loopback
// port, stopped by pid) with records produced by an independent client (confluent-kafka in Python), received by
// stock socket.io-client members (kafka-helpers.mjs). scripts/kafka-tools.sh provides both (TANSU_BIN,
// KAFKA_PYTHON); scripts/test.sh sets them, so these tests always run in CI. Faults: kafka-faults.test.mjs.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { metricSum, metrics, startNode, startRedis, uniquePrefix } from './cluster-helpers.mjs';
import { awaitConnect, client, collect, connect, eventually, sleep, startServer, token, uid } from './helpers.mjs';
import { SKIP, consume, ingestConfig, numbers, produce, startBroker } from './kafka-helpers.mjs';

const T = { timeout: 120_000 };

describe('kafka ingest', { skip: SKIP }, () => {
  let broker;
  before(async () => {
    broker = await startBroker();
  });
  after(() => broker?.stop());

  test('records reach room members in partition order, once; a bad record does not stop the partition', T, async () => {
    const topic = uid('events');
    assert.equal(await produce(broker.brokers, topic, ['--create', '1']), 'created');
    const server = await startServer({ config: ingestConfig(broker.brokers, topic, uid('g')) });
    const member = await connect(server, { token: token({ sub: 'm', rooms: ['news'], join: ['news'] }) });
    const got = collect(member, 'update');
    assert.equal(await produce(broker.brokers, topic, ['--raw', 'not json at all']), '1');
    assert.equal(await produce(broker.brokers, topic, ['--first', '0', '--count', '30']), '30');
    // The room from the record key, the same ids again (a producer retrying): published once.
    assert.equal(await produce(broker.brokers, topic, ['--first', '30', '--count', '30', '--key-room']), '30');
    assert.equal(await produce(broker.brokers, topic, ['--first', '20', '--count', '20']), '20');
    await eventually(() => got.items.length >= 60, { timeoutMs: 30_000, what: `60 events` });
    await sleep(500);
    assert.deepEqual(numbers(got), Array.from({ length: 60 }, (_, n) => n));
    const samples = await metrics(server);
    assert.equal(metricSum(samples, 'tidings_kafka_records_total', 'result="rejected"'), 1);
    assert.equal(metricSum(samples, 'tidings_kafka_records_total', 'result="published"'), 60);
    assert.equal(metricSum(samples, 'tidings_kafka_records_total', 'result="duplicate"'), 20);
  });

  test('direct messages through `to`: stored, delivered to every device once, in order; a bad one is dead-lettered', T, async () => {
    const dead = uid('dead');
    await produce(broker.brokers, dead, ['--create', '1']);
    const topics = [];
    for (const store of ['memory', 'redis']) {
      const topic = uid('dms');
      topics.push(topic);
      await produce(broker.brokers, topic, ['--create', '1']);
      const config = `${ingestConfig(broker.brokers, topic, uid('g'))}dead_letter_topic = "${dead}"\n`;
      const redis = store === 'redis' ? await startRedis() : null;
      const server = await startServer({
        config: redis ? `${config}\n[redis]\nkey_prefix = "${uniquePrefix()}"\n` : config,
        args: redis ? ['--redis', redis.url] : [],
      });
      try {
        const bob = uid('bob');
        const phone = client(server, { token: token({ sub: bob }), auth: { device: 'phone' } });
        await awaitConnect(phone);
        const got = [];
        phone.on('note', (data, meta, ack) => {
          got.push({ n: data.n, from: meta.from });
          ack();
        });
        const record = (n, extra = {}) => JSON.stringify({ to: bob, event: 'note', data: { n }, from: 'billing', id: `${bob}-${n}`, ...extra });
        for (let n = 0; n < 5; n++) assert.equal(await produce(broker.brokers, topic, ['--raw', record(n)]), '1');
        // Again (a producer retrying): the idempotency key keeps it once. Then one the message API refuses.
        assert.equal(await produce(broker.brokers, topic, ['--raw', record(3)]), '1');
        assert.equal(await produce(broker.brokers, topic, ['--raw', record(5, { event: 'message:status' })]), '1');
        assert.equal(await produce(broker.brokers, topic, ['--raw', record(6)]), '1');
        await eventually(() => got.length >= 6, { timeoutMs: 30_000, what: `6 messages (${store})` });
        await sleep(500);
        assert.deepEqual(got.map((m) => m.n), [0, 1, 2, 3, 4, 6], store);
        assert.ok(got.every((m) => m.from === 'billing'));
        const samples = await metrics(server);
        assert.equal(metricSum(samples, 'tidings_kafka_records_total', 'result="rejected"'), 1, store);
        phone.disconnect();
      } finally {
        await server.stop();
        redis?.kill();
      }
    }
    // The refused record of each run, as it was, with the reason and where it came from.
    const letters = await consume(broker.brokers, dead, 2, 5);
    assert.equal(letters.length, 2);
    for (const letter of letters) {
      assert.equal(letter.value.event, 'message:status');
      assert.match(letter.headers['tidings-error'], /reserved/);
      assert.match(letter.headers['tidings-origin'], new RegExp(`^(${topics.join('|')}):0:\\d+$`));
    }
  });

  test('the consuming node killed during ingest: the other resumes from the committed offsets, every record once', T, async () => {
    const topic = uid('events');
    await produce(broker.brokers, topic, ['--create', '1']);
    const redis = await startRedis();
    const prefix = uniquePrefix();
    const config = ingestConfig(broker.brokers, topic, uid('g'));
    const nodes = [
      await startNode({ redisUrl: redis.url, prefix, name: 'kafka-a', config }),
      await startNode({ redisUrl: redis.url, prefix, name: 'kafka-b', config }),
    ];
    try {
      const got = [];
      for (const node of nodes) {
        const member = await connect(node, { token: token({ sub: 'm', rooms: ['news'], join: ['news'] }) });
        got.push(collect(member, 'update'));
      }
      const producing = produce(broker.brokers, topic, ['--first', '0', '--count', '300']);
      await eventually(() => got[0].items.length >= 50, { timeoutMs: 30_000, what: `50 events` });
      // The partition is one node's: kill that one, without warning.
      const published = [];
      for (const node of nodes) published.push(metricSum(await metrics(node), 'tidings_kafka_records_total', 'result="published"'));
      const victim = published[0] > 0 ? 0 : 1;
      nodes[victim].kill('SIGKILL');
      const survivor = got[1 - victim];
      await producing;
      await eventually(() => survivor.items.length >= 300, { timeoutMs: 60_000, what: `300 events` });
      await sleep(1000);
      assert.deepEqual(numbers(survivor), Array.from({ length: 300 }, (_, n) => n));
    } finally {
      for (const node of nodes) node.kill();
      redis.kill();
    }
  });
});
