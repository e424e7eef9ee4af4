// The point-of-sale page of one store (/pos/<store>): log in as a terminal of the store, load its menu, then
// apply the live `menu:update` events of its room in version order. After a lost connection it shows what it
// missed: when the node recovered the session, the updates it replayed; when it could not, the page loads the
// whole menu again and lists the items that changed.
//
// Where the replay ends: the node queues the replay right behind its CONNECT reply, so it arrives before the
// answer to any request the page sends once connected. The page asks the room's `history` after the last offset
// it got; everything that arrives before that answer is what it missed (an update published during those
// milliseconds counts too). Updates of the answer that the replay did not bring are applied from it, marked as
// such; with a working node there are none.

import { openSocket } from './connection.js';
import { Session } from './session.js';
import { APPLIED, GAP, StoreMenu } from './store-menu.js';
import * as view from './pos-view.js';
import { describeChange } from './format.js';

const UPDATE_EVENT = 'menu:update';
const ASK_TIMEOUT_MS = 10_000;
const RETRY_MS = 1000;
/** Updates read back from the history after a recovered reconnection (a day of a store's changes, at most). */
const HISTORY_LIMIT = 1000;

const store = decodeURIComponent(location.pathname.split('/')[2] ?? '');
const room = `menu:${store}`;
const terminalKey = `menu.terminal.${store}`;
const menu = new StoreMenu();

let session = null;
let socket = null;
let connectedBefore = false;
/** When the connection was lost (null while connected). */
let offlineSince = null;
/** The offset of the last update that arrived: where a catch-up reads the history from. */
let lastOffset = null;
/** The menu is being loaded; updates that arrive meanwhile wait here ([data, offset, via]). */
let loading = null;
let waiting = [];
/** While catching up after a recovered reconnection: the missed updates so far. */
let catchUp = null;
let skipped = 0;

async function start() {
  try {
    session = await Session.start(store, sessionStorage.getItem(terminalKey) ?? undefined);
  } catch (err) {
    view.showConnection('refused');
    return view.showMenuError(`cannot log in: ${err.message}`);
  }
  sessionStorage.setItem(terminalKey, session.terminal);
  document.body.dataset.store = store;
  socket = openSocket(session, onConnection);
  socket.on(UPDATE_EVENT, (data, offset) => onUpdate(data, offset, 'live'));
  document.getElementById('missed-dismiss').addEventListener('click', () => view.hideMissed());
}

function onConnection(state, detail) {
  if (state !== 'connected') {
    if (connectedBefore && offlineSince === null) offlineSince = Date.now();
    return view.showConnection(state, offlineSince);
  }
  view.showConnection(state);
  document.body.dataset.recovered = String(detail.recovered);
  const offlineFor = offlineSince === null ? null : Date.now() - offlineSince;
  offlineSince = null;
  if (!connectedBefore) {
    // The first connection: the socket is in the room already (the token's `join`), so no update published
    // from now on is lost while the menu loads.
    connectedBefore = true;
    return load();
  }
  if (detail.recovered) return catchUpAfter(offlineFor);
  lastOffset = null; // a new session, perhaps on a node that counts offsets from the start again
  return load().then((changed) =>
    view.showMissed({ kind: 'reloaded', offlineMs: offlineFor, entries: changed.map(reloadEntry) }),
  );
}

// ---------------------------------------------------------------------------
// the menu and its updates

/** Load the store's menu; resolves with the items that changed since the menu shown before. */
function load() {
  loading ??= (async () => {
    let snapshot;
    for (;;) {
      try {
        snapshot = await session.menu();
        break;
      } catch (err) {
        view.showMenuError(`${err.message}; trying again…`);
        await new Promise((r) => setTimeout(r, RETRY_MS));
      }
    }
    const changed = menu.load(snapshot);
    view.showStore(snapshot);
    view.showMenu(menu);
    loading = null;
    const pending = waiting;
    waiting = [];
    for (const [data, offset, via] of pending) onUpdate(data, offset, via);
    return changed;
  })();
  return loading;
}

function onUpdate(data, offset, via) {
  if (typeof data?.version !== 'number' || typeof data.item !== 'string') return;
  if (typeof offset === 'string') lastOffset = offset;
  if (loading || !menu.loaded) {
    waiting.push([data, offset, via]);
    return;
  }
  const { result, previous } = menu.apply(data);
  if (result === GAP) {
    // Updates are missing (or the menu's history started again): the snapshot has them all.
    load().then((changed) => catchUp?.entries.push(...changed.map(reloadEntry)));
    return;
  }
  if (result !== APPLIED) {
    // One the page has already: expected of the history read after a replay, worth counting otherwise.
    if (via !== 'history') document.body.dataset.skipped = String(++skipped);
    return;
  }
  const item = menu.items.get(data.item);
  view.showItem(item, true);
  view.showVersion(menu);
  const next = { available: item.available, price: item.price };
  if (catchUp) {
    const how = via === 'live' ? 'replay' : via; // what the socket brings while catching up is the replay
    catchUp.entries.push({ version: data.version, item: item.id, name: item.name, previous, next, at: data.at, via: how });
  } else view.announce(`${item.name} ${describeChange(previous, next)}`);
}

/** After a recovered reconnection: collect the replay until the answer of a `history` request marks its end. */
async function catchUpAfter(offlineFor) {
  const mine = { entries: [] };
  catchUp = mine;
  const query = { room, limit: HISTORY_LIMIT };
  if (lastOffset !== null) query.since = lastOffset;
  try {
    const reply = await socket.timeout(ASK_TIMEOUT_MS).emitWithAck('history', query);
    if (reply?.ok) {
      for (const ev of reply.events) if (ev.event === UPDATE_EVENT) onUpdate(ev.data, ev.offset, 'history');
    } else console.warn('history refused:', reply?.error);
  } catch (err) {
    console.warn('no answer to history:', err.message);
  }
  if (catchUp !== mine) return; // the connection was lost again meanwhile: the next catch-up reports
  catchUp = null;
  view.showMissed({ kind: 'replayed', offlineMs: offlineFor, entries: mine.entries });
}

const reloadEntry = ({ previous, item }) => ({
  item: item.id,
  name: item.name,
  previous,
  next: { available: item.available, price: item.price },
  via: 'reload',
});

start();
