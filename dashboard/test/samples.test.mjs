// The charts' memory: samples kept for the window, gaps after a pause, series per node.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GAP_MS, WINDOW_MS, addSample, nodeIds, seriesOf, summaryOf } from '../src/samples.js';

const ov = (now, nodes) => ({
  now,
  nodes: Object.entries(nodes).map(([id, [e, d]]) => ({ id, events_per_sec: e, deliveries_per_sec: d })),
});

test('a series per node and the cluster total', () => {
  let s = [];
  s = addSample(s, ov(1000, { a: [1, 10] }));
  s = addSample(s, ov(3000, { a: [2, 20], b: [3, 30] }));
  assert.deepEqual(nodeIds(s), ['a', 'b']);
  const ev = seriesOf(s, 'events_per_sec');
  assert.deepEqual(ev.ids, ['a', 'b']);
  assert.deepEqual(ev.data, [
    [1, 3],
    [1, 5],
    [1, 2],
    [null, 3],
  ]);
  assert.deepEqual(summaryOf(seriesOf(s, 'deliveries_per_sec')), { latest: 50, max: 50, points: 2 });
});

test('an answer for the same instant (or an older one) is not a new sample', () => {
  const s = addSample([], ov(5000, { a: [1, 1] }));
  assert.equal(addSample(s, ov(5000, { a: [9, 9] })), s);
  assert.equal(addSample(s, ov(4000, { a: [9, 9] })), s);
});

test('samples older than the window are dropped', () => {
  let s = [];
  for (let t = 0; t <= WINDOW_MS + 10_000; t += 2000) s = addSample(s, ov(t, { a: [1, 1] }));
  assert.ok(s[0].t > s[s.length - 1].t - WINDOW_MS);
  assert.equal(s.length, WINDOW_MS / 2000);
});

test('a long pause (hidden tab, unreachable node) is a gap, not a line', () => {
  let s = addSample([], ov(1000, { a: [4, 4] }));
  s = addSample(s, ov(1000 + GAP_MS + 1, { a: [6, 6] }));
  const ev = seriesOf(s, 'events_per_sec');
  assert.deepEqual(ev.data[1], [4, null, 6]);
  assert.deepEqual(summaryOf(ev), { latest: 6, max: 6, points: 2 });
});

test('no samples: no summary', () => {
  assert.deepEqual(summaryOf(seriesOf([], 'events_per_sec')), { latest: null, max: null, points: 0 });
});
