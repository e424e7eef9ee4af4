// The publisher: RATE events a second round-robin over the rooms through the balancer's POST /v1/publish, each
// with the room's next sequence number in its data. A room's publishes go one after the other (the next waits
// for the previous answer), so the order sent is the order clients must see. A failed publish (network error,
// timeout, non-2xx) is sent again with the same Idempotency-Key, so a retry of an event that did go through is
// answered as a repeat instead of being published twice.

const ATTEMPTS = 12;
const TIMEOUT_MS = 3000;

export class Publisher {
  /** `base`: the balancer's URL; `apiKey`; `rooms`: how many rooms; `rate`: events a second; `runId`: key prefix. */
  constructor({ base, apiKey, rooms, rate, runId }) {
    Object.assign(this, { base, apiKey, rooms, rate, runId });
    this.chains = Array.from({ length: rooms }, () => Promise.resolve());
    this.nextSeq = new Array(rooms).fill(0);
    /** Per room, the sequence numbers answered 2xx. */
    this.accepted = Object.fromEntries(Array.from({ length: rooms }, (_, r) => [`roll-${r}`, []]));
    this.counts = { sent: 0, accepted: 0, retries: 0, failed: 0, repeats: 0, statuses: {} };
    this.answerMs = [];
    this.timer = null;
  }

  /** Starts sending; `stop` ends it and resolves once every publish has its final answer. */
  start() {
    const started = Date.now();
    let i = 0;
    const tick = () => {
      const due = Math.floor(((Date.now() - started) * this.rate) / 1000);
      for (; i < due; i++) this.enqueue(i % this.rooms);
      this.timer = setTimeout(tick, 5);
    };
    tick();
  }

  async stop() {
    clearTimeout(this.timer);
    await Promise.all(this.chains);
  }

  enqueue(r) {
    const seq = ++this.nextSeq[r];
    this.counts.sent++;
    this.chains[r] = this.chains[r].then(() => this.publish(r, seq));
  }

  async publish(r, seq) {
    const room = `roll-${r}`;
    const body = JSON.stringify({ room, event: "ev", data: { seq, t: Date.now() } });
    const key = `${this.runId}-${room}-${seq}`;
    const t0 = Date.now();
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      if (attempt > 0) {
        this.counts.retries++;
        await new Promise((resolve) => setTimeout(resolve, Math.min(1000, 50 * 2 ** attempt)));
      }
      let status = "network";
      try {
        const res = await fetch(`${this.base}/v1/publish`, {
          method: "POST",
          headers: {
            authorization: `Bearer ${this.apiKey}`,
            "content-type": "application/json",
            "idempotency-key": key,
          },
          body,
          signal: AbortSignal.timeout(TIMEOUT_MS),
        });
        status = String(res.status);
        const answer = await res.json().catch(() => ({}));
        if (res.ok) {
          if (answer.repeated === true || answer.repeat === true) this.counts.repeats++;
          this.counts.accepted++;
          this.accepted[room].push(seq);
          this.answerMs.push(Date.now() - t0);
          return;
        }
      } catch (err) {
        status = err?.name === "TimeoutError" ? "timeout" : "network";
      }
      this.counts.statuses[status] = (this.counts.statuses[status] ?? 0) + 1;
    }
    this.counts.failed++;
  }
}
