// The key the dashboard sends (an API key or an admin key), kept for the browser tab only (sessionStorage).

const STORAGE_KEY = 'tidings.dashboard.key';

/** The key this tab signed in with, or null. */
export function loadKey() {
  try {
    return sessionStorage.getItem(STORAGE_KEY) || null;
  } catch {
    return null; // storage disabled: the key lives as long as the page
  }
}

/** Remembers `key` for this tab. */
export function saveKey(key) {
  try {
    sessionStorage.setItem(STORAGE_KEY, key);
  } catch {
    /* storage disabled */
  }
}

/** Forgets the key (signing out, or the node refused it). */
export function forgetKey() {
  try {
    sessionStorage.removeItem(STORAGE_KEY);
  } catch {
    /* storage disabled */
  }
}
