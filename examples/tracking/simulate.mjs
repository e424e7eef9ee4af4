#!/usr/bin/env node
// The tracking example's simulator: N workers in M teams drive along the streets of the shared grid
// (public/grid.js), each a socket.io-client connection of its own with its own token, publishing its position
// into its team's room at a set rate. A seed fixes the teams, names, speeds and routes. Workers can be sent
// offline and back, at random (--churn) or through a small HTTP control endpoint on loopback (--control).
//
//   node examples/tracking/simulate.mjs --jwt-secret "$SECRET"                    # 24 workers, 4 teams, 2/s
//   node examples/tracking/simulate.mjs --workers 200 --teams 10 --rate 2 --churn 15 --control 8090
//
// Control endpoint (only with --control PORT, on 127.0.0.1):
//   GET  /workers                    {workers: [{worker, team, name, online, connected, sent, refused}]}
//   POST /workers/<id>/offline       the worker disconnects (its managers see it go offline)
//   POST /workers/<id>/online        it connects again
//
// Resource use is bounded: one connection and one timer per worker, counters only; SIGINT or SIGTERM closes
// every connection and exits.

import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { io } from 'socket.io-client';
import { mintToken, positionRoom, workerClaims } from './token.mjs';
import { SIMULATION_ARGS, roster, simulationOptions, teamNames } from './roster.mjs';
import { Walker, seeded } from './walker.mjs';

/** Spacing of the workers' first connections, under the node's per-address handshake rate. */
const CONNECT_SPACING_MS = 25;
const ACK_TIMEOUT_MS = 5000;
const RETRY_MS = 1000;

/** One simulated worker: its route, its connection, and what became of its publishes. */
class Worker {
  constructor(spec, opts) {
    Object.assign(this, spec);
    this.opts = opts;
    this.walker = new Walker(seeded(spec.seed), spec.speed);
    this.movedAt = Date.now();
    this.online = false;
    this.socket = null;
    this.timer = null;
    this.sent = 0;
    this.refused = 0;
  }

  /** Connect (the first time, or again after `goOffline`). */
  goOnline() {
    this.online = true;
    if (this.socket) return this.socket.connect();
    const claims = workerClaims(this.worker, this.team);
    const fresh = () => mintToken(claims, this.opts.secret, this.opts.tokenTtl).token;
    const socket = io(this.opts.url, {
      forceNew: true,
      transports: ['websocket'],
      auth: (cb) => cb({ token: fresh() }), // every (re)connection gets a fresh token
      reconnectionDelayMax: 5000,
    });
    socket.on('token:expiring', () => {
      socket.timeout(ACK_TIMEOUT_MS).emit('refresh', { token: fresh() }, () => {});
    });
    // The node closed the connection (token expired, shutdown) or refused it: the library leaves these to us.
    socket.on('disconnect', (reason) => {
      if (reason === 'io server disconnect') this.retry();
    });
    socket.on('connect_error', (err) => {
      this.opts.onRefused(this, `connection refused: ${err.message}`);
      if (!socket.active) this.retry();
    });
    this.socket = socket;
    const every = 1000 / this.opts.rate;
    // Spread the workers over the interval, so the node does not get everyone's positions at once.
    const first = setTimeout(() => {
      this.timer = setInterval(() => this.tick(), every);
      this.tick();
    }, seeded(this.seed ^ 0x5eed)() * every);
    this.timer = first;
  }

  retry() {
    setTimeout(() => {
      if (this.online && this.socket && !this.socket.connected && !this.socket.active) this.socket.connect();
    }, RETRY_MS).unref();
  }

  /** Disconnect; the route goes on meanwhile, as a phone without signal still moves. */
  goOffline() {
    this.online = false;
    this.socket?.disconnect();
  }

  /** Move on by the time since the last tick and publish the position when connected. */
  tick() {
    const now = Date.now();
    this.walker.advance((now - this.movedAt) / 1000);
    this.movedAt = now;
    if (!this.socket?.connected) return; // nothing is queued while offline: an old position is worth nothing
    const { x, y, heading } = this.walker.position();
    const data = { worker: this.worker, team: this.team, name: this.name, x, y, heading, ts: now };
    const publish = { room: positionRoom(this.team), event: 'position', data };
    this.socket.timeout(ACK_TIMEOUT_MS).emit('publish', publish, (err, reply) => {
      if (!err && reply?.ok) this.sent += 1;
      else this.refused += 1;
      if (!err && !reply?.ok) this.opts.onRefused(this, `position refused: ${reply?.error}`);
    });
  }

  state() {
    const { worker, team, name, online, sent, refused } = this;
    return { worker, team, name, online, connected: Boolean(this.socket?.connected), sent, refused };
  }

  stop() {
    clearTimeout(this.timer);
    clearInterval(this.timer);
    this.online = false;
    this.socket?.close();
  }
}

/**
 * Start the simulation: `{url, secret, workers, teams, rate, seed, churn, tokenTtl, log}`. Returns
 * `{workers: Map<id, Worker>, teams, setOnline(id, online), summary(), stop()}`.
 */
