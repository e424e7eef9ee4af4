#!/usr/bin/env node
// The menu example's demo server: the back office page (/) where staff mark items sold out or change prices for
// one store or the whole chain, and the point-of-sale pages (/pos/<store>) that show a store's live menu. It
// keeps the menu's state (state.mjs), publishes every change to the store's room through tidings (the HTTP API
// with the API key it holds, or Redis: publish.mjs), and gives point-of-sale pages a development login
// (POST /login {store}) whose token lets them read their own store's room only. With --start-tidings it also
// runs `tidings serve` with tidings.toml, so one command shows it all:
//
//   node examples/menu/serve.mjs --start-tidings        # after `cargo build --release`
//   node examples/menu/serve.mjs --tidings-url http://127.0.0.1:3000 --jwt-secret "$SECRET" --api-key "$KEY"
//   node examples/menu/serve.mjs --start-tidings --redis redis://127.0.0.1:6379 --publish-via redis
//
// Development only: the back office asks for no login and anyone who can reach /login gets a point-of-sale
// token. It listens on 127.0.0.1 by default.

import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { readJson, send, staticFiles } from '../shared/http.mjs';
import { REPO_ROOT, ensureClient, secretFor, startTidings, stopOnSignals } from '../shared/node.mjs';
import { bearerClaims, mintToken } from '../shared/token.mjs';
import { MAX_PRICE, STORES, menuRoom, posClaims } from './catalog.mjs';
import { PublishError, httpPublisher, redisPublisher } from './publish.mjs';
import { MenuState } from './state.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PUBLIC = path.join(HERE, 'public');
const TERMINAL_ID = /^[a-z0-9]{1,16}$/;
const POS_PAGE = /^\/pos\/([a-z0-9]{1,16})$/;
const MENU_PATH = /^\/menu\/([a-z0-9]{1,16})$/;

const USAGE = `usage: node examples/menu/serve.mjs [options]
  --port N             port of this demo server on --host (default 8080; 0 = any free port)
  --host IP            address to listen on (default 127.0.0.1)
  --tidings-url URL    the tidings node the pages connect to (default http://127.0.0.1:3000; TIDINGS_URL)
  --jwt-secret S       the node's HS256 secret (TIDINGS_JWT_SECRET); generated with --start-tidings
  --api-key K          the node's API key, for publishing over HTTP (TIDINGS_API_KEY); generated with
                       --start-tidings
  --publish-via WAY    http (default): POST /v1/publish/batch; redis: PUBLISH <prefix>:publish (needs --redis)
  --redis URL          the cluster's Redis (redis://host:port): where --publish-via redis publishes, and what a
                       node started with --start-tidings joins
  --redis-key-prefix P the cluster's key prefix (default tidings)
  --state-file FILE    keep the menu's state in this JSON file (default: in memory, fresh on every start)
  --token-ttl SECS     lifetime of a point-of-sale token (default 900); pages refresh it before it expires
  --start-tidings      run \`tidings serve\` too (TIDINGS_BIN, default target/release/tidings), with
                       examples/menu/tidings.toml, listening on --tidings-url's address
  --data-dir DIR       the started node's data directory (default target/menu-data; not with --redis): room
                       history and sessions survive a restart of the node`;

