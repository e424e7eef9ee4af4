// How numbers, sizes, durations and times read on the page.

const INT = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

/** A count with thousands separators: 12,345. */
export function fmtInt(n) {
  return n === null || n === undefined || Number.isNaN(n) ? '—' : INT.format(n);
}

/** A rate per second: one decimal below 10, whole numbers above. */
export function fmtRate(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return '—';
  return x < 10 ? x.toFixed(1) : INT.format(Math.round(x));
}

/** A percentage with one decimal: 12.5 %. */
export function fmtPercent(x) {
  return x === null || x === undefined || Number.isNaN(x) ? '—' : `${x.toFixed(1)} %`;
}

/** Bytes in binary units: 512 B, 3.4 KiB, 120.0 MiB, 1.2 GiB. */
export function fmtBytes(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u += 1;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${units[u]}`;
}

/** A duration in its two largest units: 45 s, 12 min 5 s, 3 h 20 min, 2 d 4 h. */
export function fmtDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
  const s = Math.max(0, Math.floor(ms / 1000));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (d > 0) return `${d} d ${h} h`;
  if (h > 0) return `${h} h ${m} min`;
  if (m > 0) return `${m} min ${sec} s`;
  return `${sec} s`;
}

const pad = (n) => String(n).padStart(2, '0');

/** The local time of day of a Unix time in milliseconds: 14:03:09. */
export function fmtClock(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
