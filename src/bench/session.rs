//! One bench client at the Socket.IO level, whatever its transport: open → CONNECT with the token → `subscribe`
//! → live, answering pings and timing every `message` event. A churning client carries a [`Track`]: its CONNECT
//! then asks to resume the previous session (`pid`, `offset`), a recovered session is live at once (its rooms
//! kept, its missed events replayed), and every event is checked against the room's order. Pure: packets in,
//! replies out, counts into the [`Recorder`].

use std::fmt;

use serde::de::{self, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::stats::Recorder;
use super::track::{Track, Verdict};

/// Ack id of the `subscribe` event a client emits.
const SUBSCRIBE_ACK: &str = "1";

/// The packets a client sends to get live; dropped once it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Engine.IO message carrying the Socket.IO CONNECT: `40` or `40{"token":…}`.
    pub connect: String,
    /// `421["subscribe","<room>"]`.
    pub subscribe: String,
}

impl Hello {
    /// The packets for a client of `room`, with `token` in the CONNECT auth when given.
    pub fn new(room: &str, token: Option<&str>) -> Hello {
        let connect = match token {
            Some(token) => format!("40{}", serde_json::json!({ "token": token })),
            None => "40".to_owned(),
        };
        Hello {
            connect,
            subscribe: subscribe_packet(room),
        }
    }

    /// The packets for a client of `room` whose CONNECT carries `auth` (token, and `pid` / `offset` to resume).
    pub fn with_auth(room: &str, auth: &serde_json::Value) -> Hello {
        Hello {
            connect: format!("40{auth}"),
            subscribe: subscribe_packet(room),
        }
    }
}

/// `421["subscribe","<room>"]`.
fn subscribe_packet(room: &str) -> String {
    format!(
        "42{SUBSCRIBE_ACK}[\"subscribe\",{}]",
        serde_json::Value::from(room)
    )
}

/// How the last CONNECT of a client went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connected {
    /// A new session (nothing to resume).
    Fresh,
    /// The previous session resumed: same `pid`, rooms kept, missed events replayed.
    Recovered,
    /// Resuming was asked but the server started a new session (the client subscribes again).
    NotRecovered,
}

/// Where a client is in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the Engine.IO open packet.
    Open,
    /// CONNECT sent, waiting for its answer.
    Connect,
    /// `subscribe` sent, waiting for its ack.
    Subscribe,
    /// Subscribed: counting events.
    Live,
}

/// What a packet did to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing the transport must act on.
    Continue,
    /// The subscribe ack arrived: the client now counts as connected.
    Live,
    /// The handshake failed (only before [`Step::Live`]).
    Failed(String),
    /// The server ended the session.
    Closed(&'static str),
}

/// The Socket.IO client state of one bench connection.
#[derive(Debug)]
pub struct SioClient {
    phase: Phase,
    hello: Option<Box<Hello>>,
    /// Offset of the last event (or its seq when events carry no offset); `None` before the first.
    last: Option<u64>,
    /// Resume position and order check of a churning client.
    track: Option<Box<Track>>,
    /// Whether the CONNECT under way asks to resume a session.
    resuming: bool,
    /// How the last CONNECT went.
    connected: Connected,
}

impl SioClient {
    /// A client that will send `hello` as the handshake goes.
    pub fn new(hello: Hello) -> SioClient {
        SioClient {
            phase: Phase::Open,
            hello: Some(Box::new(hello)),
            last: None,
            track: None,
            resuming: false,
            connected: Connected::Fresh,
        }
    }

    /// A churning client: `track` checks its room's order and keeps what it needs to resume.
    pub fn tracked(hello: Hello, track: Track) -> SioClient {
        SioClient {
            track: Some(Box::new(track)),
            ..SioClient::new(hello)
        }
    }

    /// Starts the handshake again on a new transport with `hello` (built from [`SioClient::connect_auth`]).
    pub fn restart(&mut self, hello: Hello) {
        self.phase = Phase::Open;
        self.hello = Some(Box::new(hello));
        self.resuming = self.track.as_ref().is_some_and(|t| t.pid.is_some());
    }

    /// The CONNECT auth for the next connection: the token, plus `pid` and `offset` once there is a session to
    /// resume.
    pub fn connect_auth(&self, token: Option<&str>) -> serde_json::Value {
        match &self.track {
            Some(track) => track.connect_auth(token),
            None => Track::new(0, 1).connect_auth(token),
        }
    }

