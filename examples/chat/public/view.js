// Everything the page draws: the conversation lists, the open conversation's messages with their ticks, the
// typing line and the connection banner. Text from other users only ever goes into textContent.
//
// For tests: each message is an <li class="message" data-key data-user> in #messages (room messages also
// data-offset, direct messages data-id); a sent direct message has data-status and <span class="ticks" data-status>.
// <body data-connection="connecting | connected | reconnecting | refused" data-recovered="true | false">.

const $ = (id) => document.getElementById(id);

/** What the ticks of a sent direct message look like, by status. */
const TICKS = {
  sending: ['…', 'sending'],
  accepted: ['✓', 'sent'],
  sent: ['✓', 'sent'],
  delivered: ['✓✓', 'delivered'],
  read: ['✓✓', 'read'],
  expired: ['!', 'expired before delivery'],
  failed: ['!', 'not sent'],
};

const clock = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });

export function showLogin(error = '') {
  $('login-view').hidden = false;
  $('chat-view').hidden = true;
  $('me').hidden = true;
  $('login-error').textContent = error;
  $('login-user').focus();
}

export function showChat(user) {
  $('login-view').hidden = true;
  $('chat-view').hidden = false;
  $('me').hidden = false;
  $('me-name').textContent = user;
}

/** The connection state: banner text and body data attributes. */
export function showConnection(state, detail) {
  document.body.dataset.connection = state;
  if (state === 'connected') document.body.dataset.recovered = String(Boolean(detail?.recovered));
  const banner = $('connection-banner');
  const text = {
    connecting: 'connecting…',
    reconnecting: 'reconnecting…',
    refused: `the server refused this login (${detail}); log in again`,
  }[state];
  banner.hidden = !text;
  banner.textContent = text ?? '';
}

/** Redraw the rooms and direct-message lists; `active` is the open conversation's key. */
export function showLists(convs, active, open) {
  const item = (conv, label) => {
    const li = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    button.dataset.key = conv.key;
    button.setAttribute('aria-current', String(conv.key === active));
    const name = document.createElement('span');
    name.textContent = label;
    button.append(name);
    if (conv.unread > 0) {
      const badge = document.createElement('span');
      badge.className = 'badge';
      badge.textContent = String(conv.unread);
      badge.setAttribute('aria-label', `${conv.unread} unread`);
      button.append(badge);
    }
    button.addEventListener('click', () => open(conv.key));
    li.append(button);
    return li;
  };
  const byName = (a, b) => a.name.localeCompare(b.name);
  $('rooms').replaceChildren(...convs.of('room').sort(byName).map((c) => item(c, `# ${c.name.slice(5)}`)));
  $('dms').replaceChildren(...convs.of('dm').sort(byName).map((c) => item(c, `@ ${c.name}`)));
}

/** Show `conv` in the main pane. */
export function showConversation(conv) {
  $('conversation').dataset.key = conv.key;
  $('conversation-title').textContent = conv.kind === 'room' ? `# ${conv.name.slice(5)}` : `@ ${conv.name}`;
  $('messages').replaceChildren(...conv.messages.map(messageItem));
  scrollToEnd();
  $('composer-input').focus();
}

/** Add a message at the end of the open conversation. */
export function appendMessage(message) {
  const list = $('messages');
  const atEnd = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(messageItem(message));
  while (list.children.length > 300) list.firstElementChild.remove();
  if (atEnd || message.mine) scrollToEnd();
}

/** Redraw the ticks of a sent direct message, if it is on screen. */
export function updateTicks(message) {
  const li = $('messages').querySelector(`li[data-key="${CSS.escape(message.key)}"]`);
  if (!li) return;
  li.dataset.status = message.status;
  setTicks(li.querySelector('.ticks'), message.status);
}

export function showTyping(text) {
  $('typing').textContent = text;
}

export function showError(id, text) {
  $(id).textContent = text;
}

function messageItem(message) {
  const li = document.createElement('li');
  li.className = message.mine ? 'message mine' : 'message';
  li.dataset.key = message.key;
  li.dataset.user = message.user;
  if (message.offset) li.dataset.offset = message.offset;
  if (message.id) li.dataset.id = message.id;
  const meta = document.createElement('div');
  meta.className = 'meta';
  const author = document.createElement('span');
  author.className = 'author';
  author.textContent = message.user;
  const time = document.createElement('time');
  const at = new Date(message.at);
  if (!Number.isNaN(at.getTime())) {
    time.dateTime = at.toISOString();
    time.textContent = clock.format(at);
  }
  meta.append(author, time);
  if (message.status) {
    li.dataset.status = message.status;
    const ticks = document.createElement('span');
    ticks.className = 'ticks';
    setTicks(ticks, message.status);
    meta.append(ticks);
  }
  const text = document.createElement('div');
  text.className = 'text';
  text.textContent = message.text;
  li.append(meta, text);
  return li;
}

function setTicks(el, status) {
  const [mark, label] = TICKS[status] ?? ['', status];
  el.dataset.status = status;
  el.textContent = mark;
  el.title = label;
  el.setAttribute('aria-label', label);
}

function scrollToEnd() {
  const list = $('messages');
  list.scrollTop = list.scrollHeight;
}
