// The cluster's nodes: connections against their maximum, load, rates, uptime; draining and stale nodes marked.

import { html } from 'htm/preact';
import { fmtBytes, fmtDuration, fmtInt, fmtPercent, fmtRate } from '../format.js';

/** A node whose last heartbeat is older than this has missed two beats (one every 2 s): shown as stale. */
export const STALE_AFTER_MS = 5000;

function Load({ connections, max }) {
  const share = max > 0 ? Math.min(1, connections / max) : 0;
  const level = share >= 0.9 ? 'high' : share >= 0.7 ? 'mid' : 'low';
  return html`
    <div class="load">
      <span class="load-text">${fmtInt(connections)} / ${fmtInt(max)}</span>
      <span class="bar" aria-hidden="true"><span class=${`fill ${level}`} style=${{ width: `${(share * 100).toFixed(1)}%` }}></span></span>
    </div>
  `;
}

function Row({ node, now, self }) {
  const stale = now - node.last_beat > STALE_AFTER_MS;
  return html`
    <tr data-node=${node.id}>
      <th scope="row" class="node">
        <code>${node.id}</code>
        ${node.id === self && html` <span class="badge self" title="the node answering the dashboard">this node</span>`}
        ${node.draining && html` <span class="badge draining">draining</span>`}
        ${stale &&
        html` <span class="badge stale" title=${`last heartbeat ${fmtDuration(now - node.last_beat)} ago`}>stale</span>`}
        <div class="muted small">${node.url}</div>
      </th>
      <td class="connections num"><${Load} connections=${node.connections} max=${node.max_connections} /></td>
      <td class="cpu num">${fmtPercent(node.cpu_percent)}</td>
      <td class="memory num">${fmtBytes(node.rss_bytes)}</td>
      <td class="events num">${fmtRate(node.events_per_sec)}</td>
      <td class="deliveries num">${fmtRate(node.deliveries_per_sec)}</td>
      <td class="uptime num">${fmtDuration(now - node.started_at)}</td>
    </tr>
  `;
}

/** The nodes table of an overview. */
export function NodesTable({ overview }) {
  const nodes = [...(overview.nodes ?? [])].sort((a, b) => a.id.localeCompare(b.id));
  const total = nodes.reduce((sum, n) => sum + n.connections, 0);
  return html`
    <section class="panel" aria-labelledby="nodes-title">
      <h2 id="nodes-title">Nodes <span class="count">${nodes.length}</span>
        <span class="muted small">${fmtInt(total)} connections</span></h2>
      <div class="scroll">
        <table class="nodes">
          <thead>
            <tr>
              <th scope="col">Node</th>
              <th scope="col" class="num">Connections / max</th>
              <th scope="col" class="num">CPU</th>
              <th scope="col" class="num">Memory</th>
              <th scope="col" class="num">Events/s</th>
              <th scope="col" class="num">Deliveries/s</th>
              <th scope="col" class="num">Uptime</th>
            </tr>
          </thead>
          <tbody>
            ${nodes.map((n) => html`<${Row} key=${n.id} node=${n} now=${overview.now} self=${overview.node} />`)}
          </tbody>
        </table>
      </div>
    </section>
  `;
}
