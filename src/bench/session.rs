//! One bench client at the Socket.IO level, whatever its transport: open → CONNECT with the token → `subscribe`
//! → live, answering pings and timing every `message` event. Pure: packets in, replies out, counts into the
//! [`Recorder`].

use std::fmt;

use serde::de::{self, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::stats::Recorder;

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
        let subscribe = format!(
            "42{SUBSCRIBE_ACK}[\"subscribe\",{}]",
            serde_json::Value::from(room)
        );
        Hello { connect, subscribe }
    }
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
}

impl SioClient {
    /// A client that will send `hello` as the handshake goes.
    pub fn new(hello: Hello) -> SioClient {
        SioClient {
            phase: Phase::Open,
            hello: Some(Box::new(hello)),
            last: None,
        }
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
        let order = event.offset.unwrap_or(seq);
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

/// What the bench reads from an event's arguments: `t` and `seq` of the data, and the offset argument.
#[derive(Debug, Default, PartialEq, Eq)]
struct EventArgs {
    t: Option<u64>,
    seq: Option<u64>,
    offset: Option<u64>,
}

/// The data object of a bench event; other fields (the padding) are skipped.
#[derive(Deserialize)]
struct EventData {
    t: Option<u64>,
    seq: Option<u64>,
}

impl<'de> Deserialize<'de> for EventArgs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ArgsVisitor;

        impl<'de> Visitor<'de> for ArgsVisitor {
            type Value = EventArgs;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event array [name, data, offset?]")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<EventArgs, A::Error> {
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
                    offset: offset.and_then(|o| o.parse().ok()),
                })
            }
        }

        deserializer.deserialize_seq(ArgsVisitor)
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
    fn event_args_parse() {
        let parse = |s: &str| serde_json::from_str::<EventArgs>(s).ok();
        assert_eq!(
            parse(r#"["message",{"t":1,"seq":2},"3"]"#),
            Some(EventArgs {
                t: Some(1),
                seq: Some(2),
                offset: Some(3)
            })
        );
        assert_eq!(
            parse(r#"["message",{"t":1},"x",4]"#),
            Some(EventArgs {
                t: Some(1),
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
