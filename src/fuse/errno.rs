//! Where domain errors become error numbers: one exhaustive map from [`Kind`] (every
//! handler's error goes through [`errno`], reads and name decoding included), and the rule
//! for names the kernel hands over that are not UTF-8.

use std::ffi::OsStr;

use fuser::Errno;

use crate::error::{Error, Kind};

/// A name the kernel hands over for something that should exist. Run paths are UTF-8
/// (docs/SEMANTICS.md), so a name that is not cannot exist here: `ENOENT`.
pub(super) fn existing_name(name: &OsStr) -> Result<&str, Errno> {
    name.to_str().ok_or(Errno::ENOENT)
}

/// A name for something to be made: one that is not UTF-8 cannot be recorded, `EINVAL`.
pub(super) fn new_name(name: &OsStr) -> Result<&str, Errno> {
    name.to_str().ok_or(Errno::EINVAL)
}

/// The error number a user sees for a domain error; logged once here with its cause.
pub fn errno(op: &str, e: &Error) -> Errno {
    let (code, name) = match e.kind() {
        Kind::NotFound => (Errno::ENOENT, "ENOENT"),
        Kind::NameTooLong => (Errno::ENAMETOOLONG, "ENAMETOOLONG"),
        Kind::Invalid => (Errno::EINVAL, "EINVAL"),
        Kind::NoSpace => (Errno::ENOSPC, "ENOSPC"),
        Kind::Exists => (Errno::EEXIST, "EEXIST"),
        Kind::NotEmpty => (Errno::ENOTEMPTY, "ENOTEMPTY"),
        Kind::ReadOnly => (Errno::EROFS, "EROFS"),
        Kind::NotPermitted => (Errno::EPERM, "EPERM"),
        Kind::IsDirectory => (Errno::EISDIR, "EISDIR"),
        Kind::NotDirectory => (Errno::ENOTDIR, "ENOTDIR"),
        Kind::Stale => (Errno::ESTALE, "ESTALE"),
        Kind::Unsupported => (Errno::ENOTSUP, "ENOTSUP"),
        Kind::NoAttribute => (Errno::NO_XATTR, "ENODATA"),
        Kind::Failed => (Errno::EIO, "EIO"),
    };
    crate::metrics::metrics().error(name);
    tracing::warn!(op, error = %e, "request failed");
    code
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    use fuser::Errno;

    use super::{errno, existing_name, new_name};
    use crate::error::Error;

    #[test]
    fn each_meaning_has_its_errno() {
        let cases = [
            (Error::NoSuchPath("runs/x".into()), Errno::ENOENT),
            (Error::NotDirectory("f".into()), Errno::ENOTDIR),
            (Error::ReadOnly("data".into()), Errno::EROFS),
            (Error::NotPermitted("runs".into()), Errno::EPERM),
        ];
        for (e, want) in cases {
            assert_eq!(errno("test", &e), want, "{e}");
        }
    }

    #[test]
    fn a_name_that_is_not_utf8_does_not_exist_and_cannot_be_made() {
        let bad = OsStr::from_bytes(b"caf\xe9");
        assert_eq!(existing_name(bad), Err(Errno::ENOENT));
        assert_eq!(new_name(bad), Err(Errno::EINVAL));
        assert_eq!(new_name(OsStr::new("ok")), Ok("ok"));
    }
}
