// The publish form, for testing: room, event and JSON data, checked before sending, and the node's answer.

import { html } from 'htm/preact';
import { useState } from 'preact/hooks';
import { publishEvent } from '../api.js';
import { checkPublish } from '../validate.js';

function Field({ id, label, error, children }) {
  return html`
    <div class="field">
      <label for=${id}>${label}</label>
      ${children}
      ${error && html`<p id=${`${id}-error`} class="error field-error">${error}</p>`}
    </div>
  `;
}

/** What the node answered: the JSON as it came, and plain words for a key that may not publish. */
function Answer({ answer }) {
  if (answer.error) {
    return html`<div class="answer bad" role="alert"><p>Not sent: ${answer.error}</p></div>`;
  }
  const ok = answer.status >= 200 && answer.status < 300;
  const refused = answer.status === 401 || answer.status === 403;
  const body = answer.body !== null ? JSON.stringify(answer.body, null, 2) : answer.text;
  return html`
    <div class=${`answer ${ok ? 'good' : 'bad'}`} role="status" data-status=${answer.status}>
      <p>
        ${ok ? 'Published' : refused ? 'This key may not publish' : 'Refused'}
        <span class="muted"> — HTTP ${answer.status}</span>
      </p>
      ${refused &&
      html`<p class="small">An admin key is read-only: publishing needs an API key (${answer.body?.error?.message ?? 'refused'}).</p>`}
      <pre class="json">${body}</pre>
    </div>
  `;
}

/** The form; `apiKey` is the key the page signed in with. */
export function PublishForm({ apiKey }) {
  const [fields, setFields] = useState({ room: '', event: 'message', data: '{"text": "hello"}' });
  const [touched, setTouched] = useState(false);
  const [sending, setSending] = useState(false);
  const [answer, setAnswer] = useState(null);
  const { errors, payload } = checkPublish(fields);
  const shown = touched ? errors : { data: errors.data };

  const set = (name) => (e) => setFields({ ...fields, [name]: e.currentTarget.value });
  const submit = async (e) => {
    e.preventDefault();
    setTouched(true);
    if (!payload) return;
    setSending(true);
    try {
      setAnswer(await publishEvent(apiKey, payload));
    } catch (err) {
      setAnswer({ error: err.message });
    } finally {
      setSending(false);
    }
  };
  const invalid = (name) => (shown[name] ? 'true' : 'false');
  const describedBy = (name) => (shown[name] ? `pub-${name}-error` : undefined);

  return html`
    <section class="panel" aria-labelledby="publish-title">
      <h2 id="publish-title">Publish a test event</h2>
      <p class="muted small">POST /v1/publish with this tab's key; the room's members receive it like any event.</p>
      <form class="publish" onSubmit=${submit} novalidate>
        <div class="row">
          <${Field} id="pub-room" label="Room" error=${shown.room}>
            <input id="pub-room" name="room" value=${fields.room} onInput=${set('room')} placeholder="e.g. chat:lobby"
              autocomplete="off" spellcheck="false" aria-invalid=${invalid('room')} aria-describedby=${describedBy('room')} />
          <//>
          <${Field} id="pub-event" label="Event" error=${shown.event}>
            <input id="pub-event" name="event" value=${fields.event} onInput=${set('event')} autocomplete="off"
              spellcheck="false" aria-invalid=${invalid('event')} aria-describedby=${describedBy('event')} />
          <//>
        </div>
        <${Field} id="pub-data" label="Data (JSON)" error=${shown.data}>
          <textarea id="pub-data" name="data" rows="4" spellcheck="false" onInput=${set('data')}
            value=${fields.data} aria-invalid=${invalid('data')} aria-describedby=${describedBy('data')}></textarea>
        <//>
        <button type="submit" disabled=${sending || (touched && !payload) || Boolean(errors.data)}>
          ${sending ? 'Publishing…' : 'Publish'}
        </button>
      </form>
      ${answer && html`<${Answer} answer=${answer} />`}
    </section>
  `;
}
