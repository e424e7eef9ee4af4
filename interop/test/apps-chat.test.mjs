// The chat app (examples/chat) in headless Chromium: a tidings node with the app's config and a data
// directory, the app's demo server, and pages for alice and bob (and carol, who comes later), checked
// through their DOM: room messages, history on join, the typing indicator, direct messages with their
// ticks, a page that loses its connection catching up with nothing missed, and a node restart on its data
// directory. Screenshots go to target/screenshots/chat-alice.png and chat-bob.png (chat-*-at-failure.png when a
// test failed before that step).

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { assertNoPageErrors, launchBrowser, newPage, screenshot, startApp } from './browser.mjs';
import { REPO_ROOT, api, ask, assertOk, collect, connect, eventually, sleep, startServer, token } from './helpers.mjs';

const APP = path.join(REPO_ROOT, 'examples', 'chat');
const T = { timeout: 60_000 };
// While a page is offline its reconnection attempts fail to load, which Chromium logs as console errors.
// While the node restarts, it closes its clients and refuses their reconnections with 503 until it has exited
// (the drain on SIGTERM), which Chromium logs too.
const RESTART_LOADS = [/status of 503 \(Service Unavailable\)/];
const OFFLINE_LOADS = [/net::ERR_INTERNET_DISCONNECTED/, ...RESTART_LOADS];

/** Texts of the messages the page shows, in order. */
const texts = (page) => page.$$eval('#messages li.message .text', (els) => els.map((el) => el.textContent));

async function login(p, url, user) {
  await p.page.goto(url);
  await p.page.fill('#login-user', user);
  await p.page.click('#login-form button[type=submit]');
  await p.page.waitForSelector('body[data-connection="connected"]');
  await p.page.waitForSelector('#conversation-title:has-text("lobby")');
}

async function send(page, text) {
  await page.fill('#composer-input', text);
  await page.click('#composer button[type=submit]');
}

/** Open a conversation from the side lists by its key (`room:chat:lobby`, `dm:bob`). */
async function openConversation(page, key) {
  await page.click(`nav button[data-key="${key}"]`);
  await page.waitForSelector(`#conversation[data-key="${key}"]`);
}

