//! Content-addressed data: bytes stored once under their SHA-256, whatever name, run or format
//! they arrive under.
//!
//! Storing a file is: one hash pass (whole-file and per-block digests), a presence check on
//! `metadata.json`, and only if absent an upload of `data.<fmt>` followed by `metadata.json`.
//! (Small data on a remote store is uploaded beside the check, create-if-absent, while the
//! last small file was new: docs/STORE.md, "Order of writes".)
//! A file hashed while it was written has only its whole-file digest at that point; its block
//! digests are computed beside its upload, and not at all if its bytes were already stored.
//! The order makes `metadata.json` the commit point: a crash in between leaves an object that
//! is simply uploaded again. A file that changes between the hash pass and the end of the
//! upload is refused before `metadata.json` is written, so a hash never describes other bytes.
//! Reading verifies every block against its recorded hash before handing it out.
//!
//! This module knows objects, names and `used_by` markers; it knows nothing of manifests.

pub mod described;
pub mod format;
pub mod hashing;
pub mod metadata;
pub mod tables;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::ids::{Digest, Name, RunId};
use crate::layout;
use crate::storage::{
    Body, DynStore, Listings, PutMode, StorageError, children_kept, has_child, list_all,
};
use crate::trusted::TrustedDir;
use described::MetadataCache;
pub use described::{Described, MetadataKeeper};
use format::Format;
use metadata::ObjectMetadata;

/// Told the number of bytes processed as a long operation advances.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// Blocks fetched per GET when exporting an object.
const BLOCKS_PER_GET: u64 = 8;
/// GETs in flight when exporting an object.
const GETS_IN_FLIGHT: usize = 4;
/// Fetches of a block range whose bytes fail verification before the read fails: a transfer
/// damaged on the way is fetched again; bytes damaged in the store fail within about 1.5 s.
const FETCHES_OF_A_BAD_BLOCK: u32 = 5;
/// Data up to this size is uploaded together with its dedup check on a remote store
/// (`DataStore::store_hashed`): sending it costs less than the round trip it saves.
const UPLOAD_WITH_THE_CHECK: u64 = 256 * 1024;

/// The result of storing a file.
#[derive(Debug, Clone)]
pub struct Stored {
    pub meta: ObjectMetadata,
    /// False when the bytes were already in the store and nothing was uploaded.
    pub new: bool,
}

#[derive(Debug, Clone)]
pub struct DataStore {
    store: DynStore,
    /// Metadata read or stored by this process (a mount); none for a CLI command.
    described: Option<Arc<MetadataCache>>,
    /// Listings of `data/` kept for a while (a mount); none for a CLI command.
    listings: Option<Arc<Listings>>,
    /// The last small file stored through this store (and its clones) was new data: the next
    /// is uploaded beside its dedup check.
    small_data_was_new: Arc<AtomicBool>,
    /// The server refuses a second create-if-absent PUT of a key (probed by the mount): a
    /// small new file's create then says by itself that nothing was stored under its key, and
    /// needs no dedup check beside it.
    create_is_honoured: Arc<AtomicBool>,
}

