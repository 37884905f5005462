//! The local-directory backend: the embedded default store, needing no setup.
//!
//! A key is a file under the root (`<root>/data/a3/<hash>/data.parquet`), so any tool can read
//! the store directly. Every write is atomic: the bytes go to a temporary file in
//! `<root>/.tmp/`, are fsynced, and are then linked or renamed into place (a handed-over
//! anonymous file on the same filesystem, a mount's spool at its last close, is linked into
//! `.tmp` itself instead of copied). Conditional writes
//! are safe between processes on one machine: create uses `link(2)`, which fails if the target
//! exists; update and delete hold an `flock` on a per-key lock file in `<root>/.locks/` while
//! they compare the ETag and rename. The ETag is the file's inode, size and modification time,
//! which every replacement changes. Empty directories left by deletes are pruned so that they
//! do not show up as common prefixes. `.tmp` and `.locks` are hidden from listings.
//!
//! Another local user must not be able to steer these writes (docs/SECURITY.md): the root is
//! a [`TrustedDir`] (owned by root or us, writable by no one else, refused otherwise), and
//! every key is reached from it one directory at a time without following links; files and
//! directories are made `0600`/`0700`, or as readable as the root directory itself is.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::{Deref, Range};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use rustix::fs::{FileType, Stat};

use super::{
    Body, GetResult, ListPage, ObjectMeta, ObjectStore, PutMode, Result, StorageError, check_key,
};
use crate::trusted::{Open, Policy, TrustedDir};

const TMP_DIR: &str = ".tmp";
const LOCK_DIR: &str = ".locks";

#[derive(Debug, Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The store's root, as canonically named (its identity, for the run locks).
    path: PathBuf,
    root: TrustedDir,
    tmp: TrustedDir,
    locks: TrustedDir,
    /// Makes temporary names unique within this process (the pid makes them unique across).
    counter: AtomicU64,
}

/// A directory of the store: the root itself, or one opened below it.
enum Dir<'a> {
    Root(&'a TrustedDir),
    Sub(TrustedDir),
}

impl Deref for Dir<'_> {
    type Target = TrustedDir;
    fn deref(&self) -> &TrustedDir {
        match self {
            Dir::Root(d) => d,
            Dir::Sub(d) => d,
        }
    }
}

fn io_err(op: &'static str, key: &str) -> impl FnOnce(io::Error) -> StorageError {
    let key = key.to_string();
    move |source| StorageError::Io { op, key, source }
}

/// Absent: a missing key, or a key under something that is not a directory.
fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

