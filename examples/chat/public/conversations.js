// What the page knows: its rooms and direct-message threads, their messages in order, each seen once, and the
// delivery status of the direct messages this user sent.

/** Messages kept (and shown) per conversation. */
const KEEP = 300;

/** Order of direct-message statuses: a status only moves forward. */
const RANK = { sending: 0, accepted: 1, sent: 2, delivered: 3, read: 4, expired: 5, failed: 5 };

/** A room (`kind: "room"`, name `chat:…`) or a direct-message thread with another user (`kind: "dm"`). */
export class Conversation {
  constructor(kind, name) {
    this.kind = kind;
    this.name = name;
    this.key = `${kind}:${name}`;
    /** @type {{key:string, user:string, text:string, at:number, mine:boolean, status?:string, id?:string}[]} */
    this.messages = [];
    this.keys = new Set();
    this.unread = 0;
    /** Room: history stream epoch; live events wait in `pending` while `loading`. */
    this.epoch = null;
    this.loading = false;
    this.pending = [];
    /** Direct messages: the newest message id from the other user, and the one marked read. */
    this.lastIncoming = null;
    this.readUpTo = null;
  }

  /** Append `message` unless one with its key is here already; true when it was new. */
  add(message) {
    if (this.keys.has(message.key)) return false;
    this.keys.add(message.key);
    this.messages.push(message);
    if (this.messages.length > KEEP) this.messages.shift(); // its key stays: it must not come back
    return true;
  }

  /** Forget every message (a room's history stream was replaced, so its offsets name other events). */
  reset() {
    this.messages = [];
    this.keys.clear();
  }
}

/** Every conversation of the page, and the statuses of sent direct messages by message id. */
export class Conversations {
  constructor() {
    /** @type {Map<string, Conversation>} */
    this.all = new Map();
    this.sent = new Map();
    this.early = new Map(); // statuses that came before the `dm` answer naming their message
  }

  /** The conversation of `kind` and `name`, created on first use. */
  get(kind, name) {
    const key = `${kind}:${name}`;
    let conv = this.all.get(key);
    if (!conv) {
      conv = new Conversation(kind, name);
      this.all.set(key, conv);
    }
    return conv;
  }

  /** The conversation with this key, if the page has it. */
  find(key) {
    return this.all.get(key);
  }

  of(kind) {
    return [...this.all.values()].filter((c) => c.kind === kind);
  }

  /** The node accepted a direct message this page sent: it is `id` from now on. */
  accepted(message, id, status) {
    message.id = id;
    this.sent.set(id, message);
    this.advance(message, status);
    const early = this.early.get(id);
    if (early) {
      this.early.delete(id);
      this.advance(message, early);
    }
  }

  /** A `message:status` for message `id`; returns the message whose status moved, if any. */
  status(id, status) {
    const message = this.sent.get(id);
    if (!message) {
      // Its answer is still on the way (or another device of ours sent it): keep the best status seen.
      if (RANK[status] > (RANK[this.early.get(id)] ?? -1)) this.early.set(id, status);
      if (this.early.size > 1000) this.early.delete(this.early.keys().next().value);
      return null;
    }
    return this.advance(message, status) ? message : null;
  }

  /** Move `message` to `status` if that is further; true when it moved. */
  advance(message, status) {
    if (!(status in RANK)) return false;
    const now = RANK[message.status] ?? 0;
    if (RANK[status] <= now || (status === 'expired' && now >= RANK.delivered)) return false;
    message.status = status;
    return true;
  }
}
