//! Room names and room patterns: what a room may be called, and the trailing-`*` globs that grant access to rooms.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest accepted room name, in bytes.
pub const MAX_ROOM_NAME_BYTES: usize = 200;

/// Prefix of the personal room every user has (`user:<sub>`).
pub const USER_ROOM_PREFIX: &str = "user:";

/// Why a string is not an acceptable room name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomNameError {
    /// The name is the empty string.
    #[error("room name is empty")]
    Empty,
    /// The name is longer than [`MAX_ROOM_NAME_BYTES`].
    #[error("room name is {len} bytes long, the maximum is {MAX_ROOM_NAME_BYTES}")]
    TooLong {
        /// Length of the rejected name in bytes.
        len: usize,
    },
    /// The name contains a space, tab, newline or other whitespace.
    #[error("room name contains whitespace")]
    Whitespace,
    /// The name contains a control character.
    #[error("room name contains a control character")]
    Control,
    /// The name contains `*`, which only patterns may use.
    #[error("room name contains '*', which is reserved for room patterns")]
    Wildcard,
}

/// Checks that `name` can be used as a room: 1..=200 bytes, no whitespace, no control characters, no `*`.
///
/// The same rule applies to rooms named by clients (subscribe, publish), by tokens (`join`) and by the HTTP API.
pub fn validate_room_name(name: &str) -> Result<(), RoomNameError> {
    if name.is_empty() {
        return Err(RoomNameError::Empty);
    }
    if name.len() > MAX_ROOM_NAME_BYTES {
        return Err(RoomNameError::TooLong { len: name.len() });
    }
    check_room_chars(name)
}

/// The character rules of [`validate_room_name`], without the length rules (patterns have their own).
fn check_room_chars(name: &str) -> Result<(), RoomNameError> {
    for c in name.chars() {
        if c == '*' {
            return Err(RoomNameError::Wildcard);
        }
        if c.is_whitespace() {
            return Err(RoomNameError::Whitespace);
        }
        if c.is_control() {
            return Err(RoomNameError::Control);
        }
    }
    Ok(())
}

/// The personal room of user `sub`: `user:<sub>`.
///
/// A user may always join its own personal room and never another user's, whatever its token's `rooms` claim says
/// (see [`crate::auth::VerifiedClaims::may_join`]).
pub fn user_room(sub: &str) -> String {
    format!("{USER_ROOM_PREFIX}{sub}")
}

/// The user whose personal room `room` is, if it is one (`user:alice` → `alice`).
pub fn personal_room_owner(room: &str) -> Option<&str> {
    room.strip_prefix(USER_ROOM_PREFIX)
}

/// Why a string is not an acceptable room pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern is the empty string.
    #[error("room pattern is empty")]
    Empty,
    /// A `*` somewhere other than at the end.
    #[error("room pattern {pattern:?}: '*' is only allowed as the last character")]
    MisplacedWildcard {
        /// The rejected pattern.
        pattern: String,
    },
    /// The part before the trailing `*` (or the whole exact name) is not a valid room name.
    #[error("room pattern {pattern:?}: {reason}")]
    InvalidName {
        /// The rejected pattern.
        pattern: String,
        /// What is wrong with its name part.
        reason: RoomNameError,
    },
}

/// An exact room name, or a prefix followed by `*` that matches every room starting with it.
///
/// `team:*` matches `team:a` and `team:` but not `team`; `*` alone matches every room. Only a trailing `*` is
/// special, so patterns stay cheap to match: one comparison, no allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoomPattern {
    /// The pattern as written, `*` included.
    text: Box<str>,
    /// True when `text` ends with `*`.
    prefix: bool,
}

impl RoomPattern {
    /// Parses a pattern, checking its name part with the room name rules.
    pub fn new(pattern: &str) -> Result<Self, PatternError> {
        if pattern.is_empty() {
            return Err(PatternError::Empty);
        }
        let (name, prefix) = match pattern.strip_suffix('*') {
            Some(name) => (name, true),
            None => (pattern, false),
        };
        let invalid = |reason| PatternError::InvalidName {
            pattern: pattern.to_owned(),
            reason,
        };
        if name.contains('*') {
            return Err(PatternError::MisplacedWildcard {
                pattern: pattern.to_owned(),
            });
        }
        if name.len() > MAX_ROOM_NAME_BYTES {
            return Err(invalid(RoomNameError::TooLong { len: name.len() }));
        }
        // An empty name part is fine only for the match-all pattern `*`.
        if name.is_empty() && !prefix {
            return Err(PatternError::Empty);
        }
        check_room_chars(name).map_err(invalid)?;
        Ok(Self {
            text: pattern.into(),
            prefix,
        })
    }

    /// True when `room` is matched by this pattern.
    pub fn matches(&self, room: &str) -> bool {
        if self.prefix {
            room.starts_with(&self.text[..self.text.len() - 1])
        } else {
            room == &*self.text
        }
    }

