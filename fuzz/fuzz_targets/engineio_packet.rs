//! Engine.IO text packets (`Packet::decode_text`): never panics, and what decodes re-encodes to bytes that
//! decode to the same packet.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tidings::engineio::packet::Packet;

tidings_fuzz::cap_allocations!();

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Packet::decode_text(Bytes::copy_from_slice(data)) else {
        return;
    };
    let mut out = BytesMut::new();
    packet.encode_text(&mut out);
    let again = Packet::decode_text(out.freeze()).expect("an encoded packet decodes");
    assert_eq!(again, packet, "text packet round trip");
});
