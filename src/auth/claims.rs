//! JWT claims: their wire form ([`Claims`]) and their checked, compiled form ([`VerifiedClaims`]) that answers
//! "may this user join / publish to this room?".

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::pattern::{
    personal_room_owner, user_room, validate_room_name, PatternError, RoomNameError, RoomPatterns,
};

/// The claims tidings reads from a token; other claims (`iat`, `iss`, `aud`, ...) are ignored.
///
/// `rooms`, `join` and `publish` accept either a JSON array of strings or one comma-separated string
/// (`"team:*, news"`), so tokens are easy to mint by hand; missing or `null` means empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id; required and non-empty. Its personal room is `user:<sub>`.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch. Checked when present; a token without `exp` never expires.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "numeric_date"
    )]
    pub exp: Option<u64>,
    /// Patterns of the rooms the user may join (subscribe to).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "string_list"
    )]
    pub rooms: Vec<String>,
    /// Exact room names the user is joined to when it connects; listing a room here also permits joining it.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "string_list"
    )]
    pub join: Vec<String>,
    /// Patterns of the rooms the user may publish to.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "string_list"
    )]
    pub publish: Vec<String>,
    /// Patterns of the user ids the user may send direct messages to (`*` suffix glob, as `rooms`).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "string_list"
    )]
    pub dm: Vec<String>,
}

/// Why a set of claims is unusable even though its signature may be fine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    /// `sub` is the empty string.
    #[error("claim `sub` is empty")]
    EmptySub,
    /// `sub` cannot name a personal room (`user:<sub>` breaks the room name rules).
    #[error("claim `sub` cannot name a personal room: {0}")]
    InvalidSub(RoomNameError),
    /// An entry of `rooms`, `publish` or `dm` is not a valid pattern.
    #[error("claim `{claim}`: {error}")]
    Pattern {
        /// `rooms`, `publish` or `dm`.
        claim: &'static str,
        /// The pattern problem.
        error: PatternError,
    },
    /// An entry of `join` is not a valid room name.
    #[error("claim `join`: {room:?}: {reason}")]
    JoinName {
        /// The rejected entry.
        room: String,
        /// The name problem.
        reason: RoomNameError,
    },
    /// `join` names another user's personal room.
    #[error("claim `join`: {room:?} is another user's personal room")]
    ForeignPersonalRoom {
        /// The rejected entry.
        room: String,
    },
}

/// Claims whose token was verified, with their patterns compiled; kept per connection, so it stays small.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedClaims {
    sub: Box<str>,
    /// `exp`, with 0 kept as 1 (both long past) so that the option takes no more room than the number.
    exp: Option<std::num::NonZeroU64>,
    rooms: RoomPatterns,
    /// A thin list: one pointer, and no allocation for the usual empty claim.
    join: thin_vec::ThinVec<Box<str>>,
    publish: RoomPatterns,
    dm: RoomPatterns,
}

impl VerifiedClaims {
    /// Checks and compiles `claims` (the signature is the caller's business).
    pub fn from_claims(claims: Claims) -> Result<Self, ClaimsError> {
        if claims.sub.is_empty() {
            return Err(ClaimsError::EmptySub);
        }
        validate_room_name(&user_room(&claims.sub)).map_err(ClaimsError::InvalidSub)?;
        let rooms = RoomPatterns::parse(&claims.rooms).map_err(|error| ClaimsError::Pattern {
            claim: "rooms",
            error,
        })?;
        let publish =
            RoomPatterns::parse(&claims.publish).map_err(|error| ClaimsError::Pattern {
                claim: "publish",
                error,
            })?;
        let dm = RoomPatterns::parse(&claims.dm)
            .map_err(|error| ClaimsError::Pattern { claim: "dm", error })?;
        for room in &claims.join {
            validate_room_name(room).map_err(|reason| ClaimsError::JoinName {
                room: room.clone(),
                reason,
            })?;
            if personal_room_owner(room).is_some_and(|owner| owner != claims.sub) {
                return Err(ClaimsError::ForeignPersonalRoom { room: room.clone() });
            }
        }
        Ok(Self {
            sub: claims.sub.into(),
            exp: claims
                .exp
                .and_then(|exp| std::num::NonZeroU64::new(exp.max(1))),
            rooms,
            join: claims.join.into_iter().map(Into::into).collect(),
            publish,
            dm,
        })
    }

    /// The user id (`sub`).
    pub fn sub(&self) -> &str {
        &self.sub
    }

