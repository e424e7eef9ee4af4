// The point-of-sale terminal's login with the demo server: a short-lived token for its store's room, fetched
// again before it expires, and the store's menu read with it. POST /login stands in for a real device
// enrolment (it asks for no password).

/** Seconds before expiry at which a token counts as stale and a fresh one is fetched. */
const STALE_SECS = 90;

async function login(store, terminal) {
  const res = await fetch('/login', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(terminal ? { store, terminal } : { store }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error ?? `login failed (HTTP ${res.status})`);
  return body;
}

/** A terminal of one store: its user id, the tidings URL and a token kept fresh. */
export class Session {
  /** Log in as a terminal of `store` (`terminal`: the id of an earlier login in this tab, kept on reload). */
  static async start(store, terminal) {
    return new Session(await login(store, terminal));
  }

  constructor(grant) {
    this.store = grant.store;
    this.terminal = grant.terminal;
    this.user = grant.user;
    this.url = grant.tidings_url;
    this.grant = grant;
  }

  /** A token with at least STALE_SECS left, fetched again when the current one is older. */
  async token() {
    if (this.grant.exp - Date.now() / 1000 < STALE_SECS) await this.renew();
    return this.grant.token;
  }

  /** A new token now, for the same user id (the node said the current one is about to expire). */
  async renew() {
    this.grant = await login(this.store, this.terminal);
    return this.grant.token;
  }

  /** The store's menu as the demo server has it now (its snapshot, with the version it is at). */
  async menu() {
    const res = await fetch(`/menu/${encodeURIComponent(this.store)}`, {
      headers: { authorization: `Bearer ${await this.token()}` },
      cache: 'no-store',
    });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(body.error ?? `menu not loaded (HTTP ${res.status})`);
    return body;
  }
}
