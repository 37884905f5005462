//! The metadata of objects a long-lived process (a mount) has read or stored, so that every
//! face asks `cas` for it and reads each `metadata.json` once: it never changes, so a copy is
//! never stale. A [`MetadataKeeper`] (the node's block cache) keeps copies across restarts.
//!
//! It also finds objects by their first block ([`MetadataCache::starting_with`]): a large file
//! being written whose first blocks are those of an object described here is most likely a
//! copy of it, and the mount then verifies the rest against the object's block digests instead
//! of spooling it (docs/MOUNT.md, "Copies of stored data are not spooled").
//!
//! What it does not do: decide what a missing or unreadable `metadata.json` means; that is
//! [`super::DataStore::described`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::hashing::{BLOCK_SIZE, CHUNK_SIZE};
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
    /// The objects of more than one block, hashed in [`CHUNK_SIZE`] chunks of
    /// [`BLOCK_SIZE`] blocks (what mltrack writes), by their first block's digest: the last
    /// described wins where several start alike.
    starts: Mutex<HashMap<Digest, Digest>>,
    keeper: Option<Arc<dyn MetadataKeeper>>,
}

impl MetadataCache {
    pub fn new(keeper: Option<Arc<dyn MetadataKeeper>>) -> MetadataCache {
        MetadataCache {
            map: Mutex::new(HashMap::new()),
            starts: Mutex::default(),
            keeper,
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<Digest, Described>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn starts(&self) -> MutexGuard<'_, HashMap<Digest, Digest>> {
        self.starts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, d: &Described) {
        let m = &d.0;
        self.map().insert(m.hash, d.clone());
        if m.size > m.block_size
            && m.block_size == BLOCK_SIZE
            && m.chunk_size == Some(CHUNK_SIZE)
            && let Some(first) = m.block_hashes.first()
        {
            self.starts().insert(*first, m.hash);
        }
    }

    /// A described object of more than one block whose first block has digest `first` (as
    /// [`super::hashing::block_digest`] computes it with [`CHUNK_SIZE`] chunks), if any.
    pub fn starting_with(&self, first: &Digest) -> Option<Described> {
        let h = *self.starts().get(first)?;
        self.map().get(&h).cloned()
    }

    /// Stops offering object `h` by its first block (its bytes could not be read).
    pub fn forget_start(&self, h: &Digest) {
        self.starts().retain(|_, object| object != h);
    }

    /// What this process has, or the keeper kept.
    pub fn get(&self, h: &Digest) -> Option<Described> {
        if let Some(d) = self.map().get(h) {
            return Some(d.clone());
        }
        let bytes = self.keeper.as_ref()?.kept(h)?;
        let meta = ObjectMetadata::parse(h, &bytes).ok()?;
        let d = Arc::new((meta, Bytes::from(bytes)));
        self.insert(&d);
        Some(d)
    }

    /// Remembers metadata just read or written, and has the keeper keep it.
    pub fn put(&self, meta: ObjectMetadata, json: Bytes) -> Described {
        if let Some(k) = &self.keeper {
            k.keep(&meta.hash, &json);
        }
        let d = Arc::new((meta, json));
        self.insert(&d);
        d
    }
}