impl DataStore {
    pub fn new(store: DynStore) -> Self {
        DataStore {
            store,
            described: None,
            listings: None,
            small_data_was_new: Arc::new(AtomicBool::new(true)),
            create_is_honoured: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Says whether the server refuses a second create-if-absent PUT of one key, as the mount
    /// probes at start-up (for this store and its clones).
    pub fn honours_create_if_absent(&self, honoured: bool) {
        self.create_is_honoured.store(honoured, Ordering::Relaxed);
    }

    /// Keeps the metadata this process reads and stores (see [`described`]), and has `keeper`
    /// keep copies across restarts.
    pub fn caching_metadata(mut self, keeper: Option<Arc<dyn MetadataKeeper>>) -> Self {
        self.described = Some(Arc::new(MetadataCache::new(keeper)));
        self
    }

    /// Keeps the listings of `data/` and its fan-out directories for `ttl`.
    pub fn caching_listings(mut self, ttl: std::time::Duration) -> Self {
        self.listings = Some(Arc::new(Listings::new(ttl)));
        self
    }

    /// The names directly under `prefix`, kept for a while if this store keeps listings.
    async fn children(&self, prefix: &str) -> Result<Arc<Vec<String>>> {
        Ok(children_kept(self.listings.as_deref(), self.store.as_ref(), prefix).await?)
    }

    /// The fan-out directories of `data/` (`00` to `ff`) that hold objects.
    pub async fn fanouts(&self) -> Result<Vec<String>> {
        Ok(self
            .children(layout::DATA)
            .await?
            .iter()
            .filter(|f| {
                f.len() == 2
                    && f.bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            })
            .cloned()
            .collect())
    }

    /// When the kept listing of `data/` (`fan`: of that fan-out directory) was made; `None`
    /// if none is kept.
    pub fn listed_at(&self, fan: Option<&str>) -> Option<std::time::Instant> {
        let prefix = fan.map_or_else(|| layout::DATA.to_string(), layout::fanout_prefix);
        self.listings.as_ref()?.made_at(&prefix)
    }

    /// The objects under fan-out directory `fan`; names that are not hashes of that fan-out
    /// are left out.
    pub async fn objects_in(&self, fan: &str) -> Result<Vec<Digest>> {
        Ok(self
            .children(&layout::fanout_prefix(fan))
            .await?
            .iter()
            .filter_map(|name| name.parse::<Digest>().ok())
            .filter(|h| h.fanout() == fan)
            .collect())
    }

    /// Object `name`, if the listing of fan-out directory `fan` has it: what
    /// [`DataStore::objects_in`] would list, found without building the list.
    pub async fn lists_object(&self, fan: &str, name: &str) -> Result<Option<Digest>> {
        let names = self.children(&layout::fanout_prefix(fan)).await?;
        Ok(match has_child(&names, name) {
            true => name.parse::<Digest>().ok().filter(|h| h.fanout() == fan),
            false => None,
        })
    }

    pub fn is_caching_metadata(&self) -> bool {
        self.described.is_some()
    }

    /// The object's metadata if this process has it or the node keeps a copy (see
    /// [`described`]), without asking the store.
    pub fn described_kept(&self, h: &Digest) -> Option<Described> {
        self.described.as_ref()?.get(h)
    }

    /// Stops offering object `h` by its first block (see [`Self::described_starting_with`]).
    pub fn forget_start(&self, h: &Digest) {
        if let Some(c) = &self.described {
            c.forget_start(h);
        }
    }

    /// An object this process has read or stored whose first block has digest `first`, if
    /// it keeps metadata (see [`described`]).
    pub fn described_starting_with(&self, first: &Digest) -> Option<Described> {
        self.described.as_ref()?.starting_with(first)
    }

    /// The object's metadata as a reader sees it: remembered, kept on the node, or read;
    /// `None` if the object is not (completely) stored, and also if its `metadata.json` does
    /// not parse or describes other bytes (skipped with a warning, never served).
    pub async fn described(&self, h: &Digest) -> Result<Option<Described>> {
        if let Some(d) = self.described_kept(h) {
            return Ok(Some(d));
        }
        let got = match self.store.get(&layout::metadata_key(h), None).await {
            Ok(g) => g,
            Err(StorageError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let meta = match ObjectMetadata::parse(h, &got.data) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "skipping object with unreadable metadata");
                return Ok(None);
            }
        };
        Ok(Some(match &self.described {
            Some(c) => c.put(meta, got.data),
            None => Arc::new((meta, got.data)),
        }))
    }

    /// Remembers the metadata of an object this process just stored.
    fn remember(&self, meta: &ObjectMetadata) {
        if let Some(c) = &self.described {
            c.put(meta.clone(), Bytes::from(meta.to_json()));
        }
    }

    pub fn backend(&self) -> &DynStore {
        &self.store
    }

    /// Stores the file at `path`, which arrives under `name` (used for format detection and
    /// recorded as the first name). Uploads nothing if the bytes are already stored.
    pub async fn put_file(
        &self,
        path: &Path,
        name: Option<&Name>,
        progress: Progress,
    ) -> Result<Stored> {
        self.put_path(path, name, progress, false).await
    }

    /// [`DataStore::put_file`]; with `hand_over`, the caller never writes the file again and a
    /// store on its filesystem may take the file itself as the object instead of a copy.
    pub async fn put_path(
        &self,
        path: &Path,
        name: Option<&Name>,
        progress: Progress,
        hand_over: bool,
    ) -> Result<Stored> {
        let before = identity(path)?;
        let owned = path.to_path_buf();
        let hash = blocking(move || {
            let file = std::fs::File::open(&owned).map_err(Error::io(&owned))?;
            hashing::hash_file(&file, |n| progress(n)).map_err(Error::io(&owned))
        })
        .await?;
        if hash.size != before.1 {
            return Err(Error::Changed {
                path: path.to_path_buf(),
            });
        }
        let blocks = Some(hash.blocks);
        self.store_hashed(path, name, hash.digest, blocks, before, hand_over)
            .await
    }

    /// Stores the bytes `fill` writes into an anonymous file in `spool` (a table, an array or
    /// bytes handed over from Python): the file is private until stored and gone after.
    pub async fn put_written(
        &self,
        spool: &TrustedDir,
        name: Option<&Name>,
        fill: impl FnOnce(&mut std::fs::File) -> Result<()>,
    ) -> Result<Stored> {
        let mut file = spool.tmpfile().map_err(Error::io(spool.path()))?;
        fill(&mut file)?;
        file.flush().map_err(Error::io(spool.path()))?;
        let path = std::path::PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        let none: Progress = Arc::new(|_| {});
        // The file is dropped after: the store may keep it as it is.
        self.put_path(&path, name, none, true).await
    }

    /// Stores the file at `path`, whose whole-file digest a reader that followed its writer
    /// computed; the file must not change while this runs. Bytes already stored cost nothing
    /// more: their block digests are in the stored `metadata.json`. New bytes get theirs
    /// computed beside the upload, from the same file, so the upload does not wait for them.
    /// `hand_over` as for [`DataStore::put_path`].
    pub async fn put_digested(
        &self,
        path: &Path,
        name: Option<&Name>,
        digest: Digest,
        size: u64,
        hand_over: bool,
    ) -> Result<Stored> {
        let before = identity(path)?;
        if before.1 != size {
            return Err(Error::Changed {
                path: path.to_path_buf(),
            });
        }
        self.store_hashed(path, name, digest, None, before, hand_over)
            .await
    }

    /// The metadata of object `h` if it is completely stored; a `metadata.json` that does not
    /// parse counts as absent (a fresh upload replaces it).
    async fn already_stored(&self, h: &Digest) -> Result<Option<ObjectMetadata>> {
        match self.metadata(h).await {
            Ok(found) => Ok(found),
            Err(Error::Corrupt { key, reason }) => {
                tracing::warn!(%key, %reason, "replacing corrupt metadata with a fresh upload");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Stores the file at `path` (identified by `before`) whose whole-file digest is `digest`,
    /// unless its bytes are already stored. `blocks`: its block digests, or `None` to compute
    /// them beside the upload. `hand_over`: the store may take the file itself
    /// ([`Body::Adopt`]). Remembers the metadata it stored or found.
    async fn store_hashed(
        &self,
        path: &Path,
        name: Option<&Name>,
        digest: Digest,
        blocks: Option<hashing::BlockDigests>,
        before: (u64, u64, i64, i64),
        hand_over: bool,
    ) -> Result<Stored> {
        let size = before.1;
        let small = size <= UPLOAD_WITH_THE_CHECK;
        // Small data on a remote store goes out with the dedup check rather than after it
        // (create-if-absent: a stored object is not written again where the server honours
        // the condition), while the last small file stored here was new: one round trip less
        // a close of new data, one refused PUT each time stored data follows new data. Where
        // the server is known to honour the condition, a create that succeeds needs no check
        // at all: nothing was stored under the key (an object stored under another format is
        // found by `metadata.json`'s own create-if-absent below). docs/STORE.md, "Order of
        // writes".
        let early =
            small && self.store.is_remote() && self.small_data_was_new.load(Ordering::Relaxed);
        let (found, described, sent) = if early {
            let meta = describe(path, name, digest, size).await?;
            let key = meta.data_key();
            let upload = self
                .store
                .put(&key, Body::File(path.to_path_buf()), PutMode::Create);
            if self.create_is_honoured.load(Ordering::Relaxed) {
                match upload.await {
                    Ok(sent) => (None, Some(meta), Some(Ok(sent))),
                    Err(e) => (
                        self.already_stored(&digest).await?,
                        Some(meta),
                        Some(Err(e)),
                    ),
                }
            } else {
                let (found, sent) =
                    futures::future::join(self.already_stored(&digest), upload).await;
                (found?, Some(meta), Some(sent))
            }
        } else {
            (self.already_stored(&digest).await?, None, None)
        };
        if small {
            self.small_data_was_new
                .store(found.is_none(), Ordering::Relaxed);
        }
        if let Some(meta) = found {
            let stored = Stored { meta, new: false };
            self.remember(&stored.meta);
            return Ok(stored);
        }
        let mut meta = match described {
            Some(meta) => meta,
            None => describe(path, name, digest, size).await?,
        };
        let owned = path.to_path_buf();
        let blocks = async move {
            match blocks {
                Some(known) => Ok((known, size)),
                None => {
                    blocking(move || {
                        let file = std::fs::File::open(&owned).map_err(Error::io(&owned))?;
                        hashing::block_digests(file).map_err(Error::io(&owned))
                    })
                    .await
                }
            }
        };
        let data_key = meta.data_key();
        let upload = async {
            match sent {
                Some(Ok(_)) => Ok(()),
                // Bytes under the key without a `metadata.json`: an upload that did not
                // finish, or a gc under way. Replaced, as an upload after the check would.
                Some(Err(StorageError::AlreadyExists { .. })) | None => {
                    let body = if hand_over {
                        Body::Adopt(path.to_path_buf())
                    } else {
                        Body::File(path.to_path_buf())
                    };
                    match self.store.put(&data_key, body, PutMode::Overwrite).await {
                        Ok(_) => Ok(()),
                        Err(e) => self.in_place_after(&data_key, size, e).await,
                    }
                }
                Some(Err(e)) => Err(e),
            }
        };
        let (blocks, uploaded) = futures::future::join(blocks, upload).await;
        uploaded?;
        let (blocks, hashed) = blocks?;
        if hashed != size || identity(path)? != before {
            return Err(Error::Changed {
                path: path.to_path_buf(),
            });
        }
        meta.chunk_size = blocks.chunk_size();
        meta.block_hashes = blocks.blocks;
        // Before `metadata.json`, whose presence says the object is complete.
        if let Some(chunks) = blocks.chunks {
            self.store
                .put(
                    &layout::chunks_key(&meta.hash),
                    Body::Bytes(hashing::chunk_list_bytes(&chunks).into()),
                    PutMode::Overwrite,
                )
                .await?;
        }
        let stored = self.commit_metadata(meta).await?;
        if !stored.new && stored.meta.data_key() != data_key {
            // Stored meanwhile, or before, under another format: its bytes are the object,
            // and ours under the other name would be a stray.
            if let Err(e) = self.store.delete(&data_key).await {
                tracing::warn!(key = %data_key, error = %e, "could not remove a second copy of stored data");
            }
        }
        self.remember(&stored.meta);
        // A new object is listed at once under `data/` by the mount that stored it.
        if let Some(l) = &self.listings {
            l.forget(layout::DATA);
            l.forget(&layout::fanout_prefix(&stored.meta.hash.fanout()));
        }
        Ok(stored)
    }

    /// Writes `metadata.json` for data already uploaded. If another writer committed the same
    /// object first, theirs stands and this store reports "already stored".
    async fn commit_metadata(&self, meta: ObjectMetadata) -> Result<Stored> {
        let key = layout::metadata_key(&meta.hash);
        match self
            .store
            .put(&key, Body::Bytes(meta.to_json().into()), PutMode::Create)
            .await
        {
            Ok(_) => Ok(Stored { meta, new: true }),
            Err(StorageError::AlreadyExists { .. }) => match self.metadata(&meta.hash).await {
                Ok(Some(theirs)) => Ok(Stored {
                    meta: theirs,
                    new: false,
                }),
                // Present but unreadable: ours describes the same bytes, so it may replace it.
                Ok(None) | Err(Error::Corrupt { .. }) => {
                    self.store
                        .put(&key, Body::Bytes(meta.to_json().into()), PutMode::Overwrite)
                        .await?;
                    Ok(Stored { meta, new: true })
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// The metadata of object `h`, or `None` if it is not (completely) stored.
    pub async fn metadata(&self, h: &Digest) -> Result<Option<ObjectMetadata>> {
        match self.store.get(&layout::metadata_key(h), None).await {
            Ok(got) => ObjectMetadata::parse(h, &got.data).map(Some),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The metadata of object `h`, which must be stored.
    pub async fn require(&self, h: &Digest) -> Result<ObjectMetadata> {
        self.metadata(h)
            .await?
            .ok_or_else(|| Error::DataNotFound(h.to_string()))
    }

    /// After an upload of `size` bytes to data key `key` failed with `err`: the key names its
    /// bytes (their hash), so an object of that size found there holds them, stored by this
    /// upload whose answer was lost (a multipart upload's completion, tried again, finds the
    /// upload gone) or by another writer meanwhile. Every block read is verified against
    /// `metadata.json` all the same (docs/STORE.md, "Errors a user sees").
    async fn in_place_after(
        &self,
        key: &str,
        size: u64,
        err: StorageError,
    ) -> std::result::Result<(), StorageError> {
        match self.store.head(key).await {
            Ok(Some(found)) if found.size == size => {
                tracing::info!(key, error = %err, "an upload failed, but its bytes are in place: taken as stored");
                Ok(())
            }
            _ => Err(err),
        }
    }

    /// Records that the object is stored under `name` (a marker that also protects it from gc).
    pub async fn add_name(&self, h: &Digest, name: &Name) -> Result<()> {
        self.store
            .put(
                &layout::name_key(h, name),
                Body::Bytes(Bytes::new()),
                PutMode::Overwrite,
            )
            .await?;
        Ok(())
    }

    /// Records that run `run` references the object.
    pub async fn mark_used(&self, h: &Digest, run: &RunId) -> Result<()> {
        self.store
            .put(
                &layout::used_by_key(h, run),
                Body::Bytes(Bytes::new()),
                PutMode::Overwrite,
            )
            .await?;
        Ok(())
    }

    pub async fn unmark_used(&self, h: &Digest, run: &RunId) -> Result<()> {
        self.store.delete(&layout::used_by_key(h, run)).await?;
        Ok(())
    }

    /// Whether run `run` has a `used_by` marker on the object: one HEAD, however many runs
    /// use it.
    pub async fn is_used_by(&self, h: &Digest, run: &RunId) -> Result<bool> {
        Ok(self
            .store
            .head(&layout::used_by_key(h, run))
            .await?
            .is_some())
    }

    /// The run ids that have `used_by` markers on the object: one LIST.
    pub async fn used_by(&self, h: &Digest) -> Result<Vec<String>> {
        let prefix = layout::used_by_prefix(h);
        let page = list_all(self.store.as_ref(), &prefix, true).await?;
        Ok(page
            .objects
            .iter()
            .filter_map(|o| o.key.strip_prefix(&prefix))
            .map(str::to_string)
            .collect())
    }

    /// Resolves a full hash or a unique prefix of at least 4 hex digits to a stored object.
    pub async fn resolve(&self, text: &str) -> Result<Digest> {
        if let Ok(h) = text.parse::<Digest>() {
            return Ok(h);
        }
        let hex = text.len() >= 4
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex || text.len() > 64 {
            return Err(Error::BadRequest(format!(
                "{text:?} is not a hash: give the 64 lowercase hex digits or a unique prefix of at least 4"
            )));
        }
        let prefix = format!("{}{}/{text}", layout::DATA, &text[..2]);
        let page = list_all(self.store.as_ref(), &prefix, true).await?;
        let found: Vec<Digest> = page
            .prefixes
            .iter()
            .filter_map(|p| p.trim_end_matches('/').rsplit('/').next()?.parse().ok())
            .collect();
        match found.as_slice() {
            [h] => Ok(*h),
            [] => Err(Error::DataNotFound(text.to_string())),
            many => Err(Error::AmbiguousPrefix {
                prefix: text.to_string(),
                count: many.len(),
            }),
        }
    }

    /// Fetches block range `blocks` of the object and verifies every block. Bytes damaged on
    /// the way are fetched again, up to `FETCHES_OF_A_BAD_BLOCK` times with a growing pause;
    /// a block still wrong then is damaged in the store, and the read fails.
    pub async fn read_blocks(
        &self,
        meta: &ObjectMetadata,
        blocks: std::ops::Range<u64>,
    ) -> Result<Bytes> {
        let start = meta.block_range(blocks.start).start;
        let end = meta.block_range(blocks.end - 1).end;
        let checked = self
            .get_verified(meta, start..end, "block", |data| {
                verify(meta, blocks.clone(), data)
            })
            .await?;
        checked.map_err(|bad| Error::BadBlock {
            hash: meta.hash,
            block: bad,
        })
    }

    /// GETs `range` of the object and checks it with `check`, which names the first bad unit
    /// (a `unit`: block or chunk). Bytes damaged on the way are fetched again, up to
    /// `FETCHES_OF_A_BAD_BLOCK` times with a growing pause; `Err(unit)` if still bad then.
    async fn get_verified(
        &self,
        meta: &ObjectMetadata,
        range: std::ops::Range<u64>,
        unit: &'static str,
        check: impl Fn(&[u8]) -> Result<(), u64>,
    ) -> Result<Result<Bytes, u64>> {
        let mut attempt = 1;
        loop {
            let got = self
                .store
                .get(&meta.data_key(), Some(range.clone()))
                .await?;
            match check(&got.data) {
                Ok(()) => return Ok(Ok(got.data)),
                Err(bad) if attempt < FETCHES_OF_A_BAD_BLOCK => {
                    tracing::warn!(hash = %meta.hash, unit, number = bad, attempt, "failed verification; fetching again");
                    crate::metrics::metrics().verification_failed("store");
                    tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await;
                    attempt += 1;
                }
                Err(bad) => return Ok(Err(bad)),
            }
        }
    }

    /// The chunk digests of blocks `blocks` of a chunked object (its `chunk_size` set), read
    /// from the object's `chunks` list, each block's checked against the block's recorded hash.
    pub async fn chunk_digests(
        &self,
        meta: &ObjectMetadata,
        blocks: std::ops::Range<u64>,
    ) -> Result<Vec<Digest>> {
        let key = layout::chunks_key(&meta.hash);
        let corrupt = |reason: String| Error::Corrupt {
            key: key.clone(),
            reason,
        };
        let (Some(chunk), Some(count)) = (meta.chunk_size, meta.chunk_count()) else {
            return Err(corrupt("the object is not hashed in chunks".to_string()));
        };
        let per_block = meta.block_size / chunk;
        let first = blocks.start * per_block;
        let end = (blocks.end * per_block).min(count);
        if first >= end || blocks.end > meta.block_hashes.len() as u64 {
            return Err(corrupt(format!("it has no blocks {blocks:?}")));
        }
        let got = self.store.get(&key, Some(first * 32..end * 32)).await?;
        if got.data.len() as u64 != (end - first) * 32 {
            return Err(corrupt(format!(
                "it holds {} bytes where chunks {first}..{end} were asked for",
                got.data.len()
            )));
        }
        let digests = hashing::chunk_list_digests(&got.data);
        for (b, of_block) in blocks.zip(digests.chunks(per_block as usize)) {
            if hashing::root_of_chunks(of_block) != meta.block_hashes[b as usize] {
                return Err(corrupt(format!(
                    "the chunk digests of block {b} do not match its recorded hash"
                )));
            }
        }
        Ok(digests)
    }

    /// Fetches the chunks `first..` of a chunked object whose digests are `expected`, and
    /// verifies each; a chunk damaged on the way is fetched again, as in [`Self::read_blocks`].
    pub async fn read_chunks(
        &self,
        meta: &ObjectMetadata,
        first: u64,
        expected: &[Digest],
    ) -> Result<Bytes> {
        let Some(last) = (first + expected.len() as u64).checked_sub(1) else {
            return Ok(Bytes::new());
        };
        let range = meta.chunk_range(first).start..meta.chunk_range(last).end;
        let checked = self
            .get_verified(meta, range, "chunk", |data| {
                verify_chunks(meta, first, expected, data)
            })
            .await?;
        checked.map_err(|bad| Error::BadBlock {
            hash: meta.hash,
            block: meta.chunk_range(bad).start / meta.block_size,
        })
    }

    /// Writes the whole object to `out`, verified, with a few ranged GETs in flight.
    pub async fn export(
        &self,
        meta: &ObjectMetadata,
        out: &mut (dyn Write + Send),
        progress: Progress,
    ) -> Result<()> {
        let total = meta.block_hashes.len() as u64;
        let ranges = (0..total.div_ceil(BLOCKS_PER_GET))
            .map(|i| i * BLOCKS_PER_GET..((i + 1) * BLOCKS_PER_GET).min(total));
        let mut chunks = futures::stream::iter(ranges)
            .map(|r| self.read_blocks(meta, r))
            .buffered(GETS_IN_FLIGHT);
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            out.write_all(&chunk).map_err(Error::io("output"))?;
            progress(chunk.len() as u64);
        }
        out.flush().map_err(Error::io("output"))
    }
}

/// Checks `data`, the bytes of `blocks`, against the recorded block hashes; returns the first
/// bad block's index. `data` must hold exactly those blocks: a body longer than asked for is as
/// wrong as a short one (its tail would otherwise be cached past the block's end).
pub fn verify(meta: &ObjectMetadata, blocks: std::ops::Range<u64>, data: &[u8]) -> Result<(), u64> {
    verify_each(meta, blocks, data, |_| {})
}

/// [`verify`], handing the digest of each chunk it hashed to `each` (a chunked object's).
pub fn verify_each(
    meta: &ObjectMetadata,
    blocks: std::ops::Range<u64>,
    data: &[u8],
    mut each: impl FnMut(Digest),
) -> Result<(), u64> {
    if blocks.is_empty() {
        return if data.is_empty() {
            Ok(())
        } else {
            Err(blocks.start)
        };
    }
    if blocks.end > meta.block_hashes.len() as u64 {
        return Err(blocks.start);
    }
    let base = meta.block_range(blocks.start).start;
    if data.len() as u64 != meta.block_range(blocks.end - 1).end - base {
        return Err(blocks.start);
    }
    for (i, expected) in blocks
        .clone()
        .zip(&meta.block_hashes[blocks.start as usize..])
    {
        let r = meta.block_range(i);
        let slice = &data[(r.start - base) as usize..(r.end - base) as usize];
        if hashing::block_digest_each(meta.chunk_size, slice, &mut each) != *expected {
            return Err(i);
        }
    }
    Ok(())
}

/// Checks `data`, the bytes of chunks `first..` of a chunked object, against `expected`, their
/// digests (from [`DataStore::chunk_digests`]); returns the first bad chunk's index.
pub fn verify_chunks(
    meta: &ObjectMetadata,
    first: u64,
    expected: &[Digest],
    data: &[u8],
) -> Result<(), u64> {
    let Some(last) = (first + expected.len() as u64).checked_sub(1) else {
        return if data.is_empty() { Ok(()) } else { Err(first) };
    };
    let base = meta.chunk_range(first).start;
    if meta.chunk_count().is_none_or(|n| last >= n)
        || data.len() as u64 != meta.chunk_range(last).end - base
    {
        return Err(first);
    }
    for (i, want) in (first..=last).zip(expected) {
        let r = meta.chunk_range(i);
        if hashing::sha256(&data[(r.start - base) as usize..(r.end - base) as usize]) != *want {
            return Err(i);
        }
    }
    Ok(())
}

/// Detects the format and reads its facts (a few small reads of the file): the metadata of
/// the file with digest `digest` and `size` bytes, its block digests still to be filled in.
async fn describe(
    path: &Path,
    name: Option<&Name>,
    digest: Digest,
    size: u64,
) -> Result<ObjectMetadata> {
    let owned = path.to_path_buf();
    let name = name.cloned();
    blocking(move || {
        // The extension comes from the name the data arrives under if it has one, else from
        // the file's own name (`put train.csv --name training_data` is still a csv).
        let file_name = owned.file_name().and_then(|n| n.to_str());
        let hint = name
            .as_ref()
            .map(Name::as_str)
            .filter(|n| n.contains('.'))
            .or(file_name);
        let format: Format = format::detect_file(&owned, hint).map_err(Error::io(&owned))?;
        let facts = format::facts(&owned, &format);
        Ok(ObjectMetadata {
            hash: digest,
            algorithm: "sha256".to_string(),
            size,
            format,
            created_at: crate::time::now(),
            name,
            block_size: hashing::BLOCK_SIZE,
            block_hashes: Vec::new(),
            chunk_size: None,
            facts,
        })
    })
    .await
}

/// The name data stored from `path` goes by: `given`, else the file's own name. `fix` says how
/// to give one when the path has none that can be used (`/`, `..`, not UTF-8).
pub fn name_for(path: &Path, given: Option<&str>, fix: &str) -> Result<Name> {
    let text = match given {
        Some(n) => n,
        None => path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            Error::BadRequest(format!("{} has no usable file name; {fix}", path.display()))
        })?,
    };
    Ok(Name::parse("name", text)?)
}

/// What must not change while a file is stored: inode, size and modification time.
fn identity(path: &Path) -> Result<(u64, u64, i64, i64)> {
    let m = std::fs::metadata(path).map_err(Error::io(path))?;
    if !m.is_file() {
        return Err(Error::BadRequest(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// Runs blocking file work off the async runtime.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Error::Failed(format!("internal task failed: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::faulty::{FaultyStore, Op};
    use crate::storage::memory::MemoryStore;

    fn none() -> Progress {
        Arc::new(|_| {})
    }

    fn setup(
        bytes: &[u8],
    ) -> (
        Arc<FaultyStore>,
        DataStore,
        tempfile::TempDir,
        std::path::PathBuf,
    ) {
        let faulty = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
        let data = DataStore::new(faulty.clone());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.csv");
        std::fs::write(&path, bytes).unwrap();
        (faulty, data, dir, path)
    }

    #[tokio::test]
    async fn a_failed_upload_commits_nothing_and_a_retry_succeeds() {
        let bytes = vec![7u8; 3 * 1024 * 1024];
        let (faulty, data, _dir, path) = setup(&bytes);
        // The data upload goes through; metadata.json, the commit point, fails.
        faulty.fail_after(Op::Put, 1);
        assert!(data.put_file(&path, None, none()).await.is_err());
        let h = hashing::sha256(&bytes);
        assert!(
            data.metadata(&h).await.unwrap().is_none(),
            "not stored without metadata.json"
        );
        faulty.heal();
        let stored = data.put_file(&path, None, none()).await.unwrap();
        assert!(stored.new);
        assert_eq!(stored.meta.format.as_str(), "csv");
        assert_eq!(data.metadata(&h).await.unwrap().unwrap(), stored.meta);
    }

    #[tokio::test]
    async fn corrupted_reads_are_retried_then_refused() {
        let bytes: Vec<u8> = (0..2_500_000u32).map(|i| (i % 253) as u8).collect();
        let (faulty, data, _dir, path) = setup(&bytes);
        let meta = data.put_file(&path, None, none()).await.unwrap().meta;
        assert_eq!(
            &data.read_blocks(&meta, 1..3).await.unwrap()[..],
            &bytes[1024 * 1024..]
        );
        faulty.corrupt_gets();
        match data.read_blocks(&meta, 1..3).await {
            Err(Error::BadBlock { block, .. }) => assert_eq!(block, 1),
            other => panic!("expected a bad block, got {other:?}"),
        }
        let mut out = Vec::new();
        assert!(data.export(&meta, &mut out, none()).await.is_err());
        faulty.heal();
        let mut out = Vec::new();
        data.export(&meta, &mut out, none()).await.unwrap();
        assert!(out == bytes);
    }

    #[tokio::test]
    async fn a_body_of_the_wrong_length_fails_verification() {
        let bytes: Vec<u8> = (0..2_500_000u32).map(|i| (i % 251) as u8).collect();
        let (_faulty, data, _dir, path) = setup(&bytes);
        let meta = data.put_file(&path, None, none()).await.unwrap().meta;
        let block1 = &bytes[1024 * 1024..2 * 1024 * 1024];
        assert_eq!(verify(&meta, 1..2, block1), Ok(()));
        // The right block followed by anything more is not that block.
        let mut longer = block1.to_vec();
        longer.extend_from_slice(&bytes[2 * 1024 * 1024..2 * 1024 * 1024 + 10]);
        assert_eq!(verify(&meta, 1..2, &longer), Err(1));
        assert_eq!(verify(&meta, 1..2, &block1[..1000]), Err(1));
        assert_eq!(verify(&meta, 1..3, &bytes[1024 * 1024..]), Ok(()));
        assert_eq!(verify(&meta, 0..0, &[]), Ok(()));
        // Blocks the object does not have are not there to verify.
        assert_eq!(verify(&meta, 3..4, &[]), Err(3));
    }
}
