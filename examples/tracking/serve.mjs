#!/usr/bin/env node
// The team-tracking example's demo server: serves the manager page in public/, the socket.io-client bundle
// from npm, and a development login (POST /login {team}) that mints a short-lived HS256 token for one team's
// rooms. With --start-tidings it also runs `tidings serve` with tidings.toml and stops it on exit; with
// --simulate it runs the worker simulator (simulate.mjs) against that node too, so one command shows it all:
//
//   node examples/tracking/serve.mjs --start-tidings --simulate          # after `cargo build --release`
//   node examples/tracking/serve.mjs --tidings-url http://127.0.0.1:3000 --jwt-secret "$SECRET"
//
// Development only: anyone who can reach /login may log in as any team's manager. It listens on 127.0.0.1 by
// default.

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { SIMULATION_ARGS, simulationOptions } from './roster.mjs';
import { TEAM_NAME, managerClaims, mintToken } from './token.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(HERE, '..', '..');
const PUBLIC = path.join(HERE, 'public');
const CLIENT_BUNDLE = path.join(HERE, 'node_modules', 'socket.io-client', 'dist', 'socket.io.esm.min.js');
const MANAGER_ID = /^[a-z0-9]{1,16}$/;
const MAX_BODY_BYTES = 4096;

const USAGE = `usage: node examples/tracking/serve.mjs [options]
  --port N             port of this demo server on --host (default 8080; 0 = any free port)
  --host IP            address to listen on (default 127.0.0.1)
  --tidings-url URL    the tidings node the page connects to (default http://127.0.0.1:3000; TIDINGS_URL)
  --jwt-secret S       the node's HS256 secret (TIDINGS_JWT_SECRET); generated with --start-tidings
  --token-ttl SECS     lifetime of a manager's token (default 900); the page refreshes it before it expires
  --start-tidings      run \`tidings serve\` too (TIDINGS_BIN, default target/release/tidings), with
                       examples/tracking/tidings.toml, listening on --tidings-url's address
  --simulate           run the worker simulator against the node too, with:
    --workers N        simulated workers (default 24)
    --teams M          teams (default 4: alpha, bravo, charlie, delta)
    --rate R           positions a second per worker (default 2)
    --churn SECS       every SECS seconds a worker goes offline for SECS/2 to SECS seconds (default 20)
    --seed S           fixes names, speeds and routes (default 1)`;

function options() {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: process.env.TRACKING_PORT ?? '8080' },
      host: { type: 'string', default: '127.0.0.1' },
      'tidings-url': { type: 'string', default: process.env.TIDINGS_URL ?? 'http://127.0.0.1:3000' },
      'jwt-secret': { type: 'string', default: process.env.TIDINGS_JWT_SECRET },
      'token-ttl': { type: 'string', default: '900' },
      'start-tidings': { type: 'boolean', default: false },
      simulate: { type: 'boolean', default: false },
      ...SIMULATION_ARGS,
      churn: { type: 'string', default: '20' },
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
  let simulation = null;
  if (values.simulate) {
    try {
      simulation = simulationOptions(values);
    } catch (err) {
      fail(err.message);
    }
  }
  return {
    port: Number(values.port),
    host: values.host,
    tidingsUrl: tidingsUrl.origin,
    secret,
    ttl,
    startTidings: values['start-tidings'],
    simulation,
  };
}

