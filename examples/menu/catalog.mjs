// The restaurant chain of the menu example: its stores and the items of its menu, with the prices a store
// starts from (in cents). Shared by the demo server, which keeps each store's live state, and the tests.

/** The chain's name, shown on every page. */
export const CHAIN = 'Tidings Pizza';

/** Stores: `id` names the store's room (`menu:<id>`) and its point-of-sale page (`/pos/<id>`). */
export const STORES = [
  { id: 's1', name: 'Downtown' },
  { id: 's2', name: 'Harbour' },
  { id: 's3', name: 'Airport', markup: 1.2 },
];

/** Items of the menu, in the order the pages show them. */
export const ITEMS = [
  { id: 'margherita', name: 'Margherita', category: 'Pizza', price: 950 },
  { id: 'marinara', name: 'Marinara', category: 'Pizza', price: 850 },
  { id: 'diavola', name: 'Diavola', category: 'Pizza', price: 1150 },
  { id: 'funghi', name: 'Funghi', category: 'Pizza', price: 1100 },
  { id: 'quattro', name: 'Quattro formaggi', category: 'Pizza', price: 1250 },
  { id: 'caesar', name: 'Caesar salad', category: 'Salads', price: 890 },
  { id: 'caprese', name: 'Caprese', category: 'Salads', price: 790 },
  { id: 'lemonade', name: 'Lemonade', category: 'Drinks', price: 350 },
  { id: 'cola', name: 'Cola', category: 'Drinks', price: 300 },
  { id: 'espresso', name: 'Espresso', category: 'Drinks', price: 220 },
  { id: 'tiramisu', name: 'Tiramisu', category: 'Desserts', price: 550 },
  { id: 'gelato', name: 'Gelato', category: 'Desserts', price: 450 },
];

/** The room a store's menu updates go to; a point-of-sale token may join its own store's room only. */
export const menuRoom = (store) => `menu:${store}`;

/** The event name of a menu update. */
export const UPDATE_EVENT = 'menu:update';

/** Claims of a point-of-sale terminal of `store`: its store's room, joined at connect, and no publishing. */
export function posClaims(store, terminal) {
  const rooms = [menuRoom(store)];
  return { sub: `pos:${store}:${terminal}`, rooms, join: rooms, publish: [] };
}

/** Highest price a store may set, in cents. */
export const MAX_PRICE = 100_000;
