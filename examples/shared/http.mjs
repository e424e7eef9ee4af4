// The example apps' HTTP plumbing (Node's http, no framework): JSON answers, bounded request bodies, the
// page's static files with a content security policy that lets it talk to the demo server and the tidings
// node only, and the socket.io-client bundle from the app's own node_modules.

import { readFileSync } from 'node:fs';
import path from 'node:path';

/** Longest request body the demo servers read, in bytes. */
export const MAX_BODY_BYTES = 4096;

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
};

/** Where the page imports socket.io-client from (`import { io } from '/vendor/socket.io.esm.min.js'`). */
export const CLIENT_BUNDLE_PATH = '/vendor/socket.io.esm.min.js';

/** The ESM build of socket.io-client in `appDir`'s node_modules. */
export const clientBundle = (appDir) =>
  path.join(appDir, 'node_modules', 'socket.io-client', 'dist', 'socket.io.esm.min.js');

/** Answer `body` (JSON unless a string or Buffer of `type`), never cached. */
export function send(res, status, body, type = 'application/json') {
  const data = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(data);
}

/** The request body as text; rejects past `max` bytes. */
export function readBody(req, max = MAX_BODY_BYTES) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > max) {
        reject(new Error('body too large'));
        req.destroy();
      } else chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString()));
    req.on('error', reject);
  });
}

/** The request body parsed as JSON, or undefined when it is not JSON (or too large). */
export async function readJson(req) {
  try {
    return JSON.parse(await readBody(req));
  } catch {
    return undefined;
  }
}

/** Answer with the file's bytes (404 when it cannot be read). */
export function serveFile(res, file, headers = {}) {
  let body;
  try {
    body = readFileSync(file);
  } catch {
    return send(res, 404, { error: 'not found' });
  }
  res.writeHead(200, {
    'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream',
    'cache-control': 'no-cache',
    ...headers,
  });
  res.end(body);
}

/** The page may talk to this server and the tidings node only; nothing is loaded from anywhere else. */
export function pagePolicy(tidingsUrl) {
  const ws = tidingsUrl.replace(/^http/, 'ws');
  return `default-src 'self'; connect-src 'self' ${tidingsUrl} ${ws}; img-src 'self' data:`;
}

/**
 * A handler of the static part of an app: the client bundle, and the files of `publicDir` (`/` is
 * `index.html`, or `page` when given: `GET /pos/s1` can be answered with `pos.html`). Answers 404 for paths
 * outside `publicDir`.
 */
export function staticFiles(appDir, publicDir, tidingsUrl) {
  const bundle = clientBundle(appDir);
  const policy = { 'content-security-policy': pagePolicy(tidingsUrl) };
  return (res, pathname, page) => {
    if (pathname === CLIENT_BUNDLE_PATH) return serveFile(res, bundle);
    const file = path.join(publicDir, page ?? (pathname === '/' ? 'index.html' : path.normalize(pathname)));
    if (!file.startsWith(publicDir + path.sep)) return send(res, 404, { error: 'not found' });
    serveFile(res, file, policy);
  };
}
