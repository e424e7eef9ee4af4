// The menu's authoritative state, kept by the demo server: per store, each item's availability and price and
// the store's version, which every change raises by one. Point-of-sale pages load a store's snapshot and then
// apply the live updates in version order, so a version tells them what they already have (skip it), what comes
// next (apply it) and what they missed (a gap: load the snapshot again). A generation names one history of
// versions: a fresh state gets a new one, so pages never take version 3 of a new history for an old 3.

import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { CHAIN, ITEMS, STORES } from './catalog.mjs';

const ITEM = new Map(ITEMS.map((item) => [item.id, item]));

/** A store's starting price of `item`: the chain's price times the store's markup, to 10 cents. */
const startPrice = (item, store) => Math.round((item.price * (store.markup ?? 1)) / 10) * 10;

function fresh() {
  return {
    generation: randomBytes(4).toString('hex'),
    stores: Object.fromEntries(
      STORES.map((store) => [
        store.id,
        {
          version: 0,
          items: Object.fromEntries(ITEMS.map((item) => [item.id, { available: true, price: startPrice(item, store) }])),
        },
      ]),
    ),
  };
}

/** The stores and items of the catalog, with what a saved state has for them (new ones start fresh). */
function merge(saved) {
  const state = fresh();
  if (typeof saved?.generation === 'string') state.generation = saved.generation;
  for (const [id, store] of Object.entries(state.stores)) {
    const old = saved?.stores?.[id];
    if (!Number.isInteger(old?.version)) continue;
    store.version = old.version;
    for (const [item, value] of Object.entries(store.items)) {
      const kept = old.items?.[item];
      if (typeof kept?.available === 'boolean') value.available = kept.available;
      if (Number.isInteger(kept?.price)) value.price = kept.price;
    }
  }
  return state;
}

/** Every store's menu; changes are saved to `file` when one is given (and read back from it on start). */
export class MenuState {
  constructor(file = null) {
    this.file = file;
    this.state = file && existsSync(file) ? merge(JSON.parse(readFileSync(file, 'utf8'))) : fresh();
    this.save();
  }

  get generation() {
    return this.state.generation;
  }

  /** True for the id of one of the chain's stores. */
  hasStore(id) {
    return Object.hasOwn(this.state.stores, id);
  }

  /** True for the id of an item of the menu. */
  hasItem(id) {
    return ITEM.has(id);
  }

  /** What a point-of-sale page loads: `{store, name, chain, generation, version, items:[{id, name, category, available, price}]}`. */
  snapshot(id) {
    const store = this.state.stores[id];
    return {
      store: id,
      name: STORES.find((s) => s.id === id).name,
      chain: CHAIN,
      generation: this.generation,
      version: store.version,
      items: ITEMS.map(({ id: item, name, category }) => ({ id: item, name, category, ...store.items[item] })),
    };
  }

  /** What the back office shows: every store's version and every item's state in each store. */
  overview() {
    return {
      chain: CHAIN,
      generation: this.generation,
      stores: STORES.map(({ id, name }) => ({ id, name, version: this.state.stores[id].version })),
      items: ITEMS.map(({ id, name, category }) => ({
        id,
        name,
        category,
        stores: Object.fromEntries(STORES.map((s) => [s.id, { ...this.state.stores[s.id].items[id] }])),
      })),
    };
  }

  /**
   * Set `item`'s `available` and/or `price` in `stores`. Each store where this changes something gets its next
   * version; returns the updates to publish, one per such store:
   * `{store, generation, version, item, name, available, price, previous:{available, price}, scope, at}`.
   */
  change(stores, item, { available, price }) {
    const at = Date.now();
    const scope = stores.length > 1 ? 'chain' : 'store';
    const updates = [];
    for (const id of stores) {
      const store = this.state.stores[id];
      const now = store.items[item];
      const next = { available: available ?? now.available, price: price ?? now.price };
      if (next.available === now.available && next.price === now.price) continue;
      store.items[item] = next;
      store.version += 1;
      const { name } = ITEM.get(item);
      updates.push({
        store: id,
        generation: this.generation,
        version: store.version,
        item,
        name,
        ...next,
        previous: now,
        scope,
        at,
      });
    }
    if (updates.length) this.save();
    return updates;
  }

  save() {
    if (!this.file) return;
    const tmp = `${this.file}.tmp`;
    writeFileSync(tmp, JSON.stringify(this.state, null, 1));
    renameSync(tmp, this.file);
  }
}
