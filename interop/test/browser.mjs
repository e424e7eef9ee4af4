// Headless Chromium for the apps' tests (examples/*): Debian's chromium driven by playwright-core, pages that
// record their errors, an app's demo server as a child process, and screenshots (target/screenshots, or the
// directory in TIDINGS_SCREENSHOTS).

import { AssertionError } from 'node:assert';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { REPO_ROOT } from './helpers.mjs';

/** The browser: Debian's `chromium` package (scripts/test.sh installs it). */
export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
/** Where the apps' tests write their screenshots: TIDINGS_SCREENSHOTS, else target/screenshots. */
export const SCREENSHOTS = process.env.TIDINGS_SCREENSHOTS
  ? path.resolve(process.env.TIDINGS_SCREENSHOTS)
  : path.join(REPO_ROOT, 'target', 'screenshots');

const APP_START_TIMEOUT_MS = 15_000;
const OUTPUT_KEEP = 64 * 1024;

/** Launch headless Chromium. */
export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: apt-get install chromium (scripts/test.sh does), or set CHROMIUM_BIN`);
  }
  return chromium.launch({ executablePath: CHROMIUM });
}

/**
 * A page in a browser context of its own (its own storage and its own network switch, `context.setOffline`).
 * `problems` collects uncaught page errors and console errors, except console errors matching `allowConsole`
 * (e.g. failed loads while the test has the page offline). `colorScheme` ('light' or 'dark') sets what
 * prefers-color-scheme answers.
 */
export async function newPage(browser, { allowConsole = [], viewport = { width: 1100, height: 620 }, colorScheme } = {}) {
  const context = await browser.newContext({ viewport, ...(colorScheme ? { colorScheme } : {}) });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.stack ?? err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !allowConsole.some((re) => re.test(msg.text()))) {
      problems.push(`console error: ${msg.text()} (${msg.location().url})`);
    }
  });
  return { page, context, problems };
}

/** Fail when any of the pages (from `newPage`) had an error. */
export function assertNoPageErrors(...pages) {
  const all = pages.flatMap((p) => p.problems);
  if (all.length) throw new AssertionError({ message: `the pages had errors:\n${all.join('\n')}` });
}

/** Write a screenshot of `page` to SCREENSHOTS/<name>.png (`fullPage`: all of it, not the viewport); returns its path. */
export async function screenshot(page, name, { fullPage = false } = {}) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const file = path.join(SCREENSHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage });
  return file;
}

/**
 * Start an app's demo server (`node script args…`) and wait for the line that says where to open it
 * (`open http://…/`; another program's line with `ready`, whose first group is the URL). Returns
 * `{url, proc, output(), stop()}`; stop() ends it by its pid.
 */
export async function startApp(script, args = [], { env = {}, ready = /open (http:\/\/\S+)/ } = {}) {
  const proc = spawn(process.execPath, [script, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  const started = new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${script} printed no URL within ${APP_START_TIMEOUT_MS} ms:\n${out}`)),
      APP_START_TIMEOUT_MS,
    );
    const keep = (chunk) => {
      out = (out + chunk).slice(-OUTPUT_KEEP);
      if (process.env.TIDINGS_TEST_VERBOSE) process.stderr.write(chunk);
      const m = ready.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    proc.stdout.on('data', keep);
    proc.stderr.on('data', keep);
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`${script} exited (code ${code}, signal ${signal}):\n${out}`));
    });
  });
  let url;
  try {
    url = await started;
  } catch (err) {
    if (proc.exitCode === null && proc.signalCode === null) process.kill(proc.pid, 'SIGKILL');
    throw err;
  }
  return {
    url,
    proc,
    output: () => out,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) process.kill(proc.pid, 'SIGTERM');
      await exited;
    },
  };
}

/**
 * A network switch for one browser context's traffic to a tidings node, which the page is not told about
 * (unlike `context.setOffline`, which fires the page's `offline` event): `cut()` closes every open Socket.IO
 * websocket of the context on both sides and makes new websockets and HTTP requests to `/socket.io/` fail until
 * `restore()`. Install it before the page connects: only websockets opened after it can be closed.
 */
export async function networkSwitch(context) {
  const SOCKET_IO = /\/socket\.io\//;
  let down = false;
  const open = new Set();
  await context.routeWebSocket(SOCKET_IO, (ws) => {
    if (down) return ws.close({ code: 1011, reason: 'network down' });
    const server = ws.connectToServer();
    const pair = { ws, server };
    open.add(pair);
    ws.onClose(() => open.delete(pair));
    server.onClose(() => open.delete(pair));
  });
  await context.route(SOCKET_IO, (route) => (down ? route.abort('internetdisconnected') : route.continue()));
  return {
    cut() {
      down = true;
      for (const { ws, server } of open) {
        server.close({ code: 1011, reason: 'network down' }).catch(() => {});
        ws.close({ code: 1011, reason: 'network down' }).catch(() => {});
      }
      open.clear();
    },
    restore() {
      down = false;
    },
  };
}
