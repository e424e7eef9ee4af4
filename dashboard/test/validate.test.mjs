// The publish form's checks before sending.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkPublish } from '../src/validate.js';

test('a room, an event and JSON data make a payload', () => {
  const { errors, payload } = checkPublish({ room: ' chat:lobby ', event: 'message', data: '{"text": "hi"}' });
  assert.deepEqual(errors, {});
  assert.deepEqual(payload, { room: 'chat:lobby', event: 'message', data: { text: 'hi' } });
});

test('any JSON value is data, even null or false', () => {
  assert.deepEqual(checkPublish({ room: 'r', event: 'e', data: 'null' }).payload.data, null);
  assert.deepEqual(checkPublish({ room: 'r', event: 'e', data: 'false' }).payload.data, false);
});

test('each missing or broken field says what is wrong, and nothing is sent', () => {
  const { errors, payload } = checkPublish({ room: '  ', event: '', data: '{"text": oops}' });
  assert.equal(payload, null);
  assert.deepEqual(Object.keys(errors).sort(), ['data', 'event', 'room']);
  assert.match(errors.data, /^Not valid JSON/);
  assert.match(checkPublish({ room: 'r', event: 'e', data: ' ' }).errors.data, /required/);
});
