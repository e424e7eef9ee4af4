// Routes of the simulated workers: each drives along the streets of the shared grid (public/grid.js), turning
// at intersections by a seeded random choice, so a seed always gives the same routes.

import { GRID, intersection, neighbours } from './public/grid.js';

/** A small seeded generator (mulberry32): numbers in [0, 1). */
export function seeded(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Share of intersections where a worker goes straight on when it can. */
const STRAIGHT_ON = 0.6;

/** One worker's position on the grid, moved along by `advance(seconds)`. */
export class Walker {
  /** `random`: a generator from `seeded`; `speed` in metres a second. */
  constructor(random, speed) {
    this.random = random;
    this.speed = speed;
    this.from = [Math.floor(random() * (GRID.cols + 1)), Math.floor(random() * (GRID.rows + 1))];
    this.to = this.pick(null);
    this.done = 0; // metres travelled from `from` towards `to`
  }

  /** Move on by `seconds` of driving. */
  advance(seconds) {
    let left = this.speed * Math.max(0, seconds);
    while (left > 0) {
      const rest = GRID.block - this.done;
      if (left < rest) {
        this.done += left;
        return;
      }
      left -= rest;
      const came = this.from;
      this.from = this.to;
      this.to = this.pick(came);
      this.done = 0;
    }
  }

  /** `{x, y, heading}`: metres on the grid and the direction of travel in degrees clockwise from north. */
  position() {
    const a = intersection(...this.from);
    const b = intersection(...this.to);
    const f = this.done / GRID.block;
    const heading = (Math.round((Math.atan2(b.x - a.x, a.y - b.y) * 180) / Math.PI) + 360) % 360;
    return { x: round(a.x + (b.x - a.x) * f), y: round(a.y + (b.y - a.y) * f), heading };
  }

  /** The next intersection from `this.from`: never straight back unless it is a dead end. */
  pick(came) {
    const [i, j] = this.from;
    const options = neighbours(i, j).filter(([x, y]) => !came || x !== came[0] || y !== came[1]);
    if (came) {
      const ahead = [2 * i - came[0], 2 * j - came[1]];
      const straight = options.find(([x, y]) => x === ahead[0] && y === ahead[1]);
      if (straight && this.random() < STRAIGHT_ON) return straight;
    }
    return options[Math.floor(this.random() * options.length)];
  }
}

const round = (v) => Math.round(v * 10) / 10;
