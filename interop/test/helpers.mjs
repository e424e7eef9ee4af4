// Shared helpers for the tidings interop suite.
//
// Every test file starts its own server(s) on a random port, talks to them with
// the official socket.io-client and the HTTP API, and stops everything in
// `after`. Nothing here depends on a particular test framework feature except
// the `node:test` hooks the test files call themselves.

import { AssertionError } from 'node:assert';
import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Manager, io } from 'socket.io-client';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, '..', '..');
export const TIDINGS_BIN =
  process.env.TIDINGS_BIN || path.join(REPO_ROOT, 'target', 'release', 'tidings');

/** Default HS256 secret and API key handed to every server the suite starts. */
export const SECRET = 'interop-jwt-secret-0123456789abcdef0123456789abcdef';
export const API_KEY = 'interop-api-key-0123456789abcdef';

/**
 * Config for the tests that open hundreds of clients (and reconnect them) from 127.0.0.1 within a second or
 * two: every client shares one address, so the per-address limits are lifted as they would be for a trusted
 * load balancer.
 */
export const MANY_CLIENTS_CONFIG = '[limits]\nmax_sessions_per_ip = 0\nhandshakes_per_sec_per_ip = 0\n';

const STARTUP_TIMEOUT_MS = 10_000;
const STOP_GRACE_MS = 5_000;
/** `stop()` sends a second SIGTERM after this long: the node then closes its remaining clients at once. */
const HURRY_AFTER_MS = 300;
const STDERR_KEEP = 64 * 1024;

// ---------------------------------------------------------------------------
// small utilities

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let uidCounter = 0;
/** A room/user name unique within this process, e.g. `uid('room')` → `room-1a2b3c-4`. */
export function uid(prefix = 'x') {
  uidCounter += 1;
  return `${prefix}-${process.pid.toString(36)}${randomBytes(2).toString('hex')}-${uidCounter}`;
}

/** Reject with a descriptive error if `promise` does not settle within `ms`. */
export function withTimeout(promise, ms, what = 'operation') {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Poll `fn` until it returns a truthy value (which is returned) or time runs out. */
export async function eventually(fn, { timeoutMs = 5000, intervalMs = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() >= deadline) {
      const detail = last instanceof Error ? `: ${last.message}` : ` (last value ${JSON.stringify(last)})`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail}`);
    }
    await sleep(intervalMs);
  }
}

/** Turn whatever socket.io-client hands us for a binary attachment into a Buffer. */
export function toBuffer(value) {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof ArrayBuffer) return Buffer.from(value);
  if (ArrayBuffer.isView(value)) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  throw new TypeError(`expected binary data, got ${Object.prototype.toString.call(value)}`);
}

export function isBinary(value) {
  return Buffer.isBuffer(value) || value instanceof ArrayBuffer || ArrayBuffer.isView(value);
}

// ---------------------------------------------------------------------------
// server process management

/** Find a free TCP port on 127.0.0.1 by binding port 0 and closing again. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const liveServers = new Set();

// Safety net: never leave a server behind, even if a test file crashes.
process.on('exit', () => {
  for (const s of liveServers) {
    try {
      s.proc.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

/**
 * Start a tidings server.
 *
 * @param {object} [opts]
 * @param {string} [opts.config]  TOML text written to a temp file and passed with --config
 * @param {string[]} [opts.args]  extra CLI arguments after the defaults
 * @param {object} [opts.env]     extra environment variables
 * @param {string} [opts.secret]  JWT secret (default SECRET)
 * @param {string} [opts.apiKey]  API key (default API_KEY)
 * @param {number} [opts.port]    port to listen on (default: a free one), e.g. to restart a node where it was
 * @returns {Promise<{url:string, port:number, secret:string, apiKey:string, proc:import('node:child_process').ChildProcess,
 *   stderr:()=>string, exited:Promise<{code:number|null, signal:string|null}>, stop:()=>Promise<{code:number|null, signal:string|null}>}>}
 */
export async function startServer({ config = '', args = [], env = {}, secret = SECRET, apiKey = API_KEY, port } = {}) {
  port ??= await freePort();
  let tmp = null;
  const argv = ['serve', '--listen', `127.0.0.1:${port}`, '--jwt-secret', secret, '--api-key', apiKey];
  if (config) {
    tmp = mkdtempSync(path.join(tmpdir(), 'tidings-interop-'));
    const file = path.join(tmp, 'tidings.toml');
    writeFileSync(file, config);
    argv.push('--config', file);
  }
  argv.push(...args);

  const proc = spawn(TIDINGS_BIN, argv, {
    env: { ...process.env, TIDINGS_LOG: process.env.TIDINGS_TEST_LOG || 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });

  let output = '';
  const keep = (chunk) => {
    output += chunk.toString();
    if (output.length > STDERR_KEEP) output = output.slice(-STDERR_KEEP);
    if (process.env.TIDINGS_TEST_VERBOSE) process.stderr.write(chunk);
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);

  let exitInfo = null;
  let spawnErr = null;
  const exited = new Promise((resolve) => {
    proc.once('exit', (code, signal) => {
      exitInfo = { code, signal };
      liveServers.delete(server);
      resolve(exitInfo);
    });
    // e.g. ENOENT: the binary is not built; 'exit' may never come.
    proc.once('error', (err) => {
      spawnErr = err;
      exitInfo ??= { code: null, signal: null, error: err };
      liveServers.delete(server);
      resolve(exitInfo);
    });
  });

  const url = `http://127.0.0.1:${port}`;
  const server = {
    url,
    port,
    secret,
    apiKey,
    proc,
    exited,
    stderr: () => output,
    async stop({ signal = 'SIGTERM', graceMs = STOP_GRACE_MS } = {}) {
      if (!exitInfo) {
        try {
          proc.kill(signal);
        } catch {
          /* already gone */
        }
        // A second SIGTERM skips the rest of the drain window (tests that measure the drain signal the process
        // themselves).
        const hurry = setTimeout(() => {
          try {
            if (signal === 'SIGTERM') proc.kill('SIGTERM');
          } catch {
            /* already gone */
          }
        }, HURRY_AFTER_MS);
        const timer = setTimeout(() => {
          try {
            proc.kill('SIGKILL');
          } catch {
            /* already gone */
          }
        }, graceMs);
        await exited;
        clearTimeout(hurry);
        clearTimeout(timer);
      }
      if (tmp) {
        rmSync(tmp, { recursive: true, force: true });
        tmp = null;
      }
      return exitInfo;
    },
  };
  liveServers.add(server);

  // Wait for /healthz to answer 200.
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  const died = exited.then((info) => {
    if (spawnErr) throw new Error(`cannot start ${TIDINGS_BIN}: ${spawnErr.message} (build it with cargo build --release)`);
    throw new Error(
      `tidings exited during startup (code ${info.code}, signal ${info.signal})\n--- server output ---\n${output}`,
    );
  });
  died.catch(() => {}); // handled via race below
  try {
    for (;;) {
      const ok = await Promise.race([
        fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1000) }).then(
          async (res) => {
            await res.arrayBuffer().catch(() => {});
            return res.status === 200;
          },
          () => false,
        ),
        died,
      ]);
      if (ok) break;
      if (Date.now() >= deadline) {
        throw new Error(
          `tidings did not answer GET /healthz with 200 within ${STARTUP_TIMEOUT_MS} ms\n--- server output ---\n${output}`,
        );
      }
      await sleep(50);
    }
  } catch (err) {
    await server.stop({ signal: 'SIGKILL' });
    throw err;
  }
  return server;
}