    /// How the last CONNECT went.
    pub fn connected(&self) -> Connected {
        self.connected
    }

    /// Handles one Engine.IO text packet received at `now_us`; Engine.IO packets to send go to `replies`.
    pub fn on_packet(
        &mut self,
        packet: &[u8],
        now_us: u64,
        recorder: &Recorder,
        replies: &mut Vec<String>,
    ) -> Step {
        match (packet.first(), self.phase) {
            (Some(b'0'), Phase::Open) => {
                self.phase = Phase::Connect;
                replies.push(
                    self.hello
                        .as_ref()
                        .map_or_else(String::new, |h| h.connect.clone()),
                );
                Step::Continue
            }
            (_, Phase::Open) => Step::Failed("engine.io: no open packet".into()),
            (Some(b'1'), _) => Step::Closed("engine.io close"),
            (Some(b'2'), _) => {
                let mut pong = String::from_utf8_lossy(packet).into_owned();
                pong.replace_range(..1, "3");
                replies.push(pong);
                Step::Continue
            }
            (Some(b'4'), _) => self.on_message(&packet[1..], now_us, recorder, replies),
            (Some(b'3' | b'5' | b'6'), _) => Step::Continue,
            _ => {
                recorder.with(|t| t.bad_packets += 1);
                Step::Continue
            }
        }
    }

    /// Handles a Socket.IO packet (an Engine.IO message without its `4`).
    fn on_message(
        &mut self,
        sio: &[u8],
        now_us: u64,
        recorder: &Recorder,
        replies: &mut Vec<String>,
    ) -> Step {
        match (sio.first(), self.phase) {
            (Some(b'2'), _) if sio.get(1) == Some(&b'[') => {
                self.on_event(&sio[1..], now_us, recorder);
                Step::Continue
            }
            (Some(b'0'), Phase::Connect) => {
                if self.on_connect_reply(&sio[1..]) {
                    return Step::Live;
                }
                self.phase = Phase::Subscribe;
                replies.push(
                    self.hello
                        .as_ref()
                        .map_or_else(String::new, |h| h.subscribe.clone()),
                );
                Step::Continue
            }
            (Some(b'4'), Phase::Connect) => Step::Failed(connect_error(&sio[1..])),
            (Some(b'3'), Phase::Subscribe) => match sio[1..].strip_prefix(SUBSCRIBE_ACK.as_bytes())
            {
                Some(args) if ack_ok(args) => {
                    self.phase = Phase::Live;
                    self.hello = None;
                    Step::Live
                }
                Some(args) => Step::Failed(format!(
                    "subscribe refused: {}",
                    String::from_utf8_lossy(args)
                )),
                None => Step::Continue,
            },
            (Some(b'1'), _) => Step::Closed("socket.io disconnect"),
            // Other namespaces, acks of nothing we sent, binary events: not ours to count.
            _ => Step::Continue,
        }
    }

    /// Handles the CONNECT answer `{"sid":…,"pid":…}` of a tracked client; `true` when it resumed the session
    /// it asked for (then it is live at once: its rooms were kept).
    fn on_connect_reply(&mut self, payload: &[u8]) -> bool {
        let Some(track) = self.track.as_mut() else {
            return false;
        };
        #[derive(Deserialize)]
        struct Reply {
            pid: Option<String>,
        }
        let pid = serde_json::from_slice::<Reply>(payload)
            .ok()
            .and_then(|r| r.pid);
        let recovered = self.resuming && pid.is_some() && pid == track.pid;
        self.resuming = false;
        if recovered {
            self.connected = Connected::Recovered;
            self.phase = Phase::Live;
            self.hello = None;
            return true;
        }
        self.connected = if track.pid.is_some() {
            Connected::NotRecovered
        } else {
            Connected::Fresh
        };
        track.pid = pid;
        // A new session's offsets start over: resuming from the old one's would skip or repeat.
        track.offset = None;
        false
    }

