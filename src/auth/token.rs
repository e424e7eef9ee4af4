//! JWT verification ([`Authenticator`]) and HS256 minting for development and tests ([`mint_token`]).

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;

use super::claims::{Claims, VerifiedClaims};
use super::key::{decoding_key_from_pem, KeyError};
use super::AuthError;
use crate::config::AuthConfig;

/// Tokens longer than this are refused before any decoding: no legitimate claim set comes near it.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Verifies JWTs with the one key and algorithm configured; built once at startup, shared by all connections.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
    algorithm: Algorithm,
    /// Refuse tokens without `exp`.
    require_exp: bool,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("Authenticator")
            .field("algorithm", &self.algorithm)
            .field("leeway", &self.validation.leeway)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Builds the verifier from `[auth]`: HS256 with `jwt_secret`, or RS256 / ES256 from the PEM public key at
    /// `jwt_public_key` (the algorithm is read from the key). Exactly one of the two must be set.
    pub fn new(config: &AuthConfig) -> Result<Self, AuthError> {
        let (algorithm, key) = match (config.secret(), config.public_key_path()) {
            (Some(_), Some(_)) => return Err(AuthError::BothKeys),
            (None, None) => return Err(AuthError::NoKey),
            (Some(secret), None) => (
                Algorithm::HS256,
                DecodingKey::from_secret(secret.as_bytes()),
            ),
            (None, Some(path)) => {
                let key_error = |error| AuthError::PublicKey {
                    path: path.to_owned(),
                    error,
                };
                let pem = std::fs::read(path).map_err(|e| key_error(KeyError::Read(e)))?;
                decoding_key_from_pem(&pem).map_err(key_error)?
            }
        };
        tracing::info!(
            ?algorithm,
            require_exp = config.require_exp,
            "JWT verification ready"
        );
        Ok(Self::with_key(algorithm, key, config.leeway_secs).requiring_exp(config.require_exp))
    }

    /// This verifier, refusing tokens without `exp` when `require` is true (`auth.require_exp`).
    pub fn requiring_exp(mut self, require: bool) -> Self {
        self.require_exp = require;
        self
    }

    /// An HS256 verifier for `secret`, without going through the config (tests, tools); it accepts tokens
    /// without `exp` unless [`Authenticator::requiring_exp`] says otherwise.
    pub fn hs256(secret: &str, leeway_secs: u64) -> Self {
        Self::with_key(
            Algorithm::HS256,
            DecodingKey::from_secret(secret.as_bytes()),
            leeway_secs,
        )
    }

    fn with_key(algorithm: Algorithm, key: DecodingKey, leeway_secs: u64) -> Self {
        let mut validation = Validation::new(algorithm);
        // `exp` is checked when present but not required: a token without it never expires (operators who want
        // expiry mint tokens with it). `sub` is required by `Claims` itself.
        validation.required_spec_claims.clear();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // tidings has no audience of its own; the default would reject every token that carries `aud`.
        validation.validate_aud = false;
        validation.leeway = leeway_secs;
        Self {
            key,
            validation,
            algorithm,
            require_exp: false,
        }
    }

    /// The algorithm every accepted token must be signed with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Checks the signature, `exp` / `nbf` (with the configured leeway) and the claims, and compiles the room
    /// patterns. Any failure displays as `unauthorized`, except expiry (`token expired`); see [`AuthError::detail`].
    pub fn verify(&self, token: &str) -> Result<VerifiedClaims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid {
                reason: "too_long",
                detail: format!("token is {} bytes long", token.len()),
            });
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                kind => AuthError::Invalid {
                    reason: invalid_reason(kind),
                    detail: e.to_string(),
                },
            },
        )?;
        if self.require_exp && data.claims.exp.is_none() {
            return Err(AuthError::Invalid {
                reason: "no_exp",
                detail: "token has no exp and auth.require_exp is on".into(),
            });
        }
        VerifiedClaims::from_claims(data.claims).map_err(|e| AuthError::Invalid {
            reason: "claims",
            detail: e.to_string(),
        })
    }
}

/// The metrics label of a verification failure other than expiry.
fn invalid_reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidSignature => "bad_signature",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "wrong_algorithm",
        ErrorKind::ImmatureSignature => "not_yet_valid",
        ErrorKind::MissingRequiredClaim(_)
        | ErrorKind::InvalidAudience
        | ErrorKind::InvalidIssuer
        | ErrorKind::InvalidSubject => "claims",
        _ => "malformed",
    }
}

/// The claims of a minted token: [`Claims`] plus the time it was issued.
#[derive(Serialize)]
struct MintedClaims<'a> {
    #[serde(flatten)]
    claims: &'a Claims,
    iat: u64,
}

/// Mints an HS256 token for `sub` with the given claim lists, valid for `ttl_secs` (0: no `exp`, never expires).
///
/// The claims are checked with the same rules as [`Authenticator::verify`], so a minted token is never one the
/// server would refuse for its content.
pub fn mint_token(
    secret: &str,
    sub: &str,
    rooms: &[String],
    join: &[String],
    publish: &[String],
    ttl_secs: u64,
) -> Result<String, AuthError> {
    let claims = Claims {
        sub: sub.to_owned(),
        rooms: rooms.to_vec(),
        join: join.to_vec(),
        publish: publish.to_vec(),
        ..Claims::default()
    };
    mint_claims(secret, claims, ttl_secs)
}

