#!/usr/bin/env node
// The chat example's demo server: serves the page in public/, the socket.io-client bundle from npm, and a
// development login (POST /login {user}) that mints a short-lived HS256 token for the tidings node. With
// --start-tidings it also runs `tidings serve` with tidings.toml and a data directory, and stops it on exit.
//
//   node examples/chat/serve.mjs --start-tidings          # after `cargo build --release`
//   node examples/chat/serve.mjs --tidings-url http://127.0.0.1:3000 --jwt-secret "$SECRET"
//
// Development only: anyone who can reach /login may log in as anyone. It listens on 127.0.0.1 by default.

import { spawn, spawnSync } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(HERE, '..', '..');
const PUBLIC = path.join(HERE, 'public');
const CLIENT_BUNDLE = path.join(HERE, 'node_modules', 'socket.io-client', 'dist', 'socket.io.esm.min.js');
const USER_NAME = /^[A-Za-z0-9_.-]{1,32}$/;
const MAX_BODY_BYTES = 4096;

const USAGE = `usage: node examples/chat/serve.mjs [options]
  --port N             port of this demo server on --host (default 8080; 0 = any free port)
  --host IP            address to listen on (default 127.0.0.1)
  --tidings-url URL    the tidings node the page connects to (default http://127.0.0.1:3000; TIDINGS_URL)
  --jwt-secret S       the node's HS256 secret (TIDINGS_JWT_SECRET); generated with --start-tidings
  --token-ttl SECS     lifetime of a login token (default 900); the page refreshes it before it expires
  --start-tidings      run \`tidings serve\` too (TIDINGS_BIN, default target/release/tidings), with
                       examples/chat/tidings.toml, listening on --tidings-url's address
  --data-dir DIR       the started node's data directory (default target/chat-data): messages, room history
                       and sessions survive a restart of the node`;

function options() {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: process.env.CHAT_PORT ?? '8080' },
      host: { type: 'string', default: '127.0.0.1' },
      'tidings-url': { type: 'string', default: process.env.TIDINGS_URL ?? 'http://127.0.0.1:3000' },
      'jwt-secret': { type: 'string', default: process.env.TIDINGS_JWT_SECRET },
      'token-ttl': { type: 'string', default: '900' },
      'start-tidings': { type: 'boolean', default: false },
      'data-dir': { type: 'string', default: path.join(REPO_ROOT, 'target', 'chat-data') },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const tidingsUrl = new URL(values['tidings-url']);
  const ttl = Number(values['token-ttl']);
  if (!Number.isInteger(ttl) || ttl < 120) fail('--token-ttl must be a whole number of seconds, at least 120');
  let secret = values['jwt-secret'];
  if (!secret) {
    if (!values['start-tidings']) fail('--jwt-secret (or TIDINGS_JWT_SECRET) is required without --start-tidings');
    secret = randomBytes(32).toString('hex');
  }
  return {
    port: Number(values.port),
    host: values.host,
    tidingsUrl: tidingsUrl.origin,
    secret,
    ttl,
    startTidings: values['start-tidings'],
    dataDir: path.resolve(values['data-dir']),
  };
}

function fail(message) {
  console.error(`chat: ${message}\n\n${USAGE}`);
  process.exit(2);
}

// ---------------------------------------------------------------------------
// tokens

const b64url = (value) => Buffer.from(value).toString('base64url');

/** An HS256 JWT for `user` with the chat's claims, valid for `ttl` seconds. */
function mintToken(user, secret, ttl) {
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    sub: user,
    iat: now,
    exp: now + ttl,
    rooms: ['chat:*'],
    publish: ['chat:*'],
    dm: ['*'],
    join: ['chat:lobby'],
  };
  const input = `${b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64url(JSON.stringify(claims))}`;
  return { token: `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`, exp: claims.exp };
}

// ---------------------------------------------------------------------------
// HTTP

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.svg': 'image/svg+xml',
};

function send(res, status, body, type = 'application/json') {
  const data = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(data);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new Error('body too large'));
        req.destroy();
      } else chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString()));
    req.on('error', reject);
  });
}

async function login(req, res, opts) {
  let user;
  try {
    ({ user } = JSON.parse(await readBody(req)));
  } catch {
    return send(res, 400, { error: 'send JSON {"user": "name"}' });
  }
  if (typeof user !== 'string' || !USER_NAME.test(user)) {
    return send(res, 400, { error: 'a user name is 1-32 letters, digits, "_", "." or "-"' });
  }
  const { token, exp } = mintToken(user, opts.secret, opts.ttl);
  send(res, 200, { user, token, exp, tidings_url: opts.tidingsUrl });
}

