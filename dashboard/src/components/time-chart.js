// A uPlot line chart that follows its container's width and the colour scheme; the cluster total in the
// foreground colour, each node in a colour of the palette.

import { html } from 'htm/preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';
import { fmtClock, fmtRate } from '../format.js';

const HEIGHT = 220;
/** The x axis shows at least this much time, so the first samples do not stretch across it. */
const MIN_SPAN_S = 60;
/** Steps between time ticks, in seconds: whole seconds, never fractions. */
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600];
const PALETTE_VARS = ['--series-1', '--series-2', '--series-3', '--series-4', '--series-5', '--series-6'];

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

/** Follows prefers-color-scheme, so the chart is redrawn with the other scheme's colours. */
function useColorScheme() {
  const query = '(prefers-color-scheme: dark)';
  const [dark, setDark] = useState(() => matchMedia(query).matches);
  useEffect(() => {
    const mq = matchMedia(query);
    const onChange = () => setDark(mq.matches);
    mq.addEventListener('change', onChange);
    return () => mq.removeEventListener('change', onChange);
  }, []);
  return dark ? 'dark' : 'light';
}

function options(ids, width) {
  const fg = cssVar('--fg');
  const muted = cssVar('--muted');
  const grid = cssVar('--grid');
  const axis = { stroke: muted, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
  return {
    width,
    height: HEIGHT,
    legend: { live: false },
    cursor: { drag: { x: false, y: false } },
    scales: {
      x: { time: true, range: (u, min, max) => [Math.min(min, max - MIN_SPAN_S), max] },
      y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] },
    },
    axes: [
      { ...axis, space: 70, incrs: TIME_STEPS, values: (u, ticks) => ticks.map((t) => fmtClock(t * 1000)) },
      { ...axis, size: 56, values: (u, ticks) => ticks.map((v) => fmtRate(v)) },
    ],
    series: [
      {},
      // Drawn first and wider, so a node carrying all the load does not hide it.
      { label: 'cluster', stroke: fg, width: 3 },
      ...ids.map((id, i) => ({
        label: id,
        stroke: cssVar(PALETTE_VARS[i % PALETTE_VARS.length]),
        width: 1.5,
        dash: i >= PALETTE_VARS.length ? [6, 3] : undefined,
      })),
    ],
  };
}

/** The chart of `data` (uPlot's columns) with one series per id after the total; `label` describes it. */
export function TimeChart({ ids, data, label }) {
  const box = useRef(null);
  const plot = useRef(null);
  const scheme = useColorScheme();
  const shape = ids.join('\n');

  useEffect(() => {
    const el = box.current;
    const u = new uPlot(options(ids, el.clientWidth || 600), data, el);
    plot.current = u;
    const resize = new ResizeObserver(() => u.setSize({ width: el.clientWidth, height: HEIGHT }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      u.destroy();
      plot.current = null;
    };
    // Rebuilt only when the series or the colours change; new data goes through setData below.
  }, [shape, scheme]);

  useEffect(() => {
    plot.current?.setData(data);
  }, [data]);

  return html`<div class="plot" ref=${box} role="img" aria-label=${label}></div>`;
}