// ---------------------------------------------------------------------------
// JWT

const b64url = (data) => Buffer.from(data).toString('base64url');

/**
 * Mint an HS256 JWT.
 * `exp` overrides `ttl` (seconds from now, default 3600); pass `exp: null` for a token without exp.
 * `extra` adds arbitrary claims; `sub: null` leaves sub out.
 */
export function token({ sub = 'user', rooms, join, publish, ttl = 3600, exp, secret = SECRET, extra = {} } = {}) {
  const header = { alg: 'HS256', typ: 'JWT' };
  const now = Math.floor(Date.now() / 1000);
  const payload = { sub };
  if (exp !== null) payload.exp = exp === undefined ? now + ttl : exp;
  payload.iat = now;
  if (rooms !== undefined) payload.rooms = rooms;
  if (join !== undefined) payload.join = join;
  if (publish !== undefined) payload.publish = publish;
  Object.assign(payload, extra);
  if (payload.sub === null) delete payload.sub; // `sub: null` → a token without sub
  const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  const signature = createHmac('sha256', secret).update(signingInput).digest('base64url');
  return `${signingInput}.${signature}`;
}

// ---------------------------------------------------------------------------
// HTTP API

/**
 * Call the HTTP API. `body` is JSON-encoded; `raw` (string/Buffer) is sent as-is.
 * `apiKey: null` sends no Authorization header.
 * @returns {Promise<{status:number, json:any, text:string, headers:Headers}>}
 */
