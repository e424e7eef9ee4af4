#!/usr/bin/env node
// The chat example's demo server: serves the page in public/, the socket.io-client bundle from npm, and a
// development login (POST /login {user}) that mints a short-lived HS256 token for the tidings node. With
// --start-tidings it also runs `tidings serve` with tidings.toml and a data directory, and stops it on exit.
//
//   node examples/chat/serve.mjs --start-tidings          # after `cargo build --release`
//   node examples/chat/serve.mjs --tidings-url http://127.0.0.1:3000 --jwt-secret "$SECRET"
//
// Development only: anyone who can reach /login may log in as anyone. It listens on 127.0.0.1 by default.

import { mkdirSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { readJson, send, staticFiles } from '../shared/http.mjs';
import { REPO_ROOT, ensureClient, secretFor, startTidings, stopOnSignals } from '../shared/node.mjs';
import { mintToken } from '../shared/token.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PUBLIC = path.join(HERE, 'public');
const USER_NAME = /^[A-Za-z0-9_.-]{1,32}$/;

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
  const secret = secretFor(values['jwt-secret'], values['start-tidings'], fail);
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
// HTTP

/** The chat's claims for `user`: every chat room, direct messages to anyone, in the lobby from the start. */
const chatClaims = (user) => ({
  sub: user,
  rooms: ['chat:*'],
  publish: ['chat:*'],
  dm: ['*'],
  join: ['chat:lobby'],
});

async function login(req, res, opts) {
  const body = await readJson(req);
  if (body === undefined) return send(res, 400, { error: 'send JSON {"user": "name"}' });
  const { user } = body ?? {};
  if (typeof user !== 'string' || !USER_NAME.test(user)) {
    return send(res, 400, { error: 'a user name is 1-32 letters, digits, "_", "." or "-"' });
  }
  const { token, exp } = mintToken(chatClaims(user), opts.secret, opts.ttl);
  send(res, 200, { user, token, exp, tidings_url: opts.tidingsUrl });
}

function handler(opts) {
  const files = staticFiles(HERE, PUBLIC, opts.tidingsUrl);
  return async (req, res) => {
    const { pathname } = new URL(req.url, 'http://localhost');
    try {
      if (pathname === '/login') {
        if (req.method !== 'POST') return send(res, 405, { error: 'POST {"user": "name"}' });
        return await login(req, res, opts);
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, { error: 'method not allowed' });
      files(res, pathname);
    } catch (err) {
      if (!res.headersSent) send(res, 500, { error: err.message });
    }
  };
}

async function main() {
  const opts = options();
  ensureClient('chat', HERE);
  let tidings = null;
  if (opts.startTidings) {
    mkdirSync(opts.dataDir, { recursive: true });
    tidings = await startTidings('chat', {
      url: opts.tidingsUrl,
      config: path.join(HERE, 'tidings.toml'),
      secret: opts.secret,
      args: ['--data-dir', opts.dataDir],
    });
    console.log(`chat: the node keeps its data in ${opts.dataDir}`);
  }
  const server = http.createServer(handler(opts));
  server.listen(opts.port, opts.host, () => {
    const { port } = server.address();
    console.log(`chat: open http://${opts.host}:${port}/ (tidings at ${opts.tidingsUrl})`);
  });
  stopOnSignals({ server, tidings });
}

await main();
