//! Encoding a room event once, as the Engine.IO packets every recipient gets.

use bytes::BytesMut;

use super::{Event, EventPackets};
use crate::engineio::Outgoing;
use crate::socketio::packet::{encode_binary_event, encode_event};

/// `42/nsp,["name",data,"<seq>"]` (offset only with recovery on), plus binary attachments if any.
pub fn encode_room_event(event: &Event<'_>, seq: u64) -> EventPackets {
    encode_room_event_at(event, &seq.to_string())
}

/// [`encode_room_event`] with the offset given as its text (a partitioned cluster's offset vector).
pub fn encode_room_event_at(event: &Event<'_>, offset: &str) -> EventPackets {
    let offset = format!("\"{offset}\"");
    let mut args: Vec<&[u8]> = vec![event.data];
    if event.with_offset {
        args.push(offset.as_bytes());
    }
    let mut out =
        BytesMut::with_capacity(event.data.len() + event.name.len() + event.nsp.len() + 64);
    if event.attachments.is_empty() {
        encode_event(event.nsp, None, event.name, &args, &mut out);
        return std::sync::Arc::from([Outgoing::Text(exact(out))]);
    }
    encode_binary_event(
        event.nsp,
        None,
        event.name,
        &args,
        event.attachments.len(),
        &mut out,
    );
    let mut packets = Vec::with_capacity(1 + event.attachments.len());
    packets.push(Outgoing::Text(exact(out)));
    packets.extend(event.attachments.iter().cloned().map(Outgoing::Binary));
    packets.into()
}

/// The packet in an allocation of exactly its size: it may stay in history for minutes, so slack in the encode
/// buffer would be paid for every stored event (one copy per publish, not per recipient).
fn exact(buf: BytesMut) -> bytes::Bytes {
    if buf.capacity() - buf.len() > 16 {
        bytes::Bytes::copy_from_slice(&buf)
    } else {
        buf.freeze()
    }
}
