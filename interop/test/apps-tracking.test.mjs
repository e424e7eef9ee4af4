// The team-tracking app (examples/tracking) in headless Chromium: a tidings node with the app's config, the
// app's demo server, and its simulator with 18 workers in 3 teams (alpha, bravo, charlie), each a socket.io
// client of its own. A manager page of team alpha is checked through its DOM: its workers' markers move, no
// other team's worker shows, workers the test sends offline are greyed out within seconds and come back, one
// whose network goes silent is greyed out once the node's ping goes unanswered, and the page swaps its token
// before it expires. Raw socket.io clients check what the tokens allow and what the rooms' policies do
// (ephemeral, conflated, rate-limited). Last, the one documented command (serve.mjs --start-tidings --simulate)
// is run as it is. Screenshots: target/screenshots/tracking-manager.png (workers moving, two offline and greyed
// out) and tracking-login.png (the login page of the one command).

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { mintToken, workerClaims } from '../../examples/tracking/token.mjs';
import { assertNoPageErrors, launchBrowser, newPage, screenshot, startApp } from './browser.mjs';
import { startProxy } from './proxy.mjs';
import {
  REPO_ROOT,
  api,
  ask,
  assertOk,
  assertRefused,
  collect,
  connect,
  eventually,
  freePort,
  startServer,
} from './helpers.mjs';

const APP = path.join(REPO_ROOT, 'examples', 'tracking');
const T = { timeout: 90_000 };
/** The page must show a worker offline this soon after its connection closed (presence is coalesced per second). */
const OFFLINE_WITHIN_MS = 10_000;
/** …and this soon after its network went silent: the app's ping interval + ping timeout (15 s), + 1 s, + slack. */
const SILENT_OFFLINE_WITHIN_MS = 30_000;
// The node tells a connection about its token's expiry 115 s ahead; with the page's 120 s tokens (the
// shortest the demo server mints) the page has to refresh about 5 s after it connected.
const CONFIG = `${readFileSync(path.join(APP, 'tidings.toml'), 'utf8')}\n[auth]\nexpiry_notice_secs = 115\n`;

/** {worker: {x, y}} of the markers on the page. */
const markers = (page) =>
  page.$$eval('#markers .marker', (els) =>
    Object.fromEntries(els.map((m) => [m.dataset.worker, { x: m.dataset.x, y: m.dataset.y, team: m.dataset.team }])),
  );

/** The list's workers: {worker: state}. */
const listed = (page) =>
  page.$$eval('#workers li', (els) => Object.fromEntries(els.map((li) => [li.dataset.worker, li.dataset.state])));

async function control(sim, method, urlPath) {
  const res = await fetch(`${sim.url}${urlPath}`, { method, signal: AbortSignal.timeout(5000) });
  assert.equal(res.status, 200, `${method} ${urlPath}`);
  return res.json();
}

async function login(appUrl, team) {
  const res = await fetch(new URL('/login', appUrl), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ team }),
  });
  return { status: res.status, body: await res.json() };
}

const claimsOf = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());

/** Wait until every marker on the page has moved from where `first` had it. */
async function allMoved(page, first, what) {
  return eventually(
    async () => {
      const now = await markers(page);
      return Object.keys(first).every((w) => now[w] && (now[w].x !== first[w].x || now[w].y !== first[w].y));
    },
    { timeoutMs: 15_000, intervalMs: 250, what },
  );
}

