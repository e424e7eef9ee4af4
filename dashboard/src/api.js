// Calls to the node: the overview the page polls and the publish form's POST, each with `Bearer <key>`.

/** Where the page polls the cluster's state. */
export const OVERVIEW_PATH = '/dashboard/api/overview';
/** The HTTP publish endpoint the publish form uses. */
export const PUBLISH_PATH = '/v1/publish';

const TIMEOUT_MS = 10_000;

/** A refused or failed call: HTTP `status` (0 when the node could not be reached) and the error's code. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }

  /** The node refused the key (401) or what it allows (403). */
  get refused() {
    return this.status === 401 || this.status === 403;
  }
}

/** Reads an answer's JSON body; null when it has none or it is not JSON. */
async function readJson(res) {
  const text = await res.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** The message of an error body `{error: {code, message}}`, or a description of the status. */
function errorOf(status, body) {
  const code = body?.error?.code ?? `http_${status}`;
  const message = body?.error?.message ?? `HTTP ${status}`;
  return new ApiError(status, code, message);
}

async function call(path, key, init = {}) {
  try {
    return await fetch(path, {
      ...init,
      headers: { ...init.headers, authorization: `Bearer ${key}` },
      cache: 'no-store',
      signal: init.signal ?? AbortSignal.timeout(TIMEOUT_MS),
    });
  } catch (err) {
    if (err?.name === 'AbortError') throw err;
    throw new ApiError(0, 'unreachable', `the node did not answer (${err?.message ?? err})`);
  }
}

/** GET the overview; throws ApiError for any answer but 200. */
export async function fetchOverview(key, signal) {
  const res = await call(OVERVIEW_PATH, key, { signal });
  const body = await readJson(res);
  if (!res.ok || body === null) throw errorOf(res.status, body);
  return body;
}

/**
 * POST `{room, event, data}` to the publish endpoint. Resolves with `{status, body, text}` whatever the status:
 * the form shows the node's answer as it is.
 */
export async function publishEvent(key, payload) {
  const res = await call(PUBLISH_PATH, key, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(payload),
  });
  const text = await res.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  return { status: res.status, body, text };
}
