// The rooms with the most members, with their presence counts.

import { html } from 'htm/preact';
import { fmtInt } from '../format.js';

/** The top rooms of an overview (`{total, top: [{room, connections, presence}]}`). */
export function TopRooms({ rooms }) {
  const top = rooms?.top ?? [];
  return html`
    <section class="panel" aria-labelledby="rooms-title">
      <h2 id="rooms-title">Top rooms <span class="muted small">${fmtInt(rooms?.total ?? 0)} rooms in all</span></h2>
      ${top.length === 0
        ? html`<p class="muted">No rooms have members.</p>`
        : html`
            <div class="scroll">
              <table class="rooms">
                <thead>
                  <tr>
                    <th scope="col">Room</th>
                    <th scope="col" class="num">Connections</th>
                    <th scope="col" class="num" title="users present (rooms with presence only)">Presence</th>
                  </tr>
                </thead>
                <tbody>
                  ${top.map(
                    (r) => html`
                      <tr key=${r.room} data-room=${r.room}>
                        <th scope="row"><code>${r.room}</code></th>
                        <td class="connections num">${fmtInt(r.connections)}</td>
                        <td class="presence num">${r.presence === null || r.presence === undefined ? '—' : fmtInt(r.presence)}</td>
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