describe('team-tracking app in Chromium', () => {
  let server;
  let app;
  let sim;
  let browser;
  let manager;
  let alpha;
  let others;
  let screenshotTaken = false;

  before(async () => {
    server = await startServer({ config: CONFIG });
    const env = { TIDINGS_JWT_SECRET: server.secret };
    app = await startApp(path.join(APP, 'serve.mjs'), ['--port', '0', '--tidings-url', server.url, '--token-ttl', '120'], {
      env,
    });
    sim = await startApp(
      path.join(APP, 'simulate.mjs'),
      ['--url', server.url, '--workers', '18', '--teams', '3', '--seed', '7', '--control', '0', '--report', '0'],
      { env, ready: /control (http:\/\/\S+)\/workers/ },
    );
    const { workers } = await control(sim, 'GET', '/workers');
    alpha = workers.filter((w) => w.team === 'alpha').map((w) => w.worker);
    others = workers.filter((w) => w.team !== 'alpha').map((w) => w.worker);
    assert.equal(alpha.length, 6);
    assert.equal(others.length, 12);

    browser = await launchBrowser();
    manager = await newPage(browser, { viewport: { width: 1200, height: 720 } });
    await manager.page.goto(app.url);
    await manager.page.fill('#login-team', 'alpha');
    await manager.page.click('#login-form button[type=submit]');
    await manager.page.waitForSelector('body[data-connection="connected"][data-team="alpha"]');
  });

  after(async () => {
    if (!screenshotTaken && manager) await screenshot(manager.page, 'tracking-manager-at-failure').catch(() => {});
    await browser?.close();
    await sim?.stop();
    await app?.stop();
    await server?.stop();
  });

  test('the manager of alpha sees alpha’s workers move, and no other team’s', T, async () => {
    const { page } = manager;
    await eventually(async () => Object.keys(await markers(page)).length === alpha.length, {
      timeoutMs: 15_000,
      what: `a marker for each of alpha's ${alpha.length} workers`,
    });
    const first = await markers(page);
    assert.deepEqual(Object.keys(first).sort(), [...alpha].sort());
    for (const m of Object.values(first)) assert.equal(m.team, 'alpha');
    await allMoved(page, first, 'every marker to move');
    // Still only alpha's workers, in the list too, each online (from the presence of crew:alpha).
    const now = await markers(page);
    assert.deepEqual(Object.keys(now).sort(), [...alpha].sort());
    await eventually(async () => Object.values(await listed(page)).filter((s) => s === 'online').length === 6, {
      what: 'six workers online in the list',
    });
    assert.deepEqual(Object.keys(await listed(page)).sort(), [...alpha].sort());
    assert.equal(await page.textContent('#crew-count'), '6 of 6 online');
    for (const w of others) assert.equal(await page.$(`[data-worker="${w}"]`), null, `${w} is not on alpha's page`);
    assertNoPageErrors(manager);
  });

  test('workers that go offline are greyed out within seconds, and come back online', T, async (t) => {
    const { page } = manager;
    const gone = alpha.slice(0, 2);
    const staying = alpha.slice(2);
    for (const worker of gone) {
      const started = Date.now();
      await control(sim, 'POST', `/workers/${worker}/offline`);
      await page.waitForSelector(`#workers li[data-worker="${worker}"][data-state="offline"]`, {
        timeout: OFFLINE_WITHIN_MS,
      });
      await page.waitForSelector(`#markers .marker[data-worker="${worker}"][data-state="offline"]`, { timeout: 1000 });
      t.diagnostic(`${worker} shown offline ${Date.now() - started} ms after its connection closed`);
      const opacity = await page.$eval(`#markers .marker[data-worker="${worker}"]`, (m) => getComputedStyle(m).opacity);
      assert.ok(Number(opacity) < 1, `the offline marker is faded (opacity ${opacity})`);
      assert.match(await page.textContent(`#workers li[data-worker="${worker}"] .status`), /^offline since /);
    }
    assert.equal(await page.textContent('#crew-count'), '4 of 6 online');
    const states = await listed(page);
    for (const w of staying) assert.equal(states[w], 'online', `${w} stays online`);

    // The others keep moving while they are away; this is the screenshot the README shows.
    const before = await markers(page);
    for (const w of gone) delete before[w];
    await allMoved(page, before, 'the online markers to move on');
    assert.ok(readFileSync(await screenshot(page, 'tracking-manager')).length > 10_000, 'screenshot written');
    screenshotTaken = true;

    for (const worker of gone) await control(sim, 'POST', `/workers/${worker}/online`);
    for (const worker of gone) {
      await page.waitForSelector(`#workers li[data-worker="${worker}"][data-state="online"]`, {
        timeout: OFFLINE_WITHIN_MS,
      });
      await page.waitForSelector(`#markers .marker[data-worker="${worker}"][data-state="online"]`, { timeout: 1000 });
    }
    const back = await markers(page);
    await allMoved(page, Object.fromEntries(gone.map((w) => [w, back[w]])), 'the returned markers to move again');
    assert.equal(await page.textContent('#crew-count'), '6 of 6 online');
    assertNoPageErrors(manager);
  });

  test('a worker whose network goes silent is greyed out once the node’s ping goes unanswered', T, async (t) => {
    const { page } = manager;
    // A worker of alpha of the test's own, connected through a proxy that can freeze its connection: no close
    // reaches the node, as when a phone drives into a tunnel.
    const worker = 'alpha-tunnel';
    const proxy = await startProxy(server);
    try {
      const token = mintToken(workerClaims(worker, 'alpha'), server.secret, 300).token;
      const phone = await connect(proxy, { token, transports: ['websocket'] });
      const data = { worker, team: 'alpha', name: 'Tunnel', x: 600, y: 400, heading: 90, ts: Date.now() };
      assertOk(await ask(phone, 'publish', { room: 'pos:alpha', event: 'position', data }));
      await page.waitForSelector(`#markers .marker[data-worker="${worker}"][data-state="online"]`, { timeout: 10_000 });
      await page.waitForSelector(`#workers li[data-worker="${worker}"][data-state="online"]`, { timeout: 10_000 });

      const started = Date.now();
      proxy.pause();
      await page.waitForSelector(`#workers li[data-worker="${worker}"][data-state="offline"]`, {
        timeout: SILENT_OFFLINE_WITHIN_MS,
      });
      await page.waitForSelector(`#markers .marker[data-worker="${worker}"][data-state="offline"]`, { timeout: 1000 });
      t.diagnostic(`${worker} shown offline ${Date.now() - started} ms after its network went silent`);
      phone.close();
    } finally {
      await proxy.close();
    }
    assertNoPageErrors(manager);
  });

  test('the page swaps its token on the live connection before it expires', T, async () => {
    const { page } = manager;
    const exp = Number(await page.getAttribute('body', 'data-token-exp'));
    await page.waitForSelector('body[data-refreshes]', { timeout: 20_000 });
    await eventually(async () => Number(await page.getAttribute('body', 'data-token-exp')) > exp, {
      what: 'a later expiry after the refresh',
    });
    assert.equal(await page.getAttribute('body', 'data-connection'), 'connected');
    const now = await markers(page);
    const first = Object.fromEntries(alpha.map((w) => [w, now[w]]));
    await allMoved(page, first, 'the simulated workers’ markers to move on after the refresh');
    assertNoPageErrors(manager);
  });

  test('a manager token of alpha reaches alpha’s rooms only, and publishes nothing', T, async () => {
    const bad = await login(app.url, 'Not A Team');
    assert.equal(bad.status, 400);
    const { status, body } = await login(app.url, 'alpha');
    assert.equal(status, 200);
    const claims = claimsOf(body.token);
    assert.deepEqual(
      { sub: claims.sub.startsWith('manager:alpha:'), rooms: claims.rooms, join: claims.join, publish: claims.publish },
      { sub: true, rooms: ['pos:alpha', 'crew:alpha'], join: ['pos:alpha', 'crew:alpha'], publish: [] },
    );
    assert.equal(claims.exp - claims.iat, 120);

    const socket = await connect(server, { token: body.token });
    const positions = collect(socket, 'position');
    for (const room of ['pos:bravo', 'crew:bravo', 'pos:charlie', 'crew:charlie']) {
      assertRefused(await ask(socket, 'subscribe', room), 'forbidden', `subscribe ${room}`);
    }
    assertRefused(await ask(socket, 'presence', { room: 'crew:bravo' }), 'forbidden', 'presence of crew:bravo');
    const data = { worker: alpha[0], team: 'alpha', x: 0, y: 0, ts: Date.now() };
    for (const room of ['pos:alpha', 'pos:bravo']) {
      assertRefused(await ask(socket, 'publish', { room, event: 'position', data }), 'forbidden', `publish to ${room}`);
    }
    const page = assertOk(await ask(socket, 'presence', { room: 'crew:alpha' }));
    const users = page.users.map((u) => u.user);
    for (const w of alpha) assert.ok(users.includes(w), `${w} in crew:alpha's presence`);
    assert.ok(!users.some((u) => others.includes(u)), `no other team's worker in ${users}`);

    await positions.waitForCount(8, 15_000);
    socket.close();
    assert.ok(positions.items.every((p) => p.team === 'alpha' && alpha.includes(p.worker)), 'only alpha’s positions');
    // Ephemeral: no offset argument on the wire, nothing in the room's history.
    assert.ok(positions.args.every((args) => args.length === 1), 'positions carry no offset');
    const history = await api(server, 'GET', `/v1/rooms/${encodeURIComponent('pos:alpha')}/history`);
    assert.equal(history.status, 200);
    assert.deepEqual(history.json.events, []);
  });

  test('positions are conflated per worker and rate-limited per connection', T, async () => {
    const watcher = await connect(server, { token: (await login(app.url, 'alpha')).body.token });
    const worker = 'alpha-test';
    const got = collect(watcher, 'position');
    const phone = await connect(server, { token: mintToken(workerClaims(worker, 'alpha'), server.secret, 300).token });
    // Eight positions at once (the room's burst): one interval's worth, so the manager gets the last one, and
    // at most one before it if the burst straddled the end of an interval.
    const send = (seq) =>
      ask(phone, 'publish', { room: 'pos:alpha', event: 'position', data: { worker, team: 'alpha', x: seq, y: 0, seq } });
    const acks = await Promise.all(Array.from({ length: 8 }, (_, k) => send(k + 1)));
    for (const ack of acks) assertOk(ack, 'a position within the burst');
    const last = await eventually(() => got.items.find((p) => p.worker === worker && p.seq === 8), {
      timeoutMs: 5000,
      what: 'the last position of the burst',
    });
    assert.equal(last.x, 8);
    // Events reach a connection in order, so whatever else of the burst got through came before the last one.
    const mine = got.items.filter((p) => p.worker === worker).map((p) => p.seq);
    assert.ok(mine.length <= 2 && mine.at(-1) === 8, `conflated to the latest: got ${JSON.stringify(mine)}`);

    // Past the burst, at 4 a second: twenty at once cannot all be taken.
    const more = await Promise.all(Array.from({ length: 20 }, (_, k) => send(100 + k)));
    assert.ok(more.some((a) => a?.ok === false && a.error === 'rate_limited'), JSON.stringify(more));
    phone.close();
    watcher.close();
  });

  test('one command: serve.mjs --start-tidings --simulate', T, async () => {
    const tidingsUrl = `http://127.0.0.1:${await freePort()}`;
    const demo = await startApp(
      path.join(APP, 'serve.mjs'),
      ['--start-tidings', '--simulate', '--workers', '6', '--teams', '2', '--port', '0', '--tidings-url', tidingsUrl],
      { env: { TIDINGS_LOG: 'warn' } },
    );
    const p = await newPage(browser, { viewport: { width: 1200, height: 720 } });
    try {
      await p.page.goto(demo.url);
      await p.page.waitForSelector('#quick-teams button[data-team="bravo"]');
      await screenshot(p.page, 'tracking-login');
      await p.page.click('#quick-teams button[data-team="bravo"]');
      await p.page.waitForSelector('body[data-connection="connected"][data-team="bravo"]');
      await eventually(async () => Object.keys(await markers(p.page)).length === 3, {
        timeoutMs: 15_000,
        what: "bravo's three markers",
      });
      const first = await markers(p.page);
      assert.ok(Object.keys(first).every((w) => w.startsWith('bravo-')), JSON.stringify(first));
      await allMoved(p.page, first, "bravo's markers to move");
      assertNoPageErrors(p);
    } finally {
      await p.context.close();
      await demo.stop();
    }
    // Stopping the demo server stopped the node it started.
    const down = await fetch(`${tidingsUrl}/healthz`, { signal: AbortSignal.timeout(2000) }).then(
      () => false,
      () => true,
    );
    assert.ok(down, 'the started node is stopped with the demo server');
  });
});