export async function api(server, method, urlPath, { body, raw, apiKey = server.apiKey, headers = {} } = {}) {
  const h = { ...headers };
  if (apiKey !== null) h.authorization = `Bearer ${apiKey}`;
  let payload;
  if (raw !== undefined) {
    payload = raw;
    h['content-type'] ??= 'application/json';
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    h['content-type'] ??= 'application/json';
  }
  const res = await fetch(server.url + urlPath, {
    method,
    headers: h,
    body: payload,
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  let json;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text, headers: res.headers };
}

/** POST /v1/publish (or another path) with a JSON body. */
export function publish(server, body, { apiKey = server.apiKey, path: urlPath = '/v1/publish' } = {}) {
  return api(server, 'POST', urlPath, { body, apiKey });
}

/** Like publish(), but asserts a 200 answer (with the body in the error message). */
export async function mustPublish(server, body, opts) {
  const res = await publish(server, body, opts);
  if (res.status !== 200) {
    throw new Error(`publish ${JSON.stringify(body).slice(0, 200)} → HTTP ${res.status}: ${res.text.slice(0, 500)}`);
  }
  return res;
}

/**
 * Raw HTTP request with node:http, for large bodies the server refuses (413) and
 * stops reading. Node destroys a socket on the first failed write, losing an
 * answer that already arrived, so this sends like curl: `Expect: 100-continue`,
 * then the body in chunks, each followed by a short pause for an early answer;
 * once a response arrives nothing more is written. Write errors after a
 * response arrived are ignored.
 */
export function rawRequest(
  server,
  method,
  urlPath,
  { body = '', headers = {}, timeoutMs = 20_000, expectContinue = true, chunkSize = 256 * 1024, pauseMs = 25 } = {},
) {
  const data = Buffer.isBuffer(body) ? body : Buffer.from(body);
  return new Promise((resolve, reject) => {
    let settled = false;
    let responded = false;
    let sending = false;
    let wake = null;
    const h = { 'content-length': data.length, connection: 'close', ...headers };
    if (expectContinue) h.expect = '100-continue';
    const req = http.request(server.url + urlPath, { method, headers: h });
    const pause = (ms) =>
      new Promise((r) => {
        const t = setTimeout(done, ms);
        function done() {
          clearTimeout(t);
          wake = null;
          req.off('close', done);
          r();
        }
        wake = done;
        req.on('close', done);
      });
    req.on('response', (res) => {
      responded = true;
      wake?.();
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      const finish = () => {
        if (settled) return;
        settled = true;
        const text = Buffer.concat(chunks).toString();
        let json;
        try {
          json = text ? JSON.parse(text) : undefined;
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode, json, text, headers: res.headers });
        req.destroy();
      };
      res.on('end', finish);
      res.on('error', finish);
      res.on('close', finish);
    });
    const sendBody = async () => {
      if (sending || responded) return;
      sending = true;
      await pause(0); // let the parser finish the current chunk: a final answer may follow `100 Continue`
      for (let off = 0; off < data.length; off += chunkSize) {
        if (responded || req.destroyed) return;
        await new Promise((r) => {
          const done = () => {
            req.off('close', done);
            r();
          };
          req.on('close', done);
          req.write(data.subarray(off, off + chunkSize), done);
        });
        await pause(pauseMs);
      }
      if (!responded && !req.destroyed) req.end();
    };
    req.on('continue', sendBody);
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`request timed out after ${timeoutMs} ms`)));
    req.on('error', (err) => {
      if (!responded && !settled) {
        settled = true;
        reject(err);
      }
    });
    req.flushHeaders();
    if (expectContinue) setTimeout(sendBody, 1000).unref();
    else sendBody();
  });
}

// ---------------------------------------------------------------------------
// Socket.IO clients

const openSockets = new Set();

function track(socket) {
  openSockets.add(socket);
  return socket;
}

/**
 * Create a client without waiting for the connection.
 * `token` goes into the CONNECT auth payload (`auth.token`); pass `query: {token}` to use the query string.
 */
export function client(server, { token: tok, namespace = '/', auth = {}, ...opts } = {}) {
  const url = server.url + (namespace === '/' ? '/' : namespace);
  const socket = io(url, {
    forceNew: true,
    reconnection: false,
    timeout: 10_000,
    auth: tok === undefined ? auth : { token: tok, ...auth },
    ...opts,
  });
  return track(socket);
}

/** Connect a client; resolves with the connected socket, rejects with the connect_error. */
export function connect(server, { timeoutMs = 8000, ...opts } = {}) {
  const socket = client(server, opts);
  return awaitConnect(socket, timeoutMs);
}

/** Wait for an already-created socket to connect. */
export function awaitConnect(socket, timeoutMs = 8000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      socket.close();
      reject(new Error(`socket did not connect within ${timeoutMs} ms`));
    }, timeoutMs);
    const onConnect = () => {
      cleanup();
      resolve(socket);
    };
    const onError = (err) => {
      cleanup();
      socket.close();
      reject(err);
    };
    function cleanup() {
      clearTimeout(timer);
      socket.off('connect', onConnect);
      socket.off('connect_error', onError);
    }
    if (socket.connected) return onConnect();
    socket.on('connect', onConnect);
    socket.on('connect_error', onError);
  });
}

