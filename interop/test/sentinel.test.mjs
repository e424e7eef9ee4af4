// Cluster mode through Redis Sentinel: a master, one replica and three sentinels; two tidings nodes find
// the master with `--redis redis+sentinel://…/m`. The master is killed with SIGKILL under a steady stream
// of publishes: after the failover, publishing and delivery resume on the promoted replica, and every
// event answered 2xx reaches every member exactly once, in order (events answered 503 while there is no
// master are fine). The diagnostics report how long publishes were refused or delayed.
//
// Needs redis-server and redis-sentinel (Debian packages redis-server, redis-sentinel).
import assert from 'node:assert/strict';
import { after, afterEach, describe, test } from 'node:test';
import { closeAllClients, client, awaitConnect, eventually, sleep, token, uid } from './helpers.mjs';
import {
  allReceived,
  checkDelivery,
  cleanupLogs,
  deliveredThoughRefused,
  logDir,
  owed,
  record,
  redisCall,
  received,
  startNode,
  startPublisher,
  startRedis,
  startSentinel,
  uniquePrefix,
} from './cluster-helpers.mjs';

const T = { timeout: 30_000 };
const MASTER = 'm';

const procs = [];
let failed = false;
const track = (p) => {
  procs.push(p);
  return p;
};

afterEach(async () => {
  closeAllClients();
  await Promise.all(procs.splice(0).map((p) => p.stop({ signal: 'SIGKILL' })));
});
after(() => cleanupLogs(failed));

const info = async (port, section) => {
  const text = await redisCall(port, 'INFO', section);
  return Object.fromEntries(
    text
      .split('\r\n')
      .filter((l) => l.includes(':'))
      .map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1)]),
  );
};

const masterAddr = async (sentinelPort) => {
  const reply = await redisCall(sentinelPort, 'SENTINEL', 'get-master-addr-by-name', MASTER);
  return reply ? Number(reply[1]) : null;
};

/** A member on `node` joined to `rooms` at connect (token `join` claim), recording its events. */
async function member(node, rooms, label) {
  const socket = client(node, { token: token({ sub: uid('u'), rooms: ['*'], join: rooms }), transports: ['websocket'] });
  const rec = record(socket, label);
  rec.rooms = rooms;
  await awaitConnect(socket, 8000);
  return rec;
}