impl LocalStore {
    /// Opens (creating if needed, `0700`) the store rooted at `root`. A root another user
    /// could change is refused (see [`TrustedDir`]).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let shown = root.display().to_string();
        let hint = "point MLTRACK_STORE at a directory of your own";
        let dir = TrustedDir::open(&root, Policy::Private, true, hint)
            .map_err(io_err("open store directory", &shown))?;
        let tmp = dir
            .subdir(TMP_DIR, true)
            .map_err(io_err("open store directory", &shown))?;
        let locks = dir
            .subdir(LOCK_DIR, true)
            .map_err(io_err("open store directory", &shown))?;
        // One store, one identity, however its path was spelled (the run locks depend on it).
        let path = std::fs::canonicalize(&root).unwrap_or(root);
        Ok(LocalStore {
            inner: Arc::new(Inner {
                path,
                root: dir,
                tmp,
                locks,
                counter: AtomicU64::new(0),
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.path
    }
}

/// A key's directory part (`""` at the root) and its last name.
fn split(key: &str) -> Result<(&str, &str)> {
    check_key(key)?;
    Ok(match key.rfind('/') {
        Some(i) => (&key[..i], &key[i + 1..]),
        None => ("", key),
    })
}

impl Inner {
    /// The store directory `dir` (`""` for the root), made when `create` is set.
    fn dir(&self, dir: &str, create: bool) -> io::Result<Dir<'_>> {
        if dir.is_empty() {
            Ok(Dir::Root(&self.root))
        } else {
            self.root.subdir(dir, create).map(Dir::Sub)
        }
    }

    fn tmp_name(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        format!("{}-{n}-{nanos}", std::process::id())
    }

    fn lock_name(key: &str) -> String {
        // The key's SHA-256, so that no key becomes a path; storage knows nothing of `cas`.
        hex::encode(ring::digest::digest(&ring::digest::SHA256, key.as_bytes()))[..24].to_string()
    }

    fn put_blocking(&self, key: &str, body: Body, mode: PutMode) -> Result<String> {
        let (dir, name) = split(key)?;
        let io = |op: &'static str| io_err(op, key);
        let tmp = self.tmp_name();
        let copy = || {
            self.tmp
                .open_file(&tmp, Open::CreateNew)
                .and_then(|mut out| write_body(&mut out, &body))
        };
        let written = match &body {
            Body::Adopt(src) => self.take_in(&tmp, src).or_else(|e| {
                // Another filesystem, most often: copied instead.
                tracing::debug!(key, error = %e, "the handed-over file is copied");
                let _ = self.tmp.remove_file(&tmp);
                copy()
            }),
            _ => copy(),
        };
        // The ETag is the new file's own: a rename or link keeps its inode, size and mtime, so
        // it is known without looking the key up again (where a concurrent delete may already
        // have removed it).
        let new_etag = match written {
            Ok(etag) => etag,
            Err(e) => {
                let _ = self.tmp.remove_file(&tmp);
                return Err(io("write")(e));
            }
        };
        let result = match mode {
            PutMode::Overwrite => {
                retry_parent(|| self.dir(dir, true), |d| self.tmp.rename(&tmp, d, name))
                    .map_err(io("rename"))
            }
            PutMode::Create => {
                match retry_parent(|| self.dir(dir, true), |d| self.tmp.link(&tmp, d, name)) {
                    Ok(d) => Ok(d),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        Err(StorageError::AlreadyExists {
                            key: key.to_string(),
                        })
                    }
                    Err(e) => Err(io("link")(e)),
                }
            }
            PutMode::Update(expected) => {
                let _lock =
                    KeyLock::acquire(&self.locks, &Self::lock_name(key)).map_err(io("lock"))?;
                let failed = || StorageError::PreconditionFailed {
                    key: key.to_string(),
                };
                match self.dir(dir, false) {
                    Ok(d) => match d.stat(name) {
                        Ok(Some(st)) if is_file(&st) && etag_of(&st) == expected => self
                            .tmp
                            .rename(&tmp, &d, name)
                            .map(|()| d)
                            .map_err(io("rename")),
                        Ok(_) => Err(failed()),
                        Err(e) => Err(io("stat")(e)),
                    },
                    Err(e) if is_absent(&e) => Err(failed()),
                    Err(e) => Err(io("open directory")(e)),
                }
            }
        };
        // After a link the temporary name is still there; after a failed rename too.
        let _ = self.tmp.remove_file(&tmp);
        let d = result?;
        d.sync().map_err(io("fsync directory"))?;
        Ok(new_etag)
    }

    /// Takes the handed-over anonymous file `src` in as temporary file `tmp`: linked (which
    /// fails at once on another filesystem) and synced, the same inode, no byte copied.
    /// Returns its ETag.
    fn take_in(&self, tmp: &str, src: &Path) -> io::Result<String> {
        let file = File::open(src)?;
        self.tmp.name_anonymous(&file, tmp)?;
        file.sync_all()?;
        let m = file.metadata()?;
        Ok(etag(m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
    }

    fn list_blocking(&self, prefix: &str, delimited: bool) -> Result<ListPage> {
        let (dir_part, name_prefix) = match prefix.rfind('/') {
            Some(i) => (&prefix[..=i], &prefix[i + 1..]),
            None => ("", prefix),
        };
        let dir_name = dir_part.trim_end_matches('/');
        if !dir_part.is_empty() {
            check_key(dir_name)?;
        }
        let mut page = ListPage::default();
        let list_err = io_err("list", prefix);
        let dir = match self.dir(dir_name, false) {
            Ok(d) => d,
            Err(e) if is_absent(&e) => return Ok(page),
            Err(e) => return Err(list_err(e)),
        };
        let entries = match dir.entries() {
            Ok(e) => e,
            Err(e) => return Err(io_err("list", prefix)(e)),
        };
        for (name, kind) in entries {
            if !name.starts_with(name_prefix)
                || (dir_part.is_empty() && (name == TMP_DIR || name == LOCK_DIR))
            {
                continue;
            }
            let key = format!("{dir_part}{name}");
            if kind == FileType::Directory {
                if delimited {
                    page.prefixes.push(format!("{key}/"));
                } else {
                    self.walk(&dir, &name, &key, &mut page.objects)?;
                }
            } else if kind == FileType::RegularFile
                && let Ok(Some(st)) = dir.stat(&name)
            {
                page.objects.push(meta_of(key, &st));
            }
        }
        page.objects.sort_by(|a, b| a.key.cmp(&b.key));
        page.prefixes.sort();
        Ok(page)
    }

    /// Lists every file below `parent/name` (the key `key`), never following a link.
    fn walk(
        &self,
        parent: &TrustedDir,
        name: &str,
        key: &str,
        out: &mut Vec<ObjectMeta>,
    ) -> Result<()> {
        let dir = match parent.subdir(name, false) {
            Ok(d) => d,
            Err(e) if is_absent(&e) => return Ok(()),
            Err(e) => return Err(io_err("list", key)(e)),
        };
        let entries = dir.entries().map_err(io_err("list", key))?;
        for (name, kind) in entries {
            let child = format!("{key}/{name}");
            if kind == FileType::Directory {
                self.walk(&dir, &name, &child, out)?;
            } else if kind == FileType::RegularFile
                && let Ok(Some(st)) = dir.stat(&name)
            {
                out.push(meta_of(child, &st));
            }
        }
        Ok(())
    }

    fn delete_blocking(&self, key: &str) -> Result<()> {
        let (dir, name) = split(key)?;
        let _lock =
            KeyLock::acquire(&self.locks, &Self::lock_name(key)).map_err(io_err("lock", key))?;
        // Each directory on the way, kept open, so that the ones the delete empties can be
        // pruned without looking them up by path again.
        let names: Vec<&str> = if dir.is_empty() {
            Vec::new()
        } else {
            dir.split('/').collect()
        };
        let mut chain: Vec<TrustedDir> = Vec::with_capacity(names.len());
        for n in &names {
            let next = chain.last().unwrap_or(&self.root).subdir(n, false);
            match next {
                Ok(d) => chain.push(d),
                Err(e) if is_absent(&e) => return Ok(()),
                Err(e) => return Err(io_err("delete", key)(e)),
            }
        }
        match chain.last().unwrap_or(&self.root).remove_file(name) {
            Ok(()) => {}
            Err(e) if is_absent(&e) => return Ok(()),
            Err(e) => return Err(io_err("delete", key)(e)),
        }
        // Prune directories the delete emptied, so they do not list as prefixes; a concurrent
        // writer re-creates what it needs (see `retry_parent`).
        for i in (0..names.len()).rev() {
            let parent = if i == 0 { &self.root } else { &chain[i - 1] };
            if parent.remove_dir(names[i]).is_err() {
                break;
            }
        }
        Ok(())
    }
}

/// Writes and syncs the body; returns the file's ETag.
fn write_body(out: &mut File, body: &Body) -> io::Result<String> {
    match body {
        Body::Bytes(b) => out.write_all(b)?,
        Body::File(src) | Body::Adopt(src) => {
            let mut input = File::open(src)?;
            io::copy(&mut input, out)?;
        }
    }
    out.sync_all()?;
    let m = out.metadata()?;
    Ok(etag(m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// Opens the directory a key goes into (`open`, creating it) and runs a link or rename into
/// it (`op`); retries when a concurrent delete pruned the directory between the two steps.
/// Returns the directory, for the caller to sync.
fn retry_parent<'a>(
    open: impl Fn() -> io::Result<Dir<'a>>,
    op: impl Fn(&TrustedDir) -> io::Result<()>,
) -> io::Result<Dir<'a>> {
    let mut attempts = 0;
    loop {
        let dir = open()?;
        match op(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 8 => attempts += 1,
            Err(e) => return Err(e),
        }
    }
}

fn is_file(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
}

/// A file's ETag: its inode, size and modification time, which every replacement changes.
fn etag(ino: u64, size: u64, secs: i64, nanos: i64) -> String {
    format!("{ino:x}-{size:x}-{secs:x}.{nanos:x}")
}

fn etag_of(st: &Stat) -> String {
    etag(
        st.st_ino,
        st.st_size as u64,
        st.st_mtime,
        st.st_mtime_nsec as i64,
    )
}

fn meta_of(key: String, st: &Stat) -> ObjectMeta {
    ObjectMeta {
        key,
        size: st.st_size as u64,
        etag: Some(etag_of(st)),
        last_modified: DateTime::<Utc>::from_timestamp(st.st_mtime, st.st_mtime_nsec as u32),
    }
}

/// An exclusive `flock` on a lock file in the store's `.locks`, released on drop.
struct KeyLock {
    _file: File,
}

impl KeyLock {
    fn acquire(locks: &TrustedDir, name: &str) -> io::Result<Self> {
        let file = locks.lock_exclusive(name, Open::Lock)?;
        Ok(KeyLock { _file: file })
    }
}

/// Runs blocking file work off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StorageError::Io {
            op: "run",
            key: String::new(),
            source: io::Error::other(e),
        })
    })
}

