//! JWT verification (`Authenticator::verify`, HS256 with `exp` required, as configured by default) of
//! arbitrary token strings, and of correctly signed tokens whose header and claims JSON are arbitrary, so that
//! the claims parser (`rooms`/`join`/`publish` lists, numeric dates, room patterns) is reached past the
//! signature. Never panics; an accepted token's claims obey the room rules.
//!
//! Input: `C` + claims JSON (signed with a standard header), `H` + header JSON + `0xFF` + claims JSON (both
//! signed as given), anything else is the token string itself.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use tidings::auth::{validate_room_name, Authenticator};
use tidings_fuzz::node::{config, SECRET};

tidings_fuzz::cap_allocations!();

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| Authenticator::new(&config().auth).expect("the secret is set"))
}

/// `header.claims.signature`, signed with the node's secret whatever the header says.
fn signed(header: &[u8], claims: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256)
        .expect("HS256 signs");
    format!("{message}.{signature}")
}

fuzz_target!(|data: &[u8]| {
    let token = match data.split_first() {
        Some((b'C', claims)) => signed(br#"{"alg":"HS256","typ":"JWT"}"#, claims),
        Some((b'H', rest)) => {
            let mut parts = rest.splitn(2, |&b| b == 0xFF);
            let header = parts.next().unwrap_or_default();
            signed(header, parts.next().unwrap_or_default())
        }
        _ => String::from_utf8_lossy(data).into_owned(),
    };
    let Ok(claims) = authenticator().verify(&token) else {
        return;
    };
    assert!(!claims.sub().is_empty(), "an accepted token names its user");
    assert!(claims.expires_at().is_some(), "exp is required by default");
    validate_room_name(&claims.personal_room()).expect("the personal room is a valid room");
    for room in claims.auto_join() {
        validate_room_name(room).expect("rooms joined at connect are valid");
        assert!(
            claims.may_join(room),
            "rooms joined at connect may be joined"
        );
    }
});
