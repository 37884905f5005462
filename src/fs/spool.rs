//! Files being written through the mount: each is a spool file on local disk that collects the
//! writes, in any pattern, until `close()` or `fsync()` commits it to the store.
//!
//! A spool is an anonymous file (`O_TMPFILE`, `0600`) in `<cache-dir>/spool`, opened from the
//! checked directory descriptor (`crate::trusted`), never by path: it has no name, so a
//! crashed daemon leaves nothing behind and several mounts sharing the directory cannot step
//! on each other. It is reached by path as `/proc/self/fd/<n>` when it is hashed and uploaded,
//! and given a name only when it becomes the object's cache file after its last close, or the
//! object itself when a local store on its filesystem takes it in at that close; the file then
//! refers to the object and gets a fresh spool, so nothing writes the stored bytes again.
//!
//! A write file may also stand for a stored object that has not been copied: opening an
//! existing file without truncating it, or a whole-file `copy_file_range`, starts it as a
//! *reference*. A reference costs nothing to commit (the object is already stored); the first
//! write or truncate copies the object into the spool, verified, and from then on it is an
//! ordinary spool.
//!
//! All state is behind one async mutex, held for the whole of a commit, so writes, truncates
//! and renames wait for a commit in progress instead of changing the bytes under it.
//!
//! Hashing follows the writer: once a file written from its start, in order, passes
//! [`FOLLOW_AFTER`] bytes, a [`Follower`] computes the spool's whole-file digest behind the
//! writes (reading it back from the page cache), so that `close()` of a large file finds its
//! address known. That digest is all bytes already stored need; new bytes get their block
//! digests beside their upload (`cas::DataStore::put_digested`). Any other
//! write pattern (a seek back, a truncate, a reference) abandons it, and the file is hashed
//! whole at commit instead. Small files are simply hashed at commit.
//!
//! At the same point, a file written in order whose first blocks are those of an object whose
//! bytes are on the node is taken for a copy of it: its later writes are checked against the
//! object's block digests ([`super::matching::Matcher`]) instead of being written into the
//! spool, and the owner of the file ([`crate::fs::Tree`]) copies the verified part into the
//! spool only if the match ends.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::matching::Matcher;
use crate::cas::hashing;
use crate::cas::metadata::ObjectMetadata;
use crate::error::{Error, Result};
use crate::ids::{Digest, RelPath, RunId};
use crate::runs::manifest::FileEntry;
use crate::trusted::TrustedDir;

/// Where a write file will be recorded: a run and a path in it. Renames change it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub run: RunId,
    pub path: RelPath,
}

/// Files written in order get a follower once they are this long (below it, a thread per
/// file costs more than it saves).
pub const FOLLOW_AFTER: u64 = 8 * 1024 * 1024;

pub struct WriteFile {
    target: Mutex<Target>,
    /// The current size, readable without waiting for a commit.
    size: AtomicU64,
    /// Mode, owner and times, readable and settable without waiting for a commit.
    times: Mutex<Times>,
    /// User extended attributes, set through the open file before it is committed (as
    /// `cp -a` and `rsync -X` do) and recorded with it.
    xattrs: Mutex<crate::runs::xattrs::Xattrs>,
    /// Open handles sharing this file; the last release commits and retires it.
    pub opens: AtomicUsize,
    /// A commit of it is under way (for `mltrack status`).
    pub committing: std::sync::atomic::AtomicBool,
    pub state: tokio::sync::Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
pub struct Times {
    pub mode: u32,
    /// Set by `chown`; `None`: the mounting user's.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Set by `utimens`; otherwise the time of the last write.
    pub mtime: Option<DateTime<Utc>>,
    pub modified: DateTime<Utc>,
    /// The last change of any kind (bytes, mode, owner, times, attributes): its `ctime`.
    pub changed: DateTime<Utc>,
}

impl Times {
    /// The modification time to record and report.
    pub fn mtime(&self) -> DateTime<Utc> {
        self.mtime.unwrap_or(self.modified)
    }
}

/// The spool file and the path it is reached by.
pub struct Spool {
    file: File,
    /// `/proc/self/fd/<n>`: the spool reached by path.
    path: PathBuf,
}

impl Spool {
    fn new(dir: &TrustedDir) -> Result<Spool> {
        let file = dir.tmpfile().map_err(Error::io(dir.path()))?;
        let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        Ok(Spool { file, path })
    }