function fail(message) {
  console.error(`tracking: ${message}\n\n${USAGE}`);
  process.exit(2);
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

/**
 * POST /login {team, manager?}: a token for a manager of `team`. `manager` (from an earlier login's answer)
 * keeps the same user id, which a token refresh on a live connection needs.
 */
async function login(req, res, opts) {
  let body;
  try {
    body = JSON.parse(await readBody(req));
  } catch {
    return send(res, 400, { error: 'send JSON {"team": "name"}' });
  }
  const { team } = body ?? {};
  if (typeof team !== 'string' || !TEAM_NAME.test(team)) {
    return send(res, 400, { error: 'a team name is 1-24 lowercase letters, digits or "-"' });
  }
  let manager = body.manager;
  if (manager === undefined) manager = randomBytes(4).toString('hex');
  else if (typeof manager !== 'string' || !MANAGER_ID.test(manager)) {
    return send(res, 400, { error: 'manager is 1-16 lowercase letters or digits' });
  }
  const claims = managerClaims(team, manager);
  const { token, exp } = mintToken(claims, opts.secret, opts.ttl);
  send(res, 200, { team, manager, user: claims.sub, token, exp, tidings_url: opts.tidingsUrl });
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

function handler(opts, teams) {
  const ws = opts.tidingsUrl.replace(/^http/, 'ws');
  // The page talks to this server and the tidings node only; nothing is loaded from anywhere else.
  const csp = `default-src 'self'; connect-src 'self' ${opts.tidingsUrl} ${ws}; img-src 'self' data:`;
  return async (req, res) => {
    const { pathname } = new URL(req.url, 'http://localhost');
    try {
      if (pathname === '/login') {
        if (req.method !== 'POST') return send(res, 405, { error: 'POST {"team": "name"}' });
        return await login(req, res, opts);
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, { error: 'method not allowed' });
      // The simulated teams, offered on the login form (empty without --simulate).
      if (pathname === '/teams') return send(res, 200, { teams });
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
// the client bundle, the optional tidings node and the optional simulator

/** The page and the simulator use socket.io-client from this package's node_modules; install it on first use. */
function ensureClient() {
  if (existsSync(CLIENT_BUNDLE)) return;
  console.log('tracking: installing socket.io-client (npm ci in examples/tracking) ...');
  const npm = spawnSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: HERE, stdio: 'inherit' });
  if (npm.status !== 0 || !existsSync(CLIENT_BUNDLE)) {
    console.error(`tracking: ${CLIENT_BUNDLE} is missing; run "npm ci" in ${HERE}`);
    process.exit(1);
  }
}

async function startTidings(opts) {
  const bin = process.env.TIDINGS_BIN || path.join(REPO_ROOT, 'target', 'release', 'tidings');
  if (!existsSync(bin)) {
    console.error(`tracking: no tidings binary at ${bin}: run "cargo build --release" first (or set TIDINGS_BIN)`);
    process.exit(1);
  }
  const listen = new URL(opts.tidingsUrl).host;
  const args = ['serve', '--config', path.join(HERE, 'tidings.toml'), '--listen', listen];
  const env = {
    ...process.env,
    TIDINGS_JWT_SECRET: opts.secret,
    TIDINGS_API_KEY: process.env.TIDINGS_API_KEY || randomBytes(16).toString('hex'),
  };
  const child = spawn(bin, args, { env, stdio: ['ignore', 'inherit', 'inherit'] });
  child.on('exit', (code, signal) => {
    console.error(`tracking: tidings exited (code ${code}, signal ${signal})`);
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
      console.error(`tracking: tidings did not answer ${opts.tidingsUrl}/healthz within 15 s`);
      child.kill('SIGKILL');
      process.exit(1);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  console.log(`tracking: tidings ${bin} (pid ${child.pid}) on ${opts.tidingsUrl}`);
  return child;
}

async function startSimulator(opts) {
  // Imported here: the simulator needs socket.io-client, which ensureClient() has installed by now.
  const { startSimulation } = await import('./simulate.mjs');
  const sim = await startSimulation({ ...opts.simulation, url: opts.tidingsUrl, secret: opts.secret });
  const { workers, teams, rate, churn } = opts.simulation;
  console.log(
    `tracking: simulating ${workers} workers in ${teams} teams, ${rate} positions/s each` +
      (churn > 0 ? `, one going offline every ${churn} s` : ''),
  );
  return sim;
}

async function main() {
  const opts = options();
  ensureClient();
  const tidings = opts.startTidings ? await startTidings(opts) : null;
  const sim = opts.simulation ? await startSimulator(opts) : null;
  const server = http.createServer(handler(opts, sim?.teams ?? []));
  server.listen(opts.port, opts.host, () => {
    const { port } = server.address();
    console.log(`tracking: open http://${opts.host}:${port}/ (tidings at ${opts.tidingsUrl})`);
  });
  const stop = () => {
    sim?.stop();
    server.close();
    if (tidings) {
      tidings.removeAllListeners('exit');
      tidings.once('exit', () => process.exit(0));
      tidings.kill('SIGTERM');
    } else process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

await main();