describe('cluster over redis sentinel', () => {
  test('master killed under a steady publish stream: failover, delivery resumes, no event answered 2xx is lost', T, async (t) => {
    const t0 = Date.now();
    try {
      const master = track(await startRedis({ label: 'master' }));
      const replica = track(await startRedis({ replicaOf: master.port, label: 'replica' }));
      await eventually(async () => (await info(replica.port, 'replication')).master_link_status === 'up', {
        timeoutMs: 10_000,
        what: 'the replica to sync',
      });
      const sentinels = [];
      for (let i = 0; i < 3; i++) sentinels.push(track(await startSentinel({ masterPort: master.port, masterName: MASTER })));
      // Every sentinel must know the replica and the two other sentinels before a failover can happen.
      await eventually(
        async () => {
          for (const s of sentinels) {
            const replicas = await redisCall(s.port, 'SENTINEL', 'replicas', MASTER);
            const others = await redisCall(s.port, 'SENTINEL', 'sentinels', MASTER);
            if (replicas.length < 1 || others.length < 2) return false;
          }
          return true;
        },
        { timeoutMs: 15_000, intervalMs: 200, what: 'the sentinels to discover the replica and each other' },
      );
      const setupDone = Date.now();

      const url = `redis+sentinel://${sentinels.map((s) => `127.0.0.1:${s.port}`).join(',')}/${MASTER}`;
      const prefix = uniquePrefix();
      const nodes = [
        track(await startNode({ redisUrl: url, prefix, name: `${prefix}-n0` })),
        track(await startNode({ redisUrl: url, prefix, name: `${prefix}-n1` })),
      ];
      const plan = [['f'], ['g'], ['f', 'g']];
      const recs = [];
      for (const [j, n] of nodes.entries()) for (let i = 0; i < 3; i++) recs.push(await member(n, plan[i], `n${j}/${plan[i].join('')}`));

      // 2 publishers × 20/s, one through each node.
      const pubs = nodes.map((n, j) =>
        startPublisher(n, { rooms: (i) => plan[(i + j) % 3], intervalMs: 50, tag: `p${j}`, timeoutMs: 10_000 }),
      );
      await sleep(1500);
      assert.ok(pubs.every((p) => p.results.length > 10 && p.results.every((r) => r.status === 200)), 'publishing before the failover');

      const killedAt = Date.now();
      master.kill('SIGKILL');
      await master.exited;
      // Failover: the sentinels name the replica as the master.
      await eventually(async () => (await masterAddr(sentinels[0].port)) === replica.port, {
        timeoutMs: 20_000,
        intervalMs: 50,
        what: 'the sentinels to promote the replica',
      });
      const failoverAt = Date.now();
      // Publishing works again through both nodes…
      await eventually(() => pubs.every((p) => p.results.some((r) => r.startedAt > failoverAt && r.status === 200)), {
        timeoutMs: 15_000,
        what: 'publishes to succeed after the failover',
      });
      const resumedAt = Date.now();
      // …and keep flowing for a while.
      await sleep(1500);
      const results = (await Promise.all(pubs.map((p) => p.stop()))).flat();

      const owedTo = (rec) => owed(results, rec.rooms);
      const done = await allReceived(recs, (rec) => owedTo(rec).must.size, { timeoutMs: 10_000 });
      const lost = recs.map((rec) => [...owedTo(rec).must].filter((k) => !received(rec).some((g) => g.data.k === k)).length);

      // Measurements (reported whether or not the checks below pass).
      const afterKill = results.filter((r) => r.endedAt > killedAt);
      const refused = afterKill.filter((r) => r.status !== 200);
      const statuses = {};
      for (const r of results) statuses[r.status] = (statuses[r.status] || 0) + 1;
      const firstRefused = refused.length ? Math.min(...refused.map((r) => r.endedAt)) - killedAt : null;
      const lastRefused = refused.length ? Math.max(...refused.map((r) => r.endedAt)) - killedAt : null;
      const firstOkAfter = Math.min(...afterKill.filter((r) => r.status === 200 && r.startedAt > killedAt).map((r) => r.endedAt)) - killedAt;
      const maxLatency = Math.max(...afterKill.map((r) => r.endedAt - r.startedAt));
      const normalLatency = Math.max(...results.filter((r) => r.endedAt < killedAt).map((r) => r.endedAt - r.startedAt));
      // Longest pause between two deliveries to a member around the kill.
      const gap = Math.max(
        ...recs.map((rec) => {
          const at = received(rec).map((g) => g.at);
          let worst = 0;
          for (let i = 1; i < at.length; i++) if (at[i] > killedAt - 1000) worst = Math.max(worst, at[i] - at[i - 1]);
          return worst;
        }),
      );
      t.diagnostic(
        `redis+sentinels ready after ${setupDone - t0} ms; failover (sentinel names the replica) ${failoverAt - killedAt} ms after SIGKILL; ` +
          `publishes refused from ${firstRefused} to ${lastRefused} ms after the kill (${refused.length} refused: ${JSON.stringify(statuses)}); ` +
          `first 2xx of a publish started after the kill at ${firstOkAfter} ms; both publishers OK again ${resumedAt - killedAt} ms after the kill; ` +
          `slowest answer ${maxLatency} ms (before the kill ${normalLatency} ms); longest delivery pause at a member ${gap} ms; ` +
          `refused yet delivered: ${deliveredThoughRefused(results, recs).length}; owed events lost per member: ${lost.join('/')}`,
      );
      for (const rec of recs) checkDelivery(rec, owedTo(rec));
      assert.ok(done.complete, done.short.join(', '));
      assert.deepEqual(
        results.filter((r) => ![200, 503].includes(r.status)).map((r) => `${r.k}:${r.status}:${r.text.slice(0, 100)}`),
        [],
        'publishes answered something other than 200 or 503',
      );
      for (const rec of recs) assert.deepEqual(rec.disconnects, [], `${rec.label} disconnected`);
    } catch (err) {
      failed = true;
      t.diagnostic(`logs: ${logDir()}`);
      throw err;
    }
  });
});
