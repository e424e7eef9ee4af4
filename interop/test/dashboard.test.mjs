// The node's dashboard (/dashboard) in headless Chromium, against two nodes sharing a Redis: the page shell is
// served without a key and the overview API is not; a wrong key is refused on the page with the node's message;
// an admin key opens the page but may not publish. With the API key the nodes table lists both nodes with the
// connections of stock socket.io-client clients, the charts get points once clients receive published events, the
// top rooms show the rooms the clients joined with their member and presence counts, a client's disconnection
// shows up with its reason, the publish form delivers an event to a connected client (after refusing data that is
// not JSON), a hidden tab stops polling, and a node told to stop is listed as draining.
//
// Screenshots (in $TIDINGS_SCREENSHOTS, else target/screenshots): dashboard-overview.png (1280×800, charts and
// nodes), dashboard-overview-dark.png (the whole page in the dark scheme), dashboard-narrow.png (a phone-sized
// page), dashboard-publish.png (the publish form's answer), dashboard-draining.png (a node told to stop, listed
// as draining) and dashboard-key-refused.png.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { assertNoPageErrors, launchBrowser, newPage, screenshot } from './browser.mjs';
import { cleanupLogs, startNode, startRedis, uniquePrefix } from './cluster-helpers.mjs';
import {
  API_KEY,
  api,
  awaitConnect,
  client,
  closeAllClients,
  collect,
  eventually,
  mustPublish,
  sleep,
  token,
  uid,
  waitFor,
} from './helpers.mjs';

const T = { timeout: 60_000 };
/** A read-only key ([admin] keys): it opens the dashboard but may not publish. */
const ADMIN_KEY = 'dashboard-admin-key-0123456789';
/** The page polls every 2 s and the cluster's counts follow the nodes' 2 s heartbeats: allow a few rounds. */
const SHOWN_WITHIN_MS = 20_000;

/** The cells of the page's nodes table: {id: {connections, text}}. */
const nodeRows = (page) =>
  page.$$eval('table.nodes tbody tr', (rows) =>
    Object.fromEntries(
      rows.map((r) => [
        r.dataset.node,
        {
          connections: r.querySelector('td.connections .load-text')?.textContent.trim(),
          badges: [...r.querySelectorAll('.badge')].map((b) => b.textContent.trim()),
        },
      ]),
    ),
  );

/** The page's top rooms: {room: {connections, presence}}. */
const roomRows = (page) =>
  page.$$eval('table.rooms tbody tr', (rows) =>
    Object.fromEntries(
      rows.map((r) => [
        r.dataset.room,
        {
          connections: r.querySelector('td.connections').textContent.trim(),
          presence: r.querySelector('td.presence').textContent.trim(),
        },
      ]),
    ),
  );

/** A chart's state as the page exposes it: how many samples it drew and the highest cluster total. */
const chartState = (page, metric) =>
  page.$eval(`figure.chart[data-metric="${metric}"]`, (f) => ({
    points: Number(f.dataset.points),
    max: f.dataset.max === '' ? null : Number(f.dataset.max),
    canvas: f.querySelector('canvas') !== null,
  }));

/** The page's recent disconnections: [{reason, transport}], newest first. */
const recentRows = (page) =>
  page.$$eval('table.recent tbody tr', (rows) =>
    rows.map((r) => {
      const cells = [...r.querySelectorAll('td')].map((c) => c.textContent.trim());
      return { reason: cells[1], transport: cells[2] };
    }),
  );

/** Connect a client to `node` with a token that joins `room`; resolves once connected. */
function member(node, room, sub = uid('user')) {
  return awaitConnect(client(node, { token: token({ sub, join: [room], rooms: [room] }), transports: ['websocket'] }));
}

async function signIn(page, url, key) {
  await page.goto(`${url}/dashboard`);
  await page.getByLabel('API key or admin key').fill(key);
  await page.getByRole('button', { name: 'Open dashboard' }).click();
}

