//! The local block cache: verified blocks of immutable objects, on disk, bounded in bytes.
//!
//! Each object has one sparse file, `<cache-dir>/objects/<hh>/<hash>`, with each cached block
//! written at its own offset, so a fully cached object is an exact copy of it. Which blocks
//! are present is known from an in-memory LRU index (the `lru` crate), rebuilt at start-up by
//! asking each file where its data is (`SEEK_DATA`/`SEEK_HOLE`). Eviction punches the block
//! out of its file (`FALLOCATE_PUNCH_HOLE`), so the space really returns to the disk; the
//! total allocated never exceeds the limit.
//!
//! A chunked object's random reads cache single chunks (64 KiB, `cas::hashing::CHUNK_SIZE`)
//! in the same file: the index holds whole blocks and chunks outside them (a chunk's number
//! tagged with [`CHUNK`]), each evicted alone. A block written whole takes the place of its
//! chunks. Only whole blocks make a file complete for passthrough.
//!
//! Objects never change, so the cache is never stale and survives restarts. It never trusts
//! itself either: every block read from it is verified against the object's block hash, and a
//! block that fails is dropped and fetched again.
//!
//! Several mounts may share a directory. Writes and evictions take an `flock` on
//! `<cache-dir>/lock`, and that file holds the bytes the directory holds in all (8 bytes,
//! little-endian), kept under the lock: each mount checks the limit against this shared total,
//! not against what it alone has written, so together they stay within it. A mount evicts only
//! blocks it knows (its own, and what it found at start); if those are not enough, the new block
//! is served uncached. A block another mount evicted reads as a hole, fails verification and is
//! fetched again; a block another mount already wrote is not counted twice.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use bytes::Bytes;
use lru::LruCache;

use crate::cas::hashing::{self, BLOCK_SIZE, CHUNK_SIZE};
use crate::cas::metadata::ObjectMetadata;
use crate::ids::Digest;
use crate::trusted::Open;

pub mod dir;

pub use dir::{CacheDir, CachedFile};

/// An index entry: an object and a block number, or a chunk number tagged with [`CHUNK`].
type BlockKey = (Digest, u64);

/// Tags a chunk's number in a [`BlockKey`] (block and chunk numbers stay far below it).
const CHUNK: u64 = 1 << 63;

/// Where an index entry's bytes start in its cache file.
fn offset_of(unit: u64) -> u64 {
    if unit & CHUNK != 0 {
        (unit & !CHUNK) * CHUNK_SIZE
    } else {
        unit * BLOCK_SIZE
    }
}

#[derive(Debug)]
pub struct BlockCache {
    dir: CacheDir,
    limit: u64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Cached blocks and their sizes, least recently used first out.
    lru: LruCache<BlockKey, u64>,
    used: u64,
    /// Complete cache files verified whole, by the identity (inode, size, mtime) they had then:
    /// any write to a file changes its mtime, and it is verified again before the next use.
    verified: std::collections::HashMap<Digest, Identity>,
}