describe('chat app in Chromium', () => {
  let server;
  let app;
  let browser;
  let dataDir;
  let alice;
  let bob;
  let carol;
  let screenshotsTaken = false;
  const pages = () => [alice, bob, carol].filter(Boolean);

  before(async () => {
    dataDir = mkdtempSync(path.join(tmpdir(), 'tidings-chat-'));
    server = await startServer({
      config: readFileSync(path.join(APP, 'tidings.toml'), 'utf8'),
      args: ['--data-dir', dataDir],
    });
    app = await startApp(path.join(APP, 'serve.mjs'), ['--port', '0', '--tidings-url', server.url], {
      env: { TIDINGS_JWT_SECRET: server.secret },
    });
    browser = await launchBrowser();
    alice = await newPage(browser, { allowConsole: RESTART_LOADS });
    bob = await newPage(browser, { allowConsole: OFFLINE_LOADS });
    await login(alice, app.url, 'alice');
    await login(bob, app.url, 'bob');
  });

  after(async () => {
    // A run that failed before the screenshot step leaves pictures of where it stopped, for the log reader.
    if (!screenshotsTaken) {
      for (const [name, p] of [['alice', alice], ['bob', bob], ['carol', carol]]) {
        if (p) await screenshot(p.page, `chat-${name}-at-failure`).catch(() => {});
      }
    }
    await browser?.close();
    await app?.stop();
    await server?.stop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  test('a room message from alice shows on bob’s page', T, async () => {
    await send(alice.page, 'hello from alice');
    await bob.page.waitForSelector('#messages li.message[data-user="alice"] .text:text-is("hello from alice")');
    // Alice's own message comes back from the node (it has an offset) and is drawn as hers.
    await alice.page.waitForSelector('#messages li.message.mine[data-offset] .text:text-is("hello from alice")');
    assert.deepEqual(await texts(bob.page), ['hello from alice']);
    // The presence panel lists both users (one entry per user, whatever their devices), from the `presence`
    // event and the `presence:join` announcements.
    await bob.page.waitForSelector('#presence[data-room="chat:lobby"][data-state="available"]');
    await eventually(
      async () => {
        const users = await bob.page.$$eval('#presence-list li', (items) => items.map((li) => li.dataset.user));
        return users.includes('alice') && users.includes('bob');
      },
      { timeoutMs: 10_000, intervalMs: 200, what: 'alice and bob in the presence panel' },
    );
    const history = await api(server, 'GET', `/v1/rooms/${encodeURIComponent('chat:lobby')}/history`);
    const [{ data }] = history.json.events.filter((e) => e.event === 'message');
    assert.deepEqual(
      { ...data, at: typeof data.at },
      { text: 'hello from alice', user: 'alice', room: 'chat:lobby', at: 'number' },
    );
    assertNoPageErrors(...pages());
  });

  test('a room joined by name, and a page that joins later reads its history in order', T, async () => {
    for (const p of [alice, bob]) {
      await p.page.fill('#join-room', 'history');
      await p.page.click('#join-form button[type=submit]');
      await p.page.waitForSelector('#conversation[data-key="room:chat:history"]');
    }
    for (const text of ['first', 'second', 'third']) await send(alice.page, text);
    await eventually(async () => (await texts(bob.page)).length === 3, { what: 'bob sees the three messages' });
    assert.deepEqual(await texts(bob.page), ['first', 'second', 'third']);

    carol = await newPage(browser, { allowConsole: RESTART_LOADS });
    await login(carol, app.url, 'carol');
    await eventually(async () => (await texts(carol.page)).includes('hello from alice'), {
      what: 'the lobby history on carol’s page',
    });
    await carol.page.fill('#join-room', 'history');
    await carol.page.click('#join-form button[type=submit]');
    await eventually(async () => (await texts(carol.page)).length === 3, { what: 'chat:history on carol’s page' });
    assert.deepEqual(await texts(carol.page), ['first', 'second', 'third']);
    assertNoPageErrors(...pages());
  });

  test('a typing indicator shows while alice types, then goes away', T, async () => {
    // The page sends at most one typing event per 2 s, so keep typing until bob's page shows it.
    await alice.page.fill('#composer-input', '');
    await eventually(
      async () => {
        await alice.page.type('#composer-input', 'x');
        return (await bob.page.textContent('#typing')) === 'alice is typing…';
      },
      { timeoutMs: 10_000, intervalMs: 300, what: '"alice is typing…" on bob’s page' },
    );
    assert.equal(await alice.page.textContent('#typing'), '', 'nobody is shown typing to themselves');

    // Typing without a pause for ~3 s sends at most 2 typing events (one per 2 s), each {user, room}.
    const watcher = await connect(server, { token: token({ sub: 'watcher', rooms: ['chat:*'] }) });
    assertOk(await ask(watcher, 'subscribe', 'chat:history'));
    await sleep(300);
    const typed = collect(watcher, 'typing');
    const started = Date.now();
    while (Date.now() - started < 3000) {
      await alice.page.type('#composer-input', 'y');
      await sleep(100);
    }
    await sleep(500);
    watcher.close();
    assert.ok(typed.items.length >= 1 && typed.items.length <= 2, `${typed.items.length} typing events in 3 s`);
    for (const data of typed.items) assert.deepEqual(data, { user: 'alice', room: 'chat:history' });
    // Typing is ephemeral: no offset on the wire, nothing in the room's history.
    for (const args of typed.args) assert.equal(args.length, 1, `typing carried ${JSON.stringify(args)}`);
    const reader = await connect(server, { token: token({ sub: 'reader', rooms: ['chat:*'] }) });
    const page = await ask(reader, 'history', { room: 'chat:history' });
    reader.close();
    assert.ok(page.ok, JSON.stringify(page));
    assert.equal(page.events.filter((e) => e.event === 'typing').length, 0, 'typing events in history');
    await eventually(async () => (await bob.page.textContent('#typing')) === '', {
      timeoutMs: 10_000,
      what: 'the typing indicator to go away',
    });
    await alice.page.fill('#composer-input', '');
    assertNoPageErrors(...pages());
  });

  test('a direct message reaches bob; alice sees it delivered, then read', T, async () => {
    await openConversation(bob.page, 'room:chat:lobby');
    await alice.page.fill('#dm-user', 'bob');
    await alice.page.click('#dm-form button[type=submit]');
    await alice.page.waitForSelector('#conversation[data-key="dm:bob"]');
    await send(alice.page, 'psst, bob');

    // Bob's page acknowledges it on arrival (delivered) but has the lobby open, so it is not read yet.
    const mine = '#messages li.message.mine';
    await alice.page.waitForSelector(`${mine}[data-status="delivered"] .ticks:text-is("✓✓")`);
    await bob.page.waitForSelector('nav button[data-key="dm:alice"] .badge:text-is("1")');
    await sleep(500);
    assert.equal(await alice.page.getAttribute(mine, 'data-status'), 'delivered', 'not read while not shown');

    await openConversation(bob.page, 'dm:alice');
    await bob.page.waitForSelector('#messages li.message[data-user="alice"][data-id] .text:text-is("psst, bob")');
    await alice.page.waitForSelector(`${mine}[data-status="read"] .ticks[data-status="read"]`);
    const color = await alice.page.$eval(`${mine} .ticks`, (el) => getComputedStyle(el).color);
    assert.equal(color, 'rgb(31, 111, 235)', 'read ticks are blue');

    await send(bob.page, 'hi alice');
    await alice.page.waitForSelector('#messages li.message[data-user="bob"] .text:text-is("hi alice")');
    await bob.page.waitForSelector(`${mine}[data-status="read"]`);
    assertNoPageErrors(...pages());
  });

  test('bob’s page loses its connection; what alice sent meanwhile shows once and in order', T, async () => {
    await openConversation(alice.page, 'room:chat:lobby');
    await openConversation(bob.page, 'room:chat:lobby');
    const before = await texts(bob.page);

    await bob.context.setOffline(true);
    await bob.page.waitForSelector('body[data-connection="reconnecting"]');
    assert.equal(await bob.page.textContent('#connection-banner'), 'reconnecting…');
    assert.ok(await bob.page.isVisible('#connection-banner'));

    const missed = ['while you were away 1', 'while you were away 2', 'while you were away 3'];
    for (const text of missed) await send(alice.page, text);
    await eventually(async () => (await texts(alice.page)).includes(missed[2]), { what: 'alice’s messages sent' });
    await sleep(1000);
    assert.deepEqual(await texts(bob.page), before, 'nothing arrives while offline');

    await bob.context.setOffline(false);
    await bob.page.waitForSelector('body[data-connection="connected"]', { timeout: 20_000 });
    assert.equal(await bob.page.getAttribute('body', 'data-recovered'), 'true', 'the session was recovered');
    assert.ok(!(await bob.page.isVisible('#connection-banner')));
    await eventually(async () => (await texts(bob.page)).length >= before.length + missed.length, {
      what: 'the missed messages on bob’s page',
    });
    await send(alice.page, 'and now live');
    await eventually(async () => (await texts(bob.page)).includes('and now live'), { what: 'a live message after' });
    assert.deepEqual(await texts(bob.page), [...before, ...missed, 'and now live']);
    assertNoPageErrors(...pages());
  });

  test('the node restarts on its data dir while bob is offline: nothing is lost', T, async () => {
    const config = readFileSync(path.join(APP, 'tidings.toml'), 'utf8');
    await openConversation(alice.page, 'dm:bob');
    await bob.context.setOffline(true);
    await bob.page.waitForSelector('body[data-connection="reconnecting"]');
    await send(alice.page, 'sent while you were offline');
    const waiting = '#messages li.message.mine:last-child';
    await alice.page.waitForSelector(`${waiting}[data-status="accepted"]`);

    const { port } = server;
    await server.stop();
    server = await startServer({ config, port, args: ['--data-dir', dataDir] });
    await alice.page.waitForSelector('body[data-connection="connected"]', { timeout: 20_000 });
    const recovered = await alice.page.getAttribute('body', 'data-recovered');
    assert.equal(recovered, 'true', 'alice’s session outlived the restart');
    await openConversation(alice.page, 'room:chat:lobby');
    await send(alice.page, 'after the restart');

    await bob.context.setOffline(false);
    await bob.page.waitForSelector('body[data-connection="connected"]', { timeout: 20_000 });
    assert.equal(await bob.page.getAttribute('body', 'data-recovered'), 'true', 'bob’s session outlived the restart');
    await eventually(async () => (await texts(bob.page)).at(-1) === 'after the restart', { what: 'the lobby message' });
    assert.equal((await texts(bob.page)).filter((t) => t === 'after the restart').length, 1);
    await bob.page.waitForSelector('nav button[data-key="dm:alice"] .badge:text-is("1")');
    await openConversation(alice.page, 'dm:bob');
    await alice.page.waitForSelector(`${waiting}[data-status="delivered"]`);

    // A page opened now (no session to resume) reads the lobby's history from the restarted node.
    await carol.page.reload();
    await carol.page.waitForSelector('body[data-connection="connected"]');
    await eventually(async () => (await texts(carol.page)).at(-1) === 'after the restart', {
      what: 'the lobby history on carol’s reloaded page',
    });
    assert.deepEqual((await texts(carol.page)).slice(0, 2), ['hello from alice', 'while you were away 1']);
    assertNoPageErrors(...pages());
  });

  test('screenshots: alice’s direct messages with their ticks, bob’s lobby', T, async () => {
    await openConversation(alice.page, 'dm:bob');
    await alice.page.waitForSelector('#messages li.message.mine[data-status="read"]');
    const files = [await screenshot(alice.page, 'chat-alice'), await screenshot(bob.page, 'chat-bob')];
    for (const file of files) assert.ok(readFileSync(file).length > 1000, `${file} written`);
    screenshotsTaken = true;
    assertNoPageErrors(...pages());
  });
});
