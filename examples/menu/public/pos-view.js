// What the point-of-sale page shows: the store's menu by category (sold-out items greyed out, struck through and
// labelled), the connection state, and the panel of what was missed while offline. For tests: <body
// data-connection="connecting | connected | reconnecting | refused" data-recovered data-version data-reloads>,
// each item <li data-item data-available data-price>, each missed update <li data-version data-item data-via>.

import { clock, describeChange, el, money } from './format.js';

const $ = (id) => document.getElementById(id);
const FLASH_MS = 2500;

/** The store's name and chain in the header and the title. */
export function showStore(snapshot) {
  document.title = `${snapshot.name} · ${snapshot.chain} point of sale`;
  $('store-title').textContent = `${snapshot.chain} · ${snapshot.name}`;
}

/** Draw the whole menu (after a load). */
export function showMenu(menu) {
  const byCategory = new Map();
  for (const item of menu.items.values()) {
    if (!byCategory.has(item.category)) byCategory.set(item.category, []);
    byCategory.get(item.category).push(item);
  }
  $('categories').replaceChildren(
    ...[...byCategory].map(([category, items]) => {
      const section = el('section', 'category');
      const id = `category-${category.toLowerCase().replace(/[^a-z0-9]+/g, '-')}`;
      const heading = el('h3', '', category);
      heading.id = id;
      section.setAttribute('aria-labelledby', id);
      const list = el('ul', 'items');
      list.replaceChildren(...items.map(itemElement));
      section.append(heading, list);
      return section;
    }),
  );
  $('menu').setAttribute('aria-busy', 'false');
  $('menu-error').textContent = '';
  showVersion(menu);
  document.body.dataset.reloads = String(Number(document.body.dataset.reloads ?? 0) + 1);
}

function itemElement(item) {
  const li = el('li', 'item');
  li.dataset.item = item.id;
  li.append(el('span', 'name', item.name), el('span', 'price'), el('span', 'badge', 'Sold out'));
  fillItem(li, item);
  return li;
}

function fillItem(li, item) {
  li.dataset.available = String(item.available);
  li.dataset.price = String(item.price);
  li.querySelector('.price').textContent = money(item.price);
  li.querySelector('.badge').hidden = item.available;
  li.setAttribute('aria-label', `${item.name}, ${money(item.price)}${item.available ? '' : ', sold out'}`);
}

/** Show an item's new state; `flash` marks it for a moment (a live change). */
export function showItem(item, flash) {
  const li = document.querySelector(`#categories li[data-item="${CSS.escape(item.id)}"]`);
  if (!li) return;
  fillItem(li, item);
  if (flash) {
    li.classList.remove('changed');
    void li.offsetWidth; // restart the animation
    li.classList.add('changed');
    setTimeout(() => li.classList.remove('changed'), FLASH_MS);
  }
}

export function showVersion(menu) {
  document.body.dataset.version = String(menu.version);
  $('menu-version').textContent = `menu v${menu.version}`;
}

/** Tell screen-reader users about a live change. */
export function announce(text) {
  $('announcer').textContent = text;
}

export function showMenuError(text) {
  $('menu-error').textContent = text;
}

/** The connection state: the pill, the banner, body[data-connection]. */
export function showConnection(state, offlineSince) {
  document.body.dataset.connection = state;
  const pill = $('connection');
  pill.dataset.state = state;
  pill.textContent = { connected: 'live', connecting: 'connecting…', reconnecting: 'offline', refused: 'refused' }[
    state
  ];
  const banner = $('connection-banner');
  let text = '';
  if (state === 'reconnecting') {
    const since = offlineSince ? ` since ${clock(offlineSince)}` : '';
    text = `Offline${since}: this is the menu as it was then. Reconnecting… what changes meanwhile will be listed.`;
  } else if (state === 'refused') text = 'The server refused this terminal’s login; reload the page.';
  banner.hidden = !text;
  banner.textContent = text;
}

/**
 * The panel of what the page missed while offline. `kind`: `replayed` (the session was recovered: `entries`
 * are the updates the node replayed, in order) or `reloaded` (it was not: the menu was loaded again and
 * `entries` are the items that differ). Entry: `{version?, item, name, previous, next, at?, via}`.
 */
export function showMissed({ kind, offlineMs, entries }) {
  const panel = $('missed-panel');
  panel.hidden = false;
  panel.dataset.kind = kind;
  const away = offlineMs === null ? '' : `Offline for ${formatDuration(offlineMs)}. `;
  const count = (n, what) => `${n} ${what}${n === 1 ? '' : 's'}`;
  $('missed-heading').textContent = kind === 'replayed' ? 'Missed while offline' : 'Menu reloaded';
  $('missed-summary').textContent =
    kind === 'replayed'
      ? `${away}${entries.length ? `${count(entries.length, 'update')} replayed, in order:` : 'Nothing changed meanwhile.'}`
      : `${away}The missed updates could not be replayed (the session had expired or the node restarted), so ` +
        `the whole menu was loaded again${entries.length ? `; ${count(entries.length, 'item')} changed:` : '; nothing changed.'}`;
  $('missed').replaceChildren(
    ...entries.map((entry) => {
      const li = el('li');
      li.dataset.item = entry.item;
      li.dataset.via = entry.via;
      if (entry.version !== undefined) {
        li.dataset.version = String(entry.version);
        li.append(el('span', 'version', `v${entry.version}`), ' ');
      }
      li.append(el('strong', '', entry.name), ` ${describeChange(entry.previous, entry.next)}`);
      if (entry.at) {
        const time = el('time', 'muted', clock(entry.at));
        time.dateTime = new Date(entry.at).toISOString();
        li.append(' ', time);
      }
      return li;
    }),
  );
  announce($('missed-summary').textContent);
}

export function hideMissed() {
  $('missed-panel').hidden = true;
}

function formatDuration(ms) {
  const s = Math.max(1, Math.round(ms / 1000));
  return s < 120 ? `${s} s` : `${Math.round(s / 60)} min`;
}
