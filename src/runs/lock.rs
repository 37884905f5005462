//! The machine-wide lock that serializes writers of one run on one machine: every mount and
//! every CLI process updating run R of store S takes the same `flock` first.
//!
//! Lock files live in a directory shared by all users of the machine (`$MLTRACK_LOCK_DIR`,
//! default `/tmp/mltrack-locks`, mode 1777), named by a hash of the store and the run id, so
//! that two stores never share a lock and no run id ever becomes a path. The lock is released
//! when the guard drops, and by the kernel if the process dies.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::ids::RunId;

pub struct RunLock {
    _file: File,
}

fn lock_dir() -> PathBuf {
    std::env::var_os("MLTRACK_LOCK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/mltrack-locks"))
}

impl RunLock {
    /// Blocks until this process holds the lock of `run` in the store described by `store`.
    pub async fn acquire(store: &str, run: &RunId) -> Result<RunLock> {
        let dir = lock_dir();
        let name = crate::cas::hashing::sha256(format!("{store}\n{run}").as_bytes()).to_hex()[..32]
            .to_string();
        let path = dir.join(name);
        crate::cas::blocking(move || {
            if !dir.exists() {
                fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
                // Shared by every user of the machine, like /tmp itself.
                let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777));
            }
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(Error::io(&path))?;
            let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o666));
            // SAFETY: flock on a descriptor we own; released when the file is closed.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(Error::io(&path)(std::io::Error::last_os_error()));
            }
            Ok(RunLock { _file: file })
        })
        .await
    }
}