impl BlockCache {
    /// Opens the cache under `dir`, creating it, and indexes what is already there.
    pub fn open(dir: &Path, limit: u64) -> io::Result<BlockCache> {
        let cache = BlockCache {
            dir: CacheDir::open(dir, true)?,
            limit,
            state: Mutex::new(State {
                lru: LruCache::unbounded(),
                used: 0,
                verified: Default::default(),
            }),
        };
        cache.rebuild()?;
        Ok(cache)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cache directory's files.
    pub fn dir(&self) -> &CacheDir {
        &self.dir
    }

    /// Indexes the blocks present in the cache files, oldest files first in LRU order.
    fn rebuild(&self) -> io::Result<()> {
        // Under the lock, so that no other mount changes the files while they are counted.
        let lock = self.dir_lock()?;
        let mut found = Vec::new();
        for f in self.dir.scan()? {
            for (block, size) in f.blocks {
                found.push((f.modified, (f.hash, block), size));
            }
            for (chunk, size) in f.chunks {
                found.push((f.modified, (f.hash, CHUNK | chunk), size));
            }
        }
        found.sort_by_key(|(m, _, _)| *m);
        let mut state = self.lock();
        for (_, key, size) in found {
            state.used += size;
            state.lru.put(key, size);
        }
        let total = state.used;
        drop(state);
        // What the scan found is what the directory holds: the shared total starts from it.
        // A directory shrunk by a smaller --cache-size is brought under the new limit.
        lock.set_total(total);
        self.evict_to_fit(&lock, 0);
        Ok(())
    }

    /// Whether the index has the block (without reading or verifying it).
    pub fn contains(&self, meta: &ObjectMetadata, block: u64) -> bool {
        self.lock().lru.peek(&(meta.hash, block)).is_some()
    }

    /// The verified bytes of block `block` of the object, if cached and intact.
    pub fn get(&self, meta: &ObjectMetadata, block: u64) -> Option<Bytes> {
        let key = (meta.hash, block);
        self.lock().lru.get(&key)?;
        let got = self.read_verified(meta, block);
        if got.is_none() {
            self.drop_block(&key);
        }
        got
    }

    /// Reads a block from its cache file and verifies it, without touching the index.
    fn read_verified(&self, meta: &ObjectMetadata, block: u64) -> Option<Bytes> {
        let got = self
            .dir
            .object(&meta.hash, Open::Read)
            .ok()
            .and_then(|f| read_block_verified(&f, meta, block));
        if let Some(buf) = got {
            return Some(Bytes::from(buf));
        }
        tracing::warn!(hash = %meta.hash, block, "cached block failed verification; dropping it");
        crate::metrics::metrics().verification_failed("cache");
        None
    }

    /// Stores a verified block, evicting least recently used blocks to stay within the limit.
    pub fn put(&self, meta: &ObjectMetadata, block: u64, data: &[u8]) -> io::Result<()> {
        // The index and the start-up scan count in BLOCK_SIZE units; objects written with
        // another block size are served uncached rather than mis-indexed.
        if data.len() as u64 > self.limit || meta.block_size != BLOCK_SIZE {
            return Ok(());
        }
        let lock = self.dir_lock()?;
        if self.lock().lru.contains(&(meta.hash, block)) {
            return Ok(());
        }
        // Chunks of the block cached by random reads: the whole block replaces them.
        if meta.chunk_size.is_some() {
            let per_block = BLOCK_SIZE / CHUNK_SIZE;
            let state = self.lock();
            let chunks: Vec<BlockKey> = (block * per_block..(block + 1) * per_block)
                .map(|c| (meta.hash, CHUNK | c))
                .filter(|k| state.lru.contains(k))
                .collect();
            drop(state);
            for key in chunks {
                self.forget(&lock, &key);
            }
        }
        self.put_unit(
            &lock,
            meta,
            (meta.hash, block),
            meta.block_range(block).start,
            data,
        )?;
        // The block that completes the file: every block in it was verified before it was
        // written, so the file is verified whole as it stands, and the next open of it (by
        // this mount or a later one) can hand it to the kernel without reading it all again.
        // Checked from the last block back, so a file filled in order stops at the first look.
        let mut state = self.lock();
        let complete = (0..meta.block_hashes.len() as u64)
            .rev()
            .all(|b| state.lru.peek(&(meta.hash, b)).is_some());
        if complete
            && let Ok(file) = self.dir.object(&meta.hash, Open::Read)
            && let Some(identity) = identity_of(&file)
        {
            record_verified(&mut state.verified, meta.hash, &file, identity);
        }
        Ok(())
    }

    /// Stores verified chunk `chunk` of a chunked object (a random read's).
    pub fn put_chunk(&self, meta: &ObjectMetadata, chunk: u64, data: &[u8]) -> io::Result<()> {
        if data.len() as u64 > self.limit || !chunks_indexable(meta) {
            return Ok(());
        }
        let lock = self.dir_lock()?;
        let block = chunk * CHUNK_SIZE / BLOCK_SIZE;
        let key = (meta.hash, CHUNK | chunk);
        {
            let state = self.lock();
            if state.lru.contains(&key) || state.lru.contains(&(meta.hash, block)) {
                return Ok(());
            }
        }
        self.put_unit(&lock, meta, key, meta.chunk_range(chunk).start, data)
    }

    /// Writes verified bytes at `start` of the object's cache file and indexes them as `key`.
    fn put_unit(
        &self,
        lock: &DirLock,
        meta: &ObjectMetadata,
        key: BlockKey,
        start: u64,
        data: &[u8],
    ) -> io::Result<()> {
        let size = data.len() as u64;
        // Written by another mount sharing the directory: counted already. Or a block that
        // failed verification and could not be punched out (a reader had the file pinned):
        // then it is overwritten with the verified bytes. Bytes there only in part (another
        // mount's chunk of this block) are counted again in full: over the truth, never under.
        if let Ok(f) = self.dir.object(&meta.hash, Open::ReadWrite)
            && all_data(&f, start, size)
        {
            let mut there = vec![0u8; data.len()];
            if f.read_exact_at(&mut there, start).is_err() || there != data {
                f.write_all_at(data, start)?;
            }
            let mut state = self.lock();
            state.used += size;
            state.lru.put(key, size);
            return Ok(());
        }
        if !self.evict_to_fit(lock, size) {
            return Ok(());
        }
        let file = self.dir.object(&meta.hash, Open::ReadWriteCreate)?;
        if file.metadata()?.len() != meta.size {
            file.set_len(meta.size)?;
        }
        file.write_all_at(data, start)?;
        lock.set_total(lock.total() + size);
        let mut state = self.lock();
        state.used += size;
        state.lru.put(key, size);
        Ok(())
    }

    /// The verified bytes of chunk `chunk` of a chunked object, whose digest is `expected`, if
    /// cached alone or within its whole block.
    pub fn get_chunk(&self, meta: &ObjectMetadata, chunk: u64, expected: &Digest) -> Option<Bytes> {
        if !chunks_indexable(meta) {
            return None;
        }
        let key = {
            let mut state = self.lock();
            let alone = (meta.hash, CHUNK | chunk);
            let block = (meta.hash, chunk * CHUNK_SIZE / BLOCK_SIZE);
            if state.lru.get(&alone).is_some() {
                alone
            } else if state.lru.get(&block).is_some() {
                block
            } else {
                return None;
            }
        };
        let range = meta.chunk_range(chunk);
        let mut buf = vec![0u8; (range.end - range.start) as usize];
        let read = self
            .dir
            .object(&meta.hash, Open::Read)
            .and_then(|f| f.read_exact_at(&mut buf, range.start));
        if read.is_ok() && hashing::sha256(&buf) == *expected {
            return Some(Bytes::from(buf));
        }
        tracing::warn!(hash = %meta.hash, chunk, "cached chunk failed verification; dropping it");
        crate::metrics::metrics().verification_failed("cache");
        self.drop_block(&key);
        None
    }

    /// Drops an index entry and punches its bytes out; the caller holds the directory lock.
    fn forget(&self, lock: &DirLock, key: &BlockKey) {
        let mut state = self.lock();
        if let Some(size) = state.lru.pop(key) {
            state.used = state.used.saturating_sub(size);
            if let Ok(Punched::Freed) = punch(&self.dir, &key.0, offset_of(key.1), size) {
                lock.set_total(lock.total().saturating_sub(size));
            }
        }
    }

    /// Makes `file`, holding exactly the bytes of `meta` (a spool that was just hashed into
    /// it), the object's cache file. Nothing happens if the object is already (partly) cached
    /// or cannot fit. Returns whether it was adopted.
    pub fn adopt(&self, meta: &ObjectMetadata, file: &File) -> bool {
        if meta.size == 0 || meta.size > self.limit || meta.block_size != BLOCK_SIZE {
            return false;
        }
        let Ok(lock) = self.dir_lock() else {
            return false;
        };
        if self.dir.has_object(&meta.hash) || !self.evict_to_fit(&lock, meta.size) {
            return false;
        }
        if let Err(e) = self.dir.link_object(&meta.hash, file) {
            tracing::debug!(hash = %meta.hash, error = %e, "could not adopt a spool into the cache");
            return false;
        }
        lock.set_total(lock.total() + meta.size);
        let mut state = self.lock();
        if let Ok(f) = self.dir.object(&meta.hash, Open::Read)
            && let Some(identity) = identity_of(&f)
        {
            record_verified(&mut state.verified, meta.hash, &f, identity);
        }
        for b in 0..meta.block_hashes.len() as u64 {
            let r = meta.block_range(b);
            state.used += r.end - r.start;
            state.lru.put((meta.hash, b), r.end - r.start);
        }
        true
    }

    /// The bytes of the object's blocks this mount has indexed.
    pub fn cached_bytes(&self, meta: &ObjectMetadata) -> u64 {
        let state = self.lock();
        (0..meta.block_hashes.len() as u64)
            .filter_map(|b| state.lru.peek(&(meta.hash, b)))
            .sum()
    }

    /// Whether every block of the object is indexed (without reading, verifying or touching
    /// any of them).
    pub fn holds_whole(&self, meta: &ObjectMetadata) -> bool {
        let state = self.lock();
        (0..meta.block_hashes.len() as u64).all(|b| state.lru.peek(&(meta.hash, b)).is_some())
    }

    /// Whether every block of the object is cached.
    fn is_complete(&self, meta: &ObjectMetadata) -> bool {
        let mut state = self.lock();
        (0..meta.block_hashes.len() as u64).all(|b| state.lru.get(&(meta.hash, b)).is_some())
    }

    /// Evicts least recently used blocks until `incoming` more bytes fit in the directory's
    /// shared total; false if they cannot (every block this mount knows is gone or belongs to
    /// a file held open for passthrough). The caller holds the directory lock.
    fn evict_to_fit(&self, lock: &DirLock, incoming: u64) -> bool {
        let mut state = self.lock();
        let mut total = lock.total();
        let mut pinned = Vec::new();
        let mut unpunchable = Vec::new();
        while total + incoming > self.limit {
            let Some(((h, block), size)) = state.lru.pop_lru() else {
                break;
            };
            match punch(&self.dir, &h, offset_of(block), size) {
                Ok(Punched::Freed) => {
                    state.used = state.used.saturating_sub(size);
                    total = total.saturating_sub(size);
                    crate::metrics::metrics().cache_evicted(1);
                }
                // Another mount evicted it already (and counted it then).
                Ok(Punched::AlreadyGone) => state.used = state.used.saturating_sub(size),
                Ok(Punched::Pinned) => pinned.push(((h, block), size)),
                Err(_) => {
                    state.used = state.used.saturating_sub(size);
                    total = total.saturating_sub(size);
                    unpunchable.push(h);
                }
            }
        }
        lock.set_total(total);
        let fits = total + incoming <= self.limit;
        for (key, size) in pinned {
            state.lru.put(key, size);
        }
        drop(state);
        // A file whose hole could not be punched is removed whole; its other blocks go too.
        for h in unpunchable {
            let _ = self.dir.remove_object(&h);
            let mut state = self.lock();
            let gone: Vec<BlockKey> = state
                .lru
                .iter()
                .filter(|((k, _), _)| *k == h)
                .map(|(k, _)| *k)
                .collect();
            for k in gone {
                if let Some(size) = state.lru.pop(&k) {
                    state.used = state.used.saturating_sub(size);
                    lock.set_total(lock.total().saturating_sub(size));
                }
            }
        }
        fits
    }

    /// Opens a complete, verified cache file for the kernel to read directly, pinned: while the
    /// returned file is open it holds a shared `flock`, and no mount punches holes in it.
    pub fn open_pinned(&self, meta: &ObjectMetadata) -> Option<File> {
        if !self.is_complete(meta) {
            return None;
        }
        let file = self.dir.object(&meta.hash, Open::Read).ok()?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } != 0 {
            return None;
        }
        // Verified after pinning, so no eviction can change it between the check and the use.
        let before = identity_of(&file)?;
        // The kernel reads a passthrough file to its own end: a byte past the object's would
        // be served.
        if before.1 != meta.size {
            return None;
        }
        if self.lock().verified.get(&meta.hash) == Some(&before) {
            return Some(file);
        }
        // Verified by an earlier mount, and not written since (any write changes the identity).
        if verified_mark(&file).as_deref() == Some(mark(before).as_str()) {
            self.lock().verified.insert(meta.hash, before);
            return Some(file);
        }
        let bad: Vec<u64> = (0..meta.block_hashes.len() as u64)
            .filter(|&b| self.read_verified(meta, b).is_none())
            .collect();
        if !bad.is_empty() {
            // Unpinned first: the pin would stop the bad blocks from being punched out.
            drop(file);
            for b in bad {
                self.drop_block(&(meta.hash, b));
            }
            return None;
        }
        if identity_of(&file)? != before {
            return None;
        }
        record_verified(&mut self.lock().verified, meta.hash, &file, before);
        Some(file)
    }

