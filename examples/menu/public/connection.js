// The Socket.IO connection to the tidings node: auth with a fresh token, token refresh while connected, and
// getting back after any disconnection. The token's `join` claim puts the connection in the store's room on
// every connect, so the page never subscribes by itself. Recovery is the stock client's: when it reconnects it
// sends its session id and the last offset it got, and the node replays the updates the page missed, in order,
// right behind its CONNECT reply.

import { io } from '/vendor/socket.io.esm.min.js';

/** Delay before connecting again when the library would not (refused CONNECT, server disconnect). */
const RETRY_MS = 1000;

/**
 * Open the socket for `session`. `onState(state, detail)` hears `connected` (detail: `{recovered}`),
 * `reconnecting` and `refused` (detail: the error message).
 */
export function openSocket(session, onState) {
  const socket = io(session.url, {
    // Called on every (re)connection, so a reconnect after a long outage never sends an expired token.
    auth: (cb) => {
      session.token().then(
        (token) => cb({ token }),
        () => cb({ token: '' }),
      );
    },
    reconnectionDelayMax: 3000,
  });

  socket.on('connect', () => onState('connected', { recovered: socket.recovered }));
  socket.on('disconnect', (reason) => {
    onState('reconnecting');
    // The node dropped us (token expired, shutdown): the library leaves this to us. Reconnecting resumes
    // the session, missed updates included.
    if (reason === 'io server disconnect') setTimeout(() => socket.connect(), RETRY_MS);
  });
  socket.on('connect_error', (err) => {
    if (socket.active) return onState('reconnecting'); // a transport error: the library retries by itself
    if (err.message === 'unauthorized') return onState('refused', err.message);
    onState('reconnecting');
    setTimeout(() => socket.connect(), RETRY_MS); // e.g. "token expired": auth() fetches a fresh one
  });
  socket.on('token:expiring', async () => {
    try {
      const reply = await socket.timeout(10_000).emitWithAck('refresh', { token: await session.renew() });
      if (!reply?.ok) console.warn('token refresh refused:', reply?.error);
    } catch (err) {
      console.warn('token refresh failed:', err.message);
    }
  });
  // The browser knows first when the network is gone; waiting for the node's ping to time out would leave
  // the till looking connected, with a stale menu, for up to a minute.
  window.addEventListener('offline', () => socket.io.engine?.close());
  return socket;
}
