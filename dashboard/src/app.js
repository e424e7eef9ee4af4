// The dashboard: the key form until the node accepts a key, then the overview (polled every 2 s while the tab
// is visible) and the publish form.

import { html } from 'htm/preact';
import { useCallback, useMemo, useState } from 'preact/hooks';
import { fetchOverview } from './api.js';
import { forgetKey, loadKey, saveKey } from './key.js';
import { usePolling } from './poller.js';
import { addSample } from './samples.js';
import { KeyForm } from './components/key-form.js';
import { Header } from './components/header.js';
import { Charts } from './components/charts.js';
import { NodesTable } from './components/nodes-table.js';
import { TopRooms } from './components/top-rooms.js';
import { Disconnects } from './components/disconnects.js';
import { PublishForm } from './components/publish-form.js';

/** Time between two polls of the overview. */
export const POLL_MS = 2000;

/** The whole page. */
export function App() {
  const [key, setKey] = useState(loadKey);
  const [keyError, setKeyError] = useState(null);
  const [overview, setOverview] = useState(null);
  const [samples, setSamples] = useState([]);
  const [trouble, setTrouble] = useState(null);

  const signOut = useCallback((message = null) => {
    forgetKey();
    setKey(null);
    setKeyError(message);
    setOverview(null);
    setSamples([]);
    setTrouble(null);
  }, []);

  const poll = useCallback(
    async (signal) => {
      try {
        const ov = await fetchOverview(key, signal);
        setOverview(ov);
        setSamples((prev) => addSample(prev, ov));
        setTrouble(null);
      } catch (err) {
        if (err?.name === 'AbortError') throw err;
        if (err.refused) signOut(`${err.message} (HTTP ${err.status})`);
        else setTrouble(err.message);
      }
    },
    [key, signOut],
  );
  usePolling(poll, POLL_MS, key !== null, key);

  const signIn = useCallback((k) => {
    saveKey(k);
    setKeyError(null);
    setKey(k);
  }, []);

  const content = useMemo(() => {
    if (!overview) return html`<p class="loading" role="status">Loading the cluster's state…</p>`;
    return html`
      <${Charts} samples=${samples} />
      <${NodesTable} overview=${overview} />
      <div class="columns">
        <${TopRooms} rooms=${overview.rooms} />
        <${Disconnects} disconnects=${overview.disconnects} />
      </div>
    `;
  }, [overview, samples]);

  if (key === null) return html`<${KeyForm} error=${keyError} onSubmit=${signIn} />`;
  return html`
    <${Header} overview=${overview} trouble=${trouble} onSignOut=${() => signOut()} />
    <main id="main">
      ${content}
      <${PublishForm} apiKey=${key} />
    </main>
  `;
}
