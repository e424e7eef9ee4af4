// How numbers read on the page.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fmtBytes, fmtDuration, fmtInt, fmtPercent, fmtRate } from '../src/format.js';

test('counts, rates and percentages', () => {
  assert.equal(fmtInt(1234567), '1,234,567');
  assert.equal(fmtInt(null), '—');
  assert.equal(fmtRate(0), '0.0');
  assert.equal(fmtRate(9.96), '10.0');
  assert.equal(fmtRate(1234.4), '1,234');
  assert.equal(fmtPercent(12.345), '12.3 %');
});

test('sizes in binary units', () => {
  assert.equal(fmtBytes(512), '512 B');
  assert.equal(fmtBytes(1536), '1.5 KiB');
  assert.equal(fmtBytes(120 * 1024 * 1024), '120.0 MiB');
  assert.equal(fmtBytes(undefined), '—');
});

test('durations in their two largest units', () => {
  assert.equal(fmtDuration(45_900), '45 s');
  assert.equal(fmtDuration(12 * 60_000 + 5000), '12 min 5 s');
  assert.equal(fmtDuration(3 * 3_600_000 + 20 * 60_000), '3 h 20 min');
  assert.equal(fmtDuration(2 * 86_400_000 + 4 * 3_600_000 + 1), '2 d 4 h');
  assert.equal(fmtDuration(-5), '0 s');
});
