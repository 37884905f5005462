//! The machine-wide lock that serializes writers of one run on one machine: every mount and
//! every CLI process of one user updating run R of store S takes the same `flock` first.
//!
//! Lock files live in a directory only that user (or root) can write: `$MLTRACK_LOCK_DIR`,
//! else `/run/mltrack/locks` for root (the systemd unit's `RuntimeDirectory=`),
//! `$XDG_RUNTIME_DIR/mltrack/locks` for other users, and `/tmp/mltrack-locks-<uid>` where
//! there is no runtime directory. A lock is named by a hash of the store and the run id, so
//! that two stores never share a lock and no run id ever becomes a path. The directory and
//! the file are opened through [`TrustedDir`]: nothing planted there is followed, and a
//! directory another user could change is refused (docs/SECURITY.md). Writers of different
//! users, like writers on different machines, are kept apart by the store's conditional
//! writes. The lock is released when the guard drops, and by the kernel if the process dies.

use std::fs::File;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::ids::RunId;
use crate::trusted::{Open, Policy, TrustedDir};

pub struct RunLock {
    _file: File,
}

/// Where this process keeps its run locks (see the module documentation).
pub fn lock_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MLTRACK_LOCK_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let uid = rustix::process::geteuid().as_raw();
    if uid == 0 {
        return PathBuf::from("/run/mltrack/locks");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("mltrack").join("locks"),
        None => PathBuf::from(format!("/tmp/mltrack-locks-{uid}")),
    }
}

/// Opens this process's run lock directory (see [`lock_dir`]), creating it, and checks that no
/// other user can change it.
pub fn open_lock_dir() -> std::io::Result<TrustedDir> {
    let hint = "set MLTRACK_LOCK_DIR to a directory of your own";
    TrustedDir::open(&lock_dir(), Policy::Locks, true, hint)
}

impl RunLock {
    /// Blocks until this process holds the lock of `run` in the store described by `store`.
    pub async fn acquire(store: &str, run: &RunId) -> Result<RunLock> {
        let dir = lock_dir();
        let name = crate::cas::hashing::sha256(format!("{store}\n{run}").as_bytes()).to_hex()[..32]
            .to_string();
        crate::cas::blocking(move || {
            let locks = open_lock_dir().map_err(Error::in_dir(&dir))?;
            let file = locks
                .lock_exclusive(&name, Open::Lock)
                .map_err(Error::in_dir(dir.join(&name)))?;
            Ok(RunLock { _file: file })
        })
        .await
    }
}