    /// The spool as a path, for hashing and uploading.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// The store took the spool file as the object (linked it in, where a copy was allowed),
    /// so it must never be written again.
    pub fn is_stored(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        // An anonymous file has no link until something links it.
        self.file.metadata().is_ok_and(|m| m.nlink() > 0)
    }
}

pub struct State {
    /// The file collecting the writes.
    pub spool: Spool,
    /// Bytes written that the store and manifest do not have yet.
    pub dirty: bool,
    /// The spool has been written from 0 to here, in order, and nothing else: the follower,
    /// if any, may hash it. `None` once any other write happened.
    sequential: Option<u64>,
    follower: Option<Follower>,
    /// The contents are this stored object, not (yet) copied into the spool.
    pub reference: Option<Arc<ObjectMetadata>>,
    /// The file is being written as a copy of a stored object: the spool holds only its first
    /// bytes (see [`super::matching`]). Never set together with `reference`.
    pub matching: Option<Matcher>,
    /// Unlinked or replaced while open: writes go on, nothing is recorded.
    pub detached: bool,
    /// The last commit failed and its caller was told so: the last release does not try again
    /// behind the caller's back (a later `close()` or `fsync()` still does).
    pub failed: bool,
    /// What the last commit recorded.
    pub committed: Option<FileEntry>,
}

/// What a read of a write file returns.
pub enum SpoolRead {
    Bytes(Bytes),
    /// The file is still a reference: read the object, up to the file's size.
    Object(Arc<ObjectMetadata>, u64),
    /// The file is being matched against an object: read the object up to the given length,
    /// then these bytes (written after it, not yet verified).
    Matched(Arc<ObjectMetadata>, u64, Bytes),
}

impl std::fmt::Debug for WriteFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteFile")
            .field("target", &self.target())
            .field("size", &self.size())
            .finish()
    }
}

impl WriteFile {
    /// A new, empty write file in `dir`. `existing` makes it a reference to that object.
    pub fn create(
        dir: &TrustedDir,
        target: Target,
        mode: u32,
        existing: Option<Arc<ObjectMetadata>>,
    ) -> Result<WriteFile> {
        let spool = Spool::new(dir)?;
        let size = existing.as_ref().map_or(0, |m| m.size);
        crate::metrics::metrics().pending_write(true);
        Ok(WriteFile {
            target: Mutex::new(target),
            size: AtomicU64::new(size),
            opens: AtomicUsize::new(1),
            committing: Default::default(),
            times: Mutex::new(Times {
                mode,
                uid: None,
                gid: None,
                mtime: None,
                modified: crate::time::now(),
                changed: crate::time::now(),
            }),
            xattrs: Mutex::default(),
            state: tokio::sync::Mutex::new(State {
                spool,
                sequential: existing.is_none().then_some(0),
                follower: None,
                dirty: existing.is_none(),
                reference: existing,
                matching: None,
                detached: false,
                failed: false,
                committed: None,
            }),
        })
    }

    pub fn target(&self) -> Target {
        self.target
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_target(&self, t: Target) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }

