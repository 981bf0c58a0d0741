//! Validated identifiers. They appear in MQTT topics, database keys and file
//! names, so they are restricted to a safe alphabet: 1–64 characters of
//! `A–Z a–z 0–9 . _ -`, not starting with `.` or `-`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {reason}")]
pub struct InvalidId {
    pub kind: &'static str,
    pub value: String,
    pub reason: &'static str,
}

pub const MAX_ID_LEN: usize = 64;

fn check(kind: &'static str, value: &str) -> Result<(), InvalidId> {
    let fail = |reason| Err(InvalidId { kind, value: value.chars().take(80).collect(), reason });
    if value.is_empty() {
        return fail("empty");
    }
    if value.len() > MAX_ID_LEN {
        return fail("longer than 64 characters");
    }
    if value.starts_with(['.', '-']) {
        return fail("starts with '.' or '-'");
    }
    if !value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return fail("only A-Z, a-z, 0-9, '.', '_' and '-' are allowed");
    }
    Ok(())
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Result<Self, InvalidId> {
                let value = value.into();
                check($kind, &value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = String::deserialize(deserializer)?;
                Self::new(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

identifier!(
    /// A person enrolled centrally.
    IdentityId,
    "identity id"
);
identifier!(
    /// A kiosk.
    DeviceId,
    "device id"
);
identifier!(
    /// A gallery shard: the people allowed at a set of doors (a group).
    ShardId,
    "shard id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_unsafe_characters_are_refused() {
        for bad in ["", "a/b", "a+b", "#", "with space", ".hidden", "-x", &"x".repeat(65), "é"] {
            assert!(DeviceId::new(bad).is_err(), "{bad:?}");
        }
        for good in ["kiosk-01", "door_3.lobby", "A9"] {
            assert!(ShardId::new(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn deserializing_checks_the_alphabet() {
        let mut bytes = Vec::new();
        ciborium::into_writer(&"../etc", &mut bytes).unwrap();
        let err = ciborium::from_reader::<IdentityId, _>(bytes.as_slice()).unwrap_err();
        assert!(err.to_string().contains("invalid identity id"), "{err}");
    }
}
