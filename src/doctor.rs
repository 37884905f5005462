//! `mltrack doctor`: checks, one by one, what a mount on this node depends on, and says what
//! to do about each failure: the store is reachable and writable, it honours conditional
//! writes, FUSE is usable, the cache directory is writable.

use std::path::Path;

use bytes::Bytes;
use serde::Serialize;

use crate::config::Config;
use crate::runs::Runs;
use crate::storage::{Body, PutMode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
}

pub async fn run(config: &Config, runs: &Runs) -> Vec<Check> {
    let mut checks = vec![];
    let store = runs.data().backend();
    let access = probe_access(runs).await;
    let reachable = access.is_ok();
    checks.push(match access {
        Ok(()) => Check {
            name: "store",
            status: Status::Ok,
            detail: format!("{} is readable and writable", store.describe()),
        },
        Err(e) => Check {
            name: "store",
            status: Status::Fail,
            detail: format!("{}: {e}", store.describe()),
        },
    });
    if reachable {
        checks.push(match runs.probe_conditional_writes().await {
            Ok(true) => Check {
                name: "conditional writes",
                status: Status::Ok,
                detail: "the store honours If-None-Match and If-Match: writers on different machines never lose manifest entries".into(),
            },
            Ok(false) => Check {
                name: "conditional writes",
                status: Status::Warn,
                detail: "the store ignores conditional writes (Garage does): writers on one machine are still serialized, but two machines updating the same run at the same moment can lose an entry".into(),
            },
            Err(e) => Check { name: "conditional writes", status: Status::Fail, detail: e.to_string() },
        });
    }
    checks.push(check_fuse());
    checks.push(check_cache_dir(&config.cache_dir));
    checks.push(check_lock_dir());
    checks
}

/// The run lock directory, opened as a write opens it (docs/SECURITY.md).
fn check_lock_dir() -> Check {
    let name = "run locks";
    let dir = crate::runs::lock::lock_dir();
    match crate::runs::lock::open_lock_dir() {
        Ok(_) => Check {
            name,
            status: Status::Ok,
            detail: format!("{} is safe from other users", dir.display()),
        },
        Err(e) => Check {
            name,
            status: Status::Fail,
            detail: format!("{} cannot be used: {e}", dir.display()),
        },
    }
}

/// Lists, writes, reads back and deletes a scratch object.
async fn probe_access(runs: &Runs) -> crate::error::Result<()> {
    let store = runs.data().backend();
    crate::storage::list_all(store.as_ref(), crate::layout::MANIFESTS, true).await?;
    let key = format!("{}doctor-{}", crate::layout::PROBES, std::process::id());
    store
        .put(
            &key,
            Body::Bytes(Bytes::from_static(b"doctor")),
            PutMode::Overwrite,
        )
        .await?;
    let got = store.get(&key, None).await?;
    store.delete(&key).await?;
    if &got.data[..] != b"doctor" {
        return Err(crate::error::Error::Failed(
            "the store returned other bytes than were written".into(),
        ));
    }
    Ok(())
}

fn check_fuse() -> Check {
    let name = "fuse";
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse") {
        Ok(_) => Check { name, status: Status::Ok, detail: "/dev/fuse is present and can be opened".into() },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Check {
            name,
            status: Status::Fail,
            detail: "/dev/fuse does not exist: load the fuse module (modprobe fuse) or, in a container, pass --device /dev/fuse".into(),
        },
        Err(e) => Check {
            name,
            status: Status::Fail,
            detail: format!("/dev/fuse cannot be opened ({e}): install fuse3 for fusermount3, or run as a user allowed to mount"),
        },
    }
}

fn check_cache_dir(dir: &Path) -> Check {
    let name = "cache";
    // Opened as a mount opens it: a directory another user could change is refused here too.
    let result = crate::cache::CacheDir::open(dir, true).and_then(|cache| {
        let probe = format!(".doctor-{}", std::process::id());
        let spool = cache.spool()?;
        spool.open_file(&probe, crate::trusted::Open::CreateNew)?;
        spool.remove_file(&probe)
    });
    match result {
        Ok(()) => Check {
            name,
            status: Status::Ok,
            detail: format!("{} is private to you and writable", dir.display()),
        },
        Err(e) => Check {
            name,
            status: Status::Fail,
            detail: format!(
                "{} cannot be used ({e}): set --cache-dir or MLTRACK_CACHE_DIR",
                dir.display()
            ),
        },
    }
}
