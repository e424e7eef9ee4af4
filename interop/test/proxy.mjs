// A small TCP proxy for the interop suite: clients connect to the proxy, the proxy forwards every
// connection to the server, and a test can kill, freeze or refuse connections on purpose to model
// network failures (connection state recovery tests).
//
//   const proxy = await startProxy(server);          // or startProxy(port)
//   const socket = client(proxy, { ... });           // proxy.url stands in for server.url
//   proxy.dropAll({ side: 'client' });               // the client sees its connection die first
//   proxy.dropAll({ side: 'server' });               // the server sees it die first
//   proxy.pause({ refuseNew: true }); … proxy.resume();
//   await proxy.close();
//
// Every accepted connection is a "pair" {id, client, server}: `client` is the socket facing the
// client, `server` the one facing the tidings server. HTTP API calls should go straight to the server.

import net from 'node:net';

/**
 * Start a proxy on 127.0.0.1 (random port unless `port` is given) forwarding to `target`
 * (a server object with `.port`, or a port number).
 *
 * @param {{port:number}|number} target
 * @param {object} [opts]
 * @param {number} [opts.port]  listen port (0 = random)
 * @param {(dir:'c2s'|'s2c', chunk:Buffer, pair:object)=>void} [opts.onData]  tap on forwarded bytes
 */
