// The user's login with the demo server: a short-lived token for the tidings node, fetched again before it
// expires. The demo server's POST /login stands in for a real login (it asks for no password).

/** Seconds before expiry at which a token counts as stale and a fresh one is fetched. */
const STALE_SECS = 90;

/** Ask the demo server for a token: `{user, token, exp, tidings_url}`; throws with the server's reason. */
async function login(user) {
  const res = await fetch('/login', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error ?? `login failed (HTTP ${res.status})`);
  return body;
}

/** A logged-in user: their name, the tidings URL and a token kept fresh. */
export class Session {
  /** Log `user` in; throws when the demo server refuses. */
  static async start(user) {
    return new Session(await login(user));
  }

  constructor(grant) {
    this.user = grant.user;
    this.url = grant.tidings_url;
    this.grant = grant;
  }

  /** A token with at least STALE_SECS left, fetched again when the current one is older. */
  async token() {
    if (this.grant.exp - Date.now() / 1000 < STALE_SECS) this.grant = await login(this.user);
    return this.grant.token;
  }

  /** A new token now (the node said the current one is about to expire). */
  async renew() {
    this.grant = await login(this.user);
    return this.grant.token;
  }
}

/** A name for this browser tab as a message device, kept across reloads of the tab. */
export function deviceName(user) {
  const key = `chat.device.${user}`;
  let name = sessionStorage.getItem(key);
  if (!name) {
    const bytes = crypto.getRandomValues(new Uint8Array(6));
    name = `web-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
    sessionStorage.setItem(key, name);
  }
  return name;
}
