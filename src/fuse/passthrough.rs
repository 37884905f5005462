//! FUSE passthrough (Linux 6.9 and later): a fully cached object, verified and pinned, is
//! handed to the kernel as a backing file, and the kernel reads it without coming to the
//! daemon. Every open of one inode must use the same backing id, so ids are kept by inode
//! while any open holds them, with the object they show; an inode reopened on another object
//! (a run file rewritten) is read through the daemon until the old opens are gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use fuser::{BackingId, ReplyOpen};

use crate::ids::Digest;

#[derive(Default)]
pub(super) struct Passthrough {
    /// Whether the kernel accepted passthrough at init.
    enabled: AtomicBool,
    /// Backing ids by inode, with the object they show.
    backing: Mutex<HashMap<u64, (Digest, Weak<BackingId>)>>,
    /// Open passthrough handles: the backing id and the pinned cache file, kept while open.
    open: Mutex<HashMap<u64, (Arc<BackingId>, std::fs::File)>>,
}

impl Passthrough {
    pub(super) fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    pub(super) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// The backing id that shows `file`, the cache file of object `hash`, as inode `ino`: the
    /// one an open of the inode already holds, else a new one. `None` if the inode is open on
    /// another object, or the kernel refused.
    pub(super) fn backing(
        &self,
        reply: &ReplyOpen,
        ino: u64,
        hash: Digest,
        file: &std::fs::File,
    ) -> Option<Arc<BackingId>> {
        let mut backing = self.backing.lock().unwrap_or_else(|p| p.into_inner());
        let id = match backing.get(&ino) {
            Some((h, id)) => match id.upgrade() {
                Some(id) if *h == hash => Some(id),
                Some(_) => None,
                None => reply.open_backing(file).ok().map(Arc::new),
            },
            None => reply.open_backing(file).ok().map(Arc::new),
        }?;
        backing.insert(ino, (hash, Arc::downgrade(&id)));
        Some(id)
    }

    /// Keeps the backing id and the pinned file of handle `fh` while it is open.
    pub(super) fn opened(&self, fh: u64, id: Arc<BackingId>, file: std::fs::File) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, (id, file));
    }

    pub(super) fn released(&self, fh: u64) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh);
    }
}
