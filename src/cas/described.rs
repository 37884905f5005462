//! The metadata of objects a long-lived process (a mount) has read or stored, so that every
//! face asks `cas` for it and reads each `metadata.json` once: it never changes, so a copy is
//! never stale. A [`MetadataKeeper`] (the node's block cache) keeps copies across restarts.
//!
//! What it does not do: decide what a missing or unreadable `metadata.json` means; that is
//! [`super::DataStore::described`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::metadata::ObjectMetadata;
use crate::ids::Digest;

/// An object's metadata and the exact bytes of its `metadata.json` (what the mount serves).
pub type Described = Arc<(ObjectMetadata, Bytes)>;

/// Somewhere on the node that keeps copies of `metadata.json` across restarts.
pub trait MetadataKeeper: Send + Sync + std::fmt::Debug {
    /// The bytes kept for `h`, if any (the caller parses them, which checks they describe `h`).
    fn kept(&self, h: &Digest) -> Option<Vec<u8>>;
    /// Keeps `json` for `h`, best effort.
    fn keep(&self, h: &Digest, json: &[u8]);
}

#[derive(Debug, Default)]
pub struct MetadataCache {
    map: Mutex<HashMap<Digest, Described>>,
    keeper: Option<Arc<dyn MetadataKeeper>>,
}

impl MetadataCache {
    pub fn new(keeper: Option<Arc<dyn MetadataKeeper>>) -> MetadataCache {
        MetadataCache {
            map: Mutex::new(HashMap::new()),
            keeper,
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<Digest, Described>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What this process has, or the keeper kept.
    pub fn get(&self, h: &Digest) -> Option<Described> {
        if let Some(d) = self.map().get(h) {
            return Some(d.clone());
        }
        let bytes = self.keeper.as_ref()?.kept(h)?;
        let meta = ObjectMetadata::parse(h, &bytes).ok()?;
        let d = Arc::new((meta, Bytes::from(bytes)));
        self.map().insert(*h, d.clone());
        Some(d)
    }

    /// Remembers metadata just read or written, and has the keeper keep it.
    pub fn put(&self, meta: ObjectMetadata, json: Bytes) -> Described {
        if let Some(k) = &self.keeper {
            k.keep(&meta.hash, &json);
        }
        let h = meta.hash;
        let d = Arc::new((meta, json));
        self.map().insert(h, d.clone());
        d
    }
}
