//! The domain's error type, shared by the content-addressed store, runs and maintenance.
//!
//! One type for the whole domain keeps a single place (the CLI's exit path, and later the
//! FUSE adapter's errno mapping) that must decide, with an exhaustive `match`, what each
//! failure means to a user. Each variant's message is one sentence naming the value at fault.

use std::path::PathBuf;

use crate::ids::{Digest, IdError, RunId};
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Invalid(#[from] IdError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no stored data has hash {0}")]
    DataNotFound(String),
    #[error("hash prefix {prefix:?} matches {count} stored objects; give more digits")]
    AmbiguousPrefix { prefix: String, count: usize },
    #[error("run {0} does not exist")]
    RunNotFound(RunId),
    /// A path in the mounted tree that is not there.
    #[error("{0} does not exist")]
    NoSuchPath(String),
    /// An inode the kernel asked about after this mount forgot it.
    #[error("inode {0} is not known to this mount")]
    Stale(u64),
    #[error("run {0} already exists")]
    RunExists(RunId),
    #[error("{key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("{} changed while it was being stored; nothing was recorded, try again", path.display())]
    Changed { path: PathBuf },
    #[error("block {block} of object {hash} does not match its recorded hash")]
    BadBlock { hash: Digest, block: u64 },
    /// A directory mltrack writes in that it will not trust (docs/SECURITY.md): the message
    /// is a whole sentence naming the path and the setting to change.
    #[error("{0}")]
    Untrusted(String),
    /// One failure met by several waiters (a block fetch shared by concurrent readers).
    #[error("{0}")]
    Shared(std::sync::Arc<Error>),
    /// Something this filesystem does not keep (an attribute outside `user.*`): `ENOTSUP`.
    #[error("{0}")]
    Unsupported(String),
    /// A bound on what one file may carry was passed (its extended attributes): `ENOSPC`.
    #[error("{0}")]
    NoRoom(String),
    /// An extended attribute that is not there: `ENODATA`.
    #[error("{0} has no such attribute")]
    NoAttribute(String),
    /// Something that should not happen did (a worker task that died, a store that answers
    /// with other bytes than were written); the message says what.
    #[error("{0}")]
    Failed(String),
    /// Filesystem refusals, each with its own error number (see `fuse::errno`).
    #[error("{0} already exists")]
    Exists(String),
    #[error("{0} is not empty")]
    NotEmpty(String),
    #[error("{0} is read-only")]
    ReadOnly(String),
    #[error("{0}")]
    NotPermitted(String),
    /// What was asked for is not valid (a flag, a setting, a value, a key for a view): one
    /// sentence naming the value; `EINVAL` on the mount.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0} is a directory")]
    IsDirectory(String),
    #[error("{0} is not a directory")]
    NotDirectory(String),
    #[error(
        "run {run}: gave up after {attempts} attempts, other writers kept changing its manifest"
    )]
    Contention { run: RunId, attempts: u32 },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a failure means to whoever asked, whatever caused it: the one classification of
/// errors, which each face maps once (the mount to an errno, in `fuse::errno`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    NotFound,
    NameTooLong,
    Invalid,
    NoSpace,
    Exists,
    NotEmpty,
    ReadOnly,
    NotPermitted,
    IsDirectory,
    NotDirectory,
    Stale,
    Unsupported,
    NoAttribute,
    /// The store, the disk or the data failed: nothing the caller asked was wrong.
    Failed,
}

impl Error {
    /// What this failure means; see [`Kind`]. Exhaustive, so that a new variant must be
    /// classified here.
    pub fn kind(&self) -> Kind {
        match self {
            Error::Shared(e) => e.kind(),
            Error::RunNotFound(_) | Error::DataNotFound(_) | Error::NoSuchPath(_) => Kind::NotFound,
            Error::Stale(_) => Kind::Stale,
            Error::Unsupported(_) => Kind::Unsupported,
            Error::NoAttribute(_) => Kind::NoAttribute,
            Error::NoRoom(_) => Kind::NoSpace,
            Error::Storage(StorageError::NotFound { .. }) => Kind::NotFound,
            Error::Invalid(id) if id.is_too_long() => Kind::NameTooLong,
            Error::Storage(StorageError::InvalidKey { .. })
            | Error::Invalid(_)
            | Error::BadRequest(_) => Kind::Invalid,
            Error::Storage(s) if s.is_no_space() => Kind::NoSpace,
            Error::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
                Kind::NoSpace
            }
            Error::Exists(_) | Error::RunExists(_) => Kind::Exists,
            Error::NotEmpty(_) => Kind::NotEmpty,
            Error::ReadOnly(_) => Kind::ReadOnly,
            Error::NotPermitted(_) => Kind::NotPermitted,
            Error::IsDirectory(_) => Kind::IsDirectory,
            Error::NotDirectory(_) => Kind::NotDirectory,
            Error::Storage(_)
            | Error::Io { .. }
            | Error::Corrupt { .. }
            | Error::BadBlock { .. }
            | Error::Changed { .. }
            | Error::AmbiguousPrefix { .. }
            | Error::Contention { .. }
            | Error::Untrusted(_)
            | Error::Failed(_) => Kind::Failed,
        }
    }

    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    /// Like [`Error::io`], for the work of a [`crate::trusted::TrustedDir`]: its refusals are
    /// whole sentences that name the path already, and are kept as they are.
    pub fn in_dir(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| {
            if source.get_ref().is_some() {
                Error::Untrusted(source.to_string())
            } else {
                Error::Io { path, source }
            }
        }
    }
}
