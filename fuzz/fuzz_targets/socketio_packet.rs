//! Socket.IO packets (`Packet::decode`, then `event_args`, `check_placeholders` and `nesting_depth` on the
//! payload, as the client path runs them): never panics, and a decoded packet re-encodes to text that decodes
//! to the same packet.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tidings::socketio::packet::{
    check_placeholders, event_args, nesting_depth, Packet, PacketKind,
};

tidings_fuzz::cap_allocations!();

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Packet::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    let payload = packet.data.clone().unwrap_or_default();
    if packet.kind.carries_event_data() {
        let _ = check_placeholders(&payload, packet.attachments);
    }
    if matches!(packet.kind, PacketKind::Event | PacketKind::BinaryEvent) {
        if let Ok((_name, args)) = event_args(&payload) {
            for arg in &args {
                assert!(
                    nesting_depth(arg) <= nesting_depth(&payload),
                    "an argument is inside the payload"
                );
            }
        }
    }
    let mut out = BytesMut::new();
    packet.encode(&mut out);
    let again = Packet::decode(out.freeze()).expect("an encoded packet decodes");
    assert_eq!(again, packet, "socket.io packet round trip");
});
