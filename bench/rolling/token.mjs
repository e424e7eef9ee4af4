// HS256 tokens for the benchmark's clients, signed with node:crypto (the node checks them like any other).
import { createHmac } from "node:crypto";

const b64url = (value) => Buffer.from(value).toString("base64url");

/** An HS256 JWT for `sub` joined to `room` at connect (claim `join`), valid for `ttlSecs`. */
export function mintToken(secret, sub, room, ttlSecs) {
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const now = Math.floor(Date.now() / 1000);
  const claims = b64url(JSON.stringify({ sub, iat: now, exp: now + ttlSecs, rooms: [room], join: [room] }));
  const signature = createHmac("sha256", secret).update(`${header}.${claims}`).digest("base64url");
  return `${header}.${claims}.${signature}`;
}
