// The processes around an example app's demo server: its pinned socket.io-client installed on first use, the
// tidings node it starts with --start-tidings (stopped with it), and stopping everything on SIGINT/SIGTERM.

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { clientBundle } from './http.mjs';

/** The repository's root (examples/shared/../..). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

const STARTUP_TIMEOUT_MS = 15_000;

/** The page (and any Node program of the app) uses socket.io-client from the app's node_modules: `npm ci` once. */
export function ensureClient(name, appDir) {
  const bundle = clientBundle(appDir);
  if (existsSync(bundle)) return;
  console.log(`${name}: installing socket.io-client (npm ci in examples/${path.basename(appDir)}) ...`);
  const npm = spawnSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: appDir, stdio: 'inherit' });
  if (npm.status !== 0 || !existsSync(bundle)) {
    console.error(`${name}: ${bundle} is missing; run "npm ci" in ${appDir}`);
    process.exit(1);
  }
}

/**
 * Run `tidings serve` (TIDINGS_BIN, default target/release/tidings) with `config`, listening on `url`'s
 * address, with the HS256 `secret` and the API key `apiKey` (TIDINGS_API_KEY or a fresh one when not given);
 * `args` are more flags (`--data-dir`, `--redis`). Resolves with the child process once /healthz answers; the
 * demo server exits when the node does.
 */
export async function startTidings(name, { url, config, secret, apiKey, args = [] }) {
  const bin = process.env.TIDINGS_BIN || path.join(REPO_ROOT, 'target', 'release', 'tidings');
  if (!existsSync(bin)) {
    console.error(`${name}: no tidings binary at ${bin}: run "cargo build --release" first (or set TIDINGS_BIN)`);
    process.exit(1);
  }
  const argv = ['serve', '--config', config, '--listen', new URL(url).host, ...args];
  const env = {
    ...process.env,
    TIDINGS_JWT_SECRET: secret,
    TIDINGS_API_KEY: apiKey || process.env.TIDINGS_API_KEY || randomBytes(16).toString('hex'),
  };
  const child = spawn(bin, argv, { env, stdio: ['ignore', 'inherit', 'inherit'] });
  child.on('exit', (code, signal) => {
    console.error(`${name}: tidings exited (code ${code}, signal ${signal})`);
    process.exit(1);
  });
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  for (;;) {
    const up = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1000) }).then(
      (r) => r.ok,
      () => false,
    );
    if (up) break;
    if (Date.now() > deadline) {
      console.error(`${name}: tidings did not answer ${url}/healthz within ${STARTUP_TIMEOUT_MS / 1000} s`);
      child.kill('SIGKILL');
      process.exit(1);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  console.log(`${name}: tidings ${bin} (pid ${child.pid}) on ${url}`);
  return child;
}

/**
 * On SIGINT or SIGTERM: `cleanup()` (stop what the app runs itself), close `server`, then stop the `tidings`
 * child (when the app started one) and exit once it is gone.
 */
export function stopOnSignals({ server, tidings = null, cleanup = () => {} }) {
  const stop = () => {
    cleanup();
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

/** A fresh HS256 secret when `--start-tidings` runs a node of our own; otherwise the node's secret must be given. */
export function secretFor(given, startTidings, fail) {
  if (given) return given;
  if (!startTidings) fail('--jwt-secret (or TIDINGS_JWT_SECRET) is required without --start-tidings');
  return randomBytes(32).toString('hex');
}