    fn drop_block(&self, key: &BlockKey) {
        if let Ok(lock) = self.dir_lock() {
            self.forget(&lock, key);
        }
    }

    fn dir_lock(&self) -> io::Result<DirLock> {
        self.dir.lock().map(|f| DirLock(f, self.limit))
    }

    /// The bytes the directory holds (shared by every mount using it) and its limit.
    pub fn usage(&self) -> (u64, u64) {
        let total = self.dir_lock().map_or(self.lock().used, |l| l.total());
        (total, self.limit)
    }

    /// The objects of which this mount has indexed at least `blocks` whole blocks.
    pub fn objects_with_blocks(&self, blocks: u64) -> Vec<Digest> {
        let mut counts: std::collections::HashMap<Digest, u64> = Default::default();
        for ((h, unit), _) in self.lock().lru.iter() {
            if unit & CHUNK == 0 {
                *counts.entry(*h).or_default() += 1;
            }
        }
        counts
            .into_iter()
            .filter(|(_, n)| *n >= blocks)
            .map(|(h, _)| h)
            .collect()
    }

    /// Blocks and distinct objects this mount has indexed.
    pub fn indexed(&self) -> (u64, u64) {
        let state = self.lock();
        let objects: std::collections::HashSet<&Digest> =
            state.lru.iter().map(|((h, _), _)| h).collect();
        (state.lru.len() as u64, objects.len() as u64)
    }
}