#[async_trait]
impl ObjectStore for LocalStore {
    fn describe(&self) -> String {
        self.inner.path.display().to_string()
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetResult> {
        let this = self.inner.clone();
        let key = key.to_string();
        blocking(move || {
            let (dir, name) = split(&key)?;
            let io = |op: &'static str, k: &str| {
                let k = k.to_string();
                move |source: io::Error| {
                    if is_absent(&source) {
                        StorageError::NotFound { key: k }
                    } else {
                        StorageError::Io { op, key: k, source }
                    }
                }
            };
            let mut f = this
                .dir(dir, false)
                .and_then(|d| d.open_file(name, Open::Read))
                .map_err(io("open", &key))?;
            let meta = f.metadata().map_err(io("stat", &key))?;
            let size = meta.len();
            let range = range.unwrap_or(0..size);
            let start = range.start.min(size);
            let end = range.end.min(size).max(start);
            f.seek(SeekFrom::Start(start)).map_err(io("seek", &key))?;
            let mut buf = Vec::with_capacity((end - start) as usize);
            f.take(end - start)
                .read_to_end(&mut buf)
                .map_err(io("read", &key))?;
            Ok(GetResult {
                data: Bytes::from(buf),
                etag: Some(etag(meta.ino(), size, meta.mtime(), meta.mtime_nsec())),
            })
        })
        .await
    }

    async fn put(&self, key: &str, body: Body, mode: PutMode) -> Result<String> {
        let this = self.inner.clone();
        let key = key.to_string();
        blocking(move || this.put_blocking(&key, body, mode)).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let this = self.inner.clone();
        let key = key.to_string();
        blocking(move || {
            let (dir, name) = split(&key)?;
            let found = this.dir(dir, false).and_then(|d| d.stat(name));
            match found {
                Ok(Some(st)) if is_file(&st) => Ok(Some(meta_of(key, &st))),
                Ok(_) => Ok(None),
                Err(e) if is_absent(&e) => Ok(None),
                Err(source) => Err(StorageError::Io {
                    op: "stat",
                    key,
                    source,
                }),
            }
        })
        .await
    }

    async fn list_page(
        &self,
        prefix: &str,
        delimited: bool,
        _token: Option<String>,
    ) -> Result<ListPage> {
        let this = self.inner.clone();
        let prefix = prefix.to_string();
        blocking(move || this.list_blocking(&prefix, delimited)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let this = self.inner.clone();
        let key = key.to_string();
        blocking(move || this.delete_blocking(&key)).await
    }
}
