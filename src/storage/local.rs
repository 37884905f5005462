//! The local-directory backend: the embedded default store, needing no setup.
//!
//! A key is a file under the root (`<root>/data/a3/<hash>/data.parquet`), so any tool can read
//! the store directly. Every write is atomic: the bytes go to a temporary file in
//! `<root>/.tmp/`, are fsynced, and are then linked or renamed into place. Conditional writes
//! are safe between processes on one machine: create uses `link(2)`, which fails if the target
//! exists; update and delete hold an `flock` on a per-key lock file in `<root>/.locks/` while
//! they compare the ETag and rename. The ETag is the file's inode, size and modification time,
//! which every replacement changes. Empty directories left by deletes are pruned so that they
//! do not show up as common prefixes. `.tmp` and `.locks` are hidden from listings.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{
    Body, GetResult, ListPage, ObjectMeta, ObjectStore, PutMode, Result, StorageError, check_key,
};

const TMP_DIR: &str = ".tmp";
const LOCK_DIR: &str = ".locks";

#[derive(Debug, Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    /// Makes temporary names unique within this process (the pid makes them unique across).
    counter: AtomicU64,
}

impl LocalStore {
    /// Opens (creating if needed) the store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for dir in [root.clone(), root.join(TMP_DIR), root.join(LOCK_DIR)] {
            fs::create_dir_all(&dir).map_err(|source| StorageError::Io {
                op: "create store directory",
                key: dir.display().to_string(),
                source,
            })?;
        }
        // One store, one identity, however its path was spelled (the run locks depend on it).
        let root = fs::canonicalize(&root).unwrap_or(root);
        Ok(LocalStore {
            inner: Arc::new(Inner {
                root,
                counter: AtomicU64::new(0),
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }
}

impl Inner {
    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn tmp_path(&self) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        self.root
            .join(TMP_DIR)
            .join(format!("{}-{n}-{nanos}", std::process::id()))
    }

    fn lock_path(&self, key: &str) -> PathBuf {
        let h = crate::cas::hashing::sha256(key.as_bytes());
        self.root.join(LOCK_DIR).join(&h.to_hex()[..24])
    }

    fn put_blocking(&self, key: &str, body: Body, mode: PutMode) -> Result<String> {
        let dest = self.path(key)?;
        let io = |op: &'static str| {
            let key = key.to_string();
            move |source| StorageError::Io { op, key, source }
        };
        let tmp = self.tmp_path();
        let written = write_tmp(&tmp, &body).map_err(io("write"));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let result = match mode {
            PutMode::Overwrite => {
                retry_parent(&dest, || fs::rename(&tmp, &dest)).map_err(io("rename"))
            }
            PutMode::Create => match retry_parent(&dest, || fs::hard_link(&tmp, &dest)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    Err(StorageError::AlreadyExists {
                        key: key.to_string(),
                    })
                }
                Err(e) => Err(io("link")(e)),
            },
            PutMode::Update(expected) => {
                let _lock = KeyLock::acquire(&self.lock_path(key)).map_err(io("lock"))?;
                match fs::metadata(&dest) {
                    Ok(m) if etag_of(&m) == expected => {
                        fs::rename(&tmp, &dest).map_err(io("rename"))
                    }
                    Ok(_) => Err(StorageError::PreconditionFailed {
                        key: key.to_string(),
                    }),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        Err(StorageError::PreconditionFailed {
                            key: key.to_string(),
                        })
                    }
                    Err(e) => Err(io("stat")(e)),
                }
            }
        };
        // After a link the temporary name is still there; after a failed rename too.
        let _ = fs::remove_file(&tmp);
        result?;
        if let Some(parent) = dest.parent() {
            sync_dir(parent).map_err(io("fsync directory"))?;
        }
        let meta = fs::metadata(&dest).map_err(io("stat"))?;
        Ok(etag_of(&meta))
    }

    fn list_blocking(&self, prefix: &str, delimited: bool) -> Result<ListPage> {
        let (dir_part, name_prefix) = match prefix.rfind('/') {
            Some(i) => (&prefix[..=i], &prefix[i + 1..]),
            None => ("", prefix),
        };
        if !dir_part.is_empty() {
            check_key(dir_part.trim_end_matches('/'))?;
        }
        let mut page = ListPage::default();
        let dir = self.root.join(dir_part);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.kind() == io::ErrorKind::NotADirectory =>
            {
                return Ok(page);
            }
            Err(source) => {
                return Err(StorageError::Io {
                    op: "list",
                    key: prefix.to_string(),
                    source,
                });
            }
        };
        for entry in entries {
            let entry = entry.map_err(|source| StorageError::Io {
                op: "list",
                key: prefix.to_string(),
                source,
            })?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue; // not a key this store could have written
            };
            if !name.starts_with(name_prefix)
                || (dir_part.is_empty() && (name == TMP_DIR || name == LOCK_DIR))
            {
                continue;
            }
            let key = format!("{dir_part}{name}");
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                if delimited {
                    page.prefixes.push(format!("{key}/"));
                } else {
                    self.walk(&key, &mut page.objects)?;
                }
            } else if ft.is_file()
                && let Ok(m) = entry.metadata()
            {
                page.objects.push(meta_of(key, &m));
            }
        }
        page.objects.sort_by(|a, b| a.key.cmp(&b.key));
        page.prefixes.sort();
        Ok(page)
    }

    fn walk(&self, key: &str, out: &mut Vec<ObjectMeta>) -> Result<()> {
        let entries = match fs::read_dir(self.root.join(key)) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(StorageError::Io {
                    op: "list",
                    key: key.to_string(),
                    source,
                });
            }
        };
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let child = format!("{key}/{name}");
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                self.walk(&child, out)?;
            } else if ft.is_file()
                && let Ok(m) = entry.metadata()
            {
                out.push(meta_of(child, &m));
            }
        }
        Ok(())
    }

    fn delete_blocking(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        let _lock = KeyLock::acquire(&self.lock_path(key)).map_err(|source| StorageError::Io {
            op: "lock",
            key: key.to_string(),
            source,
        })?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(StorageError::Io {
                    op: "delete",
                    key: key.to_string(),
                    source,
                });
            }
        }
        // Prune directories the delete emptied, so they do not list as prefixes; a concurrent
        // writer re-creates what it needs (see `retry_parent`).
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }
}

