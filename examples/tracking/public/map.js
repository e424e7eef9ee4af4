// The map: the simulator's street grid (grid.js) drawn as SVG in the page, and a marker per worker that glides
// to each new position over the time the previous update took, so motion looks continuous although the node
// sends each worker's latest position only once per conflation interval.
//
// For tests: each marker is a <g class="marker" data-worker data-team data-x data-y data-state="online|offline">
// in #markers; data-x / data-y are the last position received, in metres.

import { GRID, HEIGHT, WIDTH, blockKind, isAvenue, streetName } from './grid.js';

const SVG = 'http://www.w3.org/2000/svg';
/** Margin around the city, in metres. */
const MARGIN = 40;
/** Bounds of a marker's glide: an update after a long gap jumps quickly instead of crawling. */
const MIN_GLIDE_MS = 150;
const MAX_GLIDE_MS = 2000;

function el(name, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  parent?.append(node);
  return node;
}

/** A colour of its own for each worker, stable across reloads: hues a golden angle apart by the id's number. */
export function colourOf(worker) {
  let n = Number(/(\d+)$/.exec(worker)?.[1]);
  if (!Number.isFinite(n)) {
    n = 0;
    for (const c of worker) n = (n * 31 + c.charCodeAt(0)) % 1000;
  }
  return `hsl(${Math.round((n * 137.508 + 200) % 360)} 65% 42%)`;
}

export class CityMap {
  /** Draw the grid into `svg`; `onSelect(worker)` hears clicks on markers. */
  constructor(svg, onSelect) {
    this.svg = svg;
    this.onSelect = onSelect;
    this.markers = new Map();
    svg.setAttribute('viewBox', `${-MARGIN} ${-MARGIN} ${WIDTH + 2 * MARGIN} ${HEIGHT + 2 * MARGIN}`);
    svg.setAttribute('preserveAspectRatio', 'xMidYMid meet');
    this.drawCity();
    this.layer = el('g', { id: 'markers' }, svg);
  }

  drawCity() {
    const city = el('g', { class: 'city', 'aria-hidden': 'true' }, this.svg);
    el('rect', { class: 'ground', x: -MARGIN, y: -MARGIN, width: WIDTH + 2 * MARGIN, height: HEIGHT + 2 * MARGIN }, city);
    const b = GRID.block;
    for (let i = 0; i < GRID.cols; i++) {
      for (let j = 0; j < GRID.rows; j++) {
        const kind = blockKind(i, j);
        const inset = kind === 'water' ? 4 : 9;
        el('rect', {
          class: `block ${kind}`,
          x: i * b + inset,
          y: j * b + inset,
          width: b - 2 * inset,
          height: b - 2 * inset,
          rx: kind === 'water' ? 2 : 6,
        }, city);
      }
    }
    const streets = el('g', { class: 'streets' }, city);
    for (let i = 0; i <= GRID.cols; i++) {
      el('line', { class: isAvenue(i) ? 'avenue' : 'street', x1: i * b, y1: 0, x2: i * b, y2: HEIGHT }, streets);
    }
    for (let j = 0; j <= GRID.rows; j++) {
      el('line', { class: isAvenue(j) ? 'avenue' : 'street', x1: 0, y1: j * b, x2: WIDTH, y2: j * b }, streets);
    }
    const names = el('g', { class: 'street-names' }, city);
    for (let i = 4; i < GRID.cols; i += 4) {
      const t = el('text', { x: i * b - 4, y: HEIGHT - 12, transform: `rotate(-90 ${i * b - 4} ${HEIGHT - 12})` }, names);
      t.textContent = streetName('ns', i);
    }
    for (let j = 4; j < GRID.rows; j += 4) {
      const t = el('text', { x: b * 3 + 12, y: j * b - 5 }, names);
      t.textContent = streetName('ew', j);
    }
  }

  /** A worker's new position `{worker, team, name, x, y, heading}`. */
  move(p) {
    let m = this.markers.get(p.worker);
    const now = performance.now();
    if (!m) {
      m = this.addMarker(p);
      m.node.style.transition = 'none';
    } else {
      // Glide over the time since the previous update: the marker reaches each position as the next arrives.
      const glide = Math.min(MAX_GLIDE_MS, Math.max(MIN_GLIDE_MS, now - m.at));
      m.node.style.transition = `transform ${Math.round(glide)}ms linear`;
    }
    m.at = now;
    m.node.style.transform = `translate(${p.x}px, ${p.y}px)`;
    m.node.dataset.x = String(p.x);
    m.node.dataset.y = String(p.y);
    if (Number.isFinite(p.heading)) m.arrow.setAttribute('transform', `rotate(${p.heading})`);
    if (typeof p.name === 'string') m.label.textContent = p.name;
    // Near the east edge the name goes on the marker's left, inside the map.
    const west = p.x > WIDTH - 60;
    m.label.setAttribute('x', west ? '-15' : '15');
    m.label.setAttribute('text-anchor', west ? 'end' : 'start');
  }

  addMarker(p) {
    const node = el('g', { class: 'marker', 'data-worker': p.worker, 'data-team': p.team, 'data-state': 'online' });
    node.style.setProperty('--colour', colourOf(p.worker));
    const title = el('title', {}, node);
    title.textContent = p.worker;
    const arrow = el('g', { class: 'arrow' }, node);
    el('path', { d: 'M0,-24 L8,-12 L-8,-12 Z' }, arrow);
    el('circle', { class: 'halo', r: 20 }, node);
    el('circle', { class: 'dot', r: 10 }, node);
    const label = el('text', { class: 'label', x: 15, y: 6 }, node);
    node.addEventListener('click', () => this.onSelect(p.worker));
    this.layer.append(node);
    const m = { node, arrow, label, at: 0 };
    this.markers.set(p.worker, m);
    return m;
  }

  /** Grey a worker's marker out (offline) or not. */
  setState(worker, state) {
    const m = this.markers.get(worker);
    if (!m) return;
    m.node.dataset.state = state;
    // Online markers are drawn above offline ones.
    if (state === 'online') this.layer.append(m.node);
    else this.layer.prepend(m.node);
  }

  /** Highlight one worker's marker (null: none). */
  select(worker) {
    for (const [id, m] of this.markers) m.node.classList.toggle('selected', id === worker);
  }
}
