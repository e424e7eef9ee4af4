// The menu-updates app (examples/menu) in headless Chromium: a tidings node with the app's config, the app's
// demo server publishing over the HTTP API, the back office page and the point-of-sale pages of two stores (s1
// at a desk's size, s2 at a phone's), checked through their DOM. The back office marks an item sold out and the
// store's till shows it while the other store's does not; a till token of s1 is refused s2's room and any
// publishing; a chain-wide price reaches every till; a till that goes offline while updates are published shows
// each missed update, in order, once back (the node recovered its session) and ends with the back office's
// menu; a till whose session is gone (node restarted) loads the menu again and lists what changed; the app
// publishing through Redis to a cluster node; and the one documented command. Screenshots (target/screenshots
// or TIDINGS_SCREENSHOTS): menu-office.png (the back office with its log of published updates),
// menu-pos-live.png (s1's till with sold-out items), menu-pos-phone.png (s2's till on a phone),
// menu-pos-reconnected.png (s1's till back online with the updates it missed) and menu-pos-reloaded.png (s1's
// till after the node restart, with the items that changed).

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { assertNoPageErrors, launchBrowser, networkSwitch, newPage, screenshot, startApp } from './browser.mjs';
import { cleanupLogs, startRedis, uniquePrefix } from './cluster-helpers.mjs';
import {
  API_KEY,
  REPO_ROOT,
  api,
  ask,
  assertRefused,
  collect,
  connect,
  eventually,
  freePort,
  sleep,
  startServer,
} from './helpers.mjs';

const APP = path.join(REPO_ROOT, 'examples', 'menu');
const CONFIG = readFileSync(path.join(APP, 'tidings.toml'), 'utf8');
const T = { timeout: 90_000 };
// While a page is offline (or its node is down, or draining: new clients are refused with 503 until it exits)
// its reconnection attempts fail to load, which Chromium logs as console errors.
const OFFLINE_LOADS = [
  /net::ERR_INTERNET_DISCONNECTED/,
  /net::ERR_CONNECTION_REFUSED/,
  /status of 503 \(Service Unavailable\)/,
];
// …and a websocket the test closes is reported as such.
const CUT_SOCKETS = [...OFFLINE_LOADS, /WebSocket connection to .* failed/];
const DESK = { width: 1200, height: 760 };
const PHONE = { width: 390, height: 844 };

/** {item: {available, price}} of a till page. */
const tillItems = (page) =>
  page.$$eval('#categories li.item', (els) =>
    Object.fromEntries(els.map((li) => [li.dataset.item, { available: li.dataset.available === 'true', price: Number(li.dataset.price) }])),
  );

/** The missed updates a till lists: [{version, item, via}]. */
const missedList = (page) =>
  page.$$eval('#missed li', (els) =>
    els.map((li) => ({ version: li.dataset.version ? Number(li.dataset.version) : undefined, item: li.dataset.item, via: li.dataset.via })),
  );

/** The demo server's menu: {version, items: {item: {available, price}}} of `store`. */
async function officeMenu(appUrl, store) {
  const res = await fetch(new URL('/office/menu', appUrl), { signal: AbortSignal.timeout(5000) });
  const { menu } = await res.json();
  return {
    version: menu.stores.find((s) => s.id === store).version,
    items: Object.fromEntries(menu.items.map((item) => [item.id, item.stores[store]])),
  };
}

/** The till shows exactly the back office's menu of its store, at the same version. */
async function assertTillMatches(page, appUrl, store) {
  const want = await officeMenu(appUrl, store);
  await eventually(async () => (await page.getAttribute('body', 'data-version')) === String(want.version), {
    what: `${store}'s till at version ${want.version}`,
  });
  assert.deepEqual(await tillItems(page), want.items);
}

async function openTill(browser, appUrl, store, viewport = DESK, { network = false } = {}) {
  const p = await newPage(browser, { viewport, allowConsole: network ? CUT_SOCKETS : OFFLINE_LOADS });
  if (network) p.network = await networkSwitch(p.context);
  await p.page.goto(new URL(`/pos/${store}`, appUrl).href);
  await p.page.waitForSelector(`body[data-connection="connected"][data-store="${store}"][data-version]`);
  await p.page.waitForSelector('#categories li.item');
  return p;
}

/**
 * In the back office, for `scope` (a store id or "all"): `toggle` an item's availability or set its `price`
 * (euros); waits for the log to show `entries` more lines (one per store that changed) and returns the newest.
 */
