// The street grid of the tracking example, shared by the simulator (workers drive along its streets) and the
// manager page (which draws it): a small city of blocks, in metres, with the origin at the top-left corner,
// x to the east and y to the south. Plain data and pure functions, so that Node and the browser import the
// same file.

/** Blocks across and down, and the distance between two streets in metres. */
export const GRID = Object.freeze({ cols: 12, rows: 8, block: 100 });
/** The map's extent in metres. */
export const WIDTH = GRID.cols * GRID.block;
export const HEIGHT = GRID.rows * GRID.block;

/** Every fourth street is an avenue (drawn wider). */
export const isAvenue = (index) => index % 4 === 0;

/** What fills block (i, j): `water` along the south-west shore, a few `park`s, `building`s elsewhere. */
export function blockKind(i, j) {
  if (j === GRID.rows - 1 && i < 3) return 'water';
  if ((i * 7 + j * 5) % 13 === 0 || (i === 6 && j === 3)) return 'park';
  return 'building';
}

const AVENUES = ['Harbour', 'Market', 'Station', 'Hill'];
const STREETS = ['Mill', 'Canal', 'Elm', 'Bridge', 'Church', 'Dock', 'Kiln', 'Rope', 'Tannery'];

/** The name of the north-south street at x = i × block (`ns`) or the east-west one at y = j × block (`ew`). */
export function streetName(axis, index) {
  if (isAvenue(index)) return `${AVENUES[(index / 4 + (axis === 'ns' ? 0 : 2)) % AVENUES.length]} ${axis === 'ns' ? 'Avenue' : 'Road'}`;
  return `${STREETS[(index * (axis === 'ns' ? 1 : 2)) % STREETS.length]} ${axis === 'ns' ? 'Street' : 'Lane'}`;
}

/** The intersection (i, j) in metres. */
export const intersection = (i, j) => ({ x: i * GRID.block, y: j * GRID.block });

/** The intersections next to (i, j) along a street (2 to 4 of them). */
export function neighbours(i, j) {
  const out = [];
  if (i > 0) out.push([i - 1, j]);
  if (i < GRID.cols) out.push([i + 1, j]);
  if (j > 0) out.push([i, j - 1]);
  if (j < GRID.rows) out.push([i, j + 1]);
  return out;
}
