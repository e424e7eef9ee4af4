//! Encoding a room event once, as the Engine.IO packets every recipient gets.

use bytes::BytesMut;

use super::{Event, EventPackets};
use crate::engineio::Outgoing;
use crate::socketio::packet::{encode_binary_event, encode_event};

/// `42/nsp,["name",data,"<seq>"]` (offset only with recovery on), plus binary attachments if any.
pub fn encode_room_event(event: &Event<'_>, seq: u64) -> EventPackets {
    let offset = format!("\"{seq}\"");
    let mut args: Vec<&[u8]> = vec![event.data];
    if event.with_offset {
        args.push(offset.as_bytes());
    }
    let mut out =
        BytesMut::with_capacity(event.data.len() + event.name.len() + event.nsp.len() + 32);
    if event.attachments.is_empty() {
        encode_event(event.nsp, None, event.name, &args, &mut out);
        return std::sync::Arc::from([Outgoing::Text(out.freeze())]);
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
    packets.push(Outgoing::Text(out.freeze()));
    packets.extend(event.attachments.iter().cloned().map(Outgoing::Binary));
    packets.into()
}
