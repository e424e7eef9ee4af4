// The page's memory of the cluster over time: one sample of every node's rates per poll, kept for the charts'
// window, and the series the charts draw from it. Pure functions, no DOM.

/** How far back the charts reach. */
export const WINDOW_MS = 10 * 60 * 1000;
/** A pause between two samples longer than this (the tab was hidden, the node did not answer) is drawn as a gap. */
export const GAP_MS = 6_000;
/** The rates a sample keeps per node, as named in the overview. */
export const METRICS = ['events_per_sec', 'deliveries_per_sec'];

/**
 * The samples after adding `overview` (`{now, nodes: [{id, events_per_sec, ...}]}`): older than the window
 * dropped, a second answer for the same instant ignored, and a gap marker (no values) after a long pause.
 */
export function addSample(samples, overview) {
  const t = overview.now;
  const last = samples[samples.length - 1];
  if (last && t <= last.t) return samples;
  const rates = {};
  for (const node of overview.nodes ?? []) {
    rates[node.id] = Object.fromEntries(METRICS.map((m) => [m, Number(node[m]) || 0]));
  }
  const next = samples.filter((s) => s.t > t - WINDOW_MS);
  if (last && t - last.t > GAP_MS && next.length > 0) next.push({ t: last.t + 1, rates: null });
  next.push({ t, rates });
  return next;
}

/** The node ids seen in any sample, sorted, so each keeps its series (and colour) while others come and go. */
export function nodeIds(samples) {
  const ids = new Set();
  for (const s of samples) for (const id of Object.keys(s.rates ?? {})) ids.add(id);
  return [...ids].sort();
}

/**
 * uPlot's data for one metric: `[times (s), cluster total, node 1, node 2, ...]`, null where a sample has no
 * value (a gap, or a node not yet or no longer there), with `ids` in the order of the per-node series.
 */
export function seriesOf(samples, metric) {
  const ids = nodeIds(samples);
  const xs = samples.map((s) => s.t / 1000);
  const total = samples.map((s) => (s.rates ? Object.values(s.rates).reduce((sum, r) => sum + r[metric], 0) : null));
  const perNode = ids.map((id) => samples.map((s) => s.rates?.[id]?.[metric] ?? null));
  return { ids, data: [xs, total, ...perNode] };
}

/** The latest and the highest cluster total of a series (null when there is none yet). */
export function summaryOf(series) {
  const total = series.data[1].filter((v) => v !== null);
  if (total.length === 0) return { latest: null, max: null, points: 0 };
  return { latest: total[total.length - 1], max: Math.max(...total), points: total.length };
}
