// Recovery under churn: 200 websocket clients behind a TCP proxy in 10 rooms (some in two), publishers
// at a steady rate, and every ~300 ms a random 10% of the connections killed (alternating sides). In the
// end every client has every event of its rooms exactly once and in order, and every reconnect recovered.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { MANY_CLIENTS_CONFIG, closeAllClients, connectMany, eventually, mustPublish, sleep, startServer, token, uid } from './helpers.mjs';
import { startProxy } from './proxy.mjs';

const CLIENTS = Number(process.env.TIDINGS_STRESS_CLIENTS || 200);
const ROOMS = 10;
const RATE = 100; // events per second over all rooms, round-robin
const DURATION_MS = 8000;
const KILL_EVERY_MS = 300;
const KILL_FRACTION = 0.1;
const RECONNECT = { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 200 };

describe('recovery under connection churn', () => {
  let server;
  let proxy;
  after(async () => {
    closeAllClients();
    await proxy?.close();
    await server?.stop();
  });

  test(`${CLIENTS} clients, ${ROOMS} rooms, ${RATE} events/s, ${KILL_FRACTION * 100}% killed every ${KILL_EVERY_MS} ms`, { timeout: 40_000 }, async () => {
    server = await startServer({ config: MANY_CLIENTS_CONFIG });
    proxy = await startProxy(server);
    const prefix = uid('st');
    const roomNames = Array.from({ length: ROOMS }, (_, r) => `${prefix}-r${r}`);
    const roomsOf = (i) => (i % 5 === 0 ? [roomNames[i % ROOMS], roomNames[(i + 3) % ROOMS]] : [roomNames[i % ROOMS]]);

    const sockets = await connectMany(proxy, CLIENTS, (i) => ({
      token: token({ sub: `${prefix}-u${i}`, join: roomsOf(i) }),
      transports: ['websocket'],
      ...RECONNECT,
    }));
    const clients = sockets.map((socket, i) => {
      const c = { i, socket, rooms: roomsOf(i), firstId: socket.id, events: [], connects: [], disconnects: [] };
      socket.on('ev', (data, offset) => c.events.push({ room: data.room, seq: data.seq, offset }));
      socket.on('connect', () => c.connects.push({ id: socket.id, recovered: socket.recovered }));
      socket.on('disconnect', (reason) => c.disconnects.push(reason));
      return c;
    });

    // every client is in its rooms before the first publish
    for (const room of roomNames) {
      const want = clients.filter((c) => c.rooms.includes(room)).length;
      const res = await fetch(`${server.url}/v1/rooms/${encodeURIComponent(room)}`, {
        headers: { authorization: `Bearer ${server.apiKey}` },
      });
      assert.equal(res.status, 200);
      assert.equal((await res.json()).members, want, `members of ${room}`);
    }

    // the killer: alternate sides
    let round = 0;
    let killed = 0;
    const killer = setInterval(() => {
      const side = round++ % 2 === 0 ? 'client' : 'server';
      killed += proxy.dropRandom(KILL_FRACTION, { side });
    }, KILL_EVERY_MS);

    // the publishers: one per room, each sequential (per-room order = publish order), together RATE/s
    // round-robin over the rooms (room r publishes at t0 + (r + k·ROOMS)/RATE)
    const published = new Map(roomNames.map((r) => [r, []])); // room → offsets, index = seq
    const t0 = Date.now();
    try {
      await Promise.all(
        roomNames.map(async (room, r) => {
          const offsets = published.get(room);
          for (let k = 0; ; k++) {
            const due = t0 + ((r + k * ROOMS) * 1000) / RATE;
            if (due - t0 >= DURATION_MS) break;
            const wait = due - Date.now();
            if (wait > 0) await sleep(wait);
            const res = await mustPublish(server, { room, event: 'ev', data: { room, seq: offsets.length } });
            offsets.push(res.json.offset);
          }
        }),
      );
    } finally {
      clearInterval(killer);
    }
    const publishMs = Date.now() - t0;

    // settle: everyone connected again and complete
    const expectedCount = (c) => c.rooms.reduce((n, r) => n + published.get(r).length, 0);
    const settled = Date.now();
    await eventually(() => clients.every((c) => c.socket.connected && c.events.length >= expectedCount(c)), {
      timeoutMs: 15_000,
      intervalMs: 100,
      what: 'every client to be connected with all its events',
    }).catch((err) => {
      const behind = clients.filter((c) => !c.socket.connected || c.events.length < expectedCount(c));
      const sample = behind.slice(0, 5).map((c) => ({
        i: c.i,
        connected: c.socket.connected,
        got: c.events.length,
        want: expectedCount(c),
        connects: c.connects,
        disconnects: c.disconnects,
      }));
      throw new Error(`${err.message}\n${behind.length} clients behind, e.g. ${JSON.stringify(sample, null, 1)}`);
    });
    const settleMs = Date.now() - settled;
    await sleep(300); // anything extra (duplicates) would arrive now

    let reconnects = 0;
    let recovered = 0;
    const problems = [];
    for (const c of clients) {
      // exactly the published events of its rooms, in order, once
      for (const room of c.rooms) {
        const mine = c.events.filter((e) => e.room === room);
        const seqs = mine.map((e) => e.seq);
        const want = published.get(room);
        const okSeq = seqs.length === want.length && seqs.every((s, j) => s === j);
        const okOffsets = mine.every((e, j) => e.offset === want[j]);
        if (!okSeq || !okOffsets) {
          const firstBad = seqs.findIndex((s, j) => s !== j);
          problems.push(
            `client ${c.i} room ${room}: got ${seqs.length}/${want.length}, first bad index ${firstBad}` +
              ` (seqs around it: ${JSON.stringify(seqs.slice(Math.max(0, firstBad - 3), firstBad + 4))}),` +
              ` connects ${JSON.stringify(c.connects)}, disconnects ${JSON.stringify(c.disconnects)}`,
          );
        }
      }
      if (c.events.length !== expectedCount(c)) problems.push(`client ${c.i}: ${c.events.length} events, want ${expectedCount(c)}`);
      for (let j = 1; j < c.events.length; j++) {
        if (!(BigInt(c.events[j].offset) > BigInt(c.events[j - 1].offset))) {
          problems.push(`client ${c.i}: offsets not increasing at ${j}: ${c.events[j - 1].offset} then ${c.events[j].offset}`);
          break;
        }
      }
      // every reconnect recovered the same session
      for (const conn of c.connects) {
        reconnects += 1;
        if (conn.recovered === true && conn.id === c.firstId) recovered += 1;
        else problems.push(`client ${c.i}: reconnect not recovered: ${JSON.stringify(conn)} (first id ${c.firstId})`);
      }
    }
    const total = [...published.values()].reduce((n, o) => n + o.length, 0);
    // Not every kill makes a reconnect: one that hits a connection still in its handshake costs no
    // connect of its own (socket.io-client still emits "disconnect" for it, so disconnects >= reconnects).
    const disconnects = clients.reduce((n, c) => n + c.disconnects.length, 0);
    console.log(
      `# stress: ${CLIENTS} clients, ${total} events published in ${publishMs} ms, ${killed} connections killed in ${round} rounds,` +
        ` ${disconnects} disconnects, ${reconnects} reconnects, ${recovered} recovered, settled in ${settleMs} ms, ${problems.length} problems`,
    );
    assert.ok(killed > 0 && reconnects > 0, 'the churn did not cause any reconnect');
    assert.deepEqual(problems.slice(0, 20), [], `${problems.length} problems`);
  });
});
