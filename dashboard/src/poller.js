// Calls a function every interval while the tab is visible: hidden tabs make no requests, and a tab that
// becomes visible again polls at once.

import { useEffect, useRef } from 'preact/hooks';

/**
 * Runs `poll(signal)` now and then `intervalMs` after each call settles, while `enabled` and the document is
 * visible. A new `restartKey` (e.g. another key) starts over; an in-flight call is aborted on unmount or hide.
 */
export function usePolling(poll, intervalMs, enabled, restartKey) {
  const latest = useRef(poll);
  latest.current = poll;

  useEffect(() => {
    if (!enabled) return undefined;
    let stopped = false;
    let running = false;
    let timer = null;
    let controller = null;

    const schedule = () => {
      clearTimeout(timer);
      if (!stopped && !document.hidden) timer = setTimeout(tick, intervalMs);
    };
    async function tick() {
      if (stopped || running || document.hidden) return;
      running = true;
      controller = new AbortController();
      try {
        await latest.current(controller.signal);
      } catch (err) {
        if (err?.name !== 'AbortError') console.warn('dashboard poll failed', err);
      } finally {
        running = false;
        controller = null;
        schedule();
      }
    }
    const onVisibility = () => {
      if (document.hidden) {
        clearTimeout(timer);
        controller?.abort();
      } else {
        tick();
      }
    };
    document.addEventListener('visibilitychange', onVisibility);
    tick();
    return () => {
      stopped = true;
      clearTimeout(timer);
      controller?.abort();
      document.removeEventListener('visibilitychange', onVisibility);
    };
  }, [enabled, intervalMs, restartKey]);
}