describe('the dashboard (/dashboard) in headless Chromium', () => {
  const procs = [];
  let browser;
  let a;
  let b;
  let ids;
  let failed = false;
  const pages = [];
  const [roomA, roomB] = [uid('dash-a'), uid('dash-b')];

  before(async () => {
    const redis = await startRedis();
    procs.push(redis);
    const prefix = uniquePrefix();
    const config = `[admin]\nkeys = [${JSON.stringify(ADMIN_KEY)}]\n`;
    a = await startNode({ redisUrl: redis.url, prefix, name: `${prefix}-a`, config });
    procs.push(a);
    // Node b drains slowly when told to stop: unready for 30 s before it refuses anyone, so the test sees it
    // listed as draining while its clients are still connected.
    const slowDrain = '[shutdown]\nunready_secs = 30\ndrain_secs = 60\n';
    b = await startNode({ redisUrl: redis.url, prefix, name: `${prefix}-b`, config: slowDrain });
    procs.push(b);
    const self = async (node) => (await api(node, 'GET', '/v1/nodes')).json.self;
    ids = { a: await self(a), b: await self(b) };
    browser = await launchBrowser();
  });

  after(async () => {
    closeAllClients();
    await browser?.close();
    for (const p of procs.reverse()) await p.stop();
    cleanupLogs(failed);
  });

  const guard = (fn) => async () => {
    try {
      await fn();
    } catch (err) {
      failed = true;
      throw err;
    }
  };

  /** Closes `socket` (a client of node a, the node the page asks) and waits for the page to show why it left. */
  async function checkDisconnect(page, socket) {
    const before = (await api(a, 'GET', '/dashboard/api/overview')).json.disconnects;
    const beforeTotal = Object.values(before.by_reason).reduce((s, v) => s + v, 0);
    socket.close();
    const after = await eventually(
      async () => {
        const d = (await api(a, 'GET', '/dashboard/api/overview')).json.disconnects;
        const total = Object.values(d.by_reason).reduce((s, v) => s + v, 0);
        return total > beforeTotal && d.recent.length > 0 && d;
      },
      { timeoutMs: 10_000, what: 'the node to count the disconnection' },
    );
    const newest = after.recent[0];
    assert.equal(typeof newest.reason, 'string');
    await eventually(
      async () => {
        const recent = await recentRows(page);
        const count = await page
          .$eval(`ul.reasons li[data-reason="${newest.reason}"] .reason-count`, (el) => el.textContent)
          .catch(() => '0');
        return (
          recent.length >= after.recent.length &&
          recent[0].reason === newest.reason &&
          recent[0].transport === newest.transport &&
          Number(count.replaceAll(',', '')) >= after.by_reason[newest.reason]
        );
      },
      { timeoutMs: SHOWN_WITHIN_MS, what: `the disconnection (${newest.reason}) on the page` },
    );
    await eventually(async () => (await nodeRows(page))[ids.a]?.connections?.startsWith('2 /'), {
      timeoutMs: SHOWN_WITHIN_MS,
      what: `node ${ids.a} down to 2 connections`,
    });
  }

  /** Hides the page (as a background tab is): no overview request for 5 s; shown again, polling resumes. */
  async function checkPollingFollowsVisibility(page) {
    const polls = [];
    const onRequest = (req) => {
      if (req.url().endsWith('/dashboard/api/overview')) polls.push(Date.now());
    };
    page.on('request', onRequest);
    const setHidden = (hidden) =>
      page.evaluate((h) => {
        Object.defineProperty(document, 'hidden', { configurable: true, get: () => h });
        Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => (h ? 'hidden' : 'visible') });
        document.dispatchEvent(new Event('visibilitychange'));
      }, hidden);
    try {
      await eventually(() => polls.length > 0, { timeoutMs: 5000, what: 'the page to poll while visible' });
      await setHidden(true);
      const hiddenAt = Date.now();
      await sleep(5000);
      assert.deepEqual(
        polls.filter((t) => t > hiddenAt),
        [],
        'no overview request while the tab is hidden',
      );
      const shownAt = Date.now();
      await setHidden(false);
      await eventually(() => polls.some((t) => t >= shownAt), { timeoutMs: 3000, what: 'a poll once the tab shows' });
    } finally {
      page.off('request', onRequest);
    }
  }

  test(
    'the page is served without a key, the overview is not',
    T,
    guard(async () => {
      const page = await fetch(`${a.url}/dashboard`);
      assert.equal(page.status, 200);
      assert.match(page.headers.get('content-type'), /text\/html/);
      const shell = await page.text();
      assert.match(shell, /\/dashboard\/assets\/app\.js/);
      assert.match(shell, /generated from dashboard\/src/);
      for (const [file, type] of [
        ['app.js', /javascript/],
        ['app.css', /text\/css/],
      ]) {
        const res = await fetch(`${a.url}/dashboard/assets/${file}`);
        assert.equal(res.status, 200, file);
        assert.match(res.headers.get('content-type'), type, file);
        assert.ok((await res.arrayBuffer()).byteLength > 1000, file);
      }
      const none = await api(a, 'GET', '/dashboard/api/overview', { apiKey: null });
      assert.equal(none.status, 401, none.text);
      assert.equal(typeof none.json?.error?.message, 'string', none.text);
      const wrong = await api(a, 'GET', '/dashboard/api/overview', { apiKey: 'not-the-key' });
      assert.equal(wrong.status, 401, wrong.text);
      const right = await api(a, 'GET', '/dashboard/api/overview');
      assert.equal(right.status, 200, right.text);
      assert.equal(right.json.node, ids.a);
    }),
  );

  test(
    'a wrong key is refused on the page with the node’s message',
    T,
    guard(async () => {
      // The browser logs the refused request itself; that is the one console error expected here.
      const p = await newPage(browser, { viewport: { width: 1280, height: 800 }, allowConsole: [/status of 401/] });
      pages.push(p);
      const { page } = p;
      await signIn(page, a.url, 'wrong-key-0123456789');
      const alert = page.locator('#key-error');
      await alert.waitFor({ timeout: 10_000 });
      const { json } = await api(a, 'GET', '/dashboard/api/overview', { apiKey: 'wrong-key-0123456789' });
      assert.ok((await alert.textContent()).includes(json.error.message), await alert.textContent());
      assert.equal(await page.evaluate(() => sessionStorage.length), 0, 'a refused key is not kept');
      await screenshot(page, 'dashboard-key-refused');
      await p.context.close();
    }),
  );

  test(
    'an admin key opens the dashboard, and the publish form says plainly that it may not publish',
    T,
    guard(async () => {
      // The browser logs the refused publish itself.
      const p = await newPage(browser, { viewport: { width: 1280, height: 800 }, allowConsole: [/status of 40[13]/] });
      pages.push(p);
      const { page } = p;
      await signIn(page, a.url, ADMIN_KEY);
      await eventually(async () => Object.keys(await nodeRows(page)).length === 2, {
        timeoutMs: SHOWN_WITHIN_MS,
        what: 'both nodes on the page of an admin key',
      });
      const form = page.locator('form.publish');
      await form.getByLabel('Room').fill(roomA);
      await form.getByRole('button', { name: 'Publish' }).click();
      const answer = page.locator('.answer');
      await answer.waitFor();
      const status = await answer.getAttribute('data-status');
      assert.ok(status === '401' || status === '403', `an admin key's publish answered ${status}`);
      assert.match(await answer.textContent(), /This key may not publish/);
      assert.match(await answer.textContent(), /admin key is read-only/);
      await p.context.close();
    }),
  );

  test(
    'the overview: nodes with their connections, charts, top rooms, disconnects; then the publish form',
    { timeout: 120_000 },
    guard(async () => {
      // Three members of roomA on node a (two of them the same user), two of roomB on node b.
      const shared = uid('user');
      const onA = [await member(a, roomA, shared), await member(a, roomA, shared), await member(a, roomA)];
      const onB = [await member(b, roomB), await member(b, roomB)];

      const p = await newPage(browser, { viewport: { width: 1280, height: 800 } });
      pages.push(p);
      const { page } = p;
      await signIn(page, a.url, API_KEY);
      await page.locator('table.nodes').waitFor({ timeout: 10_000 });
      assert.equal(await page.evaluate(() => sessionStorage.length), 1, 'the key is kept for the tab');

      // Nodes: both listed, each with its own connections.
      await eventually(
        async () => {
          const rows = await nodeRows(page);
          return rows[ids.a]?.connections?.startsWith('3 /') && rows[ids.b]?.connections?.startsWith('2 /') && rows;
        },
        { timeoutMs: SHOWN_WITHIN_MS, what: `nodes ${ids.a} with 3 connections and ${ids.b} with 2` },
      );
      const rows = await nodeRows(page);
      assert.ok(rows[ids.a].badges.includes('this node'), JSON.stringify(rows));
      assert.ok(!rows[ids.a].badges.includes('stale'), JSON.stringify(rows));

      // Top rooms: the joined rooms with their cluster-wide member counts and presence (users: roomA's two
      // connections of one user count once).
      const shownRooms = await eventually(
        async () => {
          const r = await roomRows(page);
          return (
            r[roomA]?.connections === '3' &&
            r[roomB]?.connections === '2' &&
            r[roomA].presence === '2' &&
            r[roomB].presence === '2' &&
            r
          );
        },
        { timeoutMs: SHOWN_WITHIN_MS, what: `top rooms ${roomA} (3 connections, 2 users) and ${roomB} (2, 2)` },
      );
      const { json: ov } = await api(a, 'GET', '/dashboard/api/overview');
      for (const room of [roomA, roomB]) {
        const top = ov.rooms.top.find((t) => t.room === room);
        assert.ok(top, `${room} in the API's top rooms: ${JSON.stringify(ov.rooms)}`);
        assert.equal(shownRooms[room].presence, top.presence === null ? '—' : String(top.presence), room);
      }

      // Charts: events published to both rooms until both charts drew a non-zero cluster total.
      const got = [...onA, ...onB].map((s) => collect(s, 'tick'));
      let n = 0;
      await eventually(
        async () => {
          n += 1;
          await mustPublish(a, { room: roomA, event: 'tick', data: { n } });
          await mustPublish(b, { room: roomB, event: 'tick', data: { n } });
          const [ev, dl] = [await chartState(page, 'events_per_sec'), await chartState(page, 'deliveries_per_sec')];
          return ev.max > 0 && dl.max > 0 && ev.points >= 2 && ev.canvas && dl.canvas;
        },
        { timeoutMs: 30_000, intervalMs: 100, what: 'both charts with a non-zero rate' },
      );
      await Promise.all(got.map((c) => c.waitForCount(1)));
      const ev = await chartState(page, 'events_per_sec');
      const dl = await chartState(page, 'deliveries_per_sec');
      assert.ok(dl.max >= ev.max, `deliveries (${dl.max}/s) follow events (${ev.max}/s) to 2 or 3 members each`);
      // Keep events flowing (about 5/s per room) while the rest of the page is checked, for the screenshot.
      const flow = setInterval(() => {
        n += 1;
        mustPublish(a, { room: roomA, event: 'tick', data: { n } }).catch(() => {});
        mustPublish(b, { room: roomB, event: 'tick', data: { n } }).catch(() => {});
      }, 200);
      try {
        await checkDisconnect(page, onA[2]);
        await eventually(async () => (await chartState(page, 'events_per_sec')).points >= 8, {
          timeoutMs: SHOWN_WITHIN_MS,
          what: 'eight samples on the charts',
        });
        await screenshot(page, 'dashboard-overview');
      } finally {
        clearInterval(flow);
      }

      // The publish form: data that is not JSON is refused before sending, then an event reaches node b's client.
      const form = page.locator('form.publish');
      await form.getByLabel('Room').fill(roomB);
      await form.getByLabel('Event').fill('hello');
      await form.getByLabel('Data (JSON)').fill('{"text": oops}');
      await page.locator('#pub-data-error').waitFor();
      assert.equal(await form.getByRole('button', { name: 'Publish' }).isDisabled(), true);
      assert.equal(await page.getByLabel('Data (JSON)').getAttribute('aria-invalid'), 'true');
      const marker = uid('m');
      await form.getByLabel('Data (JSON)').fill(JSON.stringify({ text: 'from the dashboard', marker }));
      const hello = waitFor(onB[0], 'hello', 10_000);
      await form.getByRole('button', { name: 'Publish' }).click();
      assert.deepEqual(await hello, { text: 'from the dashboard', marker });
      const answer = page.locator('.answer');
      await answer.waitFor();
      assert.equal(await answer.getAttribute('data-status'), '200');
      const shown = JSON.parse(await answer.locator('pre.json').textContent());
      assert.ok(shown.offset !== undefined, `the answer has the event’s offset: ${JSON.stringify(shown)}`);
      await answer.evaluate((el) => el.scrollIntoView({ block: 'end' }));
      await screenshot(page, 'dashboard-publish');

      // The same page, dark and narrow.
      const dark = await newPage(browser, { viewport: { width: 1280, height: 800 }, colorScheme: 'dark' });
      pages.push(dark);
      await signIn(dark.page, a.url, API_KEY);
      await eventually(async () => (await chartState(dark.page, 'events_per_sec')).points >= 3, {
        timeoutMs: SHOWN_WITHIN_MS,
        what: 'three samples on the dark page',
      });
      await screenshot(dark.page, 'dashboard-overview-dark', { fullPage: true });
      const narrow = await newPage(browser, { viewport: { width: 390, height: 844 } });
      pages.push(narrow);
      await signIn(narrow.page, a.url, API_KEY);
      await narrow.page.locator('table.nodes').waitFor({ timeout: 10_000 });
      const overflow = await narrow.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `the narrow page scrolls sideways by ${overflow} px`);
      await screenshot(narrow.page, 'dashboard-narrow', { fullPage: true });

      // A hidden tab stops polling; shown again, it polls at once.
      await checkPollingFollowsVisibility(page);

      // Node b told to stop: listed as draining (its second SIGTERM, in `after`, closes the rest at once).
      b.kill('SIGTERM');
      await eventually(async () => (await nodeRows(page))[ids.b]?.badges.includes('draining'), {
        timeoutMs: SHOWN_WITHIN_MS,
        what: `node ${ids.b} marked draining`,
      });
      assert.ok(!(await nodeRows(page))[ids.a].badges.includes('draining'));
      await page.locator('table.nodes').evaluate((el) => el.scrollIntoView({ block: 'center' }));
      await screenshot(page, 'dashboard-draining');

      // Signing out forgets the key.
      await page.getByRole('button', { name: 'Sign out' }).click();
      await page.getByLabel('API key or admin key').waitFor();
      assert.equal(await page.evaluate(() => sessionStorage.length), 0);
      assertNoPageErrors(...pages);
    }),
  );
});
