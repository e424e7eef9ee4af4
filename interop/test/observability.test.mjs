// What an operator reads: JSON log lines (`--log-format json`) carrying the request id of each API call, the
// `x-request-id` answer header, and the Prometheus metrics an operator alerts on.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { api, closeAllClients, connect, eventually, startServer, token, uid, waitFor } from './helpers.mjs';

const T = { timeout: 20_000 };

describe('observability', () => {
  const servers = [];
  after(async () => {
    closeAllClients();
    await Promise.all(servers.map((s) => s.stop()));
  });

  test('--log-format json: every line is one JSON object; API calls log under their request id', T, async () => {
    const server = await startServer({ args: ['--log-format', 'json'], env: { TIDINGS_LOG: 'info,tidings=debug' } });
    servers.push(server);
    const mine = await api(server, 'POST', '/v1/publish', {
      body: { room: uid('r'), event: 'e' },
      headers: { 'x-request-id': 'backend-call-42' },
    });
    assert.equal(mine.status, 200, mine.text);
    assert.equal(mine.headers.get('x-request-id'), 'backend-call-42', 'a usable caller id is kept');
    const fresh = await api(server, 'GET', '/v1/nodes', { apiKey: null, headers: { 'x-request-id': 'bad id with spaces' } });
    assert.equal(fresh.status, 401);
    const freshId = fresh.headers.get('x-request-id');
    assert.match(freshId, /^[0-9a-f-]{36}$/, 'an unusable caller id is replaced by a UUID');

    const lines = () =>
      server
        .stderr()
        .split('\n')
        .filter((l) => l.trim());
    await eventually(() => lines().some((l) => l.includes(freshId)), { what: 'the refused call logged' });
    const parsed = lines().map((l) => {
      try {
        return JSON.parse(l);
      } catch {
        assert.fail(`not a JSON log line: ${l}`);
      }
    });
    for (const entry of parsed) {
      assert.ok(entry.timestamp && entry.level && entry.target, JSON.stringify(entry));
    }
    const done = parsed.find((e) => e.span?.request_id === 'backend-call-42' && e.fields?.message === 'request done');
    assert.ok(done, 'the publish is logged under its request id');
    assert.equal(done.span.path, '/v1/publish');
    assert.equal(done.fields.status, 200);
    const refused = parsed.find((e) => e.span?.request_id === freshId && e.fields?.message === 'API request refused');
    assert.ok(refused, 'the refusal is logged under the fresh id');
  });

  test('/metrics covers connections by transport and namespace, joins, publishes, deliveries, recoveries', T, async () => {
    const server = await startServer({ config: '[[namespaces]]\nname = "/ops"\n' });
    servers.push(server);
    const room = uid('m');
    const ws = await connect(server, { token: token({ sub: uid('u'), join: [room] }), transports: ['websocket'] });
    await connect(server, { token: token({ sub: uid('p') }), transports: ['polling'], namespace: '/ops' });
    ws.emit('join', room);
    const got = waitFor(ws, 'e');
    assert.equal((await api(server, 'POST', '/v1/publish', { body: { room, event: 'e', data: 1 } })).status, 200);
    await got;
    const metrics = (await api(server, 'GET', '/metrics')).text;
    const value = (line) => {
      const row = metrics.split('\n').find((l) => l.startsWith(line));
      return row === undefined ? undefined : Number(row.slice(line.length).trim());
    };
    assert.equal(value('tidings_connections{transport="websocket"}'), 1, metrics);
    assert.equal(value('tidings_connections{transport="polling"}'), 1);
    assert.equal(value('tidings_sockets{namespace="/"}'), 1);
    assert.equal(value('tidings_sockets{namespace="/ops"}'), 1);
    assert.ok(value('tidings_room_joins_total{namespace="/"}') >= 1);
    assert.ok(value('tidings_events_published_total') >= 1);
    assert.ok(value('tidings_deliveries_total') >= 1);
    // Sampled every 5 s.
    await eventually(async () => (await api(server, 'GET', '/metrics')).text.includes('tidings_outbox_depth_bucket'), {
      timeoutMs: 8000,
      what: 'the outbox depth histogram',
    });
    assert.equal(value('tidings_draining'), 0);
    ws.disconnect();
    let now = '';
    await eventually(async () => {
      now = (await api(server, 'GET', '/metrics')).text;
      return /tidings_sessions_closed_total\{reason="(client|transport)_close"\} 1/.test(now) && now.includes('tidings_connections{transport="websocket"} 0');
    }, { what: 'the close counted, the connection gone' }).catch((e) => assert.fail(`${e.message}\n${now}`));
  });

  test('dashboard: the page needs no key, its data an API or admin key; an admin key cannot publish', T, async () => {
    const ADMIN = 'interop-admin-key-0123456789abcdef';
    const server = await startServer({ config: `[admin]\nkeys = ["${ADMIN}"]\n` });
    servers.push(server);
    const page = await fetch(`${server.url}/dashboard`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type'), /text\/html/);
    assert.match(page.headers.get('content-security-policy'), /default-src 'none'/);
    assert.equal((await fetch(`${server.url}/dashboard/assets/app.js`)).status, 200);
    assert.equal((await fetch(`${server.url}/dashboard/assets/..%2fCargo.toml`)).status, 404);
    assert.equal((await api(server, 'GET', '/dashboard/api/overview', { apiKey: null })).status, 401);
    assert.equal((await api(server, 'GET', '/dashboard/api/overview', { apiKey: 'wrong-key-0123456789abcdef' })).status, 401);
    for (const key of [server.apiKey, ADMIN]) {
      const res = await api(server, 'GET', '/dashboard/api/overview', { apiKey: key });
      assert.equal(res.status, 200, res.text);
      assert.equal(res.json.nodes.length, 1);
      assert.equal(res.json.nodes[0].id, res.json.node);
    }
    const refused = await api(server, 'POST', '/v1/publish', { apiKey: ADMIN, body: { room: 'r', event: 'e' } });
    assert.equal(refused.status, 401, 'an admin key is read-only');
    assert.equal((await api(server, 'GET', '/metrics', { apiKey: ADMIN })).status, 200);
  });
});