    /// Counts one main-namespace event `["name",data,"offset"?]`.
    fn on_event(&mut self, args: &[u8], now_us: u64, recorder: &Recorder) {
        let Ok(event) = serde_json::from_slice::<EventArgs>(args) else {
            recorder.with(|t| t.bad_packets += 1);
            return;
        };
        let (Some(sent_us), Some(seq)) = (event.t, event.seq) else {
            recorder.with(|t| t.untimed += 1);
            return;
        };
        if let Some(track) = self.track.as_mut() {
            if let Some(offset) = event.offset {
                track.note_offset(offset);
            }
            let verdict = track.check(seq);
            let warmup = recorder.is_warmup(seq);
            recorder.with(|t| match verdict {
                Verdict::InOrder => t.record_delivery(now_us, sent_us, warmup),
                Verdict::Gap(skipped) => {
                    t.gaps += skipped;
                    t.record_delivery(now_us, sent_us, warmup);
                }
                Verdict::Late => {
                    t.gaps_filled += 1;
                    t.out_of_order += 1;
                    t.record_delivery(now_us, sent_us, warmup);
                }
                Verdict::Duplicate => t.duplicates += 1,
            });
            return;
        }
        let order = event.offset.and_then(order_of_offset).unwrap_or(seq);
        let previous = self.last.replace(order);
        let warmup = recorder.is_warmup(seq);
        recorder.with(|t| {
            match previous {
                Some(p) if p == order => t.duplicates += 1,
                Some(p) if p > order => t.out_of_order += 1,
                _ => {}
            }
            t.record_delivery(now_us, sent_us, warmup);
        });
        if previous.is_some_and(|p| p > order) {
            // Keep the highest seen, so one late event counts once, not every event after it.
            self.last = previous;
        }
    }

    /// Whether the subscribe ack arrived.
    pub fn is_live(&self) -> bool {
        self.phase == Phase::Live
    }

    /// The answer being waited for, for a timeout's reason.
    pub fn waiting_for(&self) -> &'static str {
        match self.phase {
            Phase::Open => "engine.io open",
            Phase::Connect => "socket.io connect",
            Phase::Subscribe => "subscribe ack",
            Phase::Live => "nothing",
        }
    }
}

/// `true` when the ack arguments `[{"ok":true,…}]` say yes.
fn ack_ok(args: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Answer {
        ok: bool,
    }
    serde_json::from_slice::<(Answer,)>(args).is_ok_and(|(a,)| a.ok)
        || serde_json::from_slice::<Vec<serde_json::Value>>(args)
            .is_ok_and(|v| v.first().and_then(|a| a.get("ok")) == Some(&true.into()))
}

/// A readable reason from a CONNECT_ERROR payload `{"message":…}`.
fn connect_error(payload: &[u8]) -> String {
    let message = serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned));
    match message {
        Some(message) => format!("socket.io connect error: {message}"),
        None => format!(
            "socket.io connect error: {}",
            String::from_utf8_lossy(payload)
        ),
    }
}

/// What the bench reads from an event's arguments: `t` and `seq` of the data, and the offset argument (an opaque
/// string to a client; the order check without a [`Track`] reads a number from it with `order_of_offset`).
#[derive(Debug, Default, PartialEq, Eq)]
struct EventArgs<'a> {
    t: Option<u64>,
    seq: Option<u64>,
    offset: Option<&'a str>,
}

/// The data object of a bench event; other fields (the padding) are skipped.
#[derive(Deserialize)]
struct EventData {
    t: Option<u64>,
    seq: Option<u64>,
}

impl<'de> Deserialize<'de> for EventArgs<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ArgsVisitor;

        impl<'de> Visitor<'de> for ArgsVisitor {
            type Value = EventArgs<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event array [name, data, offset?]")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<EventArgs<'de>, A::Error> {
                let _name: &str = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let data: Option<Option<EventData>> = seq.next_element()?;
                let offset: Option<&'de str> = seq.next_element()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                let data = data.flatten();
                Ok(EventArgs {
                    t: data.as_ref().and_then(|d| d.t),
                    seq: data.as_ref().and_then(|d| d.seq),
                    offset,
                })
            }
        }

        deserializer.deserialize_seq(ArgsVisitor)
    }
}