    pub fn times(&self) -> Times {
        *self.times.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_times(&self, change: impl FnOnce(&mut Times)) {
        change(&mut self.times.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn xattrs(&self) -> crate::runs::xattrs::Xattrs {
        self.xattrs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Changes the attributes; `change` may refuse, leaving them as they were.
    pub fn change_xattrs(
        &self,
        change: impl FnOnce(&mut crate::runs::xattrs::Xattrs) -> Result<()>,
    ) -> Result<()> {
        let mut kept = self.xattrs.lock().unwrap_or_else(|p| p.into_inner());
        let mut new = kept.clone();
        change(&mut new)?;
        *kept = new;
        Ok(())
    }

    /// What the file's manifest entry records besides its data.
    pub fn stamp(&self) -> crate::runs::manifest::Stamp {
        let t = self.times();
        crate::runs::manifest::Stamp {
            mtime: t.mtime(),
            ctime: t.changed,
            mode: t.mode,
            uid: t.uid,
            gid: t.gid,
            xattrs: self.xattrs(),
        }
    }

    fn touched(&self, st: &mut State) {
        st.dirty = true;
        self.set_times(|t| {
            t.modified = crate::time::now();
            t.changed = t.modified;
            // A write after `utimens` makes the file's time the write's, as on any filesystem.
            t.mtime = None;
        });
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    pub async fn read(&self, offset: u64, size: u32) -> Result<SpoolRead> {
        let st = self.state.lock().await;
        if let Some(m) = &st.reference {
            return Ok(SpoolRead::Object(m.clone(), self.size()));
        }
        let len = self.size();
        let end = (offset + u64::from(size)).min(len);
        if offset >= end {
            return Ok(SpoolRead::Bytes(Bytes::new()));
        }
        if let Some(m) = &st.matching {
            let v = m.verified();
            let tail = m.kept(offset.max(v), end.max(v));
            return Ok(match offset >= v {
                true => SpoolRead::Bytes(tail),
                false => SpoolRead::Matched(m.meta().clone(), v, tail),
            });
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        st.spool
            .file
            .read_exact_at(&mut buf, offset)
            .map_err(Error::io(&st.spool.path))?;
        Ok(SpoolRead::Bytes(Bytes::from(buf)))
    }

    /// Writes at `offset`; the spool must not be a reference (see [`State::reference`]) nor
    /// matched (see [`State::matching`]). True when the file, written in order, just passed
    /// [`FOLLOW_AFTER`]: the point where it may be taken for a copy of stored data.
    pub fn write_locked(&self, st: &mut State, offset: u64, data: &[u8]) -> Result<bool> {
        debug_assert!(st.reference.is_none() && st.matching.is_none());
        let written = st.spool.file.write_all_at(data, offset);
        if let Err(e) = written {
            abandon(st);
            return Err(Error::io(&st.spool.path)(e));
        }
        self.size
            .fetch_max(offset + data.len() as u64, Ordering::Relaxed);
        self.touched(st);
        match st.sequential {
            Some(end) if end == offset => {
                let end = end + data.len() as u64;
                st.sequential = Some(end);
                match &st.follower {
                    Some(f) => f.advance(end),
                    None if end >= FOLLOW_AFTER => {
                        st.follower = st
                            .spool
                            .file
                            .try_clone()
                            .ok()
                            .map(|f| Follower::start(f, end));
                        return Ok(offset < FOLLOW_AFTER);
                    }
                    None => {}
                }
            }
            _ => abandon(st),
        }
        Ok(false)
    }

    /// Writes at `offset` while the file is matched against a stored object (see
    /// [`State::matching`]): false if the write is not at the file's end or not the object's
    /// bytes. The caller then ends the match and writes it as usual (the matcher may have taken
    /// part of it: the same bytes at the same place, see [`Matcher::pieces`]).
    pub fn match_locked(&self, st: &mut State, offset: u64, data: &[u8]) -> bool {
        let Some(m) = &mut st.matching else {
            return false;
        };
        if offset != m.end() || !m.feed(data) {
            return false;
        }
        self.size.store(m.end(), Ordering::Relaxed);
        self.touched(st);
        true
    }

    /// Starts matching the file against a stored object from here on (see [`State::matching`]).
    pub fn matched_locked(&self, st: &mut State, m: Matcher) {
        debug_assert_eq!(m.end(), self.size());
        abandon(st);
        st.matching = Some(m);
    }

    /// The digest and size of the whole spool from its follower, if it followed every write.
    /// Waits for the follower to catch up, off the async threads.
    pub async fn followed_hash(&self, st: &mut State) -> Option<(Digest, u64)> {
        let follower = st.follower.take()?;
        let end = st.sequential?;
        if end != self.size() || st.reference.is_some() {
            follower.stop();
            return None;
        }
        tokio::task::spawn_blocking(move || follower.finish(end))
            .await
            .ok()
            .flatten()
    }

    pub fn truncate_locked(&self, st: &mut State, size: u64) -> Result<()> {
        debug_assert!(st.reference.is_none());
        abandon(st);
        st.spool
            .file
            .set_len(size)
            .map_err(Error::io(&st.spool.path))?;
        self.size.store(size, Ordering::Relaxed);
        self.touched(st);
        Ok(())
    }

    /// Makes the file the first `size` bytes of stored object `meta` (a copy of stored data
    /// in one or several `copy_file_range` calls), without copying anything.
    pub fn refer_locked(&self, st: &mut State, meta: Arc<ObjectMetadata>, size: u64) {
        abandon(st);
        self.size.store(size, Ordering::Relaxed);
        st.reference = Some(meta);
        self.touched(st);
    }

    /// The spool now holds the reference's bytes (they were copied into it and cut to size).
    pub fn materialized_locked(&self, st: &mut State) {
        st.reference = None;
    }

    /// The spool became stored object `meta` (see [`Spool::is_stored`]): from now on the file
    /// is a reference to it, and a fresh spool in `dir` takes any later write (which copies the
    /// object into it first, as for any reference).
    pub fn handed_over_locked(
        &self,
        st: &mut State,
        dir: &TrustedDir,
        meta: Arc<ObjectMetadata>,
    ) -> Result<()> {
        debug_assert_eq!(meta.size, self.size());
        st.spool = Spool::new(dir)?;
        abandon(st);
        // Not a change of the file (its times stay): it holds what was committed.
        st.reference = Some(meta);
        Ok(())
    }
}

/// Stops following: the file will be hashed whole at commit.
fn abandon(st: &mut State) {
    st.sequential = None;
    if let Some(f) = st.follower.take() {
        f.stop();
    }
}

impl Drop for WriteFile {
    fn drop(&mut self) {
        crate::metrics::metrics().pending_write(false);
        if let Some(f) = self.state.get_mut().follower.take() {
            f.stop();
        }
    }
}

/// Computes a spool file's whole-file digest behind its writer, on its own thread (see
/// [`hashing::digest_reader`]).
pub struct Follower {
    shared: Arc<(Mutex<Progress>, Condvar)>,
    thread: Option<std::thread::JoinHandle<std::io::Result<(Digest, u64)>>>,
}

#[derive(Default)]
struct Progress {
    /// Bytes written so far, all of them in order from 0.
    written: u64,
    /// The final size, once the writer commits.
    end: Option<u64>,
    stopped: bool,
}

impl Follower {
    fn start(file: File, written: u64) -> Follower {
        let shared = Arc::new((
            Mutex::new(Progress {
                written,
                ..Default::default()
            }),
            Condvar::new(),
        ));
        let reader = FollowReader {
            file,
            pos: 0,
            shared: shared.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("mltrack-hash".into())
            .spawn(move || hashing::digest_reader(reader))
            .ok();
        Follower { shared, thread }
    }

    fn update(&self, change: impl FnOnce(&mut Progress)) {
        let (lock, cv) = &*self.shared;
        change(&mut lock.lock().unwrap_or_else(|p| p.into_inner()));
        cv.notify_all();
    }

    fn advance(&self, written: u64) {
        self.update(|p| p.written = written);
    }

    fn stop(self) {
        self.update(|p| p.stopped = true);
    }

    /// Waits for the digest of the first `end` bytes (blocking).
    fn finish(mut self, end: u64) -> Option<(Digest, u64)> {
        self.update(|p| p.end = Some(end));
        let (digest, size) = self.thread.take()?.join().ok()?.ok()?;
        (size == end).then_some((digest, size))
    }
}

/// Reads the spool from the start, waiting for the writer where it has not written yet.
struct FollowReader {
    file: File,
    pos: u64,
    shared: Arc<(Mutex<Progress>, Condvar)>,
}

impl std::io::Read for FollowReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let (lock, cv) = &*self.shared;
        let mut p = lock.lock().unwrap_or_else(|p| p.into_inner());
        let available = loop {
            if p.stopped {
                return Err(std::io::Error::other("no longer followed"));
            }
            let limit = p.end.map_or(p.written, |e| e.min(p.written));
            if limit > self.pos {
                break limit - self.pos;
            }
            if p.end.is_some_and(|e| self.pos >= e) {
                return Ok(0);
            }
            p = cv.wait(p).unwrap_or_else(|p| p.into_inner());
        };
        drop(p);
        let n = buf
            .len()
            .min(usize::try_from(available).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}