    /// True for a trailing-`*` glob, false for an exact name.
    pub fn is_prefix(&self) -> bool {
        self.prefix
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for RoomPattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for RoomPattern {
    type Error = PatternError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(&s)
    }
}

impl From<RoomPattern> for String {
    fn from(p: RoomPattern) -> Self {
        p.text.into()
    }
}

impl fmt::Display for RoomPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A set of [`RoomPattern`]s; a room matches the set when it matches any of them. The empty set matches nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomPatterns(Box<[RoomPattern]>);

impl RoomPatterns {
    /// Parses every item as a pattern; the first invalid one is the error.
    pub fn parse<I>(items: I) -> Result<Self, PatternError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        items
            .into_iter()
            .map(|s| RoomPattern::new(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map(|v| Self(v.into_boxed_slice()))
    }

    /// True when `room` matches at least one pattern.
    pub fn matches(&self, room: &str) -> bool {
        self.0.iter().any(|p| p.matches(room))
    }

    /// True when the set holds no pattern.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The patterns, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &RoomPattern> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert_eq!(validate_room_name("news"), Ok(()));
        assert_eq!(validate_room_name("team:a/b-c_d.é"), Ok(()));
        assert_eq!(validate_room_name(&"x".repeat(200)), Ok(()));
        assert_eq!(validate_room_name(""), Err(RoomNameError::Empty));
        assert_eq!(
            validate_room_name(&"x".repeat(201)),
            Err(RoomNameError::TooLong { len: 201 })
        );
        assert_eq!(validate_room_name("a b"), Err(RoomNameError::Whitespace));
        assert_eq!(validate_room_name("a\tb"), Err(RoomNameError::Whitespace));
        assert_eq!(
            validate_room_name("a\u{a0}b"),
            Err(RoomNameError::Whitespace)
        );
        assert_eq!(validate_room_name("a\u{7}b"), Err(RoomNameError::Control));
        assert_eq!(validate_room_name("team:*"), Err(RoomNameError::Wildcard));
        assert_eq!(
            RoomNameError::TooLong { len: 201 }.to_string(),
            "room name is 201 bytes long, the maximum is 200"
        );
    }

    #[test]
    fn exact_pattern() {
        let p = RoomPattern::new("news").unwrap();
        assert!(!p.is_prefix());
        assert!(p.matches("news"));
        assert!(!p.matches("news2"));
        assert!(!p.matches("new"));
    }

    #[test]
    fn prefix_pattern() {
        let p: RoomPattern = "team:*".parse().unwrap();
        assert!(p.is_prefix());
        assert!(p.matches("team:a"));
        assert!(p.matches("team:"));
        assert!(!p.matches("team"));
        assert!(!p.matches("other:a"));
        let bench = RoomPattern::new("bench*").unwrap();
        assert!(bench.matches("bench") && bench.matches("bench-7"));
    }

    #[test]
    fn match_all_pattern() {
        let p = RoomPattern::new("*").unwrap();
        assert!(p.matches("anything") && p.matches("user:bob") && p.matches(""));
    }

    #[test]
    fn invalid_patterns() {
        assert_eq!(RoomPattern::new(""), Err(PatternError::Empty));
        assert!(matches!(
            RoomPattern::new("a*b"),
            Err(PatternError::MisplacedWildcard { .. })
        ));
        assert!(matches!(
            RoomPattern::new("a**"),
            Err(PatternError::MisplacedWildcard { .. })
        ));
        assert!(matches!(
            RoomPattern::new("a b*"),
            Err(PatternError::InvalidName {
                reason: RoomNameError::Whitespace,
                ..
            })
        ));
        assert!(RoomPattern::new(&format!("{}*", "x".repeat(200))).is_ok());
        assert!(RoomPattern::new(&"x".repeat(201)).is_err());
        assert_eq!(
            RoomPattern::new("a*b").unwrap_err().to_string(),
            "room pattern \"a*b\": '*' is only allowed as the last character"
        );
    }

    #[test]
    fn pattern_sets() {
        let set = RoomPatterns::parse(["team:*", "news"]).unwrap();
        assert!(set.matches("team:x") && set.matches("news"));
        assert!(!set.matches("sports"));
        assert!(!RoomPatterns::default().matches("news"));
        assert!(RoomPatterns::parse(["ok", "bad room"]).is_err());
        let names: Vec<&str> = set.iter().map(RoomPattern::as_str).collect();
        assert_eq!(names, ["team:*", "news"]);
    }

    #[test]
    fn personal_rooms() {
        assert_eq!(user_room("alice"), "user:alice");
        assert_eq!(personal_room_owner("user:alice"), Some("alice"));
        assert_eq!(personal_room_owner("team:alice"), None);
    }

    #[test]
    fn pattern_serde_round_trip() {
        let p: RoomPattern = serde_json::from_str("\"chat:*\"").unwrap();
        assert_eq!(p.as_str(), "chat:*");
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"chat:*\"");
        assert!(serde_json::from_str::<RoomPattern>("\"a*b\"").is_err());
    }
}