/// Whether the index can hold the object's chunks: the scan at start-up counts in
/// [`CHUNK_SIZE`] units within [`BLOCK_SIZE`] blocks.
fn chunks_indexable(meta: &ObjectMetadata) -> bool {
    meta.block_size == BLOCK_SIZE && meta.chunk_size == Some(CHUNK_SIZE)
}

/// The directory lock, held while the cache's files or its shared total change, and the
/// cache's limit (for the metrics).
struct DirLock(File, u64);

impl DirLock {
    /// The bytes the directory holds, as every mount sharing it has counted them.
    fn total(&self) -> u64 {
        let mut buf = [0u8; 8];
        match self.0.read_exact_at(&mut buf, 0) {
            Ok(()) => u64::from_le_bytes(buf),
            Err(_) => 0,
        }
    }

    fn set_total(&self, total: u64) {
        // Best effort: a lost update is corrected by the next mount's start-up scan.
        let _ = self.0.write_all_at(&total.to_le_bytes(), 0);
        crate::metrics::metrics().cache_size(total, self.1);
    }
}

/// What punching a block out of its file did.
enum Punched {
    Freed,
    /// It was a hole already: another mount evicted it.
    AlreadyGone,
    /// The file is held open for passthrough; nothing was freed.
    Pinned,
}