    /// Expiry in seconds since the Unix epoch, if the token has one.
    pub fn expires_at(&self) -> Option<u64> {
        self.exp.map(std::num::NonZeroU64::get)
    }

    /// This user's personal room, `user:<sub>`.
    pub fn personal_room(&self) -> String {
        user_room(&self.sub)
    }

    /// Rooms to join as soon as the user connects (the `join` claim), in token order.
    pub fn auto_join(&self) -> impl Iterator<Item = &str> {
        self.join.iter().map(|r| &**r)
    }

    /// The compiled `rooms` claim.
    pub fn room_patterns(&self) -> &RoomPatterns {
        &self.rooms
    }

    /// The compiled `publish` claim.
    pub fn publish_patterns(&self) -> &RoomPatterns {
        &self.publish
    }

    /// May this user join `room`?
    ///
    /// Personal rooms come first: a user may always join its own (`user:<sub>`) and never another user's, whatever
    /// `rooms` says (so `rooms: ["*"]` does not let anyone read other users' messages). Otherwise the room must match
    /// a `rooms` pattern or be listed in `join`. The room name itself is not validated here.
    pub fn may_join(&self, room: &str) -> bool {
        if let Some(owner) = personal_room_owner(room) {
            return owner == &*self.sub;
        }
        self.rooms.matches(room) || self.join.iter().any(|r| &**r == room)
    }

    /// May this user publish to `room`? Only the `publish` claim decides; personal rooms get no special case, so a
    /// token with `publish: ["user:*"]` may message any user. Room policies (`client_publish`) are checked by the
    /// caller.
    pub fn may_publish(&self, room: &str) -> bool {
        self.publish.matches(room)
    }

    /// May this user send direct messages to `user`? Only the `dm` claim decides (a user messaging itself
    /// needs it too).
    pub fn may_dm(&self, user: &str) -> bool {
        self.dm.matches(user)
    }
}

/// Deserializes a list claim from a JSON array of strings or one comma-separated string.
fn string_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct ListVisitor;

    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of strings or a comma-separated string")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
            while let Some(item) = seq.next_element::<String>()? {
                out.push(item);
            }
            Ok(out)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
    }

    deserializer.deserialize_any(ListVisitor)
}

