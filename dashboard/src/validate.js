// The publish form's checks, made before anything is sent: a room, an event name and data that parses as JSON.

/**
 * Checks the form's fields (strings as typed). Returns `{errors, payload}`: `errors` maps a field to what is
 * wrong with it (empty when all is well), `payload` is the body to POST (`{room, event, data}`) or null.
 */
export function checkPublish({ room, event, data }) {
  const errors = {};
  const r = room.trim();
  const e = event.trim();
  if (!r) errors.room = 'A room is required.';
  if (!e) errors.event = 'An event name is required.';
  let parsed;
  if (!data.trim()) {
    errors.data = 'Data is required: any JSON value, e.g. {} or "text".';
  } else {
    try {
      parsed = JSON.parse(data);
    } catch (err) {
      errors.data = `Not valid JSON: ${err.message}`;
    }
  }
  const ok = Object.keys(errors).length === 0;
  return { errors, payload: ok ? { room: r, event: e, data: parsed } : null };
}
