// The "Online" panel: who is in the open room, from the node's `presence` event (paged with a cursor) and its
// `presence:join` / `presence:leave` events. A node without presence answers {ok:false} or nothing: the panel
// then says so and the rest of the page carries on.
//
// For tests: #presence has data-state (loading | available | unavailable | none) and data-room; each user is
// an <li data-user="…" data-devices="…"> in #presence-list.

/** Pages of users read per room (a big room shows the first ones and says there are more). */
const MAX_PAGES = 5;
const ASK_TIMEOUT_MS = 3000;

export class Presence {
  constructor() {
    this.panel = document.getElementById('presence');
    this.status = document.getElementById('presence-status');
    this.list = document.getElementById('presence-list');
    this.room = null;
    this.users = new Map();
    this.generation = 0;
  }

  /** Show who is in `room` (null: the open conversation is not a room). */
  async load(socket, room) {
    const generation = ++this.generation;
    this.room = room;
    this.users.clear();
    if (!room) return this.render('none', 'Shown for rooms.');
    this.render('loading', 'Loading…');
    let cursor;
    let more = false;
    try {
      for (let page = 0; page < MAX_PAGES; page++) {
        const ask = cursor === undefined ? { room } : { room, cursor };
        const reply = await socket.timeout(ASK_TIMEOUT_MS).emitWithAck('presence', ask);
        if (generation !== this.generation) return;
        if (!reply?.ok || !Array.isArray(reply.users)) return this.render('unavailable', 'presence unavailable');
        for (const u of reply.users) this.users.set(u.user, u);
        cursor = reply.cursor;
        more = cursor !== undefined && cursor !== null && cursor !== '';
        if (!more) break;
      }
    } catch {
      if (generation === this.generation) this.render('unavailable', 'presence unavailable');
      return;
    }
    this.render('available', more ? 'and more…' : '');
  }

  /** A `presence:join` event. */
  joined({ room, user } = {}) {
    if (room !== this.room || this.panel.dataset.state !== 'available' || this.users.has(user)) return;
    this.users.set(user, { user, devices: 1, joined_at: Date.now() });
    this.render('available', this.status.textContent);
  }

  /** A `presence:leave` event. */
  left({ room, user } = {}) {
    if (room !== this.room || !this.users.delete(user)) return;
    this.render('available', this.status.textContent);
  }

  render(state, note) {
    this.panel.dataset.state = state;
    this.panel.dataset.room = this.room ?? '';
    this.status.textContent = note;
    const items = [...this.users.values()]
      .sort((a, b) => String(a.user).localeCompare(String(b.user)))
      .map((u) => {
        const li = document.createElement('li');
        li.dataset.user = u.user;
        li.dataset.devices = String(u.devices ?? 1);
        li.textContent = u.devices > 1 ? `${u.user} (${u.devices} devices)` : u.user;
        return li;
      });
    this.list.replaceChildren(...items);
  }
}
