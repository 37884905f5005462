//! Reading objects through the mount: verified blocks from the cache or the store, with
//! sequential read-ahead.
//!
//! A read is served block by block. Each block comes from the mount's most recently used or
//! fetched blocks, kept in memory, 8 for each open file and 32 at most (the kernel reads 128 KiB
//! at a time, several at once and not always in order, and readers of one file tend to move
//! together, so one 1 MiB block serves many reads and is verified once), else from the blocks
//! fetched ahead for this file
//! (verified when they arrived), else from the cache (verified on every read), else from the
//! store (verified, then cached). Concurrent requests for one block share one GET.
//!
//! Read-ahead, after mountpoint-s3's prefetcher: a read that starts near where the previous one
//! ended (within two blocks, since the kernel's parallel reads arrive slightly out of order)
//! extends a streak; while the streak lasts, blocks ahead of the reader are fetched in the
//! background, the window doubling from 2 to 32 blocks, and kept for the reader until it gets
//! there. A read elsewhere resets the window and drops them, so random reads fetch only what
//! they touch: in an object hashed in chunks, only the 64 KiB chunks they touch, each verified
//! against the chunk digests of its block (read from the object's `chunks` list, 128 blocks'
//! worth at a time, and kept in memory), and cached alone.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::spool::SpoolRead;
use super::{Content, lock};
use crate::cache::BlockCache;
use crate::cas::DataStore;
use crate::cas::metadata::ObjectMetadata;
use crate::error::{Error, Result};
use crate::ids::Digest;
use crate::metrics::metrics;

const MIN_WINDOW: u64 = 2;
const MAX_WINDOW: u64 = 32;
/// Verified blocks the mount keeps in memory for the reads that follow, for each open file...
const RECENT_PER_FILE: usize = 8;
/// ...and at most: with more files open than this allows for, each keeps fewer.
const MOST_RECENT: usize = 32;
/// How far from where the last read ended a read may start and still count as sequential.
const SEQUENTIAL_SLACK: u64 = 2 * crate::cas::hashing::BLOCK_SIZE;
/// Blocks whose chunk digests are read from an object's `chunks` list at once (64 KiB of it)...
const LIST_PAGE_BLOCKS: u64 = 128;
/// ...and pages of it kept in memory (4 MiB at most).
const LIST_PAGES_KEPT: usize = 64;

/// A page of an object's chunk list: the chunk digests of up to [`LIST_PAGE_BLOCKS`] blocks.
type ChunkList = Arc<Vec<Digest>>;

type Fetch = Shared<BoxFuture<'static, Result<Bytes, Arc<Error>>>>;

pub struct Reader {
    data: DataStore,
    cache: Arc<BlockCache>,
    inflight: Arc<Mutex<HashMap<(Digest, u64), Fetch>>>,
    recent: Arc<Recent>,
    /// Pages of chunked objects' chunk lists, verified against their blocks' hashes.
    lists: Mutex<lru::LruCache<(Digest, u64), ChunkList>>,
}

/// The verified blocks kept in memory, as many as the open files call for.
struct Recent {
    blocks: Mutex<lru::LruCache<(Digest, u64), Bytes>>,
    files: AtomicUsize,
}

impl Recent {
    fn blocks(&self) -> std::sync::MutexGuard<'_, lru::LruCache<(Digest, u64), Bytes>> {
        lock(&self.blocks)
    }

    /// Counts a file opened or released, and sizes the kept blocks to match.
    fn count_file(&self, opened: bool) {
        let files = if opened {
            self.files.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.files.fetch_sub(1, Ordering::Relaxed).saturating_sub(1)
        };
        let wanted = files
            .saturating_mul(RECENT_PER_FILE)
            .clamp(RECENT_PER_FILE, MOST_RECENT);
        let mut blocks = self.blocks();
        if blocks.cap().get() != wanted {
            blocks.resize(NonZeroUsize::new(wanted).unwrap_or(NonZeroUsize::MIN));
        }
    }
}

