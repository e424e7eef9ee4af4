// How the demo server hands menu updates to tidings, one event per store into the store's room, in version
// order. Over the HTTP API (`POST /v1/publish/batch`, with the API key the server holds: the browser never sees
// it), answered once the node has queued or stored every event; or over Redis, as the README's "Cluster mode"
// documents for backends: `PUBLISH <prefix>:publish <json>` with an `id` per update, so a message delivered
// twice is published once.

import net from 'node:net';
import { UPDATE_EVENT, menuRoom } from './catalog.mjs';

const HTTP_TIMEOUT_MS = 10_000;
const REDIS_TIMEOUT_MS = 5000;

/** Why updates could not be published. */
export class PublishError extends Error {}

/** The event of one update, as both publishers send it. */
const eventOf = ({ store, ...update }) => ({
  room: menuRoom(store),
  event: UPDATE_EVENT,
  data: { store, ...update },
});

/** Publishes through a node's HTTP API; `publish(updates)` resolves with `[{store, version, offset, recipients}]`. */
export function httpPublisher({ tidingsUrl, apiKey }) {
  return {
    via: 'http',
    async publish(updates) {
      let res;
      try {
        res = await fetch(`${tidingsUrl}/v1/publish/batch`, {
          method: 'POST',
          headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
          body: JSON.stringify({ events: updates.map(eventOf) }),
          signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
        });
      } catch (err) {
        throw new PublishError(`tidings at ${tidingsUrl} did not answer: ${err.cause?.message ?? err.message}`);
      }
      const body = await res.json().catch(() => ({}));
      if (!res.ok) throw new PublishError(`tidings answered ${res.status}: ${body.error?.message ?? 'no reason given'}`);
      return updates.map((u, i) => ({ store: u.store, version: u.version, ...body.results[i] }));
    },
    close() {},
  };
}

/**
 * Publishes through Redis to every node of the cluster named by `prefix`; `publish(updates)` resolves with
 * `[{store, version, nodes}]`, `nodes` being how many nodes heard the message (Redis' answer to PUBLISH). No
 * node listening means nobody took it: that is an error.
 */
export function redisPublisher({ redisUrl, prefix }) {
  const channel = `${prefix}:publish`;
  const redis = new Redis(redisUrl);
  return {
    via: 'redis',
    async publish(updates) {
      const results = [];
      for (const update of updates) {
        const message = { ...eventOf(update), id: `menu-${update.generation}-${update.store}-${update.version}` };
        let nodes;
        try {
          nodes = await redis.call('PUBLISH', channel, JSON.stringify(message));
        } catch (err) {
          throw new PublishError(`redis ${redis.where}: ${err.message}`);
        }
        if (nodes === 0) throw new PublishError(`no tidings node listens on ${channel} at ${redis.where}`);
        results.push({ store: update.store, version: update.version, nodes });
      }
      return results;
    },
    close: () => redis.close(),
  };
}

// ---------------------------------------------------------------------------
// the little of the Redis protocol (RESP2) that publishing needs

/** One connection to Redis, opened on first use and again after it broke; one command at a time. */
class Redis {
  constructor(url) {
    const u = new URL(url);
    if (u.protocol !== 'redis:') throw new PublishError(`a redis:// URL, not ${url}`);
    this.host = u.hostname || '127.0.0.1';
    this.port = Number(u.port || 6379);
    this.password = decodeURIComponent(u.password);
    this.where = `${this.host}:${this.port}`;
    this.socket = null;
  }

  async call(...args) {
    if (!this.socket) {
      this.socket = await this.open();
      if (this.password) await this.send('AUTH', this.password);
    }
    return this.send(...args);
  }

  open() {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: this.host, port: this.port });
      // An idle connection is closed after a while and opened again by the next command.
      socket.setTimeout(REDIS_TIMEOUT_MS, () => socket.destroy(new Error('timed out')));
      socket.once('connect', () => resolve(socket));
      socket.on('error', reject); // after the connect, the command waiting (if any) hears the close
      socket.on('close', () => {
        if (this.socket === socket) this.socket = null;
      });
    });
  }

  /** Write one command and read its reply: a number, a string, or an error reply as a rejection. */
  send(...args) {
    const socket = this.socket;
    const parts = args.map((a) => Buffer.from(String(a)));
    socket.write(`*${parts.length}\r\n`);
    for (const p of parts) socket.write(Buffer.concat([Buffer.from(`$${p.length}\r\n`), p, Buffer.from('\r\n')]));
    return new Promise((resolve, reject) => {
      let buf = Buffer.alloc(0);
      const done = (err, value) => {
        socket.off('data', onData);
        socket.off('close', onClose);
        if (err) reject(err);
        else resolve(value);
      };
      const onClose = () => done(new Error('connection closed'));
      const onData = (chunk) => {
        buf = Buffer.concat([buf, chunk]);
        const end = buf.indexOf('\r\n');
        if (end < 0) return;
        const line = buf.toString('utf8', 1, end);
        switch (String.fromCharCode(buf[0])) {
          case ':':
            return done(null, Number(line));
          case '+':
            return done(null, line);
          case '-':
            return done(new Error(line));
          default:
            socket.destroy();
            return done(new Error(`unexpected reply ${JSON.stringify(buf.toString('utf8', 0, end))}`));
        }
      };
      socket.on('data', onData);
      socket.once('close', onClose);
    });
  }

  close() {
    this.socket?.destroy();
  }
}
