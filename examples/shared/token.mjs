// Development tokens of the example apps: HS256 JWTs signed and checked with Node's crypto. An HS256 token is
// an HMAC-SHA256 over two base64url parts, so a few lines do what a JWT library would.

import { createHmac, timingSafeEqual } from 'node:crypto';

const b64url = (value) => Buffer.from(value).toString('base64url');
const HEADER = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));

const sign = (input, secret) => createHmac('sha256', secret).update(input).digest('base64url');

/** An HS256 JWT carrying `claims`, valid for `ttl` seconds from now: `{token, exp}`. */
export function mintToken(claims, secret, ttl) {
  const now = Math.floor(Date.now() / 1000);
  const payload = { ...claims, iat: now, exp: now + ttl };
  const input = `${HEADER}.${b64url(JSON.stringify(payload))}`;
  return { token: `${input}.${sign(input, secret)}`, exp: payload.exp };
}

/**
 * The claims of `token` when it is an HS256 JWT signed with `secret` and not expired, else null. For the demo
 * servers' own routes (a page shows its token to read what the token allows); the tidings node checks the
 * tokens its clients connect with by itself.
 */
export function verifyToken(token, secret) {
  if (typeof token !== 'string') return null;
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  const [header, payload, signature] = parts;
  const expected = Buffer.from(sign(`${header}.${payload}`, secret));
  const given = Buffer.from(signature);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  let claims;
  try {
    if (JSON.parse(Buffer.from(header, 'base64url').toString()).alg !== 'HS256') return null;
    claims = JSON.parse(Buffer.from(payload, 'base64url').toString());
  } catch {
    return null;
  }
  if (typeof claims?.exp !== 'number' || claims.exp <= Date.now() / 1000) return null;
  return claims;
}

/** The claims of an `Authorization: Bearer <token>` header's token (see `verifyToken`), else null. */
export function bearerClaims(req, secret) {
  const match = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '');
  return match ? verifyToken(match[1], secret) : null;
}
