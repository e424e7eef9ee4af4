// A TCP proxy in front of a Kafka broker that can cut some of its clients off, for the Kafka fault tests.
//
// The broker advertises the proxy's address, so every client (tidings' consumers and the test's producer)
// reaches the broker through it, and reconnects to it. The proxy reads the first request of each connection to
// learn the Kafka client id in its header (tidings names its consumers `tidings-<node>-<entry>`), so a test can
// make the broker unreachable for some clients (one node, or every node) while the producer goes on:
//
//   const proxy = await startKafkaProxy(brokerPort);
//   proxy.cut((clientId) => clientId.startsWith('tidings-'), { mode: 'refuse' });
//   … proxy.restore();
//
// Modes of a cut, for the connections of the matching clients:
//   'refuse'    live connections are reset (TCP RST) and new ones are reset as soon as they say who they are:
//               the client sees the broker go away, and its reconnections fail at once.
//   'blackhole' live connections are reset and new ones are accepted and held unanswered: the client's
//               reconnections hang (a broker host that went away). restore() resets the held connections (the
//               host is back and does not know them), so the client connects again.
//   'freeze'    live connections are frozen too (no byte forwarded either way, nothing lost: a network that drops
//               packets while TCP keeps retransmitting) and new ones are held: the client sees only silence.
//               restore() forwards again, requests queued during the cut included, and wires the held ones.

import { appendFileSync } from 'node:fs';
import net from 'node:net';

/** The client id of a Kafka request whose first bytes are `buf`; undefined until the header is complete. */
export function requestClientId(buf) {
  // size:int32, api_key:int16, api_version:int16, correlation_id:int32, client_id:nullable string (int16 length);
  // the client id is a plain (not compact) string in every request header version.
  if (buf.length < 14) return undefined;
  const length = buf.readInt16BE(12);
  if (length < 0) return '';
  if (buf.length < 14 + length) return undefined;
  return buf.subarray(14, 14 + length).toString('utf8');
}

/**
 * Start a proxy on a free 127.0.0.1 port forwarding to the broker at `brokerPort`.
 * @returns {Promise<{port:number, cut:Function, restore:Function, stats:object, close:Function}>}
 */