/// Whether the file has data (not a hole) at `offset`.
fn has_data_at(file: &File, offset: u64) -> bool {
    // SAFETY: lseek on a descriptor we own.
    let data = unsafe { libc::lseek(file.as_raw_fd(), offset as libc::off_t, libc::SEEK_DATA) };
    data >= 0 && data as u64 == offset
}

/// Whether the file has data, no hole, in all of `offset..offset + len`.
fn all_data(file: &File, offset: u64, len: u64) -> bool {
    if !has_data_at(file, offset) {
        return false;
    }
    // SAFETY: lseek on a descriptor we own.
    let hole = unsafe { libc::lseek(file.as_raw_fd(), offset as libc::off_t, libc::SEEK_HOLE) };
    hole >= 0 && hole as u64 >= offset + len
}

/// The extended attribute recording that a complete cache file was verified whole, and the
/// identity (inode, size, mtime) it had then, so that a remount need not read it all again.
const VERIFIED_XATTR: &std::ffi::CStr = c"user.mltrack.verified";

/// A file as it was when verified: inode, size and mtime (any write changes the mtime).
type Identity = (u64, u64, i64, i64);

fn identity_of(file: &File) -> Option<Identity> {
    use std::os::unix::fs::MetadataExt;
    let m = file.metadata().ok()?;
    Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// Records that `file`, as it is now (`identity`), holds exactly the verified bytes of `h`:
/// on the file itself for later mounts, and in this mount's `verified`.
fn record_verified(
    verified: &mut std::collections::HashMap<Digest, Identity>,
    h: Digest,
    file: &File,
    identity: Identity,
) {
    set_verified_mark(file, &mark(identity));
    verified.insert(h, identity);
}

fn mark((ino, size, secs, nanos): Identity) -> String {
    format!("{ino}:{size}:{secs}:{nanos}")
}

fn verified_mark(file: &File) -> Option<String> {
    let mut buf = [0u8; 96];
    // SAFETY: fgetxattr on a descriptor we own, into a buffer of the given length.
    let n = unsafe {
        libc::fgetxattr(
            file.as_raw_fd(),
            VERIFIED_XATTR.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).ok()?;
    String::from_utf8(buf.get(..n)?.to_vec()).ok()
}

/// Best effort: without xattr support the next mount verifies the file again.
fn set_verified_mark(file: &File, value: &str) {
    // SAFETY: fsetxattr on a descriptor we own, with a buffer of the given length.
    let _ = unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
            VERIFIED_XATTR.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
}

/// Frees `len` bytes at `offset` of the file, keeping its size. Frees nothing while the file
/// is pinned (some process holds a shared `flock` on it).
fn punch(dir: &CacheDir, h: &Digest, offset: u64, len: u64) -> io::Result<Punched> {
    let f = match dir.object(h, Open::ReadWrite) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Punched::AlreadyGone),
        Err(e) => return Err(e),
    };
    // SAFETY: flock on a descriptor we own; released when it closes at the end of this call.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Ok(Punched::Pinned);
    }
    if !has_data_at(&f, offset) {
        return Ok(Punched::AlreadyGone);
    }
    // SAFETY: fallocate on a descriptor we own, with in-range arguments.
    let r = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Punched::Freed)
}