/// Mints an HS256 token carrying `claims` (their `exp` replaced: now + `ttl_secs`, or none for 0), checked like
/// [`mint_token`].
pub fn mint_claims(secret: &str, mut claims: Claims, ttl_secs: u64) -> Result<String, AuthError> {
    if secret.is_empty() {
        return Err(AuthError::Mint {
            detail: "the secret is empty".into(),
        });
    }
    let now = unix_now();
    claims.exp = (ttl_secs > 0).then(|| now.saturating_add(ttl_secs));
    VerifiedClaims::from_claims(claims.clone()).map_err(AuthError::Claims)?;
    let minted = MintedClaims {
        claims: &claims,
        iat: now,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &minted,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| AuthError::Mint {
        detail: e.to_string(),
    })
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ClaimsError;
    use serde_json::json;

    const SECRET: &str = "unit-test-jwt-secret-0123456789abcdef";

    fn key_path(name: &str) -> String {
        format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn sign(alg: Algorithm, key: &EncodingKey, claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
    }

    fn hs(claims: &serde_json::Value) -> String {
        sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(SECRET.as_bytes()),
            claims,
        )
    }

    fn rsa_private() -> EncodingKey {
        EncodingKey::from_rsa_pem(&std::fs::read(key_path("rsa-test-private.pem")).unwrap())
            .unwrap()
    }

    fn auth_with_key(name: &str) -> Result<Authenticator, AuthError> {
        Authenticator::new(&AuthConfig {
            jwt_public_key: key_path(name),
            ..AuthConfig::default()
        })
    }

    fn hs_auth() -> Authenticator {
        Authenticator::new(&AuthConfig {
            jwt_secret: SECRET.into(),
            ..AuthConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn hs256_valid() {
        let token = mint_token(SECRET, "alice", &["team:*".into()], &[], &[], 60).unwrap();
        let v = hs_auth().verify(&token).unwrap();
        assert_eq!(v.sub(), "alice");
        assert!(v.may_join("team:a"));
        let exp = v.expires_at().unwrap();
        assert!(exp > unix_now() && exp <= unix_now() + 60);
    }

    #[test]
    fn bad_signature() {
        let token = mint_token("other-secret", "alice", &[], &[], &[], 60).unwrap();
        let err = hs_auth().verify(&token).unwrap_err();
        assert_eq!(err.to_string(), "unauthorized");
        assert!(
            err.detail().contains("InvalidSignature"),
            "{}",
            err.detail()
        );
        let mut tampered = mint_token(SECRET, "alice", &[], &[], &[], 60).unwrap();
        tampered.push('x');
        assert_eq!(
            hs_auth().verify(&tampered).unwrap_err().to_string(),
            "unauthorized"
        );
    }

    #[test]
    fn expired_and_leeway() {
        let now = unix_now();
        let old = hs(&json!({"sub": "a", "exp": now - 100}));
        let err = hs_auth().verify(&old).unwrap_err();
        assert!(matches!(err, AuthError::Expired));
        assert_eq!(err.to_string(), "token expired");
        let within_leeway = hs(&json!({"sub": "a", "exp": now - 2}));
        assert!(
            hs_auth().verify(&within_leeway).is_ok(),
            "default leeway is 5 s"
        );
        assert!(Authenticator::hs256(SECRET, 0)
            .verify(&within_leeway)
            .is_err());
    }

    #[test]
    fn no_exp_is_refused_unless_allowed() {
        let token = mint_token(SECRET, "a", &[], &[], &[], 0).unwrap();
        let err = hs_auth().verify(&token).unwrap_err();
        assert!(matches!(err, AuthError::Invalid { .. }), "{err:?}");
        assert_eq!(err.to_string(), "unauthorized");
        let lenient = Authenticator::new(&AuthConfig {
            jwt_secret: SECRET.into(),
            require_exp: false,
            ..AuthConfig::default()
        })
        .unwrap();
        assert_eq!(lenient.verify(&token).unwrap().expires_at(), None);
    }

    #[test]
    fn missing_or_empty_sub() {
        for claims in [
            json!({"rooms": ["a"]}),
            json!({"sub": ""}),
            json!({"sub": null}),
        ] {
            let err = hs_auth().verify(&hs(&claims)).unwrap_err();
            assert!(matches!(err, AuthError::Invalid { .. }), "{claims}");
            assert_eq!(err.to_string(), "unauthorized");
        }
    }

    #[test]
    fn malformed_and_missing_tokens() {
        for token in ["abc", "a.b.c", "x".repeat(MAX_TOKEN_BYTES + 1).as_str()] {
            let err = hs_auth().verify(token).unwrap_err();
            assert!(matches!(err, AuthError::Invalid { .. }));
        }
        let err = hs_auth().verify("").unwrap_err();
        assert!(matches!(err, AuthError::Missing));
        assert_eq!(err.to_string(), "unauthorized");
    }

    #[test]
    fn wrong_algorithm() {
        let rs = sign(Algorithm::RS256, &rsa_private(), &json!({"sub": "a"}));
        let err = hs_auth().verify(&rs).unwrap_err();
        assert_eq!(err.to_string(), "unauthorized");
        assert!(
            err.detail().contains("InvalidAlgorithm"),
            "{}",
            err.detail()
        );
        // Algorithm confusion: an HS256 token "signed" with the RSA public key must not pass the RS256 verifier.
        let public = std::fs::read(key_path("rsa-test-public.pem")).unwrap();
        let forged = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(&public),
            &json!({"sub": "a"}),
        );
        let rs_auth = auth_with_key("rsa-test-public.pem").unwrap();
        assert!(matches!(
            rs_auth.verify(&forged),
            Err(AuthError::Invalid { .. })
        ));
    }

    #[test]
    fn rs256_with_spki_and_pkcs1_keys() {
        let token = sign(
            Algorithm::RS256,
            &rsa_private(),
            &json!({"sub": "a", "rooms": "news", "exp": unix_now() + 60}),
        );
        for name in ["rsa-test-public.pem", "rsa-test-public-pkcs1.pem"] {
            let auth = auth_with_key(name).unwrap();
            assert_eq!(auth.algorithm(), Algorithm::RS256);
            assert!(auth.verify(&token).unwrap().may_join("news"));
        }
        let hs_token = mint_token(SECRET, "a", &[], &[], &[], 60).unwrap();
        let auth = auth_with_key("rsa-test-public.pem").unwrap();
        assert!(auth.verify(&hs_token).is_err());
    }

    #[test]
    fn es256() {
        let private = std::fs::read(key_path("ec-p256-test-private.pem")).unwrap();
        let key = EncodingKey::from_ec_pem(&private).unwrap();
        let token = sign(
            Algorithm::ES256,
            &key,
            &json!({"sub": "a", "publish": ["chat:*"], "exp": unix_now() + 60}),
        );
        let auth = auth_with_key("ec-p256-test-public.pem").unwrap();
        assert_eq!(auth.algorithm(), Algorithm::ES256);
        assert!(auth.verify(&token).unwrap().may_publish("chat:1"));
        let rs = sign(Algorithm::RS256, &rsa_private(), &json!({"sub": "a"}));
        assert!(auth.verify(&rs).is_err());
    }

    #[test]
    fn key_configuration_errors() {
        assert!(matches!(
            Authenticator::new(&AuthConfig::default()),
            Err(AuthError::NoKey)
        ));
        let both = AuthConfig {
            jwt_secret: "s".into(),
            jwt_public_key: key_path("rsa-test-public.pem"),
            ..AuthConfig::default()
        };
        assert!(matches!(
            Authenticator::new(&both),
            Err(AuthError::BothKeys)
        ));
        let err = auth_with_key("ec-p384-test-public.pem").unwrap_err();
        assert!(
            err.to_string()
                .contains("only RSA (RS256) and EC P-256 (ES256)"),
            "{err}"
        );
        let err = auth_with_key("does-not-exist.pem").unwrap_err();
        assert!(err.to_string().contains("cannot read the file"), "{err}");
        assert!(err.to_string().contains("does-not-exist.pem"), "{err}");
    }

    #[test]
    fn foreign_claims_and_audience() {
        let token = hs(
            &json!({"sub": "a", "aud": "someone-else", "iss": "idp", "iat": 1, "exp": unix_now() + 60}),
        );
        assert!(hs_auth().verify(&token).is_ok());
        let future = hs(&json!({"sub": "a", "nbf": unix_now() + 3600}));
        assert!(matches!(
            hs_auth().verify(&future),
            Err(AuthError::Invalid { .. })
        ));
        let bad_rooms = hs(&json!({"sub": "a", "rooms": ["a*b"], "exp": unix_now() + 60}));
        let err = hs_auth().verify(&bad_rooms).unwrap_err();
        assert!(err.detail().contains("rooms"), "{}", err.detail());
    }

    #[test]
    fn mint_checks_its_input() {
        assert!(matches!(
            mint_token("", "a", &[], &[], &[], 60),
            Err(AuthError::Mint { .. })
        ));
        assert!(matches!(
            mint_token(SECRET, "", &[], &[], &[], 60),
            Err(AuthError::Claims(ClaimsError::EmptySub))
        ));
        let err = mint_token(SECRET, "a", &["bad room".into()], &[], &[], 60).unwrap_err();
        assert!(
            err.to_string().starts_with("invalid claims: claim `rooms`"),
            "{err}"
        );
        let token = mint_token(
            SECRET,
            "bob",
            &["team:*".into()],
            &["news".into()],
            &["chat:*".into()],
            60,
        )
        .unwrap();
        let v = hs_auth().verify(&token).unwrap();
        assert_eq!(v.auto_join().collect::<Vec<_>>(), ["news"]);
        assert!(v.may_publish("chat:x") && v.may_join("team:y") && v.may_join("user:bob"));
    }
}
