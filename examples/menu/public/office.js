// The back office: every item with its availability and price in one store or across the chain, buttons to mark
// it sold out or back in stock and a field for its price. Each change goes to the demo server
// (POST /office/changes), which applies it, publishes one update per store that changed into the store's room,
// and answers with how it went and the whole menu again. The page never talks to tidings itself and never sees
// its API key.
//
// For tests: each row <tr data-item> with <button class="toggle">, <input class="price-input"> and its form
// <form class="price-form">; each entry of the log <li data-store data-version data-state="published|failed">.

import { clock, el, money } from './format.js';

const ALL = 'all';
const $ = (id) => document.getElementById(id);

let overview = null;
let scope = 's1';

async function start() {
  const res = await fetch('/office/menu', { cache: 'no-store' });
  const body = await res.json();
  overview = body.menu;
  $('chain').textContent = overview.chain;
  document.title = `Back office · ${overview.chain}`;
  $('via').textContent =
    body.via === 'redis'
      ? 'Changes are published through Redis (PUBLISH to the cluster’s ingest channel).'
      : 'Changes are published through the tidings HTTP API (the API key stays on the server).';
  $('pos-links').replaceChildren(
    ...overview.stores.flatMap((s, i) => {
      const a = el('a', '', s.name);
      a.href = `/pos/${s.id}`;
      a.target = '_blank';
      return i ? [' · ', a] : [a];
    }),
  );
  const options = [...overview.stores.map((s) => [s.id, `${s.name} (${s.id})`]), [ALL, 'All stores']];
  $('scope-options').replaceChildren(
    ...options.map(([value, text]) => {
      const label = el('label');
      const input = el('input');
      input.type = 'radio';
      input.name = 'scope';
      input.value = value;
      input.checked = value === scope;
      input.addEventListener('change', () => {
        scope = value;
        render();
      });
      label.append(input, ` ${text}`);
      return label;
    }),
  );
  render();
}

const storesOf = () => (scope === ALL ? overview.stores.map((s) => s.id) : [scope]);
const storeName = (id) => overview.stores.find((s) => s.id === id)?.name ?? id;

function render() {
  $('items').querySelector('tbody').replaceChildren(...overview.items.map(row));
  $('versions').textContent = `Menu versions: ${overview.stores.map((s) => `${s.name} v${s.version}`).join(' · ')}`;
}

function row(item) {
  const states = storesOf().map((id) => item.stores[id]);
  const available = states.filter((s) => s.available).length;
  const prices = [...new Set(states.map((s) => s.price))];
  const tr = el('tr');
  tr.dataset.item = item.id;
  tr.dataset.available = String(available === states.length);

  const name = el('th', '', item.name);
  name.scope = 'row';
  name.append(el('span', 'category', item.category));

  const status = el('td', 'status');
  if (states.length === 1) status.append(el('span', `state ${available ? 'on' : 'off'}`, available ? 'Available' : 'Sold out'));
  else status.append(el('span', `state ${available === states.length ? 'on' : available ? 'some' : 'off'}`, `Available in ${available} of ${states.length}`));

  const price = el('td', 'price', prices.map(money).join(' / '));

  const change = el('div', 'change');
  const toggle = el('button', 'toggle', available > 0 ? 'Mark sold out' : 'Mark available');
  toggle.type = 'button';
  const where = scope === ALL ? ' everywhere' : '';
  toggle.textContent += where;
  toggle.setAttribute('aria-label', `${toggle.textContent}: ${item.name}`);
  toggle.addEventListener('click', () => submit(item, { available: available === 0 }));

  const form = el('form', 'price-form');
  const input = el('input', 'price-input');
  input.type = 'number';
  input.min = '0.01';
  input.max = '1000';
  input.step = '0.01';
  input.required = true;
  input.value = (prices[0] / 100).toFixed(2);
  input.setAttribute('aria-label', `New price of ${item.name}${where}, in euros`);
  const set = el('button', '', 'Set price');
  set.type = 'submit';
  form.append(input, set);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    submit(item, { price: Math.round(Number(input.value) * 100) });
  });
  change.append(toggle, form);
  const cell = el('td');
  cell.append(change);
  tr.append(name, status, price, cell);
  return tr;
}

async function submit(item, change) {
  const stores = scope === ALL ? ALL : [scope];
  $('office-error').textContent = '';
  let res;
  let body;
  try {
    res = await fetch('/office/changes', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ item: item.id, stores, ...change }),
    });
    body = await res.json();
  } catch (err) {
    $('office-error').textContent = `not saved: ${err.message}`;
    return;
  }
  if (!body?.menu) {
    $('office-error').textContent = `not saved: ${body?.error ?? `HTTP ${res.status}`}`;
    return;
  }
  overview = body.menu;
  render();
  log(item, change, body);
}

/** One entry per store that changed: what, its version, and how publishing went. */
function log(item, change, outcome) {
  const what = change.available === undefined ? `price ${money(change.price)}` : change.available ? 'available' : 'sold out';
  const entries = outcome.ok ? outcome.published : outcome.saved;
  if (entries.length === 0) return;
  const at = clock(Date.now());
  for (const entry of entries) {
    const li = el('li');
    li.dataset.store = entry.store;
    li.dataset.version = String(entry.version);
    li.dataset.item = item.id;
    li.dataset.state = outcome.ok ? 'published' : 'failed';
    let how;
    if (!outcome.ok) how = `saved, not published: ${outcome.error}`;
    else if (outcome.via === 'redis') how = `published via Redis, heard by ${entry.nodes} node(s)`;
    else if (entry.recipients !== undefined) how = `published at offset ${entry.offset} to ${entry.recipients} till(s)`;
    else how = `published at offset ${entry.offset}, to ${entry.nodes} node(s) serving the store`;
    li.append(
      el('time', 'muted', at),
      ' ',
      el('strong', '', `${storeName(entry.store)} v${entry.version}`),
      ` ${item.name} ${what} — `,
      el('span', outcome.ok ? 'ok' : 'error', how),
    );
    $('activity').prepend(li);
  }
}

start().catch((err) => {
  $('office-error').textContent = `cannot load the menu: ${err.message}`;
});
