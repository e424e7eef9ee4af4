// One store's menu as a point-of-sale page holds it: the snapshot it loaded, then the live updates applied in
// version order. Each update carries the store's version after it; the menu is at version v, so update v+1 is
// the next one, an update at v or below is one it already has (skipped), and one past v+1 means updates were
// missed (the page loads the menu again). An update of another generation belongs to another history of the
// menu (the demo server started afresh): also a reload.

/** How `apply` took an update. */
export const APPLIED = 'applied';
export const STALE = 'stale';
export const GAP = 'gap';

export class StoreMenu {
  constructor() {
    this.generation = null;
    this.version = -1;
    /** id → {id, name, category, available, price}, in the menu's order. */
    this.items = new Map();
  }

  get loaded() {
    return this.generation !== null;
  }

  /** Take a snapshot from the demo server; returns the items whose state differs from before (a reload). */
  load(snapshot) {
    const before = this.items;
    this.generation = snapshot.generation;
    this.version = snapshot.version;
    this.items = new Map(snapshot.items.map((item) => [item.id, { ...item }]));
    const changed = [];
    for (const item of this.items.values()) {
      const old = before.get(item.id);
      if (old && (old.available !== item.available || old.price !== item.price)) changed.push({ previous: old, item });
    }
    return changed;
  }

  /** Apply a live update: `{result, previous}`, `previous` being the item before (when applied). */
  apply(update) {
    if (update.generation !== this.generation || update.version > this.version + 1) return { result: GAP };
    if (update.version <= this.version) return { result: STALE };
    const item = this.items.get(update.item);
    if (!item) return { result: GAP }; // an item this page does not know: the menu itself changed
    const previous = { ...item };
    item.available = update.available;
    item.price = update.price;
    this.version = update.version;
    return { result: APPLIED, previous };
  }
}