/// A number that grows with every event a client receives, from its offset: the offset itself from one Redis or
/// an embedded node; the sum of the positions of a partitioned cluster's offset vector, which grows in the
/// event's partition and never falls in the others while the client stays on one node.
fn order_of_offset(text: &str) -> Option<u64> {
    match text.parse() {
        Ok(seq) => Some(seq),
        Err(_) => crate::cluster::partition::positions_of(text)
            .map(|positions| positions.iter().fold(0u64, |sum, p| sum.saturating_add(*p))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live_client(recorder: &Recorder) -> SioClient {
        let mut client = SioClient::new(Hello::new("bench-0", Some("tok")));
        let mut replies = Vec::new();
        assert_eq!(
            client.on_packet(b"0{\"sid\":\"x\"}", 0, recorder, &mut replies),
            Step::Continue
        );
        assert_eq!(
            client.on_packet(b"40{\"sid\":\"y\"}", 0, recorder, &mut replies),
            Step::Continue
        );
        assert_eq!(
            client.on_packet(b"431[{\"ok\":true}]", 0, recorder, &mut replies),
            Step::Live
        );
        assert_eq!(
            replies,
            ["40{\"token\":\"tok\"}", "421[\"subscribe\",\"bench-0\"]"]
        );
        assert!(client.is_live() && client.hello.is_none());
        client
    }

    #[test]
    fn handshake_and_pings() {
        let rec = Recorder::new(1, 0);
        let mut client = live_client(&rec);
        let mut replies = Vec::new();
        assert_eq!(
            client.on_packet(b"2", 0, &rec, &mut replies),
            Step::Continue
        );
        assert_eq!(
            client.on_packet(b"2probe", 0, &rec, &mut replies),
            Step::Continue
        );
        assert_eq!(replies, ["3", "3probe"]);
        assert_eq!(
            client.on_packet(b"1", 0, &rec, &mut replies),
            Step::Closed("engine.io close")
        );
        assert_eq!(
            client.on_packet(b"41", 0, &rec, &mut replies),
            Step::Closed("socket.io disconnect")
        );
    }

    #[test]
    fn handshake_failures() {
        let rec = Recorder::new(1, 0);
        let mut replies = Vec::new();
        let mut client = SioClient::new(Hello::new("r", None));
        assert!(matches!(
            client.on_packet(b"40", 0, &rec, &mut replies),
            Step::Failed(_)
        ));
        let mut client = SioClient::new(Hello::new("r", None));
        client.on_packet(b"0{}", 0, &rec, &mut replies);
        assert_eq!(replies, ["40"]);
        assert_eq!(
            client.on_packet(b"44{\"message\":\"unauthorized\"}", 0, &rec, &mut replies),
            Step::Failed("socket.io connect error: unauthorized".into())
        );
        let mut client = SioClient::new(Hello::new("r", None));
        client.on_packet(b"0{}", 0, &rec, &mut replies);
        client.on_packet(b"40{}", 0, &rec, &mut replies);
        assert_eq!(
            client.on_packet(
                b"431[{\"ok\":false,\"error\":\"forbidden\"}]",
                0,
                &rec,
                &mut replies
            ),
            Step::Failed("subscribe refused: [{\"ok\":false,\"error\":\"forbidden\"}]".into())
        );
    }

    #[test]
    fn events_are_timed_and_checked() {
        let rec = Recorder::new(1, 2);
        let mut client = live_client(&rec);
        let mut replies = Vec::new();
        let mut event = |json: &str, now: u64| {
            let packet = format!("42{json}");
            assert_eq!(
                client.on_packet(packet.as_bytes(), now, &rec, &mut replies),
                Step::Continue
            );
        };
        event(r#"["message",{"t":100,"seq":0},"1"]"#, 150); // warm-up
        event(r#"["message",{"t":100,"seq":2,"pad":"xx"},"3"]"#, 1_100);
        event(r#"["message",{"t":100,"seq":2},"3"]"#, 1_200); // duplicate offset
        event(r#"["message",{"t":200,"seq":4},"5"]"#, 2_200);
        event(r#"["message",{"t":300,"seq":3},"4"]"#, 2_300); // late
        event(r#"["message",{"t":400,"seq":6},"7"]"#, 2_400); // in order again
        event(r#"["message",{"t":500,"seq":7}]"#, 2_500); // no offset: ordered by seq, 7 again
        event(r#"["other",{"x":1}]"#, 0); // untimed
        event(r#"["message"#, 0); // bad
        let t = rec.snapshot();
        assert_eq!(t.warmup_deliveries, 1);
        assert_eq!(t.deliveries, 6);
        assert_eq!((t.duplicates, t.out_of_order), (2, 1));
        assert_eq!((t.untimed, t.bad_packets), (1, 1));
        assert_eq!(t.first_delivery_us, 1_100);
        assert!((1_999..=2_001).contains(&t.latency.max()));
    }

    #[test]
    fn churning_client_resumes_and_checks_order() {
        let rec = Recorder::new(2, 0);
        let mut client = SioClient::tracked(Hello::new("bench-1", Some("tok")), Track::new(1, 2));
        let mut replies = Vec::new();
        client.on_packet(b"0{}", 0, &rec, &mut replies);
        client.on_packet(br#"40{"sid":"s1","pid":"p1"}"#, 0, &rec, &mut replies);
        assert_eq!(client.connected(), Connected::Fresh);
        assert_eq!(
            client.on_packet(b"431[{\"ok\":true}]", 0, &rec, &mut replies),
            Step::Live
        );
        let event = |client: &mut SioClient, json: &str| {
            client.on_packet(format!("42{json}").as_bytes(), 10, &rec, &mut Vec::new());
        };
        event(&mut client, r#"["message",{"t":1,"seq":1},"a1"]"#);
        event(&mut client, r#"["message",{"t":1,"seq":3},"a3"]"#);
        // The transport drops: the CONNECT asks for the session and the last offset.
        let auth = client.connect_auth(Some("tok"));
        assert_eq!(
            auth,
            serde_json::json!({"token": "tok", "pid": "p1", "offset": "a3"})
        );
        client.restart(Hello::with_auth("bench-1", &auth));
        let mut replies = Vec::new();
        client.on_packet(b"0{}", 0, &rec, &mut replies);
        assert_eq!(replies[0], format!("40{auth}"));
        // Same pid back: recovered and live at once; the replay is counted, a repeated event is a duplicate.
        assert_eq!(
            client.on_packet(br#"40{"sid":"s1","pid":"p1"}"#, 0, &rec, &mut replies),
            Step::Live
        );
        assert_eq!(client.connected(), Connected::Recovered);
        event(&mut client, r#"["message",{"t":1,"seq":5},"a5"]"#);
        event(&mut client, r#"["message",{"t":1,"seq":5},"a5"]"#);
        // Another drop, and this time the server starts a new session: the client subscribes again and the
        // events published meanwhile are a gap, one of which comes late.
        client.restart(Hello::with_auth(
            "bench-1",
            &client.connect_auth(Some("tok")),
        ));
        let mut replies = Vec::new();
        client.on_packet(b"0{}", 0, &rec, &mut replies);
        assert_eq!(
            client.on_packet(br#"40{"sid":"s2","pid":"p2"}"#, 0, &rec, &mut replies),
            Step::Continue
        );
        assert_eq!(client.connected(), Connected::NotRecovered);
        assert_eq!(replies[1], r#"421["subscribe","bench-1"]"#);
        client.on_packet(b"431[{\"ok\":true}]", 0, &rec, &mut replies);
        event(&mut client, r#"["message",{"t":1,"seq":11},"b1"]"#);
        event(&mut client, r#"["message",{"t":1,"seq":7},"a7"]"#);
        assert_eq!(
            client.connect_auth(None),
            serde_json::json!({"pid": "p2", "offset": "a7"})
        );
        let t = rec.snapshot();
        assert_eq!(
            t.deliveries, 5,
            "1, 3, 5, 11 and the late 7; the repeated 5 is not a delivery"
        );
        assert_eq!(
            (t.duplicates, t.gaps, t.gaps_filled, t.out_of_order),
            (1, 2, 1, 1)
        );
    }

    #[test]
    fn event_args_parse() {
        fn parse(s: &str) -> Option<EventArgs<'_>> {
            serde_json::from_str(s).ok()
        }
        assert_eq!(
            parse(r#"["message",{"t":1,"seq":2},"3"]"#),
            Some(EventArgs {
                t: Some(1),
                seq: Some(2),
                offset: Some("3")
            })
        );
        assert_eq!(
            parse(r#"["message",{"t":1},"x",4]"#),
            Some(EventArgs {
                t: Some(1),
                offset: Some("x"),
                ..EventArgs::default()
            })
        );
        assert_eq!(parse(r#"["message"]"#), Some(EventArgs::default()));
        assert_eq!(parse(r#"["message",null]"#), Some(EventArgs::default()));
        assert_eq!(parse(r#"[]"#), None);
        assert_eq!(parse(r#"{"a":1}"#), None);
    }

    #[test]
    fn hello_packets() {
        let hello = Hello::new("a\"b", None);
        assert_eq!(hello.connect, "40");
        assert_eq!(hello.subscribe, r#"421["subscribe","a\"b"]"#);
    }
}