export async function startKafkaProxy(brokerPort) {
  const conns = new Set();
  let cutting = null; // {match, mode} while a cut is on
  const stats = { accepted: 0, reset: 0, frozen: 0, held: 0, byClient: {} };

  const matches = (conn) => cutting !== null && conn.clientId !== undefined && cutting.match(conn.clientId);

  function reset(sock) {
    if (!sock || sock.destroyed) return;
    if (sock.readyState === 'open' && !sock.writableEnded) sock.resetAndDestroy();
    else sock.destroy();
  }

  function drop(conn) {
    conns.delete(conn);
    reset(conn.client);
    reset(conn.server);
  }

  // KAFKA_PROXY_TRACE=<file>: append a line per request and response of the group protocol to <file>, to see
  // what the clients and the broker said to each other around a fault.
  const traceFile = process.env.KAFKA_PROXY_TRACE;
  const GROUP_APIS = {
    8: 'OffsetCommit',
    9: 'OffsetFetch',
    10: 'FindCoordinator',
    11: 'JoinGroup',
    12: 'Heartbeat',
    13: 'LeaveGroup',
    14: 'SyncGroup',
  };
  let nextId = 0;
  function tap(conn, direction, chunk) {
    const key = `${direction}Buf`;
    conn[key] = Buffer.concat([conn[key] ?? Buffer.alloc(0), chunk]);
    conn.apis ??= new Map();
    for (;;) {
      const b = conn[key];
      if (b.length < 4 || b.length < 4 + b.readInt32BE(0)) return;
      const frame = b.subarray(4, 4 + b.readInt32BE(0));
      conn[key] = b.subarray(4 + frame.length);
      let line;
      if (direction === 'up') {
        const api = frame.readInt16BE(0);
        conn.apis.set(frame.readInt32BE(4), api);
        if (GROUP_APIS[api]) line = `> ${GROUP_APIS[api]} v${frame.readInt16BE(2)} ${frame.subarray(8).toString('latin1').replace(/[^ -~]+/g, '.')}`;
      } else {
        const api = conn.apis.get(frame.readInt32BE(0));
        // JoinGroup, Heartbeat, LeaveGroup, SyncGroup (the versions librdkafka uses): throttle_time_ms, error_code
        if ([11, 12, 13, 14].includes(api)) {
          line = `< ${GROUP_APIS[api]} error ${frame.readInt16BE(8)} ${frame.subarray(10).toString('latin1').replace(/[^ -~]+/g, '.')}`;
        } else if (GROUP_APIS[api]) {
          line = `< ${GROUP_APIS[api]} ${frame.subarray(4).toString('latin1').replace(/[^ -~]+/g, '.')}`;
        }
      }
      if (line) appendFileSync(traceFile, `${new Date().toISOString()} #${conn.id} ${conn.clientId} ${line.slice(0, 400)}\n`);
    }
  }

  // Bytes from `from` go to `to` unless the connection is frozen, in which case they wait (back-pressure).
  function pipe(conn, from, to, direction) {
    from.on('data', (chunk) => {
      if (traceFile) tap(conn, direction, chunk);
      if (!to.write(chunk)) {
        from.pause();
        to.once('drain', () => {
          if (!conn.frozen) from.resume();
        });
      }
    });
    from.on('error', () => {});
    from.on('close', () => drop(conn));
  }

  function wire(conn) {
    conn.held = false;
    const server = net.connect({ host: '127.0.0.1', port: brokerPort });
    server.setNoDelay(true);
    conn.server = server;
    server.write(conn.head);
    conn.id = ++nextId;
    if (traceFile) tap(conn, 'up', conn.head);
    conn.head = null;
    pipe(conn, conn.client, server, 'up');
    pipe(conn, server, conn.client, 'down');
    conn.client.resume();
  }

  function freeze(conn) {
    conn.frozen = true;
    conn.client.pause();
    conn.server?.pause();
  }

  function thaw(conn) {
    conn.frozen = false;
    conn.client.resume();
    conn.server?.resume();
  }

  // The connection said who it is: forward it, or apply the cut.
  function identified(conn) {
    stats.byClient[conn.clientId] = (stats.byClient[conn.clientId] ?? 0) + 1;
    if (!matches(conn)) return wire(conn);
    if (cutting.mode === 'refuse') {
      stats.reset += 1;
      return drop(conn);
    }
    // blackhole, freeze: accepted, never answered until restore()
    stats.held += 1;
    conn.held = true;
    conn.client.pause();
  }

  const listener = net.createServer((client) => {
    stats.accepted += 1;
    client.setNoDelay(true);
    const conn = { client, server: null, clientId: undefined, head: Buffer.alloc(0), held: false, frozen: false };
    conns.add(conn);
    const onHead = (chunk) => {
      conn.head = Buffer.concat([conn.head, chunk]);
      conn.clientId = requestClientId(conn.head);
      if (conn.clientId === undefined) return;
      client.off('data', onHead);
      identified(conn);
    };
    client.on('data', onHead);
    client.on('error', () => {});
    client.once('close', () => {
      if (!conn.server) conns.delete(conn);
    });
  });
  listener.on('error', () => {});
  await new Promise((resolve, reject) => {
    listener.once('error', reject);
    listener.listen(0, '127.0.0.1', resolve);
  });

  return {
    port: listener.address().port,
    stats,
    /** Cut the clients whose id passes `match` off the broker (see the modes above) until restore(). */
    cut(match, { mode }) {
      if (!['refuse', 'blackhole', 'freeze'].includes(mode)) throw new Error(`unknown cut mode ${mode}`);
      cutting = { match, mode };
      for (const conn of [...conns]) {
        if (!matches(conn) || conn.held) continue;
        if (mode === 'freeze') {
          stats.frozen += 1;
          freeze(conn);
        } else {
          stats.reset += 1;
          drop(conn);
        }
      }
    },
    /** End the cut: frozen connections forward again; held ones are reset ('blackhole') or wired ('freeze'). */
    restore() {
      const mode = cutting?.mode;
      cutting = null;
      for (const conn of [...conns]) {
        if (conn.held && mode === 'blackhole') drop(conn);
        else if (conn.held && !conn.client.destroyed) wire(conn);
        else if (conn.frozen) thaw(conn);
      }
    },
    /** Stop listening and reset every connection. */
    close() {
      cutting = null;
      for (const conn of [...conns]) drop(conn);
      return new Promise((resolve) => listener.close(() => resolve()));
    },
  };
}
