//! How events and memberships are written in `rooms.db`: an event's packets as one blob of length-prefixed
//! parts, a session's rooms as JSON.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes};

use crate::engineio::Outgoing;
use crate::hub::{EventPackets, RoomKey};
use crate::recovery::Membership;

const TEXT: u8 = b't';
const BINARY: u8 = b'b';

/// A stored value that could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable stored {0}")]
pub struct Unreadable(pub &'static str);

/// The packets of an event, each as a kind byte (`t` text, `b` binary), a 4-byte little-endian length and its
/// bytes. WebSocket pongs are never part of an event and are left out.
pub fn encode_packets(packets: &EventPackets) -> Vec<u8> {
    let size = packets.iter().map(|p| p.len() + 5).sum();
    let mut out = Vec::with_capacity(size);
    for packet in packets.iter() {
        let (kind, bytes) = match packet {
            Outgoing::Text(bytes) => (TEXT, bytes),
            Outgoing::Binary(bytes) => (BINARY, bytes),
            Outgoing::WsPong(_) => continue,
        };
        out.put_u8(kind);
        out.put_u32_le(bytes.len() as u32);
        out.put_slice(bytes);
    }
    out
}

/// Reads back what [`encode_packets`] wrote.
pub fn decode_packets(blob: Vec<u8>) -> Result<EventPackets, Unreadable> {
    let mut rest = Bytes::from(blob);
    let mut packets = Vec::new();
    while rest.has_remaining() {
        if rest.remaining() < 5 {
            return Err(Unreadable("event"));
        }
        let kind = rest.get_u8();
        let len = rest.get_u32_le() as usize;
        if rest.remaining() < len {
            return Err(Unreadable("event"));
        }
        let bytes = rest.split_to(len);
        packets.push(match kind {
            TEXT => Outgoing::Text(bytes),
            BINARY => Outgoing::Binary(bytes),
            _ => return Err(Unreadable("event")),
        });
    }
    Ok(Arc::from(packets))
}

/// A session's rooms as JSON `[[room, epoch, joined_seq], ...]`.
pub fn encode_rooms(rooms: &[Membership]) -> String {
    let rows: Vec<(&str, u64, u64)> = rooms
        .iter()
        .map(|m| (m.room(), m.epoch, m.joined_seq))
        .collect();
    serde_json::to_string(&rows).unwrap_or_else(|_| "[]".into())
}

/// Reads back what [`encode_rooms`] wrote, for a session of namespace `nsp`.
pub fn decode_rooms(nsp: &str, text: &str) -> Result<Vec<Membership>, Unreadable> {
    let rows: Vec<(String, u64, u64)> =
        serde_json::from_str(text).map_err(|_| Unreadable("session"))?;
    Ok(rows
        .into_iter()
        .map(|(room, epoch, joined_seq)| Membership {
            key: RoomKey::new(nsp, &room),
            epoch,
            joined_seq,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_round_trip() {
        let packets: EventPackets = Arc::from([
            Outgoing::Text(Bytes::from_static(
                b"451-[\"e\",{\"_placeholder\":true,\"num\":0},\"7\"]",
            )),
            Outgoing::Binary(Bytes::from_static(&[0, 1, 2, 255])),
            Outgoing::Binary(Bytes::new()),
        ]);
        let back = decode_packets(encode_packets(&packets)).unwrap();
        let bytes = |p: &EventPackets| -> Vec<(bool, Vec<u8>)> {
            p.iter()
                .map(|o| (matches!(o, Outgoing::Text(_)), o.as_bytes().to_vec()))
                .collect()
        };
        assert_eq!(bytes(&back), bytes(&packets));
    }

    #[test]
    fn truncated_or_unknown_blobs_are_refused() {
        let packets: EventPackets = Arc::from([Outgoing::Text(Bytes::from_static(b"42[\"e\"]"))]);
        let blob = encode_packets(&packets);
        for cut in 1..blob.len() {
            assert!(
                decode_packets(blob[..cut].to_vec()).is_err(),
                "cut at {cut}"
            );
        }
        let mut odd = blob.clone();
        odd[0] = b'x';
        assert!(decode_packets(odd).is_err());
    }

    #[test]
    fn rooms_round_trip() {
        let rooms = vec![
            Membership {
                key: RoomKey::new("/", "news"),
                epoch: (1 << 52) + 3,
                joined_seq: u64::from(u32::MAX) + 9,
            },
            Membership {
                key: RoomKey::new("/", "team:\"a\""),
                epoch: 1,
                joined_seq: 0,
            },
        ];
        assert_eq!(decode_rooms("/", &encode_rooms(&rooms)).unwrap(), rooms);
        assert!(decode_rooms("/", "{").is_err());
    }
}