/// Punches a block that failed verification out of a cache file (`mltrack fsck --repair`).
/// A mount that has it indexed then reads a hole, which fails verification, and fetches the
/// block again.
pub fn drop_block_file(dir: &CacheDir, h: &Digest, block: u64, size: u64) -> io::Result<()> {
    match punch(dir, h, block * BLOCK_SIZE, size)? {
        Punched::Freed | Punched::AlreadyGone => Ok(()),
        Punched::Pinned => Err(io::Error::new(
            io::ErrorKind::ResourceBusy,
            "a mount is reading the file",
        )),
    }
}

/// Reads block `block` (one of the object's blocks) of `meta`'s object from its cache file and
/// checks it against its hash: `None` if it cannot be read or does not match. A mount's reads
/// and `mltrack fsck` both verify through this.
pub fn read_block_verified(file: &File, meta: &ObjectMetadata, block: u64) -> Option<Vec<u8>> {
    let expected = meta.block_hashes.get(usize::try_from(block).ok()?)?;
    let range = meta.block_range(block);
    let len = usize::try_from(range.end - range.start).ok()?;
    let (buf, digest) = hashing::read_block(file, range.start, len, meta.chunk_size).ok()?;
    (digest == *expected).then_some(buf)
}

/// The block cache keeps copies of `metadata.json` (`<cache-dir>/metadata/`, a few hundred
/// bytes per object, not counted against the limit), so that a mount started again finds
/// them without a GET.
impl crate::cas::MetadataKeeper for BlockCache {
    fn kept(&self, h: &Digest) -> Option<Vec<u8>> {
        self.dir.kept_metadata(h)
    }

    fn keep(&self, h: &Digest, json: &[u8]) {
        if let Err(e) = self.dir.keep_metadata(h, json) {
            tracing::debug!(hash = %h, error = %e, "could not keep a copy of metadata.json");
        }
    }
}
