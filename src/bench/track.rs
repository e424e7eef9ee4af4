//! What a churning client carries from one connection to the next: the session to resume (`pid` and the last
//! offset it received, both opaque strings sent back as they came) and the check that it gets every event of its
//! room exactly once and in order. The publisher numbers events with a global `seq` and sends event `seq` to room
//! `seq mod rooms`, one at a time per room, so room `k` expects `k, k + rooms, k + 2·rooms, …` in that order.

/// Gaps remembered per client; a late event of an older gap than these counts as a duplicate.
const MAX_GAPS: usize = 64;

/// What one received event was, for the room's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The next one expected.
    InOrder,
    /// Later than expected: the events in between (this many) were skipped; they count as missing until they
    /// come late.
    Gap(u64),
    /// One of the skipped events, arriving after a later one.
    Late,
    /// Received before, or not an event of this room's numbering.
    Duplicate,
}

/// One client's resume position and order check, kept across its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    /// Session id the server gave at the last CONNECT (`pid`), sent back to resume.
    pub pid: Option<String>,
    /// Offset argument of the last event received, sent back to resume.
    pub offset: Option<String>,
    /// Seq expected next.
    next: u64,
    /// Distance between two seqs of the room (the number of rooms).
    stride: u64,
    /// Skipped seqs not received yet: `[start, end)` ranges stepping by `stride`, oldest first.
    missing: Vec<(u64, u64)>,
}

impl Track {
    /// A client of the room whose first event is `first`, whose next ones come every `stride`.
    pub fn new(first: u64, stride: u64) -> Track {
        Track {
            pid: None,
            offset: None,
            next: first,
            stride: stride.max(1),
            missing: Vec::new(),
        }
    }

    /// Checks event `seq` against the room's order and notes it as received.
    pub fn check(&mut self, seq: u64) -> Verdict {
        if seq % self.stride != self.next % self.stride {
            return Verdict::Duplicate;
        }
        if seq == self.next {
            self.next += self.stride;
            return Verdict::InOrder;
        }
        if seq > self.next {
            let skipped = (seq - self.next) / self.stride;
            if self.missing.len() == MAX_GAPS {
                self.missing.remove(0);
            }
            self.missing.push((self.next, seq));
            self.next = seq + self.stride;
            return Verdict::Gap(skipped);
        }
        match self.missing.iter().position(|&(a, b)| a <= seq && seq < b) {
            Some(i) => {
                let (a, b) = self.missing[i];
                let after = (seq + self.stride, b);
                match (seq > a, after.0 < b) {
                    (true, true) => {
                        self.missing[i] = (a, seq);
                        self.missing.insert(i + 1, after);
                    }
                    (true, false) => self.missing[i] = (a, seq),
                    (false, true) => self.missing[i] = after,
                    (false, false) => {
                        self.missing.remove(i);
                    }
                }
                Verdict::Late
            }
            None => Verdict::Duplicate,
        }
    }

    /// Keeps `offset` as the position to resume from.
    pub fn note_offset(&mut self, offset: &str) {
        match &mut self.offset {
            Some(kept) => {
                kept.clear();
                kept.push_str(offset);
            }
            None => self.offset = Some(offset.to_owned()),
        }
    }

    /// The CONNECT auth resuming this session: `{"token":…, "pid":…, "offset":…}` (what socket.io-client sends),
    /// or only the token before the first CONNECT answer.
    pub fn connect_auth(&self, token: Option<&str>) -> serde_json::Value {
        let mut auth = serde_json::Map::new();
        if let Some(token) = token {
            auth.insert("token".into(), token.into());
        }
        if let Some(pid) = &self.pid {
            auth.insert("pid".into(), pid.as_str().into());
            if let Some(offset) = &self.offset {
                auth.insert("offset".into(), offset.as_str().into());
            }
        }
        serde_json::Value::Object(auth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_and_duplicates() {
        let mut t = Track::new(2, 5);
        assert_eq!(t.check(2), Verdict::InOrder);
        assert_eq!(t.check(7), Verdict::InOrder);
        assert_eq!(t.check(7), Verdict::Duplicate);
        assert_eq!(t.check(2), Verdict::Duplicate);
        // Another room's numbering.
        assert_eq!(t.check(13), Verdict::Duplicate);
        assert_eq!(t.check(12), Verdict::InOrder);
    }

    #[test]
    fn gaps_fill_late_once() {
        let mut t = Track::new(0, 1);
        assert_eq!(t.check(0), Verdict::InOrder);
        assert_eq!(t.check(5), Verdict::Gap(4)); // 1..=4 missing
        assert_eq!(t.check(3), Verdict::Late);
        assert_eq!(t.check(3), Verdict::Duplicate);
        assert_eq!(t.check(1), Verdict::Late);
        assert_eq!(t.check(4), Verdict::Late);
        assert_eq!(t.check(2), Verdict::Late);
        assert!(t.missing.is_empty());
        assert_eq!(t.check(2), Verdict::Duplicate);
        assert_eq!(t.check(6), Verdict::InOrder);
        let mut s = Track::new(1, 10);
        assert_eq!(s.check(41), Verdict::Gap(4)); // 1, 11, 21, 31
        assert_eq!(s.check(21), Verdict::Late);
        assert_eq!(s.missing, [(1, 21), (31, 41)]);
        assert_eq!(s.check(1), Verdict::Late);
        assert_eq!(s.check(31), Verdict::Late);
        assert_eq!(s.check(11), Verdict::Late);
        assert!(s.missing.is_empty());
    }

    #[test]
    fn old_gaps_are_forgotten_past_the_limit() {
        let mut t = Track::new(0, 1);
        for k in 0..=MAX_GAPS as u64 {
            assert_eq!(t.check(2 * k + 1), Verdict::Gap(1));
        }
        assert_eq!(t.missing.len(), MAX_GAPS);
        assert_eq!(t.check(0), Verdict::Duplicate, "the oldest gap was dropped");
        assert_eq!(t.check(2), Verdict::Late);
    }

    #[test]
    fn resume_auth() {
        let mut t = Track::new(0, 1);
        assert_eq!(
            t.connect_auth(Some("tok")),
            serde_json::json!({"token": "tok"})
        );
        t.pid = Some("p1".into());
        assert_eq!(
            t.connect_auth(Some("tok")),
            serde_json::json!({"token": "tok", "pid": "p1"})
        );
        t.note_offset("17");
        t.note_offset("1-2");
        assert_eq!(
            t.connect_auth(None),
            serde_json::json!({"pid": "p1", "offset": "1-2"})
        );
    }
}
