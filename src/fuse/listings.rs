//! Which directory listings the kernel may keep. Every directory is opened with
//! `FOPEN_CACHE_DIR`, so the kernel keeps what `readdir` returned in the directory's page
//! cache; an `opendir` adds `FOPEN_KEEP_CACHE` (serve the kept listing, ask nothing) only while
//! what the listing was made from was read from the store less than `--refresh` ago
//! (`fs::Tree::as_of`) and nothing has changed through this mount since it was made. Any
//! change through the mount (a create, a rename, a `chmod`, a close that stores a file) can
//! change listings far from its own directory (a run's other views, `data/`, `manifests/`), so
//! a change counts for every directory; other nodes' changes are listed within `--refresh`.
//! docs/MOUNT.md, "Kernel caching".
//!
//! The kernel asks for a directory's attributes again after each time it reads it (it keeps
//! the access time fresh), whatever their time to live; for a run's directory that needs the
//! run's manifest, which a mount keeps for a bounded number of runs. So the attributes last
//! given for a directory are answered again under the same rule as its listing. Both are
//! remembered for the most recently used [`DIRS_KEPT`] directories: a directory past those is
//! listed, or asked about, here again.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fuser::FileAttr;
use lru::LruCache;

use crate::fs::lock;

/// Directories whose listing may be kept and whose attributes are answered again (about 200
/// bytes each for both).
pub const DIRS_KEPT: usize = 65_536;

pub struct Listings {
    refresh: Duration,
    /// Bumped after every change made through the mount.
    changes: AtomicU64,
    /// Per directory inode: the count of changes its listing was made after, and when.
    listed: Mutex<LruCache<u64, (u64, Instant)>>,
    /// Per directory inode: the attributes last given, their time to live, and as `listed`.
    attrs: Mutex<LruCache<u64, (FileAttr, Duration, u64, Instant)>>,
}

/// Taken before a listing is made: what it is made after.
#[derive(Clone, Copy)]
pub struct Before(u64, Instant);

impl Before {
    /// What was found after this, from what the store showed at `as_of` (if earlier): it
    /// counts from then.
    pub fn as_of(self, as_of: Option<Instant>) -> Before {
        Before(self.0, as_of.map_or(self.1, |at| at.min(self.1)))
    }
}

impl Listings {
    pub fn new(refresh: Duration) -> Listings {
        Listings {
            refresh,
            changes: AtomicU64::new(0),
            listed: Mutex::new(LruCache::new(kept())),
            attrs: Mutex::new(LruCache::new(kept())),
        }
    }

    /// A change through the mount has completed (or failed, perhaps halfway): no listing made
    /// before it is kept.
    pub fn changed(&self) {
        self.changes.fetch_add(1, Ordering::SeqCst);
    }

    /// Called before a directory is listed from its start.
    pub fn before(&self) -> Before {
        Before(self.changes.load(Ordering::SeqCst), Instant::now())
    }

    /// Directory `ino` was listed, from its start, after `before`.
    pub fn listed(&self, ino: u64, before: Before) {
        lock(&self.listed).put(ino, (before.0, before.1));
    }

    /// Whether the kernel may serve directory `ino` from the listing it kept.
    pub fn keep(&self, ino: u64) -> bool {
        let found = lock(&self.listed).get(&ino).copied();
        found.is_some_and(|(after, at)| self.current(after, at))
    }

    /// Directory `ino`'s attributes, found after `before`, with how long the kernel may keep
    /// them.
    pub fn dir_attr_found(&self, before: Before, attr: FileAttr, ttl: Duration) {
        lock(&self.attrs).put(attr.ino.0, (attr, ttl, before.0, before.1));
    }

    /// The attributes last given for directory `ino`, while they are current.
    pub fn dir_attr(&self, ino: u64) -> Option<(FileAttr, Duration)> {
        let (attr, ttl, after, at) = *lock(&self.attrs).get(&ino)?;
        self.current(after, at).then_some((attr, ttl))
    }

    /// Whether what was found after `after` changes, at `at`, still stands.
    fn current(&self, after: u64, at: Instant) -> bool {
        after == self.changes.load(Ordering::SeqCst) && at.elapsed() < self.refresh
    }
}

fn kept() -> NonZeroUsize {
    NonZeroUsize::new(DIRS_KEPT).unwrap_or(NonZeroUsize::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_is_kept_until_a_change_or_the_refresh_interval() {
        let l = Listings::new(Duration::from_secs(60));
        assert!(!l.keep(7), "never listed");
        let b = l.before();
        l.listed(7, b);
        assert!(l.keep(7));
        assert!(!l.keep(8));
        l.changed();
        assert!(!l.keep(7), "changed since");
        l.listed(7, l.before());
        assert!(l.keep(7));

        // A change that completes while the listing is being made: not kept.
        let b = l.before();
        l.changed();
        l.listed(7, b);
        assert!(!l.keep(7));

        let l = Listings::new(Duration::ZERO);
        l.listed(7, l.before());
        assert!(!l.keep(7), "older than the refresh interval");
    }

    #[test]
    fn a_directorys_attributes_are_answered_again_under_the_same_rule() {
        let attr = |ino| FileAttr {
            perm: 0o755,
            ..super::super::dot_attr(ino, fuser::FileType::Directory)
        };
        let l = Listings::new(Duration::from_secs(60));
        assert!(l.dir_attr(9).is_none());
        l.dir_attr_found(l.before(), attr(9), Duration::from_secs(5));
        let (a, ttl) = l.dir_attr(9).expect("kept");
        assert_eq!((a.ino.0, a.perm, ttl), (9, 0o755, Duration::from_secs(5)));
        l.changed();
        assert!(l.dir_attr(9).is_none(), "a change since");
    }
}
