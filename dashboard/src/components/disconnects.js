// Why clients left: counts by reason since the node started, and the latest disconnections.

import { html } from 'htm/preact';
import { fmtClock, fmtInt } from '../format.js';

/** The disconnects of an overview (`{by_reason: {reason: n}, recent: [{at, reason, transport, namespace}]}`). */
export function Disconnects({ disconnects }) {
  const reasons = Object.entries(disconnects?.by_reason ?? {}).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  const most = reasons.length ? reasons[0][1] : 0;
  const recent = disconnects?.recent ?? [];
  // A close of the transport ends every namespace of the session at once: entries may have no namespace.
  const withNamespace = recent.some((d) => d.namespace !== undefined && d.namespace !== null);
  return html`
    <section class="panel" aria-labelledby="disconnects-title">
      <h2 id="disconnects-title">Disconnects <span class="muted small">since this node started</span></h2>
      ${reasons.length === 0
        ? html`<p class="muted">No client has disconnected yet.</p>`
        : html`
            <ul class="reasons">
              ${reasons.map(
                ([reason, n]) => html`
                  <li key=${reason} data-reason=${reason}>
                    <span class="reason">${reason}</span>
                    <span class="bar" aria-hidden="true"><span class="fill low" style=${{ width: `${((n / most) * 100).toFixed(1)}%` }}></span></span>
                    <span class="num reason-count">${fmtInt(n)}</span>
                  </li>
                `,
              )}
            </ul>
          `}
      ${recent.length > 0 &&
      html`
        <h3>Latest</h3>
        <div class="scroll recent-box">
          <table class="recent">
            <thead>
              <tr>
                <th scope="col">Time</th>
                <th scope="col">Reason</th>
                <th scope="col">Transport</th>
                ${withNamespace && html`<th scope="col">Namespace</th>`}
              </tr>
            </thead>
            <tbody>
              ${recent.map(
                (d, i) => html`
                  <tr key=${`${d.at}-${i}`}>
                    <td class="num">${fmtClock(d.at)}</td>
                    <td class="reason">${d.reason}</td>
                    <td>${d.transport}</td>
                    ${withNamespace && html`<td><code>${d.namespace ?? '—'}</code></td>`}
                  </tr>
                `,
              )}
            </tbody>
          </table>
        </div>
      `}
    </section>
  `;
}