/// Deserializes `exp` as a non-negative JSON number (integer or float, as some issuers write floats), or `null`.
fn numeric_date<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    struct DateVisitor;

    impl<'de> Visitor<'de> for DateVisitor {
        type Value = Option<u64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a non-negative number of seconds since the Unix epoch")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom("negative `exp`"))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            if v.is_finite() && v >= 0.0 && v < u64::MAX as f64 {
                Ok(Some(v as u64))
            } else {
                Err(E::custom("`exp` out of range"))
            }
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }

    deserializer.deserialize_any(DateVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Claims {
        serde_json::from_str(json).unwrap()
    }

    fn verified(json: &str) -> VerifiedClaims {
        VerifiedClaims::from_claims(parse(json)).unwrap()
    }

    #[test]
    fn lists_as_arrays_or_comma_strings() {
        let a =
            parse(r#"{"sub":"u","rooms":["team:*","news"],"join":["news"],"publish":["chat:*"]}"#);
        let s = parse(r#"{"sub":"u","rooms":"team:*, news","join":"news","publish":"chat:*,"}"#);
        assert_eq!(a, s);
        assert_eq!(a.rooms, ["team:*", "news"]);
        assert_eq!(a.publish, ["chat:*"]);
    }

    #[test]
    fn missing_and_null_lists_are_empty() {
        let c = parse(r#"{"sub":"u","rooms":null,"exp":null,"iat":1,"extra":{"x":1}}"#);
        assert!(c.rooms.is_empty() && c.join.is_empty() && c.publish.is_empty());
        assert_eq!(c.exp, None);
        assert_eq!(
            parse(r#"{"sub":"u","rooms":""}"#).rooms,
            Vec::<String>::new()
        );
    }

    #[test]
    fn exp_forms() {
        assert_eq!(
            parse(r#"{"sub":"u","exp":1700000000}"#).exp,
            Some(1_700_000_000)
        );
        assert_eq!(
            parse(r#"{"sub":"u","exp":1700000000.5}"#).exp,
            Some(1_700_000_000)
        );
        assert!(serde_json::from_str::<Claims>(r#"{"sub":"u","exp":-1}"#).is_err());
        assert!(serde_json::from_str::<Claims>(r#"{"sub":"u","exp":"soon"}"#).is_err());
    }

    #[test]
    fn sub_is_required() {
        assert!(serde_json::from_str::<Claims>(r#"{"rooms":["a"]}"#).is_err());
        assert!(serde_json::from_str::<Claims>(r#"{"sub":5}"#).is_err());
        let empty = VerifiedClaims::from_claims(parse(r#"{"sub":""}"#));
        assert_eq!(empty, Err(ClaimsError::EmptySub));
        let spaced = VerifiedClaims::from_claims(parse(r#"{"sub":"a b"}"#));
        assert_eq!(
            spaced,
            Err(ClaimsError::InvalidSub(RoomNameError::Whitespace))
        );
    }

    #[test]
    fn serializes_compactly() {
        let c = Claims {
            sub: "u".into(),
            rooms: vec!["a".into()],
            ..Claims::default()
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"sub":"u","rooms":["a"]}"#
        );
    }

    #[test]
    fn dm_permissions() {
        let v = verified(r#"{"sub":"alice","dm":"bob, support-*"}"#);
        assert!(v.may_dm("bob") && v.may_dm("support-1") && v.may_dm("support-"));
        assert!(!v.may_dm("bobby") && !v.may_dm("carol") && !v.may_dm("alice"));
        assert!(!verified(r#"{"sub":"alice"}"#).may_dm("bob"));
        assert!(verified(r#"{"sub":"alice","dm":["*"]}"#).may_dm("anyone"));
        assert!(matches!(
            VerifiedClaims::from_claims(parse(r#"{"sub":"a","dm":"a b"}"#)),
            Err(ClaimsError::Pattern { claim: "dm", .. })
        ));
    }

    #[test]
    fn join_and_publish_permissions() {
        let v = verified(r#"{"sub":"alice","rooms":"team:*","join":"news","publish":"chat:*"}"#);
        assert_eq!(v.sub(), "alice");
        assert!(v.may_join("team:x"));
        assert!(v.may_join("news"), "join implies permission");
        assert!(!v.may_join("sports"));
        assert!(v.may_publish("chat:1"));
        assert!(
            !v.may_publish("team:x"),
            "joining does not imply publishing"
        );
        assert_eq!(v.auto_join().collect::<Vec<_>>(), ["news"]);
        assert_eq!(v.expires_at(), None);
        assert_eq!(
            verified(r#"{"sub":"a","exp":1700000000}"#).expires_at(),
            Some(1_700_000_000)
        );
        assert_eq!(
            verified(r#"{"sub":"a","exp":0}"#).expires_at(),
            Some(1),
            "0 is kept as 1: both long past"
        );
    }

    #[test]
    fn personal_rooms_override_rooms_claim() {
        let v = verified(r#"{"sub":"alice","rooms":["*"]}"#);
        assert_eq!(v.personal_room(), "user:alice");
        assert!(v.may_join("user:alice"));
        assert!(
            !v.may_join("user:bob"),
            "`*` never grants another user's room"
        );
        assert!(!v.may_join("user:alice2"));
        assert!(v.may_join("anything"));
        let none = verified(r#"{"sub":"alice"}"#);
        assert!(none.may_join("user:alice"), "own room needs no claim");
        assert!(!none.may_join("news"));
        let explicit = verified(r#"{"sub":"alice","rooms":["user:bob"]}"#);
        assert!(!explicit.may_join("user:bob"));
    }

    #[test]
    fn invalid_claims_are_rejected() {
        let err = |json| VerifiedClaims::from_claims(parse(json)).unwrap_err();
        assert!(matches!(
            err(r#"{"sub":"a","rooms":["a*b"]}"#),
            ClaimsError::Pattern { claim: "rooms", .. }
        ));
        assert!(matches!(
            err(r#"{"sub":"a","publish":["bad room"]}"#),
            ClaimsError::Pattern {
                claim: "publish",
                ..
            }
        ));
        assert!(matches!(
            err(r#"{"sub":"a","join":["team:*"]}"#),
            ClaimsError::JoinName { .. }
        ));
        assert_eq!(
            err(r#"{"sub":"a","join":["user:b"]}"#),
            ClaimsError::ForeignPersonalRoom {
                room: "user:b".into()
            }
        );
        assert!(verified(r#"{"sub":"a","join":["user:a"]}"#).may_join("user:a"));
    }
}
