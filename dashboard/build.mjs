// Builds the dashboard's assets, the files the node embeds and serves under /dashboard:
//
//   node build.mjs                 write index.html, app.js and app.css into ../src/dashboard/assets/
//   node build.mjs --out DIR       write them into DIR instead
//   node build.mjs --check         build into a temp dir and fail unless the committed assets are the same bytes
//
// The output is deterministic (same sources and lock file → same bytes): no timestamps, no hashes in names, no
// source maps. Every file starts with a comment that names its sources and says it is generated.

import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import * as esbuild from 'esbuild';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const SRC = path.join(HERE, 'src');
const ASSETS = path.resolve(HERE, '..', 'src', 'dashboard', 'assets');
/** The files the node embeds; nothing else may be in the assets directory. */
const FILES = ['index.html', 'app.js', 'app.css'];
/** Packages bundled into app.js / app.css, named in the header with their licenses. */
const BUNDLED = ['preact', 'htm', 'uplot'];
const FIX = 'cd dashboard && npm ci && npm run build';

function header() {
  const libs = BUNDLED.map((name) => {
    const pkg = JSON.parse(readFileSync(path.join(HERE, 'node_modules', name, 'package.json'), 'utf8'));
    return `${name} ${pkg.version} (${pkg.license})`;
  });
  return [
    'tidings dashboard: generated from dashboard/src by dashboard/build.mjs, do not edit.',
    `Rebuild: ${FIX}. Bundles ${libs.join(', ')}.`,
  ];
}

/** Builds every asset in memory: a map from file name to its bytes. */
async function buildAll() {
  const [line1, line2] = header();
  const banner = `/* ${line1}\n   ${line2} */`;
  const common = {
    bundle: true,
    minify: true,
    write: false,
    sourcemap: false,
    legalComments: 'none',
    charset: 'utf8',
    logLevel: 'warning',
    banner: { js: banner, css: banner },
  };
  const js = await esbuild.build({
    ...common,
    entryPoints: [path.join(SRC, 'main.js')],
    format: 'iife',
    target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
    outfile: 'app.js',
  });
  const css = await esbuild.build({
    ...common,
    entryPoints: [path.join(SRC, 'app.css')],
    target: ['chrome100', 'firefox100', 'safari15'],
    outfile: 'app.css',
  });
  const html = readFileSync(path.join(SRC, 'index.html'), 'utf8').replace(
    /^<!doctype html>\n/i,
    `<!doctype html>\n<!-- ${line1}\n     ${line2} -->\n`,
  );
  return new Map([
    ['index.html', Buffer.from(html)],
    ['app.js', Buffer.from(js.outputFiles[0].contents)],
    ['app.css', Buffer.from(css.outputFiles[0].contents)],
  ]);
}

function write(dir, files) {
  mkdirSync(dir, { recursive: true });
  for (const [name, bytes] of files) writeFileSync(path.join(dir, name), bytes);
}

function report(files) {
  let raw = 0;
  let gz = 0;
  for (const [name, bytes] of files) {
    const g = gzipSync(bytes, { level: 9 }).length;
    raw += bytes.length;
    gz += g;
    console.log(`  ${name.padEnd(11)} ${String(bytes.length).padStart(7)} B  ${String(g).padStart(6)} B gzip`);
  }
  console.log(`  ${'total'.padEnd(11)} ${String(raw).padStart(7)} B  ${String(gz).padStart(6)} B gzip`);
}

const sha = (bytes) => createHash('sha256').update(bytes).digest('hex').slice(0, 12);

/** Compares the committed assets with a fresh build; returns the differences, one line each. */
function compare(dir, built) {
  const problems = [];
  const present = existsSync(dir) ? readdirSync(dir) : [];
  for (const name of FILES) {
    const file = path.join(dir, name);
    if (!existsSync(file)) {
      problems.push(`${name}: missing`);
      continue;
    }
    const committed = readFileSync(file);
    const fresh = built.get(name);
    if (!committed.equals(fresh)) {
      problems.push(`${name}: differs (committed ${committed.length} B ${sha(committed)}, built ${fresh.length} B ${sha(fresh)})`);
    }
  }
  for (const name of present) {
    if (!FILES.includes(name)) problems.push(`${name}: not an asset the build writes (remove it)`);
  }
  return problems;
}

async function main(argv) {
  const check = argv.includes('--check');
  const outAt = argv.indexOf('--out');
  const out = outAt >= 0 ? path.resolve(argv[outAt + 1] ?? '') : ASSETS;
  const built = await buildAll();
  if (!check) {
    write(out, built);
    console.log(`dashboard assets written to ${path.relative(process.cwd(), out) || '.'}:`);
    report(built);
    return 0;
  }
  // Write the fresh build to disk too, so a difference can be looked at with diff(1).
  const tmp = mkdtempSync(path.join(tmpdir(), 'tidings-dashboard-'));
  write(tmp, built);
  const problems = compare(ASSETS, built);
  if (problems.length === 0) {
    rmSync(tmp, { recursive: true, force: true });
    console.log(`dashboard assets are current (${path.relative(process.cwd(), ASSETS)}):`);
    report(built);
    return 0;
  }
  console.error(`dashboard assets in src/dashboard/assets/ are not what dashboard/src builds:`);
  for (const p of problems) console.error(`  ${p}`);
  console.error(`fresh build kept in ${tmp}`);
  console.error(`run \`${FIX}\` and commit src/dashboard/assets/`);
  return 1;
}

process.exitCode = await main(process.argv.slice(2));
