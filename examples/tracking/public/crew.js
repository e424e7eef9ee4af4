// The team's workers and who of them is online. Online means "in the team's crew room", from the node's
// presence: the `presence` event (read page by page with its cursor) when the page connects, then
// presence:join / presence:leave, and the whole list read again after a presence:reset. Positions move the
// markers but never decide who is online: a conflated position can arrive just after its worker left.
//
// For tests: each worker is an <li data-worker data-state="online|offline"> in #workers; #crew has
// data-state (loading | available | unavailable) and #crew-count says "n of m online".

import { colourOf } from './map.js';

const MANAGER_PREFIX = 'manager:';
const PAGE = 100;
/** Pages read at most (10,000 users), so a huge room cannot keep the page reading forever. */
const MAX_PAGES = 100;
const ASK_TIMEOUT_MS = 5000;
/** An online worker whose last position is older than this is shown as "no position". */
const STALE_MS = 10_000;

const clock = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });

export class Crew {
  /** The workers of `team` on `map`; `onSelect(worker)` hears clicks on the list. */
  constructor(team, map, onSelect) {
    this.team = team;
    this.room = `crew:${team}`;
    this.map = map;
    this.onSelect = onSelect;
    /** worker id → {worker, name, state, since, seenAt} */
    this.workers = new Map();
    this.managers = new Set();
    this.loading = null; // while the list is read: the last user id read so far ('' before the first page)
    this.generation = 0;
    this.selected = null;
    this.items = new Map();
    this.panel = document.getElementById('crew');
    this.list = document.getElementById('workers');
    this.count = document.getElementById('crew-count');
    this.status = document.getElementById('crew-status');
    this.watching = document.getElementById('managers');
    setInterval(() => this.render(), 1000);
  }

  /** Read who is online (on every connection, and after a presence:reset). */
  async load(socket) {
    const generation = ++this.generation;
    this.loading = '';
    this.panel.dataset.state = 'loading';
    const online = new Set();
    const managers = new Set();
    let cursor;
    try {
      for (let page = 0; page < MAX_PAGES; page++) {
        const ask = { room: this.room, limit: PAGE, ...(cursor === undefined ? {} : { cursor }) };
        const reply = await socket.timeout(ASK_TIMEOUT_MS).emitWithAck('presence', ask);
        if (generation !== this.generation) return;
        if (!reply?.ok || !Array.isArray(reply.users)) throw new Error(reply?.error ?? 'no answer');
        for (const { user } of reply.users) (user.startsWith(MANAGER_PREFIX) ? managers : online).add(user);
        cursor = reply.cursor;
        if (typeof cursor !== 'string' || cursor === '') break;
        this.loading = cursor;
      }
    } catch (err) {
      if (generation !== this.generation) return;
      this.loading = null;
      this.panel.dataset.state = 'unavailable';
      this.status.textContent = `presence unavailable (${err.message})`;
      return;
    }
    this.loading = null;
    for (const user of online) this.set(user, 'online');
    for (const [id, w] of this.workers) if (!online.has(id) && w.state !== 'offline') this.set(id, 'offline');
    this.managers = managers;
    this.panel.dataset.state = 'available';
    this.status.textContent = '';
    this.render();
  }

  /**
   * A presence:join or presence:leave. While the list is being read, an event about a user on a page still
   * to come is left to that page (which is newer); one about a page already read applies.
   */
  presence(user, state) {
    if (typeof user !== 'string') return;
    if (this.loading !== null && (this.loading === '' || user > this.loading)) return;
    if (user.startsWith(MANAGER_PREFIX)) {
      if (state === 'online') this.managers.add(user);
      else this.managers.delete(user);
    } else this.set(user, state);
    this.render();
  }

  /** A position event of this team's room. */
  position(p) {
    if (p?.team !== this.team || typeof p.worker !== 'string' || !Number.isFinite(p.x) || !Number.isFinite(p.y)) return;
    const w = this.workers.get(p.worker) ?? this.set(p.worker, 'online');
    w.seenAt = Date.now();
    if (typeof p.name === 'string') w.name = p.name.slice(0, 40);
    this.map.move(p);
    this.map.setState(p.worker, w.state);
  }

  set(worker, state) {
    let w = this.workers.get(worker);
    if (!w) {
      w = { worker, name: '', state, since: Date.now(), seenAt: 0 };
      this.workers.set(worker, w);
    } else if (w.state !== state) {
      w.state = state;
      w.since = Date.now();
    }
    this.map.setState(worker, state);
    return w;
  }

  select(worker) {
    this.selected = worker;
    this.render();
  }

  /** Redraw the list: one item per worker, kept across redraws (so a click is never lost to a redraw). */
  render() {
    const all = [...this.workers.values()].sort((a, b) => (a.worker < b.worker ? -1 : 1));
    const online = all.filter((w) => w.state === 'online').length;
    this.count.textContent = `${online} of ${all.length} online`;
    const others = this.managers.size - 1;
    this.watching.textContent = others > 0 ? `${others} other manager${others > 1 ? 's' : ''} watching` : '';
    const now = Date.now();
    const items = all.map((w) => {
      const item = this.items.get(w.worker) ?? this.item(w.worker);
      item.li.dataset.state = w.state;
      item.li.classList.toggle('selected', w.worker === this.selected);
      item.name.textContent = w.name || w.worker;
      item.status.textContent = statusText(w, now);
      return item.li;
    });
    if (items.length !== this.list.children.length || items.some((li, k) => this.list.children[k] !== li)) {
      this.list.replaceChildren(...items);
    }
  }

  item(worker) {
    const li = document.createElement('li');
    li.dataset.worker = worker;
    const button = document.createElement('button');
    button.type = 'button';
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.style.setProperty('--colour', colourOf(worker));
    const name = document.createElement('span');
    name.className = 'name';
    const id = document.createElement('span');
    id.className = 'id';
    id.textContent = worker;
    const status = document.createElement('span');
    status.className = 'status';
    button.append(swatch, name, id, status);
    button.addEventListener('click', () => this.onSelect(worker));
    li.append(button);
    const item = { li, name, status };
    this.items.set(worker, item);
    return item;
  }
}

function statusText(w, now) {
  if (w.state === 'offline') return `offline since ${clock.format(w.since)}`;
  if (!w.seenAt) return 'online · waiting for a position';
  const age = now - w.seenAt;
  return age > STALE_MS ? `online · no position for ${Math.round(age / 1000)} s` : 'online';
}
