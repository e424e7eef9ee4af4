//! Secrets: generating the ones a server cannot run without, and keeping configured ones out of logs.

use std::fmt;

use super::Config;

/// A secret that [`Config::ensure_secrets`] had to invent because none was configured.
#[derive(Clone, PartialEq, Eq)]
pub enum GeneratedSecret {
    /// A random HS256 secret (64 hex digits), now in `auth.jwt_secret`.
    JwtSecret(String),
    /// A random API key (64 hex digits), now in `api.keys`.
    ApiKey(String),
}

impl GeneratedSecret {
    /// What the secret is, for the warning: `JWT secret` or `API key`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::JwtSecret(_) => "JWT secret",
            Self::ApiKey(_) => "API key",
        }
    }

    /// The generated value.
    pub fn value(&self) -> &str {
        match self {
            Self::JwtSecret(v) | Self::ApiKey(v) => v,
        }
    }
}

/// `JWT secret: <value>` — the line the server's warning shows (deliberately revealing the value).
impl fmt::Display for GeneratedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name(), self.value())
    }
}

impl fmt::Debug for GeneratedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GeneratedSecret({})", self.name())
    }
}

impl Config {
    /// Generates what a server cannot run without: a JWT secret when neither a secret nor a public key is set, and an
    /// API key when none is. Returns what was generated so the caller can warn loudly and show the values.
    pub fn ensure_secrets(&mut self) -> Vec<GeneratedSecret> {
        let mut generated = Vec::new();
        if self.auth.secret().is_none() && self.auth.public_key_path().is_none() {
            self.auth.jwt_secret = random_hex_32();
            generated.push(GeneratedSecret::JwtSecret(self.auth.jwt_secret.clone()));
        }
        if self.api.keys.is_empty() {
            let key = random_hex_32();
            self.api.keys.push(key.clone());
            generated.push(GeneratedSecret::ApiKey(key));
        }
        generated
    }
}

/// 32 random bytes from the thread-local CSPRNG, as 64 lowercase hex digits.
fn random_hex_32() -> String {
    use std::fmt::Write as _;
    let bytes: [u8; 32] = rand::random();
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// What a `Debug` dump shows for a secret: `<redacted>`, or nothing when it is unset.
pub(super) fn redacted(secret: &str) -> &'static str {
    if secret.is_empty() {
        ""
    } else {
        "<redacted>"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensure_secrets_generates_only_what_is_missing() {
        let mut c = Config::default();
        let generated = c.ensure_secrets();
        assert_eq!(generated.len(), 2);
        assert_eq!(generated[0].name(), "JWT secret");
        assert_eq!(generated[0].value(), c.auth.jwt_secret);
        assert_eq!(generated[1].name(), "API key");
        assert_eq!(c.api.keys, [generated[1].value()]);
        for g in &generated {
            assert_eq!(g.value().len(), 64);
            assert!(g.value().chars().all(|ch| ch.is_ascii_hexdigit()));
        }
        assert_ne!(generated[0].value(), generated[1].value());
        assert_eq!(
            generated[1].to_string(),
            format!("API key: {}", generated[1].value())
        );
        assert_eq!(format!("{:?}", generated[0]), "GeneratedSecret(JWT secret)");
        assert!(c.ensure_secrets().is_empty(), "idempotent");
        c.validate().unwrap();

        let mut with_key = Config::default();
        with_key.auth.jwt_public_key = "k.pem".into();
        with_key.api.keys = vec!["k".repeat(16)];
        assert!(with_key.ensure_secrets().is_empty());
        assert!(with_key.auth.jwt_secret.is_empty());
    }
}
