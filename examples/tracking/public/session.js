// The manager's login with the demo server: a short-lived token for one team's rooms, fetched again before it
// expires. The demo server's POST /login stands in for a real login (it asks for no password).

/** Seconds before expiry at which a token counts as stale and a fresh one is fetched. */
const STALE_SECS = 90;

/** Ask the demo server for a token: `{team, manager, user, token, exp, tidings_url}`. */
async function login(team, manager) {
  const res = await fetch('/login', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(manager ? { team, manager } : { team }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error ?? `login failed (HTTP ${res.status})`);
  return body;
}

/** A logged-in manager: the team, the user id, the tidings URL and a token kept fresh. */
export class Session {
  /** Log in as a manager of `team` (`manager`: the id of an earlier login in this tab, kept on reload). */
  static async start(team, manager) {
    return new Session(await login(team, manager));
  }

  constructor(grant) {
    this.team = grant.team;
    this.manager = grant.manager;
    this.user = grant.user;
    this.url = grant.tidings_url;
    this.grant = grant;
  }

  /** When the current token expires (seconds since the epoch). */
  get exp() {
    return this.grant.exp;
  }

  /** A token with at least STALE_SECS left, fetched again when the current one is older. */
  async token() {
    if (this.grant.exp - Date.now() / 1000 < STALE_SECS) await this.renew();
    return this.grant.token;
  }

  /** A new token now, for the same user id (the node said the current one is about to expire). */
  async renew() {
    this.grant = await login(this.team, this.manager);
    return this.grant.token;
  }
}

/** Teams the demo server simulates, to offer on the login form. */
export async function knownTeams() {
  try {
    const res = await fetch('/teams');
    const { teams } = await res.json();
    return Array.isArray(teams) ? teams.filter((t) => typeof t === 'string') : [];
  } catch {
    return [];
  }
}
