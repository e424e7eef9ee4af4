// The chat page: log in, join rooms (history, then live messages), send messages and typing indicators,
// direct messages with delivery ticks, the presence panel, and catching up after a lost connection.

import { openSocket } from './connection.js';
import { Conversations } from './conversations.js';
import { Presence } from './presence.js';
import { Session, deviceName } from './session.js';
import { SEND_EVERY_MS, Typing, throttle } from './typing.js';
import * as view from './view.js';

const DEFAULT_ROOMS = ['chat:lobby', 'chat:random'];
const NAME = /^[A-Za-z0-9_.-]{1,40}$/;
const ASK_TIMEOUT_MS = 10_000;
/** Events per history page (the node's maximum). */
const HISTORY_PAGE = 1000;
/** Attempts for one direct message; every attempt carries the same id, so the node stores it once. */
const DM_ATTEMPTS = 6;

const convs = new Conversations();
const presence = new Presence();
const typing = new Typing((room) => {
  if (active === `room:${room}`) view.showTyping(typing.text(room));
});
const mayType = throttle(SEND_EVERY_MS);
let me = null;
let socket = null;
/** Key of the open conversation (`room:chat:lobby`, `dm:bob`). */
let active = null;

const ask = (event, payload) => socket.timeout(ASK_TIMEOUT_MS).emitWithAck(event, payload);
const savedRoomsKey = () => `chat.rooms.${me}`;

// ---------------------------------------------------------------------------
// start

async function start(user) {
  let session;
  try {
    session = await Session.start(user);
  } catch (err) {
    return view.showLogin(err.message);
  }
  me = session.user;
  sessionStorage.setItem('chat.user', me);
  view.showChat(me);
  view.showConnection('connecting');
  socket = openSocket(session, deviceName(me), onConnectionState);
  socket.on('message', (data, offset) => onRoomEvent('message', data, offset));
  socket.on('typing', (data) => onRoomEvent('typing', data));
  socket.on('direct', onDirect);
  socket.on('message:status', ({ id, status } = {}) => {
    const message = convs.status(id, status);
    if (message) view.updateTicks(message);
  });
  socket.on('presence:join', (event) => presence.joined(event));
  socket.on('presence:leave', (event) => presence.left(event));
  // Many users came and went at once: the node says so instead of naming them; read the list again.
  socket.on('presence:reset', ({ room } = {}) => {
    if (room === presence.room) presence.load(socket, room);
  });

  const saved = JSON.parse(localStorage.getItem(savedRoomsKey()) ?? '[]');
  for (const room of new Set([...DEFAULT_ROOMS, ...saved])) convs.get('room', room);
  open('room:chat:lobby');
}

function onConnectionState(state, detail) {
  view.showConnection(state, detail);
  if (state !== 'connected') return;
  // A recovered session is still in its rooms and the node replayed what it missed; otherwise (first
  // connection, or the session was gone) join every room again and read its history.
  if (!detail.recovered) for (const conv of convs.of('room')) joinRoom(conv);
  const conv = convs.find(active);
  presence.load(socket, conv?.kind === 'room' ? conv.name : null);
  markRead(conv);
}

// ---------------------------------------------------------------------------
// rooms

async function joinRoom(conv) {
  conv.loading = true;
  try {
    const joined = await ask('subscribe', conv.name);
    if (!joined?.ok) throw new Error(joined?.error ?? 'refused');
    let since;
    for (;;) {
      const query = { room: conv.name, limit: HISTORY_PAGE };
      const page = await ask('history', since === undefined ? query : { ...query, since });
      if (!page?.ok) throw new Error(page?.error ?? 'history refused');
      if (since === undefined && conv.epoch !== page.epoch) {
        if (conv.epoch !== null) {
          conv.reset(); // a new stream: its offsets name other events than the ones shown
          if (conv.key === active) view.showConversation(conv);
        }
        conv.epoch = page.epoch;
      }
      for (const ev of page.events) {
        if (ev.event === 'message') addRoomMessage(conv, ev.data, ev.offset, ev.at, false);
      }
      if (!page.more || page.events.length === 0) break;
      since = page.events[page.events.length - 1].offset;
    }
  } catch (err) {
    if (conv.key === active) view.showError('join-error', `${conv.name}: ${err.message}`);
  } finally {
    conv.loading = false;
    const pending = conv.pending;
    conv.pending = [];
    for (const [data, offset] of pending) addRoomMessage(conv, data, offset, undefined, true);
  }
}

function onRoomEvent(event, data, offset) {
  const conv = typeof data?.room === 'string' ? convs.find(`room:${data.room}`) : null;
  if (!conv || typeof data.user !== 'string') return;
  if (event === 'typing') {
    if (data.user !== me) typing.show(conv.name, data.user);
  } else if (conv.loading) conv.pending.push([data, offset]);
  else addRoomMessage(conv, data, offset, undefined, true);
}

function addRoomMessage(conv, data, offset, at, live) {
  if (typeof data?.text !== 'string') return;
  const message = {
    key: `o:${offset}`,
    offset,
    user: String(data.user),
    text: data.text,
    at: data.at ?? at,
    mine: data.user === me,
  };
  if (!conv.add(message)) return;
  if (live) typing.clear(conv.name, message.user);
  shown(conv, message);
}

async function sendRoomMessage(conv, text) {
  const data = { text, user: me, at: Date.now(), room: conv.name };
  try {
    const reply = await ask('publish', { room: conv.name, event: 'message', data });
    if (!reply?.ok) view.showError('composer-error', `not sent: ${reply?.error ?? 'refused'}`);
  } catch {
    view.showError('composer-error', 'not sent: no answer from the server');
  }
}

