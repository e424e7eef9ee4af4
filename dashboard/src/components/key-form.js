// The sign-in form: an API key or an admin key, kept for this tab only.

import { html } from 'htm/preact';
import { useState } from 'preact/hooks';

/** Asks for a key; `error` is why the last one was refused. */
export function KeyForm({ error, onSubmit }) {
  const [value, setValue] = useState('');
  const submit = (e) => {
    e.preventDefault();
    const key = value.trim();
    if (key) onSubmit(key);
  };
  return html`
    <main class="signin">
      <form class="panel" onSubmit=${submit} aria-labelledby="signin-title">
        <h1 id="signin-title">tidings dashboard</h1>
        <p class="muted">
          The dashboard reads the cluster's state with an API key or an admin key. The key stays in this tab
          (session storage) and is sent with every request.
        </p>
        <label for="key">API key or admin key</label>
        <input
          id="key"
          name="key"
          type="password"
          autocomplete="off"
          spellcheck="false"
          required
          value=${value}
          onInput=${(e) => setValue(e.currentTarget.value)}
          aria-invalid=${error ? 'true' : 'false'}
          aria-describedby=${error ? 'key-error' : undefined}
        />
        ${error && html`<p id="key-error" class="error" role="alert">Key refused: ${error}</p>`}
        <button type="submit">Open dashboard</button>
      </form>
    </main>
  `;
}