fn write_tmp(tmp: &Path, body: &Body) -> io::Result<()> {
    let mut out = OpenOptions::new().write(true).create_new(true).open(tmp)?;
    match body {
        Body::Bytes(b) => out.write_all(b)?,
        Body::File(src) => {
            let mut input = File::open(src)?;
            io::copy(&mut input, &mut out)?;
        }
    }
    out.sync_all()
}

/// Runs a link or rename into `dest`, creating its parent directory first; retries when a
/// concurrent delete pruned the directory between the two steps.
fn retry_parent(dest: &Path, mut op: impl FnMut() -> io::Result<()>) -> io::Result<()> {
    let parent = dest
        .parent()
        .ok_or_else(|| io::Error::other("key has no parent"))?;
    let mut attempts = 0;
    loop {
        fs::create_dir_all(parent)?;
        match op() {
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 8 => attempts += 1,
            other => return other,
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn etag_of(m: &fs::Metadata) -> String {
    format!(
        "{:x}-{:x}-{:x}.{:x}",
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec()
    )
}

fn meta_of(key: String, m: &fs::Metadata) -> ObjectMeta {
    ObjectMeta {
        key,
        size: m.len(),
        etag: Some(etag_of(m)),
        last_modified: m.modified().ok().map(DateTime::<Utc>::from),
    }
}

/// An exclusive `flock` on a lock file, released on drop.
struct KeyLock {
    _file: File,
}

impl KeyLock {
    fn acquire(path: &Path) -> io::Result<Self> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        // SAFETY: flock on a descriptor we own; it is released when the file closes.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(KeyLock { _file: f })
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
        self.inner.root.display().to_string()
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetResult> {
        let path = self.inner.path(key)?;
        let key = key.to_string();
        blocking(move || {
            let io = |op: &'static str, k: &str| {
                let k = k.to_string();
                move |source: io::Error| {
                    if source.kind() == io::ErrorKind::NotFound {
                        StorageError::NotFound { key: k }
                    } else {
                        StorageError::Io { op, key: k, source }
                    }
                }
            };
            let mut f = File::open(&path).map_err(io("open", &key))?;
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
                etag: Some(etag_of(&meta)),
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
        let path = self.inner.path(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => Ok(Some(meta_of(key.to_string(), &m))),
            Ok(_) => Ok(None),
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.kind() == io::ErrorKind::NotADirectory =>
            {
                Ok(None)
            }
            Err(source) => Err(StorageError::Io {
                op: "stat",
                key: key.to_string(),
                source,
            }),
        }
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
