//! The files of a cache directory, and only the ways to reach them that another local user
//! cannot steer: `objects/<hh>/<hash>` (one sparse file per object), `metadata/<hh>/<hash>.json`
//! (copies of `metadata.json`), `lock` (the shared lock and byte total), `spool/` (anonymous
//! files being written) and `mount.log`.
//!
//! A cache may be shared by several mounts of one user, and a daemon running as root must not
//! be made to write an object's bytes, punch holes or zero a counter in a file someone else
//! chose. So the directory is a [`TrustedDir`] (owned by root or us, writable by no one else,
//! refused otherwise; docs/SECURITY.md) and every file in it is opened from it without
//! following links, and checked before it is written. Nothing here knows about blocks or LRU
//! order: that is `cache/mod.rs`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use rustix::fs::FileType;

use crate::ids::Digest;
use crate::trusted::{Open, Policy, TrustedDir};

const HINT: &str = "set --cache-dir or MLTRACK_CACHE_DIR to a directory of your own";

#[derive(Debug)]
pub struct CacheDir {
    root: TrustedDir,
    objects: TrustedDir,
    /// Absent only in a directory opened without `create` that never had one.
    metadata: Option<TrustedDir>,
}

/// One object's file in a cache directory, as [`CacheDir::scan`] found it.
#[derive(Debug)]
pub struct CachedFile {
    pub hash: Digest,
    /// Where it is, for messages.
    pub path: PathBuf,
    pub modified: Option<std::time::SystemTime>,
    /// The blocks present in it: (block number, bytes).
    pub blocks: Vec<(u64, u64)>,
    /// The chunks present in it outside whole blocks (a random read's): (chunk number, bytes).
    pub chunks: Vec<(u64, u64)>,
}