function options() {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: process.env.MENU_PORT ?? '8080' },
      host: { type: 'string', default: '127.0.0.1' },
      'tidings-url': { type: 'string', default: process.env.TIDINGS_URL ?? 'http://127.0.0.1:3000' },
      'jwt-secret': { type: 'string', default: process.env.TIDINGS_JWT_SECRET },
      'api-key': { type: 'string', default: process.env.TIDINGS_API_KEY },
      'publish-via': { type: 'string', default: 'http' },
      redis: { type: 'string' },
      'redis-key-prefix': { type: 'string', default: 'tidings' },
      'state-file': { type: 'string' },
      'token-ttl': { type: 'string', default: '900' },
      'start-tidings': { type: 'boolean', default: false },
      'data-dir': { type: 'string', default: path.join(REPO_ROOT, 'target', 'menu-data') },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const start = values['start-tidings'];
  const ttl = Number(values['token-ttl']);
  if (!Number.isInteger(ttl) || ttl < 120) fail('--token-ttl must be a whole number of seconds, at least 120');
  const via = values['publish-via'];
  if (via !== 'http' && via !== 'redis') fail('--publish-via is http or redis');
  if (via === 'redis' && !values.redis) fail('--publish-via redis needs --redis URL');
  let apiKey = values['api-key'];
  if (!apiKey && via === 'http') {
    if (!start) fail('--api-key (or TIDINGS_API_KEY) is required to publish over HTTP without --start-tidings');
    apiKey = randomBytes(16).toString('hex');
  }
  return {
    port: Number(values.port),
    host: values.host,
    tidingsUrl: new URL(values['tidings-url']).origin,
    secret: secretFor(values['jwt-secret'], start, fail),
    apiKey,
    via,
    redis: values.redis,
    prefix: values['redis-key-prefix'],
    stateFile: values['state-file'] ? path.resolve(values['state-file']) : null,
    ttl,
    startTidings: start,
    dataDir: path.resolve(values['data-dir']),
  };
}

function fail(message) {
  console.error(`menu: ${message}\n\n${USAGE}`);
  process.exit(2);
}

// ---------------------------------------------------------------------------
// the back office: read the menu, change it

/** The parsed change of `POST /office/changes`, or a reason to refuse it. */
function parseChange(body, menu) {
  const { item, stores, available, price } = body ?? {};
  if (typeof item !== 'string' || !menu.hasItem(item)) return { error: 'unknown item' };
  const ids = stores === 'all' ? STORES.map((s) => s.id) : stores;
  if (!Array.isArray(ids) || ids.length === 0 || !ids.every((id) => menu.hasStore(id))) {
    return { error: 'stores is "all" or a list of store ids' };
  }
  if (available !== undefined && typeof available !== 'boolean') return { error: 'available is true or false' };
  if (price !== undefined && !(Number.isInteger(price) && price > 0 && price <= MAX_PRICE)) {
    return { error: `price is a whole number of cents, 1 to ${MAX_PRICE}` };
  }
  if (available === undefined && price === undefined) return { error: 'change available, price or both' };
  return { change: { stores: [...new Set(ids)], item, available, price } };
}

/**
 * Applies changes one at a time, each published before the next is applied, so every store's updates reach
 * tidings in version order. The state is changed first: it is what pages load, so an update that could not be
 * published is still what a page shows after its next load (a page that sees the following version notices the
 * gap and loads the menu again).
 */
class Office {
  constructor(menu, publisher) {
    this.menu = menu;
    this.publisher = publisher;
    this.queue = Promise.resolve();
  }

  apply({ stores, item, available, price }) {
    const run = this.queue.then(async () => {
      const updates = this.menu.change(stores, item, { available, price });
      if (updates.length === 0) return { ok: true, via: this.publisher.via, published: [] };
      try {
        const published = await this.publisher.publish(updates);
        return { ok: true, via: this.publisher.via, published };
      } catch (err) {
        if (!(err instanceof PublishError)) throw err;
        console.error(`menu: ${updates.length} update(s) saved but not published: ${err.message}`);
        const versions = updates.map(({ store, version }) => ({ store, version }));
        return { ok: false, via: this.publisher.via, error: err.message, saved: versions };
      }
    });
    this.queue = run.catch(() => {});
    return run;
  }
}

async function officeChange(req, res, office) {
  const body = await readJson(req);
  if (body === undefined) return send(res, 400, { error: 'send JSON {"item", "stores", "available"?, "price"?}' });
  const { change, error } = parseChange(body, office.menu);
  if (error) return send(res, 400, { error });
  const outcome = await office.apply(change);
  send(res, outcome.ok ? 200 : 502, { ...outcome, menu: office.menu.overview() });
}

// ---------------------------------------------------------------------------
// point of sale: a token for one store, and that store's menu for the token

