// The top bar: which node answers, when it last did, trouble reaching it, and sign out.

import { html } from 'htm/preact';
import { fmtClock } from '../format.js';

/** The page's header. */
export function Header({ overview, trouble, onSignOut }) {
  return html`
    <header class="topbar">
      <h1>tidings <span class="muted">dashboard</span></h1>
      <p class="status" aria-live="polite">
        ${overview &&
        html`answered by <code class="node-id">${overview.node}</code>${' '}<span class="muted">at ${fmtClock(overview.now)}</span>`}
      </p>
      <button type="button" class="secondary" onClick=${onSignOut}>Sign out</button>
    </header>
    ${trouble && html`<p class="banner" role="alert">Cannot read the overview: ${trouble}. Retrying every 2 s.</p>`}
  `;
}
