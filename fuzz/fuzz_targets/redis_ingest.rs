//! The Redis ingest message (`Tidings::publish_json`, what a node does with a message on
//! `<prefix>:publish`) on an embedded-mode application with the default limits. Never panics; in embedded mode
//! a message is either published or refused for its content, never "unavailable".
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidings::app::IngestError;

tidings_fuzz::cap_allocations!();

fuzz_target!(|data: &[u8]| {
    let app = tidings_fuzz::node::app();
    match tidings_fuzz::node::runtime().block_on(app.publish_json(data)) {
        Ok(_) | Err(IngestError::Refused(_)) => {}
        Err(error @ IngestError::Unavailable(_)) => {
            panic!("the embedded store refused a publish: {error}")
        }
    }
});