impl CacheDir {
    /// Opens the cache directory `dir`, creating it (`0700`) and its subdirectories when
    /// `create` is set; refuses a directory another user could change.
    pub fn open(dir: &Path, create: bool) -> io::Result<CacheDir> {
        let root = TrustedDir::open(dir, Policy::Private, create, HINT)?;
        let objects = root.subdir("objects", create)?;
        let metadata = match root.subdir("metadata", create) {
            Ok(d) => Some(d),
            Err(e) if !create && e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(CacheDir {
            root,
            objects,
            metadata,
        })
    }

    /// The spool directory, where files being written live until they are stored.
    pub fn spool(&self) -> io::Result<TrustedDir> {
        self.root.subdir("spool", true)
    }

    /// The daemon's log, opened for appending. A log past `keep_under` bytes is kept as
    /// `mount.log.1` (replacing an older one) and a new one started.
    pub fn open_log(&self, keep_under: u64) -> io::Result<File> {
        if let Some(st) = self.root.stat("mount.log")?
            && st.st_size as u64 > keep_under
            && FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
        {
            self.root.rename("mount.log", &self.root, "mount.log.1")?;
        }
        self.root.open_file("mount.log", Open::Append)
    }

    /// What the daemon's log holds (to show why a daemon did not start).
    pub fn read_log(&self) -> io::Result<String> {
        let mut s = String::new();
        self.root
            .open_file("mount.log", Open::Read)?
            .read_to_string(&mut s)?;
        Ok(s)
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.path().join("mount.log")
    }

    /// The directory lock file (read-write, created if missing), locked exclusively.
    pub fn lock(&self) -> io::Result<File> {
        self.root.lock_exclusive("lock", Open::ReadWriteCreate)
    }

    fn fanout(&self, h: &Digest, create: bool) -> io::Result<TrustedDir> {
        self.objects.subdir(&h.fanout(), create)
    }

    /// Opens the object's cache file (see [`Open`]); `ReadWriteCreate` also makes its
    /// fan-out directory.
    pub fn object(&self, h: &Digest, how: Open) -> io::Result<File> {
        let create = matches!(how, Open::ReadWriteCreate | Open::CreateNew);
        self.fanout(h, create)?.open_file(h.to_hex(), how)
    }

    /// Whether the object has a cache file (or anything else under its name).
    pub fn has_object(&self, h: &Digest) -> bool {
        match self.fanout(h, false) {
            Ok(d) => !matches!(d.stat(h.to_hex()), Ok(None)),
            Err(e) => e.kind() != io::ErrorKind::NotFound,
        }
    }

    /// Gives the open file `file` the object's name (a spool adopted whole); fails with
    /// `AlreadyExists` if it has one.
    pub fn link_object(&self, h: &Digest, file: &File) -> io::Result<()> {
        self.fanout(h, true)?.link_open_file(file, &h.to_hex())
    }

    pub fn remove_object(&self, h: &Digest) -> io::Result<()> {
        self.fanout(h, false)?.remove_file(h.to_hex())
    }

    /// The `metadata.json` of object `h` as an earlier mount kept it, if it did.
    pub fn kept_metadata(&self, h: &Digest) -> Option<Vec<u8>> {
        let mut buf = Vec::new();
        self.metadata
            .as_ref()?
            .subdir(&h.fanout(), false)
            .ok()?
            .open_file(format!("{}.json", h.to_hex()), Open::Read)
            .ok()?
            .read_to_end(&mut buf)
            .ok()?;
        Some(buf)
    }

    /// Keeps a copy of the object's `metadata.json`, replacing it whole.
    pub fn keep_metadata(&self, h: &Digest, bytes: &[u8]) -> io::Result<()> {
        let Some(metadata) = &self.metadata else {
            return Ok(());
        };
        let dir = metadata.subdir(&h.fanout(), true)?;
        let name = format!("{}.json", h.to_hex());
        let tmp = format!("{name}.tmp{}", std::process::id());
        let written = dir
            .open_file(&tmp, Open::CreateNew)
            .and_then(|mut f| f.write_all(bytes))
            .and_then(|()| dir.rename(&tmp, &dir, &name));
        if written.is_err() {
            let _ = dir.remove_file(&tmp);
        }
        written
    }

    /// Every object file in the cache and the blocks it holds (start-up indexing, and
    /// `mltrack fsck`, which verifies them). Names that are not a hash, and anything that is
    /// not a plain directory or file, are skipped.
    pub fn scan(&self) -> io::Result<Vec<CachedFile>> {
        let mut out = Vec::new();
        for (fan, kind) in self.objects.entries()? {
            if kind != FileType::Directory {
                continue;
            }
            let Ok(dir) = self.objects.subdir(&fan, false) else {
                continue;
            };
            for (name, kind) in dir.entries()? {
                let Ok(hash) = name.parse::<Digest>() else {
                    continue;
                };
                if kind != FileType::RegularFile {
                    continue;
                }
                let Ok(file) = dir.open_file(&name, Open::Read) else {
                    continue;
                };
                let Ok(meta) = file.metadata() else { continue };
                let (blocks, chunks) = present_units(&file, meta.len());
                out.push(CachedFile {
                    hash,
                    path: dir.path().join(&name),
                    modified: meta.modified().ok(),
                    blocks,
                    chunks,
                });
            }
        }
        Ok(out)
    }
}

/// Units of a cache file (blocks or chunks) that hold data: (number, bytes).
type Units = Vec<(u64, u64)>;

/// The blocks of a cache file that hold data (each block wholly inside a data extent), and the
/// chunks that do outside those blocks.
fn present_units(file: &File, len: u64) -> (Units, Units) {
    use crate::cas::hashing::{BLOCK_SIZE, CHUNK_SIZE};
    let fd = file.as_raw_fd();
    let (mut blocks, mut chunks) = (Vec::new(), Vec::new());
    let mut pos: i64 = 0;
    while (pos as u64) < len {
        // SAFETY: lseek on a descriptor we own.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let hole = (if hole < 0 { len as i64 } else { hole }) as u64;
        // Whole units inside [data, hole): blocks where they fit, chunks around them.
        let mut at = (data as u64).div_ceil(CHUNK_SIZE) * CHUNK_SIZE;
        while at < hole {
            let block_end = (at + BLOCK_SIZE).min(len);
            if at.is_multiple_of(BLOCK_SIZE) && block_end <= hole {
                blocks.push((at / BLOCK_SIZE, block_end - at));
                at = block_end;
                continue;
            }
            let chunk_end = (at + CHUNK_SIZE).min(len);
            if chunk_end > hole {
                break;
            }
            chunks.push((at / CHUNK_SIZE, chunk_end - at));
            at = chunk_end;
        }
        pos = hole as i64;
    }
    (blocks, chunks)
}
