//! The filesystem core: the mounted tree of docs/MOUNT.md as plain async Rust, with no FUSE
//! types, so that tests (`tests/suite/fs_core.rs`) and the FUSE adapter drive the same code. It
//! asks `runs` for manifests and view listings and `cas` for metadata and `data/` listings,
//! each kept there for the refresh interval (metadata for the life of the mount: it never
//! changes), and never speaks to the store itself. Nothing is listed at mount time.
//!
//! One concept a file: [`Tree`] and its node kinds here; `inodes` (numbers, lazily, one per
//! path); `namespace` (listing and lookup); `attributes` (stat, readlink, xattrs, setattr);
//! `files` (open, create, write, commit, release, link); `directories` (mkdir, rmdir, runs
//! made and deleted); `moves` (rename, unlink); `changes` (what every change checks first);
//! `pending` (what exists on this mount only: files being written, new keys); `status` (what
//! `mltrack status` and `mltrack warmup` ask the mount). Reads go
//! through [`reader::Reader`] and the verified block cache; writes through
//! [`spool::WriteFile`]. Every change is a manifest change through `runs`
//! (docs/SEMANTICS.md); nothing here writes under `data/` or `manifests/` (`EROFS`).

mod attributes;
pub use attributes::SetAttr;
mod changes;
mod directories;
mod files;
mod inodes;
mod matching;
mod moves;
mod namespace;
mod pending;
pub mod reader;
pub mod spool;
pub mod status;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::cache::BlockCache;
use crate::cas::DataStore;
use crate::cas::metadata::ObjectMetadata;
use crate::ids::{Digest, RelPath, RunId};
use crate::runs::Runs;
use crate::runs::manifest::{RunType, StorageMode};
use inodes::Inodes;
use pending::Pending;
use spool::WriteFile;

pub const ROOT_INO: u64 = 1;
/// Attribute and entry lifetime of immutable things (objects and their metadata).
pub const IMMUTABLE_TTL: Duration = Duration::from_secs(24 * 3600);

/// What a path of the mounted tree is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Kind {
    Root,
    DataRoot,
    DataFanout(String),
    DataObject(Digest),
    DataFile(Digest),
    MetadataFile(Digest),
    UsedByDir(Digest),
    UsedByLink(Digest, RunId),
    RunsRoot,
    ViewRoot(StorageMode),
    ViewKey(StorageMode, String),
    /// A run directory, reached through view `mode` (and its key).
    RunDir(RunId),
    /// A directory inside a run: `prefix` is its path relative to the run, without a slash.
    RunSubdir(RunId, String),
    RunFile(RunId, RelPath),
    /// A symbolic link in a run (an entry of its manifest's `links`).
    RunLink(RunId, RelPath),
    ManifestsRoot,
    ManifestFile(RunId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    Directory,
    File,
    Symlink,
}

/// Who makes a file, directory or link in a run: the caller, when that is not the mounting
/// user (someone else on an `--allow-other` mount). `None`: the mounting user, which is what
/// an entry without an owner shows on every node.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// What `stat` says about a node.
#[derive(Debug, Clone)]
pub struct Attr {
    pub ino: u64,
    pub kind: FileType,
    pub size: u64,
    pub mtime: SystemTime,
    pub perm: u16,
    /// The link count: 2 for a directory; for a run's file, the number of views its run is
    /// in, since the file is reached by that many paths with one inode number (so `du` and
    /// `find` count it once, as hard links); 1 for anything else.
    pub links: u32,
    /// When a run's file last changed in any way; `None`: its `mtime`.
    pub ctime: Option<SystemTime>,
    /// The owner of a run's file, link or directory (`chown`, or who made it); `None`: the
    /// mounting user.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// How long the kernel may keep this attribute and entry.
    pub ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub ino: u64,
    pub kind: Kind,
    /// The node's path in the tree, for messages and symlinks.
    pub path: String,
}

#[derive(Debug, Clone)]
pub struct DirEntry {
    pub ino: u64,
    pub name: String,
    pub kind: FileType,
}

