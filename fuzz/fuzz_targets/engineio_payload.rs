//! Engine.IO long-polling bodies (`decode_payload`, with the server's 1024-packet limit): never panics, and a
//! decoded body re-encodes (text as-is, binary as `b` + base64) to one that decodes to the same packets.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tidings::engineio::packet::Outgoing;
use tidings::engineio::payload::{decode_payload, encode_payload};

tidings_fuzz::cap_allocations!();

/// The limit the polling transport passes.
const MAX_PACKETS_PER_POST: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(packets) = decode_payload(Bytes::copy_from_slice(data), MAX_PACKETS_PER_POST) else {
        return;
    };
    assert!(!packets.is_empty() && packets.len() <= MAX_PACKETS_PER_POST);
    let outgoing: Vec<Outgoing> = packets.iter().map(|p| p.to_outgoing()).collect();
    let mut body = BytesMut::new();
    encode_payload(&outgoing, &mut body);
    let again =
        decode_payload(body.freeze(), MAX_PACKETS_PER_POST).expect("an encoded body decodes");
    assert_eq!(again, packets, "polling body round trip");
});
