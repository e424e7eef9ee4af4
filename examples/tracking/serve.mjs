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

import { randomBytes } from 'node:crypto';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { readJson, send, staticFiles } from '../shared/http.mjs';
import { ensureClient, secretFor, startTidings, stopOnSignals } from '../shared/node.mjs';
import { SIMULATION_ARGS, simulationOptions } from './roster.mjs';
import { TEAM_NAME, managerClaims, mintToken } from './token.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PUBLIC = path.join(HERE, 'public');
const MANAGER_ID = /^[a-z0-9]{1,16}$/;

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
  const secret = secretFor(values['jwt-secret'], values['start-tidings'], fail);
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

/**
 * POST /login {team, manager?}: a token for a manager of `team`. `manager` (from an earlier login's answer)
 * keeps the same user id, which a token refresh on a live connection needs.
 */
async function login(req, res, opts) {
  const body = await readJson(req);
  if (body === undefined) return send(res, 400, { error: 'send JSON {"team": "name"}' });
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

function handler(opts, teams) {
  const files = staticFiles(HERE, PUBLIC, opts.tidingsUrl);
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
      files(res, pathname);
    } catch (err) {
      if (!res.headersSent) send(res, 500, { error: err.message });
    }
  };
}

// ---------------------------------------------------------------------------
// the optional simulator

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
  ensureClient('tracking', HERE);
  const tidings = opts.startTidings
    ? await startTidings('tracking', {
        url: opts.tidingsUrl,
        config: path.join(HERE, 'tidings.toml'),
        secret: opts.secret,
      })
    : null;
  const sim = opts.simulation ? await startSimulator(opts) : null;
  const server = http.createServer(handler(opts, sim?.teams ?? []));
  server.listen(opts.port, opts.host, () => {
    const { port } = server.address();
    console.log(`tracking: open http://${opts.host}:${port}/ (tidings at ${opts.tidingsUrl})`);
  });
  stopOnSignals({ server, tidings, cleanup: () => sim?.stop() });
}

await main();