/// An open file's read state.
pub struct OpenFile {
    pub content: Content,
    /// Fetches started ahead of this reader, until it reads their block.
    ahead: Mutex<HashMap<(Digest, u64), Fetch>>,
    next_offset: AtomicU64,
    window: AtomicU64,
    /// Counts this file among the open ones while it lives.
    recent: Arc<Recent>,
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        self.recent.count_file(false);
    }
}

impl Reader {
    pub fn new(data: DataStore, cache: Arc<BlockCache>) -> Self {
        let recent = Recent {
            blocks: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(RECENT_PER_FILE).unwrap_or(NonZeroUsize::MIN),
            )),
            files: AtomicUsize::new(0),
        };
        Reader {
            data,
            cache,
            inflight: Arc::new(Mutex::new(HashMap::new())),
            recent: Arc::new(recent),
            lists: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(LIST_PAGES_KEPT).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// The read state of a file just opened on `content`.
    pub fn open(&self, content: Content) -> OpenFile {
        self.recent.count_file(true);
        OpenFile {
            content,
            ahead: Mutex::new(HashMap::new()),
            next_offset: AtomicU64::new(0),
            window: AtomicU64::new(0),
            recent: self.recent.clone(),
        }
    }

    pub fn cache(&self) -> &Arc<BlockCache> {
        &self.cache
    }

    /// Up to `size` bytes at `offset`; fewer at the end of the file.
    pub async fn read(&self, file: &OpenFile, offset: u64, size: u32) -> Result<Bytes> {
        let meta = match &file.content {
            Content::Bytes(b) => {
                let start = (offset as usize).min(b.len());
                let end = (start + size as usize).min(b.len());
                return Ok(b.slice(start..end));
            }
            Content::Object(m) => m.clone(),
            Content::Spool(w) => match w.read(offset, size).await? {
                SpoolRead::Bytes(b) => return Ok(b),
                SpoolRead::Object(m, len) => {
                    return self.read_object(file, &m, offset, size, len).await;
                }
                SpoolRead::Matched(m, len, tail) => {
                    let head = self.read_object(file, &m, offset, size, len).await?;
                    return Ok([head, tail].concat().into());
                }
            },
        };
        self.read_object(file, &meta, offset, size, meta.size).await
    }

    /// Up to `size` bytes at `offset` of the object's first `len` bytes.
    async fn read_object(
        &self,
        file: &OpenFile,
        meta: &Arc<ObjectMetadata>,
        offset: u64,
        size: u32,
        len: u64,
    ) -> Result<Bytes> {
        let meta = meta.clone();
        let end = (offset + u64::from(size)).min(len.min(meta.size));
        if offset >= end {
            return Ok(Bytes::new());
        }
        self.read_ahead(file, &meta, offset, end);
        // Not sequential, and not at the start (where sequential readers start: a block then).
        if offset > 0 && file.window.load(Ordering::Relaxed) == 0 && meta.chunk_size.is_some() {
            return self.read_chunked(file, &meta, offset, end).await;
        }
        let first = offset / meta.block_size;
        let last = (end - 1) / meta.block_size;
        let mut out = Vec::with_capacity((end - offset) as usize);
        for b in first..=last {
            let block = self.block(file, &meta, b).await?;
            let base = b * meta.block_size;
            let from = offset.max(base) - base;
            let to = end.min(base + block.len() as u64) - base;
            out.extend_from_slice(&block[from as usize..to as usize]);
        }
        Ok(Bytes::from(out))
    }

    /// Bytes `offset..end` of a chunked object for a read that is not sequential: from whole
    /// blocks where they are at hand in memory, else from the chunks the range touches.
    async fn read_chunked(
        &self,
        file: &OpenFile,
        meta: &Arc<ObjectMetadata>,
        offset: u64,
        end: u64,
    ) -> Result<Bytes> {
        let chunk = meta.chunk_size.unwrap_or(meta.block_size);
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut at = offset;
        while at < end {
            let b = at / meta.block_size;
            let block = meta.block_range(b);
            let upto = end.min(block.end);
            let kept = self.recent.blocks().get(&(meta.hash, b)).cloned();
            let (data, base) = match kept {
                Some(data) => (data, block.start),
                None => {
                    let first = at / chunk;
                    let last = (upto - 1) / chunk;
                    match self.chunks(meta, b, first..last + 1).await {
                        Some(data) => (data?, meta.chunk_range(first).start),
                        None => (self.block(file, meta, b).await?, block.start),
                    }
                }
            };
            out.extend_from_slice(&data[(at - base) as usize..(upto - base) as usize]);
            at = upto;
        }
        Ok(Bytes::from(out))
    }

    /// The bytes of chunks `chunks` of block `b`, verified, from the cache or in one GET (then
    /// cached). `None` if the object's chunk list cannot be read: the caller reads the block.
    async fn chunks(
        &self,
        meta: &Arc<ObjectMetadata>,
        b: u64,
        chunks: std::ops::Range<u64>,
    ) -> Option<Result<Bytes>> {
        let m = metrics();
        let digests = self.chunk_digests(meta, b).await?;
        let per_block = meta.block_size / meta.chunk_size?;
        let expected = digests
            .get((chunks.start - b * per_block) as usize..(chunks.end - b * per_block) as usize)?;
        let cached: Option<Vec<Bytes>> = chunks
            .clone()
            .zip(expected)
            .map(|(c, d)| self.cache.get_chunk(meta, c, d))
            .collect();
        if let Some(cached) = cached {
            m.cache_hit();
            let bytes: Vec<u8> = cached.concat();
            m.read_from("cache", bytes.len() as u64);
            return Some(Ok(Bytes::from(bytes)));
        }
        let got = self.data.read_chunks(meta, chunks.start, expected).await;
        if let Ok(bytes) = &got {
            m.cache_miss();
            m.read_from("store", bytes.len() as u64);
            let base = meta.chunk_range(chunks.start).start;
            for c in chunks {
                let r = meta.chunk_range(c);
                let part = &bytes[(r.start - base) as usize..(r.end - base) as usize];
                if let Err(e) = self.cache.put_chunk(meta, c, part) {
                    tracing::warn!(hash = %meta.hash, chunk = c, error = %e, "could not cache a chunk");
                }
            }
        }
        if let Err(e) = &got {
            tracing::error!(hash = %meta.hash, block = b, error = %e, "read failed");
        }
        Some(got)
    }

    /// The chunk digests of block `b`, from the kept pages of the object's chunk list or read
    /// (a page at a time); `None`, logged, if the list is missing or does not match.
    async fn chunk_digests(&self, meta: &Arc<ObjectMetadata>, b: u64) -> Option<Vec<Digest>> {
        let per_block = (meta.block_size / meta.chunk_size?) as usize;
        let page = b / LIST_PAGE_BLOCKS;
        let kept = lock(&self.lists).get(&(meta.hash, page)).cloned();
        let list = match kept {
            Some(list) => list,
            None => {
                let blocks = meta.block_hashes.len() as u64;
                let range = page * LIST_PAGE_BLOCKS..((page + 1) * LIST_PAGE_BLOCKS).min(blocks);
                let list = match self.data.chunk_digests(meta, range).await {
                    Ok(list) => list,
                    Err(e) => {
                        // Kept empty, so that the next reads go to the blocks at once.
                        tracing::warn!(hash = %meta.hash, error = %e, "cannot read the chunk list; reading whole blocks");
                        Vec::new()
                    }
                };
                let list = Arc::new(list);
                lock(&self.lists).put((meta.hash, page), list.clone());
                list
            }
        };
        let from = (b - page * LIST_PAGE_BLOCKS) as usize * per_block;
        let to = (from + per_block).min(list.len());
        Some(list.get(from..to)?.to_vec())
    }

    async fn block(&self, file: &OpenFile, meta: &Arc<ObjectMetadata>, b: u64) -> Result<Bytes> {
        let m = metrics();
        if let Some(data) = self.recent.blocks().get(&(meta.hash, b)) {
            return Ok(data.clone());
        }
        let ahead = lock(&file.ahead).remove(&(meta.hash, b));
        let data = match ahead {
            // Counted when it was fetched (or found cached).
            Some(fetch) => fetch.await,
            None => match self.cache.get(meta, b) {
                Some(d) => {
                    m.cache_hit();
                    m.read_from("cache", d.len() as u64);
                    Ok(d)
                }
                None => self.fetch(meta.clone(), b).await,
            },
        }
        .map_err(Error::Shared)?;
        self.recent.blocks().put((meta.hash, b), data.clone());
        Ok(data)
    }

    /// Fetches block `b` from the store (verified) into the cache; one GET however many ask.
    fn fetch(&self, meta: Arc<ObjectMetadata>, b: u64) -> Fetch {
        let key = (meta.hash, b);
        let mut inflight = lock(&self.inflight);
        if let Some(f) = inflight.get(&key) {
            return f.clone();
        }
        let data = self.data.clone();
        let cache = self.cache.clone();
        let map = self.inflight.clone();
        let recent = self.recent.clone();
        let fut = async move {
            let result = data.read_blocks(&meta, b..b + 1).await;
            if let Ok(bytes) = &result {
                metrics().cache_miss();
                metrics().read_from("store", bytes.len() as u64);
                if let Err(e) = cache.put(&meta, b, bytes) {
                    tracing::warn!(hash = %meta.hash, block = b, error = %e, "could not cache a block");
                }
                // Other readers of the object are usually close behind.
                recent.blocks().put((meta.hash, b), bytes.clone());
            }
            lock(&map).remove(&(meta.hash, b));
            if let Err(e) = &result {
                tracing::error!(hash = %meta.hash, block = b, error = %e, "read failed");
            }
            result.map_err(Arc::new)
        }
        .boxed()
        .shared();
        inflight.insert(key, fut.clone());
        fut
    }

    /// Starts background fetches ahead of a sequential reader.
    fn read_ahead(&self, file: &OpenFile, meta: &Arc<ObjectMetadata>, offset: u64, end: u64) {
        let previous = file.next_offset.fetch_max(end, Ordering::Relaxed);
        let sequential = offset > 0 && offset.abs_diff(previous) <= SEQUENTIAL_SLACK;
        let window = if sequential {
            (file.window.load(Ordering::Relaxed) * 2).clamp(MIN_WINDOW, MAX_WINDOW)
        } else {
            0
        };
        file.window.store(window, Ordering::Relaxed);
        let mut ahead = lock(&file.ahead);
        if window == 0 {
            file.next_offset.store(end, Ordering::Relaxed);
            ahead.clear();
            return;
        }
        // Blocks the reader has passed are not coming back.
        let first = offset / meta.block_size;
        ahead.retain(|(h, b), _| *h != meta.hash || *b >= first);
        let total = meta.block_hashes.len() as u64;
        let next = end.div_ceil(meta.block_size);
        for b in next..(next + window).min(total) {
            let key = (meta.hash, b);
            if ahead.contains_key(&key) {
                continue;
            }
            // Another reader of the object is fetching it: share that fetch.
            if let Some(fetch) = lock(&self.inflight).get(&key) {
                ahead.insert(key, fetch.clone());
                continue;
            }
            if self.cache.contains(meta, b) {
                continue;
            }
            let fetch = self.fetch(meta.clone(), b);
            ahead.insert(key, fetch.clone());
            tokio::spawn(async move {
                let _ = fetch.await;
            });
        }
    }
}
