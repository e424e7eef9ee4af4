// The README's "Try it" steps, run as written: the fenced blocks of that section, each marked with an HTML
// comment (`<!-- try-it -->`, `<!-- try-it: build -->`, `<!-- try-it: npm -->`), are pasted into one fresh bash
// in an empty directory. Two blocks are stood in for: `build` by putting the binary under test on the PATH (the
// suite runs after the build), and `npm` by linking the pinned socket.io-client of interop/node_modules (no
// network in CI). Everything else runs verbatim, so a README step that breaks fails here.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';

import { REPO_ROOT, TIDINGS_BIN, freePort } from './helpers.mjs';

const RUN_TIMEOUT_MS = 90_000;

/** The fenced blocks of the README's "## Try it" section, with their markers. */
export function tryItBlocks(readme) {
  const start = readme.indexOf('\n## Try it\n');
  assert.ok(start >= 0, 'README.md has a "## Try it" section');
  const rest = readme.slice(start + 1);
  const next = rest.indexOf('\n## ', 1);
  const section = next >= 0 ? rest.slice(0, next) : rest;
  const blocks = [];
  const fence = /(?:<!-- try-it(?:: ([a-z]+))? -->\n)?```([a-z]*)\n([\s\S]*?)\n```/g;
  for (const m of section.matchAll(fence)) {
    blocks.push({ marker: m[1] ?? (m[0].startsWith('<!--') ? 'run' : null), lang: m[2], text: m[3] });
  }
  return blocks;
}

describe('README "Try it"', () => {
  const dirs = [];
  after(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  test('every block of the section is marked, and the steps are all there', () => {
    const blocks = tryItBlocks(readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8'));
    const unmarked = blocks.filter((b) => b.marker === null);
    assert.deepEqual(unmarked, [], 'a fenced block without a <!-- try-it --> marker would not be tested');
    assert.deepEqual(
      blocks.filter((b) => b.marker !== 'run').map((b) => b.marker),
      ['build', 'npm'],
    );
    assert.ok(blocks.filter((b) => b.marker === 'run').length >= 2);
    assert.ok(blocks.every((b) => b.lang === 'sh'), 'every step is a shell block to paste');
  });

  test('the steps, pasted into a fresh shell in an empty directory, deliver an update and exit 0', async () => {
    const blocks = tryItBlocks(readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8'));
    const dir = mkdtempSync(path.join(tmpdir(), 'tidings-try-it-'));
    dirs.push(dir);
    const script = ['set -e', "trap 'kill ${SERVER:-} ${CLIENT:-} 2>/dev/null || true' EXIT"];
    for (const block of blocks) {
      if (block.marker === 'build') {
        script.push(`export PATH=${JSON.stringify(path.dirname(TIDINGS_BIN))}:"$PATH"`);
      } else if (block.marker === 'npm') {
        symlinkSync(path.join(REPO_ROOT, 'interop', 'node_modules'), path.join(dir, 'node_modules'), 'dir');
      } else {
        script.push(block.text);
      }
    }
    const port = await freePort();
    const env = { PATH: process.env.PATH, HOME: dir, PORT: String(port), TIDINGS_LOG: 'warn' };
    const result = await run('bash', ['-c', script.join('\n')], { cwd: dir, env });
    const output = `--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`;
    assert.equal(result.code, 0, `the steps failed (exit ${result.code}, signal ${result.signal})\n${output}`);
    assert.match(result.stdout, /subscribed \{ ok: true \}/, output);
    assert.match(result.stdout, /update \{ headline: 'hello' \} at offset \d+/, output);
    assert.match(result.stdout, /"recipients":1/, output);
  });
});

/** Runs `cmd` in its own process group; kills the group (by its pid) if it outlives the timeout. */
function run(cmd, args, options) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { ...options, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }, RUN_TIMEOUT_MS);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}