function serveFile(res, file, headers) {
  let body;
  try {
    body = readFileSync(file);
  } catch {
    return send(res, 404, { error: 'not found' });
  }
  res.writeHead(200, {
    'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream',
    'cache-control': 'no-cache',
    ...headers,
  });
  res.end(body);
}

function handler(opts) {
  const ws = opts.tidingsUrl.replace(/^http/, 'ws');
  // The page talks to this server and the tidings node only; nothing is loaded from anywhere else.
  const csp = `default-src 'self'; connect-src 'self' ${opts.tidingsUrl} ${ws}; img-src 'self' data:`;
  return async (req, res) => {
    const { pathname } = new URL(req.url, 'http://localhost');
    try {
      if (pathname === '/login') {
        if (req.method !== 'POST') return send(res, 405, { error: 'POST {"user": "name"}' });
        return await login(req, res, opts);
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, { error: 'method not allowed' });
      if (pathname === '/vendor/socket.io.esm.min.js') return serveFile(res, CLIENT_BUNDLE);
      const file = path.join(PUBLIC, pathname === '/' ? 'index.html' : path.normalize(pathname));
      if (!file.startsWith(PUBLIC + path.sep)) return send(res, 404, { error: 'not found' });
      serveFile(res, file, { 'content-security-policy': csp });
    } catch (err) {
      if (!res.headersSent) send(res, 500, { error: err.message });
    }
  };
}

// ---------------------------------------------------------------------------
// the client bundle and the optional tidings node

/** The page imports socket.io-client from this package's node_modules; install it (pinned) on first use. */
function ensureClientBundle() {
  if (existsSync(CLIENT_BUNDLE)) return;
  console.log('chat: installing socket.io-client (npm ci in examples/chat) ...');
  const npm = spawnSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: HERE, stdio: 'inherit' });
  if (npm.status !== 0 || !existsSync(CLIENT_BUNDLE)) {
    console.error(`chat: ${CLIENT_BUNDLE} is missing; run "npm ci" in ${HERE}`);
    process.exit(1);
  }
}

async function startTidings(opts) {
  const bin = process.env.TIDINGS_BIN || path.join(REPO_ROOT, 'target', 'release', 'tidings');
  if (!existsSync(bin)) {
    console.error(`chat: no tidings binary at ${bin}: run "cargo build --release" first (or set TIDINGS_BIN)`);
    process.exit(1);
  }
  mkdirSync(opts.dataDir, { recursive: true });
  const listen = new URL(opts.tidingsUrl).host;
  const args = ['serve', '--config', path.join(HERE, 'tidings.toml'), '--listen', listen, '--data-dir', opts.dataDir];
  const env = {
    ...process.env,
    TIDINGS_JWT_SECRET: opts.secret,
    TIDINGS_API_KEY: process.env.TIDINGS_API_KEY || randomBytes(16).toString('hex'),
  };
  const child = spawn(bin, args, { env, stdio: ['ignore', 'inherit', 'inherit'] });
  child.on('exit', (code, signal) => {
    console.error(`chat: tidings exited (code ${code}, signal ${signal})`);
    process.exit(1);
  });
  const deadline = Date.now() + 15_000;
  for (;;) {
    const up = await fetch(`${opts.tidingsUrl}/healthz`, { signal: AbortSignal.timeout(1000) }).then(
      (r) => r.ok,
      () => false,
    );
    if (up) break;
    if (Date.now() > deadline) {
      console.error(`chat: tidings did not answer ${opts.tidingsUrl}/healthz within 15 s`);
      child.kill('SIGKILL');
      process.exit(1);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  console.log(`chat: tidings ${bin} (pid ${child.pid}) on ${opts.tidingsUrl}, data in ${opts.dataDir}`);
  return child;
}

async function main() {
  const opts = options();
  ensureClientBundle();
  const tidings = opts.startTidings ? await startTidings(opts) : null;
  const server = http.createServer(handler(opts));
  server.listen(opts.port, opts.host, () => {
    const { port } = server.address();
    console.log(`chat: open http://${opts.host}:${port}/ (tidings at ${opts.tidingsUrl})`);
  });
  const stop = () => {
    if (tidings) {
      tidings.removeAllListeners('exit');
      tidings.once('exit', () => process.exit(0));
      tidings.kill('SIGTERM');
    } else process.exit(0);
    server.close();
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

await main();