export async function startSimulation(options) {
  const { workers: count, teams, seed, churn = 0, log = console.log } = options;
  const refusals = new Map();
  const opts = {
    url: options.url,
    secret: options.secret,
    rate: options.rate,
    tokenTtl: options.tokenTtl ?? 900,
    onRefused: (worker, error) => {
      const n = (refusals.get(error) ?? 0) + 1;
      refusals.set(error, n);
      if (n === 1) log(`simulate: ${worker.worker}: ${error} (the first; the summary counts them)`);
    },
  };
  const workers = new Map(roster({ workers: count, teams, seed }).map((spec) => [spec.worker, new Worker(spec, opts)]));
  const timers = [];
  let stopped = false;
  for (const worker of workers.values()) {
    if (stopped) break;
    worker.goOnline();
    await new Promise((resolve) => setTimeout(resolve, CONNECT_SPACING_MS));
  }

  if (churn > 0) timers.push(churnTimer(workers, churn, seed, log));

  return {
    workers,
    teams: teamNames(teams),
    /** Send worker `id` offline or back online; false when there is no such worker. */
    setOnline(id, online) {
      const worker = workers.get(id);
      if (!worker) return false;
      if (online) worker.goOnline();
      else worker.goOffline();
      return true;
    },
    summary() {
      let online = 0;
      let sent = 0;
      let refused = 0;
      for (const w of workers.values()) {
        if (w.socket?.connected) online += 1;
        sent += w.sent;
        refused += w.refused;
      }
      const problems = [...refusals].map(([e, n]) => `; ${e} (${n}×)`).join('');
      return `${online}/${workers.size} workers connected, ${sent} positions accepted, ${refused} not${problems}`;
    },
    stop() {
      stopped = true;
      for (const t of timers) clearInterval(t);
      for (const w of workers.values()) w.stop();
    },
  };
}

/** Every `secs` seconds one connected worker (seeded choice) goes offline for secs/2 to secs seconds. */
function churnTimer(workers, secs, seed, log) {
  const random = seeded(seed ^ 0xc4a2);
  const list = [...workers.values()];
  const maxAway = Math.max(1, Math.floor(list.length / 4));
  let away = 0;
  return setInterval(() => {
    const candidates = list.filter((w) => w.online);
    if (away >= maxAway || candidates.length === 0) return;
    const worker = candidates[Math.floor(random() * candidates.length)];
    const backIn = (0.5 + random() * 0.5) * secs * 1000;
    worker.goOffline();
    away += 1;
    log(`simulate: ${worker.worker} goes offline for ${Math.round(backIn / 1000)} s`);
    setTimeout(() => {
      away -= 1;
      if (!worker.online && worker.socket) worker.goOnline();
    }, backIn).unref();
  }, secs * 1000);
}

/** The control endpoint for `sim` on 127.0.0.1:`port` (0: any free port); resolves with its base URL. */
export function startControl(sim, port) {
  const server = http.createServer((req, res) => {
    const send = (status, body) => {
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify(body));
    };
    const { pathname } = new URL(req.url, 'http://localhost');
    if (pathname === '/workers' && req.method === 'GET') {
      return send(200, { workers: [...sim.workers.values()].map((w) => w.state()) });
    }
    const m = /^\/workers\/([^/]+)\/(online|offline)$/.exec(pathname);
    if (m && req.method === 'POST') {
      const id = decodeURIComponent(m[1]);
      if (!sim.setOnline(id, m[2] === 'online')) return send(404, { error: `no worker ${id}` });
      return send(200, { worker: id, online: m[2] === 'online' });
    }
    send(404, { error: 'GET /workers, POST /workers/<id>/online, POST /workers/<id>/offline' });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve({ url: `http://127.0.0.1:${server.address().port}`, server }));
  });
}

// ---------------------------------------------------------------------------
// command line

const USAGE = `usage: node examples/tracking/simulate.mjs [options]
  --url URL            the tidings node (default http://127.0.0.1:3000; TIDINGS_URL)
  --jwt-secret S       the node's HS256 secret, to sign the workers' tokens (TIDINGS_JWT_SECRET)
  --workers N          simulated workers (default 24, at most 5000)
  --teams M            teams they are spread over (default 4)
  --rate R             positions a second per worker (default 2, at most 20)
  --seed S             fixes names, speeds and routes (default 1)
  --churn SECS         every SECS seconds a worker goes offline for SECS/2 to SECS seconds (default 0: never)
  --control PORT       serve the control endpoint on 127.0.0.1:PORT (0: any free port)
  --token-ttl SECS     lifetime of a worker's token (default 900); workers refresh it before it expires
  --report SECS        print a summary line every SECS seconds (default 10; 0: never)`;

async function main() {
  let values;
  let sim;
  try {
    ({ values } = parseArgs({
      options: {
        ...SIMULATION_ARGS,
        url: { type: 'string', default: process.env.TIDINGS_URL ?? 'http://127.0.0.1:3000' },
        'jwt-secret': { type: 'string', default: process.env.TIDINGS_JWT_SECRET },
        control: { type: 'string' },
        report: { type: 'string', default: '10' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
    if (values.help) {
      console.log(USAGE);
      process.exit(0);
    }
    if (!values['jwt-secret']) throw new Error('--jwt-secret (or TIDINGS_JWT_SECRET) is required');
    sim = { ...simulationOptions(values), url: new URL(values.url).origin, secret: values['jwt-secret'] };
  } catch (err) {
    console.error(`simulate: ${err.message}\n\n${USAGE}`);
    process.exit(2);
  }
  const report = Number(values.report);
  const running = await startSimulation(sim);
  const control = values.control === undefined ? null : await startControl(running, Number(values.control));
  console.log(
    `simulate: ${sim.workers} worker${sim.workers === 1 ? '' : 's'} in ${sim.teams} team${sim.teams === 1 ? '' : 's'} (${running.teams.slice(0, 8).join(', ')}${sim.teams > 8 ? ', …' : ''}), ` +
      `${sim.rate} positions/s each, to ${sim.url}`,
  );
  if (control) console.log(`simulate: control ${control.url}/workers`);
  const reporter = report > 0 ? setInterval(() => console.log(`simulate: ${running.summary()}`), report * 1000) : null;
  const stop = () => {
    clearInterval(reporter);
    running.stop();
    control?.server.close();
    console.log(`simulate: stopped; ${running.summary()}`);
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main();