/** A Manager (one Engine.IO connection) for multiplexing several namespaces; tracked for cleanup. */
export function manager(server, opts = {}) {
  const m = new Manager(server.url, { reconnection: false, timeout: 10_000, ...opts });
  return {
    manager: m,
    socket(namespace, { token: tok, auth = {}, ...sopts } = {}) {
      return track(m.socket(namespace, { auth: tok === undefined ? auth : { token: tok, ...auth }, ...sopts }));
    },
  };
}

/** Connect several clients with bounded parallelism. */
export async function connectMany(server, count, optsFor, { parallel = 50 } = {}) {
  const sockets = new Array(count);
  let next = 0;
  async function worker() {
    while (next < count) {
      const i = next++;
      sockets[i] = await connect(server, optsFor(i));
    }
  }
  await Promise.all(Array.from({ length: Math.min(parallel, count) }, worker));
  return sockets;
}

/** Close every client created through these helpers. */
export function closeAllClients() {
  for (const s of openSockets) {
    try {
      s.close();
    } catch {
      /* ignore */
    }
  }
  openSockets.clear();
}

/**
 * Resolve with the FIRST argument of the next `event` on `socket` (the data; a
 * trailing offset argument may follow and is ignored). `filter(data, ...rest)` can
 * select a particular occurrence.
 */
export function waitFor(socket, event, timeoutMs = 5000, filter = () => true) {
  return waitForArgs(socket, event, timeoutMs, filter).then((args) => args[0]);
}

/** Like waitFor but resolves with the full argument list. */
export function waitForArgs(socket, event, timeoutMs = 5000, filter = () => true) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.off(event, handler);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for "${event}" on socket ${socket.id ?? '(unconnected)'}`));
    }, timeoutMs);
    function handler(...args) {
      if (!filter(...args)) return;
      clearTimeout(timer);
      socket.off(event, handler);
      resolve(args);
    }
    socket.on(event, handler);
  });
}

/**
 * Collect every occurrence of `event`: `items` holds the first arguments (data),
 * `args` the full argument lists. `waitForCount(n)` resolves once n have arrived.
 */
export function collect(socket, event) {
  const waiters = [];
  const c = {
    items: [],
    args: [],
    waitForCount(n, timeoutMs = 5000) {
      if (c.items.length >= n) return Promise.resolve(c.items);
      return new Promise((resolve, reject) => {
        const w = { n, resolve, timer: null };
        w.timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          reject(new Error(`timed out after ${timeoutMs} ms: got ${c.items.length} of ${n} "${event}" events`));
        }, timeoutMs);
        waiters.push(w);
      });
    },
    stop() {
      socket.off(event, handler);
    },
  };
  function handler(...args) {
    c.items.push(args[0]);
    c.args.push(args);
    for (const w of [...waiters]) {
      if (c.items.length >= w.n) {
        clearTimeout(w.timer);
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(c.items);
      }
    }
  }
  socket.on(event, handler);
  return c;
}

/**
 * Delivery barrier: publish a unique `sentinel` event to the personal room
 * `user:<sub>` and wait until `socket` receives it. Anything published to that
 * socket before the barrier has been delivered by then (per-connection FIFO).
 */
export async function barrier(server, socket, sub, { namespace, timeoutMs = 5000 } = {}) {
  const marker = uid('sentinel');
  const got = waitFor(socket, 'sentinel', timeoutMs, (data) => data && data.marker === marker);
  const body = { room: `user:${sub}`, event: 'sentinel', data: { marker } };
  if (namespace) body.namespace = namespace;
  await mustPublish(server, body);
  await got;
}

/** emit with an ack, bounded in time (resolves with the ack's first argument). */
export function ask(socket, event, arg, timeoutMs = 3000) {
  return socket.timeout(timeoutMs).emitWithAck(event, arg);
}

/**
 * Check an ack of a reserved event. The contract is `{ok:true}` /
 * `{ok:false, error}`; extra informative fields (e.g. an offset) are tolerated.
 */
export function assertOk(ack, message = '') {
  if (ack && typeof ack === 'object' && ack.ok === true) return ack;
  throw new AssertionError({
    message: `expected an {ok:true} ack${message ? ` (${message})` : ''}, got ${JSON.stringify(ack)}`,
    actual: ack,
    expected: { ok: true },
    operator: 'ack',
  });
}

/** Check a refusal ack `{ok:false, error}`; without `error`, any string error. */
export function assertRefused(ack, error, message = '') {
  const errorMatches = error === undefined ? typeof ack?.error === 'string' : ack?.error === error;
  if (ack && typeof ack === 'object' && ack.ok === false && errorMatches) return ack;
  const want = { ok: false, error: error ?? '<string>' };
  throw new AssertionError({
    message: `expected a ${JSON.stringify(want)} ack${message ? ` (${message})` : ''}, got ${JSON.stringify(ack)}`,
    actual: ack,
    expected: want,
    operator: 'ack',
  });
}
