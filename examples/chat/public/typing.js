// Typing indicators: who is typing in which room (each shown for SHOW_MS after their last signal), and how
// often this page may say that its user is typing.

/** How long "… is typing" stays after the last typing event from that user. */
const SHOW_MS = 3000;
/** At most one typing event per this interval from this page. */
export const SEND_EVERY_MS = 2000;

/** Who is typing, per room; `onChange(room)` runs whenever a room's list changes. */
export class Typing {
  constructor(onChange) {
    this.onChange = onChange;
    /** @type {Map<string, Map<string, number>>} room → user → timer */
    this.rooms = new Map();
  }

  /** `user` is typing in `room`. */
  show(room, user) {
    let users = this.rooms.get(room);
    if (!users) this.rooms.set(room, (users = new Map()));
    clearTimeout(users.get(user));
    users.set(
      user,
      setTimeout(() => this.clear(room, user), SHOW_MS),
    );
    this.onChange(room);
  }

  /** `user` stopped typing in `room` (timed out, or their message arrived). */
  clear(room, user) {
    const users = this.rooms.get(room);
    if (!users?.has(user)) return;
    clearTimeout(users.get(user));
    users.delete(user);
    this.onChange(room);
  }

  /** The line to show for `room`: "" when nobody types. */
  text(room) {
    const users = [...(this.rooms.get(room)?.keys() ?? [])];
    if (users.length === 0) return '';
    if (users.length === 1) return `${users[0]} is typing…`;
    if (users.length === 2) return `${users[0]} and ${users[1]} are typing…`;
    return `${users.length} people are typing…`;
  }
}

/** A gate that opens at most once per `ms`. */
export function throttle(ms) {
  let last = -Infinity;
  return () => {
    const now = Date.now();
    if (now - last < ms) return false;
    last = now;
    return true;
  };
}
