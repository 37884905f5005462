//! The manifests a long-lived process (a mount) has read or committed, so that every face
//! reads runs through one copy: each manifest is fetched at most once per refresh interval, a
//! commit of this process is seen by its next read at once (and a read that raced the commit
//! never puts the older copy back), and the next update of a run can start from the copy this
//! process committed (when the store honours `If-Match`, which catches anyone who wrote since).
//!
//! What it does not do: decide what a missing or unreadable manifest means (that is
//! [`super::Runs::current`]), cache object metadata (`cas` does), or cache view listings (the
//! filesystem core still does).

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
    /// `None`: this process deleted the run, or found it gone.
    current: Option<Current>,
    etag: Option<String>,
    /// When the copy was known to be the stored one: a commit's time, or when the read that
    /// fetched it started.
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
            .and_then(|c| c.current.clone())
    }

    /// What an update may start from: the copy last read or committed, with its ETag, if the
    /// store will refuse the write should that copy be stale.
    pub fn for_update(&self, run: &RunId) -> Option<(Manifest, String)> {
        if !self.conditional {
            return None;
        }
        let map = self.map();
        let c = map.get(run)?;
        Some((c.current.as_ref()?.0.clone(), c.etag.clone()?))
    }

    /// Remembers what this process just committed.
    pub fn committed(&self, run: &RunId, current: Current, etag: String) {
        self.set(run, Some(current), Some(etag), Instant::now());
    }

    /// Remembers what a read that started at `started` found (`None`: no such run), unless
    /// this process committed or deleted the run since: a read that raced a commit must not
    /// put the older manifest back (the mount would show its own change undone).
    pub fn read(
        &self,
        run: &RunId,
        current: Option<Current>,
        etag: Option<String>,
        started: Instant,
    ) {
        let mut map = self.map();
        if map.get(run).is_some_and(|c| c.at > started) {
            return;
        }
        map.insert(
            run.clone(),
            Cached {
                current,
                etag,
                at: started,
            },
        );
    }

    /// Forgets the run's manifest: it was deleted, or a write found the copy stale.
    pub fn forget(&self, run: &RunId) {
        self.set(run, None, None, Instant::now());
    }

    fn set(&self, run: &RunId, current: Option<Current>, etag: Option<String>, at: Instant) {
        self.map().insert(run.clone(), Cached { current, etag, at });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current(tag: &str) -> Current {
        let mut m = crate::runs::manifest::tests::sample();
        m.tags.clear();
        Arc::new((m, Bytes::from(tag.to_string())))
    }

    #[test]
    fn a_read_that_raced_a_commit_does_not_undo_it() {
        let cache = ManifestCache::new(Duration::from_secs(60), true);
        let run = RunId::parse("run id", "prod_001").unwrap();
        let read_started = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        cache.committed(&run, current("committed"), "e2".into());
        // The read's GET began before the commit and returns the older manifest.
        cache.read(
            &run,
            Some(current("older")),
            Some("e1".into()),
            read_started,
        );
        assert_eq!(cache.fresh(&run).unwrap().1, "committed");
        assert_eq!(cache.for_update(&run).unwrap().1, "e2");
        // A read that began after the commit replaces it.
        cache.read(
            &run,
            Some(current("newer")),
            Some("e3".into()),
            Instant::now(),
        );
        assert_eq!(cache.fresh(&run).unwrap().1, "newer");
        // A delete is not undone by a read that began before it either.
        let read_started = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        cache.forget(&run);
        cache.read(&run, Some(current("older")), None, read_started);
        assert!(cache.fresh(&run).is_none());
    }
}
