//! User extended attributes of a run's files (`user.*`), kept in the file's manifest entry as
//! name to base64 value (docs/STORE.md). This module owns their rules: which names a user may
//! set (`user.` but not `user.mltrack.`, which mltrack computes), the bound on their size (as
//! ext4: names and values of one file together within 4 KiB), and the base64 codec.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// Names and values of one file's attributes together, at most (ext4's default block).
pub const MAX_TOTAL: usize = 4096;
/// The longest attribute name, as Linux allows.
pub const MAX_NAME: usize = 255;

/// The attributes of one file: name to base64 value.
pub type Xattrs = BTreeMap<String, String>;

/// Checks that a user may set attribute `name`.
pub fn check_name(name: &str) -> Result<()> {
    if name.starts_with("user.mltrack.") {
        return Err(Error::NotPermitted(format!(
            "{name}: user.mltrack.* attributes are computed by mltrack and cannot be set"
        )));
    }
    if !name.starts_with("user.") || name.len() <= "user.".len() {
        return Err(Error::Unsupported(format!(
            "{name}: only user.* attributes can be kept on a run's files"
        )));
    }
    if name.len() > MAX_NAME || name.contains('\0') {
        return Err(Error::BadRequest(format!(
            "{name:.64}: an attribute name is at most {MAX_NAME} bytes with no NUL"
        )));
    }
    Ok(())
}

/// Checks a whole set as stored: every name settable, every value base64, within the bound.
pub fn check(attrs: &Xattrs) -> Result<()> {
    let mut total = 0;
    for (name, value) in attrs {
        check_name(name)?;
        total += name.len() + decode(value)?.len();
    }
    if total > MAX_TOTAL {
        return Err(Error::NoRoom(format!(
            "extended attributes of {total} bytes: at most {MAX_TOTAL} per file"
        )));
    }
    Ok(())
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 with padding; anything else is refused.
pub fn decode(text: &str) -> Result<Vec<u8>> {
    let bad = || Error::BadRequest(format!("{text:.32}: not base64"));
    if !text.len().is_multiple_of(4) {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for chunk in text.as_bytes().chunks(4) {
        let pad = chunk.iter().rev().take_while(|b| **b == b'=').count();
        if pad > 2 {
            return Err(bad());
        }
        let mut n = 0u32;
        for (i, b) in chunk[..4 - pad].iter().enumerate() {
            let v = ALPHABET.iter().position(|a| a == b).ok_or_else(bad)? as u32;
            n |= v << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_matches_the_standard() {
        assert_eq!(encode(b""), "");
        assert_eq!(encode(b"f"), "Zg==");
        assert_eq!(encode(b"fo"), "Zm8=");
        assert_eq!(encode(b"foo"), "Zm9v");
        assert_eq!(encode(b"foobar"), "Zm9vYmFy");
        for len in 0..40u8 {
            let bytes: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(decode(&encode(&bytes)).unwrap(), bytes);
        }
        assert!(decode("Zm9").is_err());
        assert!(decode("Zm!v").is_err());
    }

    #[test]
    fn only_user_names_other_than_mltracks_are_kept() {
        assert!(check_name("user.origin").is_ok());
        assert!(check_name("user.mltrack.sha256").is_err());
        assert!(check_name("security.selinux").is_err());
        assert!(check_name("user.").is_err());
        let mut big = Xattrs::new();
        big.insert("user.a".into(), encode(&[0; MAX_TOTAL]));
        assert!(check(&big).is_err());
    }
}
