//! What the mount says about itself to `mltrack status` and `mltrack warmup`: the store, the
//! cache, the files being written and the process's counters, read through the virtual
//! attribute `user.mltrack.status` of the mount's root; and how much of a file's object the
//! cache holds (`user.mltrack.cached`). Neither is listed by `listxattr`, so tools that copy
//! attributes never carry them (docs/MOUNT.md, "Metrics and status").

use std::sync::atomic::Ordering;

use serde::Serialize;

use super::{Kind, Tree, lock};
use crate::error::Result;
use crate::metrics::{Counts, metrics};

/// The root's attribute that holds the status, as JSON.
pub const STATUS_XATTR: &str = "user.mltrack.status";
/// A file's attribute that holds the bytes of its object the cache has, in decimal.
pub const CACHED_XATTR: &str = "user.mltrack.cached";

/// What `mltrack status` shows.
#[derive(Debug, Serialize)]
pub struct Status {
    pub store: String,
    pub pid: u32,
    pub read_only: bool,
    pub refresh_seconds: f64,
    /// Where `--metrics` serves, if it does.
    pub metrics: Option<String>,
    pub cache: CacheStatus,
    /// Files open for writing or written on this mount and not yet released.
    pub pending_writes: Vec<PendingWrite>,
    pub counters: Counts,
}

#[derive(Debug, Serialize)]
pub struct CacheStatus {
    pub dir: Option<String>,
    /// Bytes the cache directory holds, counting every mount that shares it.
    pub used_bytes: u64,
    pub limit_bytes: u64,
    /// Blocks and objects this mount has indexed.
    pub blocks: u64,
    pub objects: u64,
}

#[derive(Debug, Serialize)]
pub struct PendingWrite {
    pub run: String,
    pub path: String,
    pub bytes: u64,
    /// `committing` (stored and recorded now: the upload is in flight), `unsaved` (written
    /// since the last commit) or `saved` (committed, still open).
    pub state: &'static str,
}

impl Tree {
    /// The mount's status now.
    pub fn status(&self) -> Status {
        let (used_bytes, limit_bytes) = self.cache.as_ref().map_or((0, 0), |c| c.usage());
        let (blocks, objects) = self.cache.as_ref().map_or((0, 0), |c| c.indexed());
        let mut pending_writes: Vec<PendingWrite> = lock(&self.pending.writes)
            .values()
            .map(|w| {
                let target = w.target();
                let state = if w.committing.load(Ordering::Relaxed) {
                    "committing"
                } else {
                    match w.state.try_lock() {
                        Ok(st) if st.dirty && !st.detached => "unsaved",
                        Ok(_) => "saved",
                        // Held by a write or a commit just starting.
                        Err(_) => "unsaved",
                    }
                };
                PendingWrite {
                    run: target.run.to_string(),
                    path: target.path.to_string(),
                    bytes: w.size(),
                    state,
                }
            })
            .collect();
        pending_writes.sort_by(|a, b| (&a.run, &a.path).cmp(&(&b.run, &b.path)));
        Status {
            store: self.data().backend().describe(),
            pid: std::process::id(),
            read_only: self.opts.read_only,
            refresh_seconds: self.refresh.as_secs_f64(),
            metrics: self.opts.metrics.clone(),
            cache: CacheStatus {
                dir: self
                    .opts
                    .cache_dir
                    .as_ref()
                    .map(|d| d.display().to_string()),
                used_bytes,
                limit_bytes,
                blocks,
                objects,
            },
            pending_writes,
            counters: metrics().status(),
        }
    }

    /// The bytes of the object behind file `ino` that the cache holds; `None` for what has no
    /// object (a directory, a file being written, a manifest).
    pub async fn cached_bytes(&self, ino: u64) -> Result<Option<u64>> {
        let node = self.node(ino)?;
        let hash = match &node.kind {
            Kind::DataFile(h) => *h,
            Kind::RunFile(run, path) => {
                if self.writing(run, path).is_some() {
                    return Ok(None);
                }
                match self
                    .manifest(run)
                    .await?
                    .and_then(|m| m.0.files.get(path).map(|e| e.hash))
                {
                    Some(h) => h,
                    None => return Ok(None),
                }
            }
            _ => return Ok(None),
        };
        let (Some(cache), Some(meta)) = (&self.cache, self.metadata(&hash).await?) else {
            return Ok(Some(0));
        };
        Ok(Some(cache.cached_bytes(&meta.0)))
    }
}