/// How the tree behaves: from the mount's flags and the configuration.
#[derive(Debug, Clone)]
pub struct TreeOptions {
    /// How long listings and manifests read from the store are trusted.
    pub refresh: Duration,
    /// Where files being written are spooled (on the cache's filesystem).
    pub spool: Arc<crate::trusted::TrustedDir>,
    /// The run type of runs made with `mkdir` outside `by_type`.
    pub default_run_type: RunType,
    /// The views every run made with `mkdir` gets, besides the one it was made in.
    pub default_modes: Vec<StorageMode>,
    pub read_only: bool,
    /// For `mltrack status`: the cache directory, and where `--metrics` serves.
    pub cache_dir: Option<std::path::PathBuf>,
    pub metrics: Option<String>,
}

/// The mounted tree.
pub struct Tree {
    runs: Runs,
    refresh: Duration,
    opts: TreeOptions,
    cache: Option<Arc<BlockCache>>,
    inodes: Mutex<Inodes>,
    /// What exists on this mount only: files being written, new keys.
    pending: Pending,
    mounted_at: SystemTime,
}

/// The permission bits a run file or directory shows, whatever its manifest entry records: no setuid,
/// setgid or sticky bit, and no write for group or other (at most `0o755`). A mode from the
/// bucket (a hostile manifest, a tree copied with umask 0) must not let every user of an
/// `--allow-other` mount write a file the daemon then commits (docs/SECURITY.md). The entry
/// keeps the mode as recorded.
pub fn shown_mode(recorded: u32) -> u16 {
    (recorded & 0o755) as u16
}

/// A mutex's guard; a thread that panicked holding it left nothing half-done that matters here.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Tree {
    /// The tree over `runs`; `cache`, if given, adopts the spools of files written through it.
    pub fn new(runs: Runs, opts: TreeOptions, cache: Option<Arc<BlockCache>>) -> Tree {
        // Every lookup reads manifests: a tree without a manifest cache would GET each time.
        let runs = if runs.is_caching() {
            runs
        } else {
            runs.caching(opts.refresh, false)
        };
        let runs = if runs.data().is_caching_metadata() {
            runs
        } else {
            let keeper = cache
                .clone()
                .map(|c| c as Arc<dyn crate::cas::MetadataKeeper>);
            runs.caching_metadata(keeper)
        };
        Tree {
            runs,
            refresh: opts.refresh,
            opts,
            cache,
            inodes: Mutex::new(Inodes::new()),
            pending: Pending::default(),
            mounted_at: SystemTime::now(),
        }
    }

    pub fn data(&self) -> &DataStore {
        self.runs.data()
    }

    pub fn spool_dir(&self) -> &std::path::Path {
        self.opts.spool.path()
    }

    /// How long what was read from the store is taken as current (`--refresh`).
    pub fn refresh(&self) -> Duration {
        self.refresh
    }
}

/// The bytes an open file reads.
#[derive(Debug, Clone)]
pub enum Content {
    /// A stored object, read through the cache and verified.
    Object(Arc<ObjectMetadata>),
    /// A small document held whole (a manifest, a `metadata.json`): what was current at open.
    Bytes(bytes::Bytes),
    /// A file being written on this mount: its current bytes.
    Spool(Arc<WriteFile>),
}

/// The run and path of a run's file or link: what has one inode in every view.
fn run_entry(kind: &Kind) -> Option<(&RunId, &RelPath)> {
    match kind {
        Kind::RunFile(r, p) | Kind::RunLink(r, p) => Some((r, p)),
        _ => None,
    }
}

fn file_type(kind: &Kind) -> FileType {
    match kind {
        Kind::DataFile(_) | Kind::MetadataFile(_) | Kind::RunFile(..) | Kind::ManifestFile(_) => {
            FileType::File
        }
        Kind::UsedByLink(..) | Kind::RunLink(..) => FileType::Symlink,
        _ => FileType::Directory,
    }
}