async function officeDo(page, scope, item, { toggle = false, price, entries = 1, state = 'published' }) {
  await page.check(`input[name="scope"][value="${scope}"]`);
  const before = await page.locator('#activity li').count();
  const row = page.locator(`#items tr[data-item="${item}"]`);
  if (toggle) await row.locator('button.toggle').click();
  else {
    await row.locator('input.price-input').fill(price);
    await row.locator('.price-form button[type=submit]').click();
  }
  await eventually(async () => (await page.locator('#activity li').count()) === before + entries, {
    what: `${entries} new line(s) in the back office's log`,
  });
  const newest = page.locator('#activity li').first();
  assert.equal(await newest.getAttribute('data-state'), state, await newest.textContent());
  return newest;
}

async function loginAs(appUrl, store) {
  const res = await fetch(new URL('/login', appUrl), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ store }),
  });
  return { status: res.status, body: await res.json() };
}

const claimsOf = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());

describe('menu app in Chromium', () => {
  let server;
  let app;
  let browser;
  let office;
  let till1;
  let till2;
  let screenshotsTaken = false;
  const pages = () => [office, till1, till2].filter(Boolean);

  before(async () => {
    server = await startServer({ config: CONFIG });
    app = await startApp(path.join(APP, 'serve.mjs'), ['--port', '0', '--tidings-url', server.url], {
      env: { TIDINGS_JWT_SECRET: server.secret, TIDINGS_API_KEY: server.apiKey },
    });
    browser = await launchBrowser();
    // A change made while the node is down is answered 502 (saved, not published), which Chromium logs.
    office = await newPage(browser, { viewport: DESK, allowConsole: [/status of 502 \(Bad Gateway\)/] });
    await office.page.goto(app.url);
    await office.page.waitForSelector('#items tr[data-item="margherita"]');
    till1 = await openTill(browser, app.url, 's1');
    till2 = await openTill(browser, app.url, 's2', PHONE);
  });

  after(async () => {
    if (!screenshotsTaken) {
      for (const [name, p] of [['office', office], ['till1', till1], ['till2', till2]]) {
        if (p) await screenshot(p.page, `menu-${name}-at-failure`).catch(() => {});
      }
    }
    await browser?.close();
    await app?.stop();
    await server?.stop();
  });

  test('the back office marks an item sold out: s1’s till shows it at once, s2’s does not', T, async () => {
    assert.deepEqual(await tillItems(till1.page), (await officeMenu(app.url, 's1')).items);
    assert.equal(await till1.page.textContent('#store-title'), 'Tidings Pizza · Downtown');

    const line = await officeDo(office.page, 's1', 'margherita', { toggle: true });
    assert.match(await line.textContent(), /Downtown v1 Margherita sold out — published at offset \d+ to 1 till/);
    const sold = '#categories li.item[data-item="margherita"][data-available="false"]';
    await till1.page.waitForSelector(sold);
    await till1.page.waitForSelector('body[data-version="1"]');
    // Greyed out, struck through and labelled, not by colour alone.
    assert.equal(await till1.page.isVisible(`${sold} .badge:text-is("Sold out")`), true);
    const look = await till1.page.$eval(`${sold} .name`, (n) => getComputedStyle(n).textDecorationLine);
    assert.equal(look, 'line-through');
    assert.match(await till1.page.getAttribute(sold, 'aria-label'), /Margherita, €9\.50, sold out/);

    // s2 gets its own store's update and nothing of s1's.
    await officeDo(office.page, 's2', 'cola', { price: '3.10' });
    await till2.page.waitForSelector('#categories li.item[data-item="cola"][data-price="310"]');
    await till2.page.waitForSelector('body[data-version="1"]');
    assert.equal(await till2.page.getAttribute('li.item[data-item="margherita"]', 'data-available'), 'true');
    assert.equal(await till1.page.getAttribute('li.item[data-item="cola"]', 'data-price'), '300');
    assert.equal(await till1.page.getAttribute('body', 'data-version'), '1');
    await assertTillMatches(till1.page, app.url, 's1');
    await assertTillMatches(till2.page, app.url, 's2');
    assertNoPageErrors(...pages());
  });

  test('a till token of s1 reads s1 only: s2’s room and menu are refused, and it cannot publish', T, async () => {
    const { status, body } = await loginAs(app.url, 's1');
    assert.equal(status, 200);
    const claims = claimsOf(body.token);
    assert.deepEqual(
      { sub: claims.sub.startsWith('pos:s1:'), rooms: claims.rooms, join: claims.join, publish: claims.publish },
      { sub: true, rooms: ['menu:s1'], join: ['menu:s1'], publish: [] },
    );
    assert.equal((await loginAs(app.url, 's9')).status, 400);

    const s1 = await connect(server, { token: body.token });
    const got = collect(s1, 'menu:update');
    assertRefused(await ask(s1, 'subscribe', 'menu:s2'), 'forbidden');
    assertRefused(await ask(s1, 'history', { room: 'menu:s2' }), 'forbidden');
    assertRefused(await ask(s1, 'publish', { room: 'menu:s1', event: 'menu:update', data: { version: 99 } }), 'forbidden');
    assertRefused(await ask(s1, 'publish', { room: 'menu:s2', event: 'menu:update', data: {} }), 'forbidden');

    // An update of s2 then one of s1: the s1 socket gets only the second.
    const change = (store, item, available) =>
      fetch(new URL('/office/changes', app.url), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ item, stores: [store], available }),
      }).then((r) => r.json());
    assert.equal((await change('s2', 'caesar', false)).ok, true);
    assert.equal((await change('s1', 'caesar', false)).ok, true);
    await got.waitForCount(1);
    await sleep(300);
    assert.deepEqual(
      got.items.map((u) => [u.store, u.item, u.available]),
      [['s1', 'caesar', false]],
    );
    s1.close();

    const menu = (store, token) =>
      fetch(new URL(`/menu/${store}`, app.url), { headers: token ? { authorization: `Bearer ${token}` } : {} });
    assert.equal((await menu('s1', body.token)).status, 200);
    assert.equal((await menu('s2', body.token)).status, 403);
    assert.equal((await menu('s1')).status, 401);
    assert.equal((await menu('s1', `${body.token.slice(0, -2)}xx`)).status, 401);
    await assertTillMatches(till1.page, app.url, 's1');
    await assertTillMatches(till2.page, app.url, 's2');
    assertNoPageErrors(...pages());
  });

  test('a chain-wide price change reaches every store’s till', T, async () => {
    await officeDo(office.page, 'all', 'lemonade', { price: '3.80', entries: 3 });
    for (const p of [till1, till2]) await p.page.waitForSelector('li.item[data-item="lemonade"][data-price="380"]');
    assert.equal((await officeMenu(app.url, 's3')).items.lemonade.price, 380);
    await officeDo(office.page, 'all', 'tiramisu', { toggle: true, entries: 3 });
    for (const p of [till1, till2]) await p.page.waitForSelector('li.item[data-item="tiramisu"][data-available="false"]');
    await assertTillMatches(till1.page, app.url, 's1');
    await assertTillMatches(till2.page, app.url, 's2');
    assert.equal(await till1.page.isHidden('#missed-panel'), true, 'nothing was missed');
    await screenshot(till1.page, 'menu-pos-live');
    await screenshot(till2.page, 'menu-pos-phone');
    assertNoPageErrors(...pages());
  });

  test('s1’s till loses its network while four updates are published: back online it lists each, in order', T, async () => {
    const { page, context } = till1;
    const before = await tillItems(page);
    const from = Number(await page.getAttribute('body', 'data-version'));
    await context.setOffline(true);
    await page.waitForSelector('body[data-connection="reconnecting"]');
    assert.match(await page.textContent('#connection-banner'), /^Offline since \d\d:\d\d:\d\d/);
    assert.equal(await page.textContent('#connection'), 'offline');

    await officeDo(office.page, 's1', 'diavola', { toggle: true });
    await officeDo(office.page, 's1', 'funghi', { price: '11.90' });
    await officeDo(office.page, 's2', 'funghi', { toggle: true }); // another store's: not for this till
    await officeDo(office.page, 's1', 'margherita', { toggle: true }); // back in stock
    await officeDo(office.page, 's1', 'tiramisu', { toggle: true }); // back in stock
    await sleep(1000);
    assert.deepEqual(await tillItems(page), before, 'nothing reaches the till while it is offline');

    await context.setOffline(false);
    await page.waitForSelector('body[data-connection="connected"]', { timeout: 20_000 });
    assert.equal(await page.getAttribute('body', 'data-recovered'), 'true', 'the node recovered the session');
    await page.waitForSelector('#missed-panel[data-kind="replayed"]:not([hidden])');
    assert.deepEqual(await missedList(page), [
      { version: from + 1, item: 'diavola', via: 'replay' },
      { version: from + 2, item: 'funghi', via: 'replay' },
      { version: from + 3, item: 'margherita', via: 'replay' },
      { version: from + 4, item: 'tiramisu', via: 'replay' },
    ]);
    assert.match(await page.textContent('#missed-summary'), /^Offline for \d+ s\. 4 updates replayed, in order:$/);
    const texts = await page.$$eval('#missed li', (els) => els.map((li) => li.textContent));
    assert.match(texts[0], new RegExp(`^v${from + 1} Diavola sold out \\d\\d:\\d\\d:\\d\\d$`));
    assert.match(texts[1], /Funghi €11\.00 → €11\.90/);
    assert.match(texts[2], /Margherita back in stock/);
    await assertTillMatches(page, app.url, 's1');
    assert.equal(await page.getAttribute('body', 'data-reloads'), '1', 'the menu was not loaded again');
    assert.equal(await page.getAttribute('body', 'data-skipped'), null, 'no update came twice');

    // Live again: the next update is applied as it comes, and the list of missed ones stays until dismissed.
    await officeDo(office.page, 's1', 'gelato', { price: '4.90' });
    await page.waitForSelector('li.item[data-item="gelato"][data-price="490"]');
    assert.equal((await missedList(page)).length, 4);
    await screenshot(page, 'menu-pos-reconnected');
    await screenshot(office.page, 'menu-office', { fullPage: true });
    assertNoPageErrors(...pages());
  });

  test('the network drops s3’s connection without the browser noticing: the till reconnects by itself and lists what it missed', T, async () => {
    const till3 = await openTill(browser, app.url, 's3', DESK, { network: true });
    try {
      const { page, network } = till3;
      const from = Number(await page.getAttribute('body', 'data-version'));
      network.cut();
      await page.waitForSelector('body[data-connection="reconnecting"]');
      await officeDo(office.page, 's3', 'caesar', { toggle: true }); // back in stock
      await officeDo(office.page, 'all', 'espresso', { price: '2.50', entries: 3 });
      await officeDo(office.page, 's3', 'marinara', { toggle: true });
      await sleep(1500); // the client keeps trying meanwhile, and fails
      assert.equal(await page.getAttribute('body', 'data-connection'), 'reconnecting');
      assert.equal(await page.getAttribute('body', 'data-version'), String(from));

      network.restore();
      await page.waitForSelector('#missed-panel[data-kind="replayed"]:not([hidden])', { timeout: 20_000 });
      assert.equal(await page.getAttribute('body', 'data-recovered'), 'true');
      assert.deepEqual(await missedList(page), [
        { version: from + 1, item: 'caesar', via: 'replay' },
        { version: from + 2, item: 'espresso', via: 'replay' },
        { version: from + 3, item: 'marinara', via: 'replay' },
      ]);
      await assertTillMatches(page, app.url, 's3');
      assertNoPageErrors(...pages(), till3);
    } finally {
      await till3.context.close();
    }
  });

  test('the node restarts while s1’s till is offline: the till loads the menu again and lists what changed', T, async () => {
    const { page, context } = till1;
    await page.click('#missed-dismiss');
    assert.equal(await page.isHidden('#missed-panel'), true);
    await context.setOffline(true);
    await page.waitForSelector('body[data-connection="reconnecting"]');
    await officeDo(office.page, 's1', 'caprese', { toggle: true });
    await officeDo(office.page, 's1', 'gelato', { price: '5.20' });

    // The node goes away (in memory: sessions and history with it); a change made meanwhile is saved by the
    // demo server and not published.
    const { port } = server;
    await server.stop();
    const failed = await officeDo(office.page, 's1', 'espresso', { toggle: true, state: 'failed' });
    assert.match(await failed.textContent(), /saved, not published: tidings at .* did not answer/);
    server = await startServer({ config: CONFIG, port });

    await context.setOffline(false);
    await page.waitForSelector('body[data-connection="connected"]', { timeout: 20_000 });
    assert.equal(await page.getAttribute('body', 'data-recovered'), 'false', 'a new node has no session to resume');
    await page.waitForSelector('#missed-panel[data-kind="reloaded"]:not([hidden])');
    const listed = await missedList(page);
    assert.deepEqual(
      listed.map((m) => m.item).sort(),
      ['caprese', 'espresso', 'gelato'],
      JSON.stringify(listed),
    );
    assert.ok(listed.every((m) => m.via === 'reload' && m.version === undefined));
    assert.match(await page.textContent('#missed-summary'), /could not be replayed .* 3 items changed:$/);
    await assertTillMatches(page, app.url, 's1');
    // s2's till stayed online: it lost its connection with the node and came back to a new one, reloaded too.
    await till2.page.waitForSelector('body[data-connection="connected"][data-recovered="false"]', { timeout: 20_000 });
    await assertTillMatches(till2.page, app.url, 's2');
    await screenshot(page, 'menu-pos-reloaded');

    // And live updates flow again on the new node.
    await officeDo(office.page, 's1', 'caprese', { toggle: true });
    await page.waitForSelector('li.item[data-item="caprese"][data-available="true"]');
    await assertTillMatches(page, app.url, 's1');
    screenshotsTaken = true;
    assertNoPageErrors(...pages());
  });

  test('publishing through Redis to a cluster node: --start-tidings --redis --publish-via redis', T, async () => {
    const redis = await startRedis();
    const tidingsUrl = `http://127.0.0.1:${await freePort()}`;
    const demo = await startApp(
      path.join(APP, 'serve.mjs'),
      [
        ...['--start-tidings', '--port', '0', '--tidings-url', tidingsUrl],
        ...['--redis', redis.url, '--redis-key-prefix', uniquePrefix(), '--publish-via', 'redis'],
      ],
      { env: { TIDINGS_LOG: 'warn', TIDINGS_API_KEY: API_KEY } },
    );
    // The node publishes ingest messages each on its own, so two in a row may reach the room in either order
    // (the till would then load the menu again rather than list a replay): wait for each before the next.
    const node = { url: tidingsUrl, apiKey: API_KEY };
    const published = (version) =>
      eventually(
        async () => {
          const { json } = await api(node, 'GET', `/v1/rooms/${encodeURIComponent('menu:s3')}/history`);
          return json?.events?.some((e) => e.data.version === version);
        },
        { what: `s3's update v${version} in the room's history` },
      );
    const desk = await newPage(browser, { viewport: DESK });
    let till = null;
    try {
      await desk.page.goto(demo.url);
      await desk.page.waitForSelector('#via:has-text("through Redis")');
      till = await openTill(browser, demo.url, 's3');
      const line = await officeDo(desk.page, 's3', 'quattro', { toggle: true });
      assert.match(await line.textContent(), /Airport v1 Quattro formaggi sold out — published via Redis, heard by 1 node/);
      await till.page.waitForSelector('li.item[data-item="quattro"][data-available="false"]');

      await till.context.setOffline(true);
      await till.page.waitForSelector('body[data-connection="reconnecting"]');
      await published(1);
      await officeDo(desk.page, 's3', 'marinara', { price: '9.90' });
      await published(2);
      await officeDo(desk.page, 's3', 'quattro', { toggle: true });
      await published(3);
      await till.context.setOffline(false);
      await till.page.waitForSelector('#missed-panel[data-kind="replayed"]:not([hidden])', { timeout: 20_000 });
      assert.deepEqual(await missedList(till.page), [
        { version: 2, item: 'marinara', via: 'replay' },
        { version: 3, item: 'quattro', via: 'replay' },
      ]);
      await assertTillMatches(till.page, demo.url, 's3');
      assertNoPageErrors(desk, till);
    } finally {
      await till?.context.close();
      await desk.context.close();
      await demo.stop();
      await redis.stop();
      cleanupLogs();
    }
    const down = await fetch(`${tidingsUrl}/healthz`, { signal: AbortSignal.timeout(2000) }).then(
      () => false,
      () => true,
    );
    assert.ok(down, 'the started node is stopped with the demo server');
  });

  test('one command: serve.mjs --start-tidings', T, async () => {
    const tidingsUrl = `http://127.0.0.1:${await freePort()}`;
    const dataDir = mkdtempSync(path.join(tmpdir(), 'tidings-menu-'));
    const demo = await startApp(
      path.join(APP, 'serve.mjs'),
      ['--start-tidings', '--port', '0', '--tidings-url', tidingsUrl, '--data-dir', dataDir],
      { env: { TIDINGS_LOG: 'warn', TIDINGS_JWT_SECRET: '', TIDINGS_API_KEY: '' } },
    );
    const desk = await newPage(browser, { viewport: DESK });
    let till = null;
    try {
      await desk.page.goto(demo.url);
      await desk.page.waitForSelector('#items tr[data-item="espresso"]');
      const links = await desk.page.$$eval('#pos-links a', (as) => as.map((a) => a.getAttribute('href')));
      assert.deepEqual(links, ['/pos/s1', '/pos/s2', '/pos/s3']);
      till = await openTill(browser, demo.url, 's2');
      await officeDo(desk.page, 's2', 'espresso', { price: '2.40' });
      await till.page.waitForSelector('li.item[data-item="espresso"][data-price="240"]');
      assertNoPageErrors(desk, till);
    } finally {
      await till?.context.close();
      await desk.context.close();
      await demo.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
    const down = await fetch(`${tidingsUrl}/healthz`, { signal: AbortSignal.timeout(2000) }).then(
      () => false,
      () => true,
    );
    assert.ok(down, 'the started node is stopped with the demo server');
  });
});
