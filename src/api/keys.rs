//! The API key check: whether a presented key is one of the configured ones, in time that reveals neither how
//! much of a key was right, nor how long the keys are, nor which of them matched.

use std::fmt;

use ring::hmac;

/// The accepted API keys, kept only as HMAC-SHA256 tags under a key drawn at startup.
///
/// A presented key is tagged over its whole length, then its tag is compared with every configured key's tag,
/// all 32 bytes of each, without an early exit: the work is the same whether the key is right, half right, of
/// another length, or the first or last configured one. The random HMAC key means the tags themselves reveal
/// nothing an attacker could aim at.
pub struct ApiKeys {
    mac: hmac::Key,
    tags: Vec<[u8; TAG_LEN]>,
}

/// Bytes of an HMAC-SHA256 tag.
const TAG_LEN: usize = 32;

impl ApiKeys {
    /// Tags `keys` under a fresh random HMAC key.
    pub fn new(keys: &[String]) -> ApiKeys {
        let secret: [u8; 32] = rand::random();
        let mac = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        let tags = keys.iter().map(|k| tag(&mac, k.as_bytes())).collect();
        ApiKeys { mac, tags }
    }

    /// True when `presented` is one of the configured keys.
    pub fn accepts(&self, presented: &str) -> bool {
        let presented = tag(&self.mac, presented.as_bytes());
        let matched = self
            .tags
            .iter()
            .fold(0u8, |matched, known| matched | same_tag(known, &presented));
        matched == 1
    }

    /// How many keys are configured.
    pub fn len(&self) -> usize {
        self.tags.len()
    }

    /// True when no key is configured (every request is then refused).
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeys")
            .field("keys", &self.tags.len())
            .finish_non_exhaustive()
    }
}

fn tag(mac: &hmac::Key, bytes: &[u8]) -> [u8; TAG_LEN] {
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(hmac::sign(mac, bytes).as_ref());
    out
}

/// 1 when the tags are equal, else 0, without a data-dependent branch: the differences of all 32 bytes are
/// folded together, and the fold is hidden from the optimiser so it cannot stop at the first difference.
fn same_tag(a: &[u8; TAG_LEN], b: &[u8; TAG_LEN]) -> u8 {
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    // diff - 1 borrows into the high byte exactly when diff is 0.
    ((u16::from(std::hint::black_box(diff)).wrapping_sub(1) >> 8) & 1) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[&str]) -> ApiKeys {
        ApiKeys::new(&list.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn accepts_every_configured_key_and_nothing_else() {
        let k = keys(&["first-key-0123456789", "second-key-0123456789abcdef"]);
        assert_eq!(k.len(), 2);
        assert!(k.accepts("first-key-0123456789"));
        assert!(
            k.accepts("second-key-0123456789abcdef"),
            "not only the first"
        );
        for wrong in [
            "",
            "first-key-012345678",   // a prefix
            "first-key-0123456789x", // one byte longer
            "first-key-0123456788",  // last byte differs
            "Xirst-key-0123456789",  // first byte differs
            "second-key-0123456789abcdef first-key-0123456789",
        ] {
            assert!(!k.accepts(wrong), "{wrong:?}");
        }
        assert!(!keys(&[]).accepts(""), "no keys: nothing is accepted");
        assert!(keys(&[]).is_empty());
    }

    #[test]
    fn tags_are_compared_over_every_byte() {
        let a = [7u8; TAG_LEN];
        assert_eq!(same_tag(&a, &a), 1);
        for i in 0..TAG_LEN {
            for bit in 0..8 {
                let mut b = a;
                b[i] ^= 1 << bit;
                assert_eq!(same_tag(&a, &b), 0, "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn tags_do_not_depend_on_the_key_length_and_differ_per_process() {
        let short = keys(&["k"]);
        let long = keys(&[&"k".repeat(10_000)]);
        assert_eq!(short.tags[0].len(), long.tags[0].len());
        // Two instances tag the same key differently: the HMAC key is drawn at random.
        assert_ne!(keys(&["same"]).tags[0], keys(&["same"]).tags[0]);
        assert_eq!(format!("{short:?}"), "ApiKeys { keys: 1, .. }");
    }
}