export async function startProxy(target, { port = 0, onData = null } = {}) {
  let targetPort = typeof target === 'number' ? target : target.port;
  const pairs = new Set();
  const stats = { accepted: 0, refused: 0, dropped: 0, upstreamErrors: 0 };
  let paused = false; // freeze: no byte is forwarded, new connections wait (or are refused)
  let refuseNew = false;
  let nextId = 0;
  let closed = false;

  function destroy(sock, reset) {
    if (!sock || sock.destroyed) return;
    // RST only on an open socket that was not end()ed: resetAndDestroy() after end() left Node 20 spinning
    // forever at process exit (in Environment::CleanupHandles); a plain destroy() is fine there.
    if (reset && !sock.writableEnded && sock.readyState === 'open' && typeof sock.resetAndDestroy === 'function') {
      try {
        sock.resetAndDestroy();
        return;
      } catch {
        /* fall through */
      }
    }
    sock.destroy();
  }

  // Forward `from` → `to`, with back-pressure, tap, freeze and drop handling.
  function forward(pair, from, to, dir) {
    from.on('data', (chunk) => {
      if (pair.dropped) return; // black-holed while the other side lingers
      proxy.onData?.(dir, chunk, pair);
      if (!to.write(chunk)) {
        from.pause();
        to.once('drain', () => {
          if (!paused) from.resume();
        });
      }
    });
    from.on('end', () => {
      if (!pair.dropped) to.end();
    });
    from.on('error', () => {});
    from.on('close', (hadError) => {
      if (pair.dropped) return; // dropAll decides when the other side goes
      if (hadError) destroy(to, true);
      else to.end();
      // a half-closed peer that never closes its side: do not keep it forever
      setTimeout(() => destroy(to, false), 2000).unref();
    });
  }

  function removeWhenClosed(pair) {
    let open = 2;
    const done = () => {
      open -= 1;
      if (open === 0) pairs.delete(pair);
    };
    pair.client.once('close', done);
    pair.server.once('close', done);
  }

  function wire(pair) {
    const upstream = net.connect({ host: '127.0.0.1', port: targetPort });
    upstream.setNoDelay(true);
    pair.server = upstream;
    upstream.on('error', () => {
      stats.upstreamErrors += 1;
    });
    forward(pair, pair.client, upstream, 'c2s');
    forward(pair, upstream, pair.client, 's2c');
    removeWhenClosed(pair);
    if (paused) {
      pair.client.pause();
      upstream.pause();
    } else {
      pair.client.resume();
    }
  }

  const waiting = new Set(); // connections accepted while paused, not yet wired

  const listener = net.createServer({ pauseOnConnect: true }, (sock) => {
    if (closed || refuseNew) {
      stats.refused += 1;
      destroy(sock, true);
      return;
    }
    stats.accepted += 1;
    sock.pause(); // flowing = false: adding the data listener must not start reading
    sock.setNoDelay(true);
    sock.on('error', () => {});
    const pair = { id: ++nextId, client: sock, server: null, dropped: false, openedAt: Date.now() };
    pairs.add(pair);
    if (paused) {
      waiting.add(pair);
      sock.once('close', () => {
        if (waiting.delete(pair)) pairs.delete(pair);
      });
      return;
    }
    wire(pair);
  });
  listener.on('error', () => {});

  await new Promise((resolve, reject) => {
    listener.once('error', reject);
    listener.listen(port, '127.0.0.1', () => {
      listener.off('error', reject);
      resolve();
    });
  });
  const listenPort = listener.address().port;

  function dropPair(pair, { side = 'client', lingerMs = 0, reset = true } = {}) {
    if (pair.dropped) return false;
    pair.dropped = true;
    stats.dropped += 1;
    waiting.delete(pair);
    const [first, second] = side === 'server' ? [pair.server, pair.client] : [pair.client, pair.server];
    destroy(first, reset);
    if (lingerMs > 0) {
      // the other side stays open but black-holed: its peer does not know yet
      second?.resume();
      setTimeout(() => destroy(second, reset), lingerMs).unref();
    } else {
      destroy(second, reset);
    }
    if (!pair.server) pairs.delete(pair);
    return true;
  }

  function live() {
    return [...pairs].filter((p) => !p.dropped && !p.client.destroyed);
  }

  const proxy = {
    port: listenPort,
    url: `http://127.0.0.1:${listenPort}`,
    stats,
    onData,
    /** Live connection pairs. */
    get pairs() {
      return live();
    },
    /** Forward new connections to another port from now on (existing pairs keep theirs). */
    setTarget(next) {
      targetPort = typeof next === 'number' ? next : next.port;
    },
    /**
     * Kill every live connection.
     * side 'client': the client-facing socket dies first (the client notices; like a server-side kill);
     * side 'server': the server-facing socket dies first (the server notices; like a client-side kill / cut).
     * lingerMs > 0 keeps the other socket open (black-holed) that long before killing it too.
     * reset: send a TCP RST (default) instead of a FIN.
     * @returns {number} connections killed
     */
    dropAll(opts = {}) {
      let n = 0;
      for (const pair of [...pairs]) if (dropPair(pair, opts)) n += 1;
      return n;
    },
    /** Kill a random `fraction` (0..1) of the live connections (at least one if any); same options as dropAll. */
    dropRandom(fraction, opts = {}) {
      const candidates = live();
      const want = Math.min(candidates.length, Math.max(candidates.length ? 1 : 0, Math.round(candidates.length * fraction)));
      for (let i = candidates.length - 1; i > 0; i--) {
        const j = Math.floor(Math.random() * (i + 1));
        [candidates[i], candidates[j]] = [candidates[j], candidates[i]];
      }
      let n = 0;
      for (const pair of candidates.slice(0, want)) if (dropPair(pair, opts)) n += 1;
      return n;
    },
    /** Kill one pair (from `proxy.pairs`). */
    drop(pair, opts = {}) {
      return dropPair(pair, opts);
    },
    /**
     * Freeze: stop forwarding bytes in both directions on every connection (TCP back-pressure, nothing
     * lost: like a network stall) and hold new connections unanswered. With refuseNew, new connections
     * are reset at once instead (the client sees a connect error and retries).
     */
    pause({ refuseNew: refuse = false } = {}) {
      paused = true;
      refuseNew = refuse;
      for (const pair of pairs) {
        pair.client.pause();
        pair.server?.pause();
      }
    },
    /** Undo pause(): forward again, wire the connections that waited. */
    resume() {
      paused = false;
      refuseNew = false;
      for (const pair of waiting) {
        if (!pair.client.destroyed) wire(pair);
      }
      waiting.clear();
      for (const pair of pairs) {
        if (pair.dropped) continue;
        pair.client.resume();
        pair.server?.resume();
      }
    },
    /** Stop listening and kill every connection. */
    close() {
      closed = true;
      for (const pair of [...pairs]) {
        if (!dropPair(pair, { side: 'client' })) {
          // already dropped, maybe with a socket still lingering
          destroy(pair.client, false);
          destroy(pair.server, false);
        }
      }
      for (const pair of waiting) destroy(pair.client, false);
      waiting.clear();
      return new Promise((resolve) => listener.close(() => resolve()));
    },
  };
  return proxy;
}
