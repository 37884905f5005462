//! Validated identifiers: the SHA-256 digest, single path components (run ids, projects,
//! models, data names, tag keys) and run-relative file paths.
//!
//! Validation happens here, once, at the edge: a [`Name`] or [`RelPath`] that exists is valid,
//! so code further in never re-checks. Every refusal names the offending value and says which
//! rule it broke. Values read back from the store go through the same constructors, so a
//! manifest carrying `..` or a `/` in a run id is refused exactly like a bad command line.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest identifier accepted, in bytes (a common file-name limit).
pub const MAX_NAME_LEN: usize = 255;

/// Why a value was refused as an identifier or digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} {value:?} is invalid: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
}

/// The reason given for a component over `MAX_NAME_LEN` bytes.
const TOO_LONG: &str = "it is longer than 255 bytes";

impl IdError {
    /// Whether the value was refused only for its length (`ENAMETOOLONG` on a mount).
    pub fn is_too_long(&self) -> bool {
        matches!(self, IdError::Invalid { reason, .. } if *reason == TOO_LONG)
    }

    fn new(what: &'static str, value: &str, reason: &'static str) -> Self {
        IdError::Invalid {
            what,
            value: value.to_string(),
            reason,
        }
    }
}

/// Display, Debug, Serialize and Deserialize for a validated string newtype: it prints as
/// its text and deserializes only through its validating constructor.
macro_rules! string_newtype {
    ($ty:ident, $parse:expr) => {
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(&self.0)
            }
        }

        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                let parse: fn(&str) -> Result<$ty, $crate::ids::IdError> = $parse;
                parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A lowercase-hex SHA-256 digest: the address of stored bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        let mut buf = [0u8; 64];
        self.hex_into(&mut buf).to_string()
    }

    /// The hex digits written into `buf`, without allocating (manifests hold thousands).
    fn hex_into<'a>(&self, buf: &'a mut [u8; 64]) -> &'a str {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for (i, b) in self.0.iter().enumerate() {
            buf[2 * i] = DIGITS[usize::from(b >> 4)];
            buf[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
        }
        // Only ASCII hex digits were written.
        std::str::from_utf8(buf).unwrap_or_default()
    }

    /// The first two hex characters: the fan-out directory of the object.
    pub fn fanout(&self) -> String {
        hex::encode(&self.0[..1])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl FromStr for Digest {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64 {
            return Err(IdError::new("hash", s, "a SHA-256 hash has 64 hex digits"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(IdError::new(
                "hash",
                s,
                "a hash is written in lowercase hex digits",
            ));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| IdError::new("hash", s, "not hexadecimal"))?;
        Ok(Digest(out))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 64];
        s.serialize_str(self.hex_into(&mut buf))
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Checks the rules of a single path component, naming `what` in the error.
fn check_component(what: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::new(what, s, "it is empty"));
    }
    if s.len() > MAX_NAME_LEN {
        return Err(IdError::new(what, s, TOO_LONG));
    }
    if s == "." || s == ".." {
        return Err(IdError::new(what, s, "`.` and `..` are not names"));
    }
    if s.contains('/') {
        return Err(IdError::new(
            what,
            s,
            "it contains `/`; it must be a single path component",
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(IdError::new(
            what,
            s,
            "it contains NUL or a control character",
        ));
    }
    Ok(())
}

/// A single path component: a run id, project, model, data name or tag key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    /// Validates `s` as an identifier; `what` names it in the error ("run id", "project").
    pub fn parse(what: &'static str, s: &str) -> Result<Self, IdError> {
        check_component(what, s)?;
        Ok(Name(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_newtype!(Name, |s| Name::parse("name", s));

/// A run id follows the rules of every other [`Name`]; the alias says which one is meant.
pub type RunId = Name;

/// A file path relative to a run directory: one or more valid components joined by `/`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(String);

impl RelPath {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.is_empty() {
            return Err(IdError::new("path", s, "it is empty"));
        }
        if s.starts_with('/') {
            return Err(IdError::new(
                "path",
                s,
                "it is absolute; paths are relative to the run directory",
            ));
        }
        for part in s.split('/') {
            check_component("path", part).map_err(|e| match e {
                IdError::Invalid { reason, .. } => IdError::new("path", s, reason),
            })?;
        }
        Ok(RelPath(s.to_string()))
    }

    /// `dir/name`, both already valid.
    pub fn join(dir: &str, name: &RelPath) -> Result<Self, IdError> {
        RelPath::parse(&format!("{dir}/{}", name.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Inputs live under `inputs/`; everything else is an output.
    pub fn is_input(&self) -> bool {
        self.0.starts_with("inputs/")
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

string_newtype!(RelPath, RelPath::parse);

/// A format name, safe to put in a key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Format(String);

impl Format {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = (1..=16).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(Format(s.to_string()))
        } else {
            Err(IdError::Invalid {
                what: "format",
                value: s.to_string(),
                reason: "a format is 1 to 16 lowercase letters or digits",
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A name known to be valid (the formats detection produces).
    pub(crate) fn known(s: &'static str) -> Self {
        Format(s.to_string())
    }
}

string_newtype!(Format, Format::parse);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_component_rules() {
        assert!(Name::parse("run id", "prod_001").is_ok());
        assert!(Name::parse("run id", ".hidden").is_ok());
        assert!(Name::parse("run id", "ünïcode-ok").is_ok());
        for bad in ["", ".", "..", "a/b", "a\0b", "a\nb", "tab\there"] {
            let err = Name::parse("run id", bad).unwrap_err().to_string();
            assert!(err.starts_with("run id "), "{err}");
        }
        let long = "x".repeat(256);
        assert!(Name::parse("project", &long).is_err());
        assert!(Name::parse("project", &"x".repeat(255)).is_ok());
    }

    #[test]
    fn rel_paths_are_relative_and_made_of_valid_components() {
        assert!(RelPath::parse("inputs/train.parquet").unwrap().is_input());
        assert!(!RelPath::parse("outputs/model.bin").unwrap().is_input());
        assert!(!RelPath::parse("inputsx/a").unwrap().is_input());
        for bad in ["", "/abs", "a//b", "a/../b", "a/./b", "trailing/"] {
            assert!(RelPath::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(RelPath::parse("a/b/c.csv").unwrap().file_name(), "c.csv");
    }

    #[test]
    fn digests_round_trip_as_lowercase_hex() {
        let hex = "a3f5".repeat(16);
        let d: Digest = hex.parse().unwrap();
        assert_eq!(d.to_string(), hex);
        assert_eq!(d.fanout(), "a3");
        assert!("A3F5".repeat(16).parse::<Digest>().is_err());
        assert!("a3f5".parse::<Digest>().is_err());
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
    }
}
