// Small numeric helpers shared by the driver's processes.

/** The q-quantile (0..1) of `values` by nearest rank; null when empty. */
export function quantile(values, q) {
  if (values.length === 0) return null;
  const sorted = Float64Array.from(values).sort();
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank];
}

/** Adds every count of `from` into `into` (objects of counters), returns `into`. */
export function addCounts(into, from) {
  for (const [key, n] of Object.entries(from ?? {})) into[key] = (into[key] ?? 0) + n;
  return into;
}