/** POST /login {store, terminal?}: a token for a terminal of `store`; `terminal` (an earlier answer's) keeps its user id. */
async function login(req, res, opts, menu) {
  const body = await readJson(req);
  if (body === undefined) return send(res, 400, { error: 'send JSON {"store": "s1"}' });
  const { store } = body ?? {};
  if (typeof store !== 'string' || !menu.hasStore(store)) return send(res, 400, { error: 'unknown store' });
  let terminal = body.terminal;
  if (terminal === undefined) terminal = randomBytes(4).toString('hex');
  else if (typeof terminal !== 'string' || !TERMINAL_ID.test(terminal)) {
    return send(res, 400, { error: 'terminal is 1-16 lowercase letters or digits' });
  }
  const claims = posClaims(store, terminal);
  const { token, exp } = mintToken(claims, opts.secret, opts.ttl);
  send(res, 200, { store, terminal, user: claims.sub, token, exp, tidings_url: opts.tidingsUrl });
}

/** GET /menu/<store> with `Authorization: Bearer <token>`: the store's snapshot, for a token of that store. */
function storeMenu(req, res, opts, menu, store) {
  const claims = bearerClaims(req, opts.secret);
  if (!claims) return send(res, 401, { error: 'a valid point-of-sale token is required' });
  if (!menu.hasStore(store)) return send(res, 404, { error: 'unknown store' });
  if (!Array.isArray(claims.rooms) || !claims.rooms.includes(menuRoom(store))) {
    return send(res, 403, { error: `this token is not for store ${store}` });
  }
  send(res, 200, menu.snapshot(store));
}

// ---------------------------------------------------------------------------
// HTTP

function handler(opts, office) {
  const files = staticFiles(HERE, PUBLIC, opts.tidingsUrl);
  const { menu } = office;
  return async (req, res) => {
    const { pathname } = new URL(req.url, 'http://localhost');
    try {
      if (req.method === 'POST') {
        if (pathname === '/login') return await login(req, res, opts, menu);
        if (pathname === '/office/changes') return await officeChange(req, res, office);
        return send(res, 405, { error: 'method not allowed' });
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, { error: 'method not allowed' });
      if (pathname === '/office/menu') return send(res, 200, { via: office.publisher.via, menu: menu.overview() });
      const menuPath = MENU_PATH.exec(pathname);
      if (menuPath) return storeMenu(req, res, opts, menu, menuPath[1]);
      const pos = POS_PAGE.exec(pathname);
      if (pos) return menu.hasStore(pos[1]) ? files(res, pathname, 'pos.html') : send(res, 404, { error: 'unknown store' });
      files(res, pathname);
    } catch (err) {
      if (!res.headersSent) send(res, 500, { error: err.message });
    }
  };
}

async function main() {
  const opts = options();
  ensureClient('menu', HERE);
  let tidings = null;
  if (opts.startTidings) {
    const args = [];
    if (opts.redis) args.push('--redis', opts.redis, '--redis-key-prefix', opts.prefix);
    else {
      mkdirSync(opts.dataDir, { recursive: true });
      args.push('--data-dir', opts.dataDir);
    }
    tidings = await startTidings('menu', {
      url: opts.tidingsUrl,
      config: path.join(HERE, 'tidings.toml'),
      secret: opts.secret,
      apiKey: opts.apiKey,
      args,
    });
  }
  const publisher =
    opts.via === 'redis'
      ? redisPublisher({ redisUrl: opts.redis, prefix: opts.prefix })
      : httpPublisher({ tidingsUrl: opts.tidingsUrl, apiKey: opts.apiKey });
  const office = new Office(new MenuState(opts.stateFile), publisher);
  const server = http.createServer(handler(opts, office));
  server.listen(opts.port, opts.host, () => {
    const { port } = server.address();
    const stores = STORES.map((s) => `/pos/${s.id}`).join(', ');
    console.log(`menu: publishing via ${opts.via}; point of sale at ${stores}`);
    console.log(`menu: open http://${opts.host}:${port}/ (tidings at ${opts.tidingsUrl})`);
  });
  stopOnSignals({ server, tidings, cleanup: () => publisher.close() });
}

await main();