function sendTyping(conv) {
  // volatile: a typing signal is worth nothing later, so it is dropped rather than queued while offline;
  // ephemeral: the node keeps it out of the room's history and replay.
  socket.volatile.emit('publish', {
    room: conv.name,
    event: 'typing',
    data: { user: me, room: conv.name },
    ephemeral: true,
  });
}

// ---------------------------------------------------------------------------
// direct messages

function onDirect(data, meta, ack) {
  if (meta && typeof meta.from === 'string' && typeof meta.id === 'string') {
    const conv = convs.get('dm', meta.from);
    const message = {
      key: `m:${meta.id}`,
      id: meta.id,
      user: meta.from,
      text: String(data?.text ?? ''),
      at: data?.at ?? meta.at,
      mine: false,
    };
    if (conv.add(message)) {
      conv.lastIncoming = meta.id;
      shown(conv, message);
    }
    markRead(conv);
  }
  if (typeof ack === 'function') ack(); // delivered to this device
}

async function sendDirect(conv, text) {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  const id = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  const at = Date.now();
  const message = { key: `c:${id}`, user: me, text, at, mine: true, status: 'sending' };
  conv.add(message);
  shown(conv, message);
  const payload = { to: conv.name, event: 'direct', data: { text, at }, id };
  for (let attempt = 1; attempt <= DM_ATTEMPTS; attempt++) {
    let reply;
    try {
      reply = await ask('dm', payload);
    } catch {
      continue; // no answer (connection lost): the same id again
    }
    if (reply?.ok) {
      convs.accepted(message, reply.id, reply.status);
      return view.updateTicks(message);
    }
    if (reply?.error !== 'busy' && reply?.error !== 'unavailable') break;
    await new Promise((r) => setTimeout(r, 1000 * attempt));
  }
  message.status = 'failed';
  view.updateTicks(message);
}

/** Tell the node the open thread was read up to its newest message from the other user. */
async function markRead(conv) {
  if (conv?.kind !== 'dm' || conv.key !== active || document.visibilityState !== 'visible') return;
  const upTo = conv.lastIncoming;
  if (!upTo || upTo === conv.readUpTo || !socket.connected) return;
  conv.readUpTo = upTo;
  try {
    const reply = await ask('read', { from: conv.name, up_to: upTo });
    if (!reply?.ok) throw new Error(reply?.error);
  } catch {
    if (conv.readUpTo === upTo) conv.readUpTo = null; // tried again on the next occasion
  }
}

// ---------------------------------------------------------------------------
// what the page shows

/** Open the conversation with `key`. */
function open(key) {
  const conv = convs.find(key);
  if (!conv) return;
  active = key;
  conv.unread = 0;
  view.showError('join-error', '');
  view.showError('composer-error', '');
  view.showConversation(conv);
  view.showLists(convs, active, open);
  view.showTyping(conv.kind === 'room' ? typing.text(conv.name) : '');
  if (socket.connected) presence.load(socket, conv.kind === 'room' ? conv.name : null);
  markRead(conv);
}

/** A message was added to `conv`: draw it, or count it as unread. */
function shown(conv, message) {
  if (conv.key === active) return view.appendMessage(message);
  if (!message.mine) {
    conv.unread += 1;
    view.showLists(convs, active, open);
  }
}

function joinByName(name) {
  if (!NAME.test(name)) return view.showError('join-error', 'a room name is 1-40 letters, digits, _ . or -');
  const conv = convs.get('room', `chat:${name}`);
  const saved = new Set(JSON.parse(localStorage.getItem(savedRoomsKey()) ?? '[]'));
  saved.add(conv.name);
  localStorage.setItem(savedRoomsKey(), JSON.stringify([...saved]));
  if (socket.connected && conv.epoch === null && !conv.loading) joinRoom(conv);
  open(conv.key);
}

function wire() {
  const form = (id, fn) =>
    document.getElementById(id).addEventListener('submit', (e) => {
      e.preventDefault();
      fn(e.target);
    });
  form('login-form', () => start(document.getElementById('login-user').value.trim()));
  form('join-form', () => {
    const input = document.getElementById('join-room');
    joinByName(input.value.trim().replace(/^chat:/, ''));
    input.value = '';
  });
  form('dm-form', () => {
    const input = document.getElementById('dm-user');
    const user = input.value.trim();
    if (!NAME.test(user) || user === me) return;
    convs.get('dm', user);
    input.value = '';
    open(`dm:${user}`);
  });
  form('composer', () => {
    const input = document.getElementById('composer-input');
    const text = input.value.trim();
    const conv = convs.find(active);
    if (!text || !conv) return;
    input.value = '';
    view.showError('composer-error', '');
    if (conv.kind === 'room') sendRoomMessage(conv, text);
    else sendDirect(conv, text);
  });
  document.getElementById('composer-input').addEventListener('input', (e) => {
    const conv = convs.find(active);
    if (conv?.kind === 'room' && e.target.value.trim() && socket?.connected && mayType()) sendTyping(conv);
  });
  document.getElementById('logout').addEventListener('click', () => {
    sessionStorage.removeItem('chat.user');
    location.reload();
  });
  document.addEventListener('visibilitychange', () => markRead(convs.find(active)));
}

wire();
const returning = sessionStorage.getItem('chat.user');
if (returning) start(returning);
else view.showLogin();
