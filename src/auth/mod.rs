//! Authentication and room permissions: JWT verification (HS256, RS256, ES256), the claims tidings reads, room
//! names and patterns, and HS256 minting for development.
//!
//! A client sends its token in the Socket.IO CONNECT payload; [`Authenticator::verify`] turns it into
//! [`VerifiedClaims`], which the connection keeps to answer [`VerifiedClaims::may_join`] and
//! [`VerifiedClaims::may_publish`].

mod claims;
mod key;
mod pattern;
pub mod refusals;
mod token;

use std::borrow::Cow;
use std::path::PathBuf;

pub use claims::{Claims, ClaimsError, VerifiedClaims};
pub use key::KeyError;
pub use pattern::{
    personal_room_owner, user_room, validate_room_name, PatternError, RoomNameError, RoomPattern,
    RoomPatterns, MAX_ROOM_NAME_BYTES, USER_ROOM_PREFIX,
};
pub use token::{mint_claims, mint_token, Authenticator};

/// Authentication failures and key setup errors.
///
/// The `Display` of the variants a client can cause is exactly what goes into the Socket.IO CONNECT_ERROR message:
/// `unauthorized`, or `token expired`. The reason behind an `unauthorized` is for logs only ([`AuthError::detail`]).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The client sent no token.
    #[error("unauthorized")]
    Missing,
    /// Malformed token, bad signature, wrong algorithm, not yet valid (`nbf`), or unusable claims.
    #[error("unauthorized")]
    Invalid {
        /// The kind of failure, a metrics label: `too_long`, `malformed`, `bad_signature`, `wrong_algorithm`,
        /// `not_yet_valid`, `no_exp` or `claims`.
        reason: &'static str,
        /// What exactly was wrong, for logs; never sent to the client.
        detail: String,
    },
    /// The token's `exp` (plus leeway) has passed.
    #[error("token expired")]
    Expired,
    /// Neither `jwt_secret` nor `jwt_public_key` is configured.
    #[error("no JWT secret or public key is configured")]
    NoKey,
    /// Both `jwt_secret` and `jwt_public_key` are configured.
    #[error("both auth.jwt_secret and auth.jwt_public_key are set; configure only one")]
    BothKeys,
    /// The configured public key file cannot be used.
    #[error("JWT public key {}: {error}", path.display())]
    PublicKey {
        /// The configured path.
        path: PathBuf,
        /// What is wrong with it.
        error: KeyError,
    },
    /// Claims given to [`mint_token`] that the server would refuse.
    #[error("invalid claims: {0}")]
    Claims(ClaimsError),
    /// [`mint_token`] failed for another reason.
    #[error("cannot mint token: {detail}")]
    Mint {
        /// The reason.
        detail: String,
    },
}

impl AuthError {
    /// The full reason, for logs: unlike `Display`, it says why a token was `unauthorized`.
    pub fn detail(&self) -> Cow<'_, str> {
        match self {
            Self::Missing => Cow::Borrowed("no token"),
            Self::Invalid { detail, .. } => Cow::Borrowed(detail),
            other => Cow::Owned(other.to_string()),
        }
    }

    /// Why a client's token was refused, as a metrics label: `missing`, `expired`, one of the
    /// [`AuthError::Invalid`] reasons, or `config` for the errors of key setup and minting.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Expired => "expired",
            Self::Invalid { reason, .. } => reason,
            _ => "config",
        }
    }
}
