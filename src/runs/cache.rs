//! The manifests a long-lived process (a mount) has read or committed, so that every face
//! reads runs through one copy: each manifest is fetched at most once per refresh interval,
//! a commit of this process is seen by its next read at once, and the next update of a run
//! can start from the copy this process committed (when the store honours `If-Match`, which
//! catches anyone who wrote since).
//!
//! What it does not do: decide what a missing or unreadable manifest means (that is
//! [`super::Runs::current`]), or cache view listings and object metadata (the filesystem core
//! still keeps those).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::manifest::Manifest;
use crate::ids::RunId;

/// A manifest as read or committed, and the exact bytes it is stored as (what
/// `manifests/<run>.json` shows through a mount).
pub type Current = Arc<(Manifest, Bytes)>;

#[derive(Debug)]
pub struct ManifestCache {
    refresh: Duration,
    /// Updates may start from a cached copy: the store honours conditional writes.
    conditional: bool,
    map: Mutex<HashMap<RunId, Cached>>,
}

#[derive(Debug)]
struct Cached {
    current: Current,
    etag: Option<String>,
    at: Instant,
}

impl ManifestCache {
    pub fn new(refresh: Duration, conditional: bool) -> ManifestCache {
        ManifestCache {
            refresh,
            conditional,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<RunId, Cached>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The run's manifest if it was read or committed less than the refresh interval ago.
    pub fn fresh(&self, run: &RunId) -> Option<Current> {
        self.map()
            .get(run)
            .filter(|c| c.at.elapsed() < self.refresh)
            .map(|c| c.current.clone())
    }

    /// What an update may start from: the copy last read or committed, with its ETag, if the
    /// store will refuse the write should that copy be stale.
    pub fn for_update(&self, run: &RunId) -> Option<(Manifest, String)> {
        if !self.conditional {
            return None;
        }
        let map = self.map();
        let c = map.get(run)?;
        Some((c.current.0.clone(), c.etag.clone()?))
    }

    pub fn put(&self, run: &RunId, current: Current, etag: Option<String>) {
        self.map().insert(
            run.clone(),
            Cached {
                current,
                etag,
                at: Instant::now(),
            },
        );
    }

    pub fn forget(&self, run: &RunId) {
        self.map().remove(run);
    }
}
