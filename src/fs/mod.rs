//! The filesystem core: the mounted tree of docs/MOUNT.md as plain async Rust, with no FUSE
//! types, so that tests and the FUSE adapter drive the same code.
//!
//! Inodes are allocated lazily, one per path, the first time a path is looked up or listed,
//! and kept for the life of the mount (so a path keeps its inode number). Nothing is listed at
//! mount time: a directory's children come from the store (the S3 prefixes of docs/STORE.md)
//! when it is first read, and again once they are older than the refresh interval. Manifests
//! come from `runs` (cached there for the same interval) and object metadata from `cas`
//! (cached for the life of the mount: it never changes). Reads go through [`reader::Reader`]
//! and the verified block cache.

pub mod reader;
pub mod spool;
mod write;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;

use crate::cache::BlockCache;
use crate::cas::metadata::ObjectMetadata;
use crate::cas::{DataStore, Described};
use crate::error::{Error, Result};
use crate::ids::{Digest, Name, RelPath, RunId};
use crate::layout;
use crate::runs::Current;
use crate::runs::Runs;
use crate::runs::manifest::{Manifest, RunType, StorageMode};
use crate::storage::{list_all, list_children};
use spool::{Target, WriteFile};

pub const ROOT_INO: u64 = 1;
/// Attribute and entry lifetime of immutable things (objects and their metadata).
pub const IMMUTABLE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Manifests read at once when a view is listed.
const PREFETCH_CONCURRENCY: usize = 32;

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
    ManifestsRoot,
    ManifestFile(RunId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    Directory,
    File,
    Symlink,
}

/// What `stat` says about a node.
#[derive(Debug, Clone)]
pub struct Attr {
    pub ino: u64,
    pub kind: FileType,
    pub size: u64,
    pub mtime: SystemTime,
    pub perm: u16,
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

#[derive(Default)]
struct Inodes {
    by_ino: HashMap<u64, Arc<Node>>,
    by_path: HashMap<String, u64>,
    /// A run's file has one inode whichever view it is reached through, so the kernel's
    /// caches of it agree across views.
    by_file: HashMap<(RunId, RelPath), u64>,
    next: u64,
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
}

struct Timed<T> {
    value: T,
    at: Instant,
}

/// The mounted tree.
pub struct Tree {
    runs: Runs,
    refresh: Duration,
    opts: TreeOptions,
    cache: Option<Arc<BlockCache>>,
    inodes: Mutex<Inodes>,
    listings: Mutex<HashMap<String, Timed<Arc<Vec<String>>>>>,
    /// Files open for writing on this mount, shared by all their open handles.
    writes: Mutex<HashMap<Target, Arc<WriteFile>>>,
    /// Empty directories made in runs on this mount (a manifest records only files).
    dirs: Mutex<BTreeSet<(RunId, String)>>,
    /// View key directories made on this mount that have no run yet.
    keys: Mutex<BTreeSet<(StorageMode, String)>>,
    mounted_at: SystemTime,
}

/// The permission bits a run file shows, whatever its manifest entry records: no setuid,
/// setgid or sticky bit, and no write for group or other (at most `0o755`). A mode from the
/// bucket (a hostile manifest, a tree copied with umask 0) must not let every user of an
/// `--allow-other` mount write a file the daemon then commits (docs/SECURITY.md). The entry
/// keeps the mode as recorded.
pub fn shown_mode(recorded: u32) -> u16 {
    (recorded & 0o755) as u16
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
        let mut inodes = Inodes {
            next: ROOT_INO + 1,
            ..Default::default()
        };
        let root = Arc::new(Node {
            ino: ROOT_INO,
            kind: Kind::Root,
            path: String::new(),
        });
        inodes.by_ino.insert(ROOT_INO, root);
        inodes.by_path.insert(String::new(), ROOT_INO);
        Tree {
            runs,
            refresh: opts.refresh,
            opts,
            cache,
            inodes: Mutex::new(inodes),
            listings: Mutex::new(HashMap::new()),
            writes: Mutex::new(HashMap::new()),
            dirs: Mutex::new(BTreeSet::new()),
            keys: Mutex::new(BTreeSet::new()),
            mounted_at: SystemTime::now(),
        }
    }

    pub fn data(&self) -> &DataStore {
        self.runs.data()
    }

    pub fn spool_dir(&self) -> &std::path::Path {
        self.opts.spool.path()
    }

    pub fn node(&self, ino: u64) -> Result<Arc<Node>> {
        lock(&self.inodes)
            .by_ino
            .get(&ino)
            .cloned()
            .ok_or(Error::Stale(ino))
    }

    fn intern(&self, parent: &Node, name: &str, kind: Kind) -> Arc<Node> {
        let path = if parent.path.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", parent.path)
        };
        let mut inodes = lock(&self.inodes);
        if let Some(ino) = inodes.by_path.get(&path)
            && let Some(node) = inodes.by_ino.get(ino)
            && node.kind == kind
        {
            return node.clone();
        }
        if let Kind::RunFile(run, file) = &kind
            && let Some(ino) = inodes.by_file.get(&(run.clone(), file.clone())).copied()
            && let Some(node) = inodes.by_ino.get(&ino).cloned()
        {
            inodes.by_path.insert(path, ino);
            return node;
        }
        let ino = inodes.next;
        inodes.next += 1;
        if let Kind::RunFile(run, file) = &kind {
            inodes.by_file.insert((run.clone(), file.clone()), ino);
        }
        let node = Arc::new(Node {
            ino,
            kind,
            path: path.clone(),
        });
        inodes.by_ino.insert(ino, node.clone());
        inodes.by_path.insert(path, ino);
        node
    }

    /// After a rename: every node of a run file or directory that `moved` maps to a new path
    /// in the run follows it, keeping its inode (as the kernel's dentries do), now reached
    /// under `to_node` (a directory of `to_run` at `to_prefix`).
    fn rekey(
        &self,
        from_run: &RunId,
        to_run: &RunId,
        to_node: &Node,
        to_prefix: &str,
        moved: &dyn Fn(&str) -> Option<String>,
    ) {
        let base = to_node
            .path
            .strip_suffix(to_prefix)
            .unwrap_or(&to_node.path)
            .trim_end_matches('/')
            .to_string();
        let mut inodes = lock(&self.inodes);
        let changed: Vec<(Arc<Node>, Kind, String)> = inodes
            .by_ino
            .values()
            .filter_map(|n| {
                let (run, rel) = match &n.kind {
                    Kind::RunFile(r, p) => (r, p.as_str()),
                    Kind::RunSubdir(r, p) => (r, p.as_str()),
                    _ => return None,
                };
                if run != from_run {
                    return None;
                }
                let new = moved(rel)?;
                let kind = match &n.kind {
                    Kind::RunFile(..) => Kind::RunFile(to_run.clone(), RelPath::parse(&new).ok()?),
                    _ => Kind::RunSubdir(to_run.clone(), new.clone()),
                };
                Some((n.clone(), kind, format!("{base}/{new}")))
            })
            .collect();
        for (node, kind, path) in changed {
            if inodes.by_path.get(&node.path) == Some(&node.ino) {
                inodes.by_path.remove(&node.path);
            }
            if let Kind::RunFile(r, p) = &node.kind {
                inodes.by_file.remove(&(r.clone(), p.clone()));
            }
            if let Kind::RunFile(r, p) = &kind {
                inodes.by_file.insert((r.clone(), p.clone()), node.ino);
            }
            inodes.by_path.insert(path.clone(), node.ino);
            inodes.by_ino.insert(
                node.ino,
                Arc::new(Node {
                    ino: node.ino,
                    kind,
                    path,
                }),
            );
        }
    }

    /// The names under `prefix` in the store (common prefixes), cached for the refresh time.
    async fn children(&self, prefix: &str) -> Result<Arc<Vec<String>>> {
        if let Some(t) = lock(&self.listings).get(prefix)
            && t.at.elapsed() < self.refresh
        {
            return Ok(t.value.clone());
        }
        let names = Arc::new(list_children(self.data().backend().as_ref(), prefix).await?);
        lock(&self.listings).insert(
            prefix.to_string(),
            Timed {
                value: names.clone(),
                at: Instant::now(),
            },
        );
        Ok(names)
    }

    /// The run's manifest, as `runs` keeps it for the refresh time; `None` if the run does not
    /// exist or its manifest is unreadable.
    pub async fn manifest(&self, run: &RunId) -> Result<Option<Current>> {
        self.runs.current(run).await
    }

    /// The object's metadata, as `cas` keeps it; `None` if not stored or unreadable.
    pub async fn metadata(&self, h: &Digest) -> Result<Option<Described>> {
        self.data().described(h).await
    }

    /// Whether the run's manifest puts it in view `mode` under `key`.
    async fn run_in_view(&self, run: &RunId, mode: StorageMode, key: Option<&str>) -> Result<bool> {
        Ok(match self.manifest(run).await? {
            Some(m) => {
                m.0.storage_modes.contains(&mode)
                    && m.0.view_key(mode).ok().flatten().as_deref() == key
            }
            None => false,
        })
    }

    /// The children of a node, as (name, kind) pairs.
    async fn list(&self, node: &Node) -> Result<Vec<(String, Kind)>> {
        let mut out = Vec::new();
        match &node.kind {
            Kind::Root => {
                out.push(("data".into(), Kind::DataRoot));
                out.push(("runs".into(), Kind::RunsRoot));
                out.push(("manifests".into(), Kind::ManifestsRoot));
            }
            Kind::DataRoot => {
                for fan in self.children(layout::DATA).await?.iter() {
                    if fan.len() == 2
                        && fan
                            .bytes()
                            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                    {
                        out.push((fan.clone(), Kind::DataFanout(fan.clone())));
                    }
                }
            }
            Kind::DataFanout(fan) => {
                for name in self
                    .children(&format!("{}{fan}/", layout::DATA))
                    .await?
                    .iter()
                {
                    if let Ok(h) = name.parse::<Digest>()
                        && &h.fanout() == fan
                    {
                        out.push((name.clone(), Kind::DataObject(h)));
                    }
                }
            }
            Kind::DataObject(h) => {
                if let Some(m) = self.metadata(h).await? {
                    out.push((format!("data.{}", m.0.format), Kind::DataFile(*h)));
                    out.push(("metadata.json".into(), Kind::MetadataFile(*h)));
                    out.push(("used_by".into(), Kind::UsedByDir(*h)));
                }
            }
            Kind::UsedByDir(h) => {
                let prefix = layout::used_by_prefix(h);
                let page = list_all(self.data().backend().as_ref(), &prefix, true).await?;
                for o in &page.objects {
                    if let Some(Ok(run)) = o
                        .key
                        .strip_prefix(&prefix)
                        .map(|r| Name::parse("run id", r))
                    {
                        out.push((run.to_string(), Kind::UsedByLink(*h, run)));
                    }
                }
            }
            Kind::RunsRoot => {
                for mode in StorageMode::ALL {
                    out.push((mode.to_string(), Kind::ViewRoot(mode)));
                }
            }
            // View listings come from the view pointers alone (one LIST, however many runs);
            // a pointer is checked against its run's manifest only when it is looked up.
            Kind::ViewRoot(StorageMode::Flat) => {
                for run in self.children("runs/flat/").await?.iter() {
                    if let Ok(id) = Name::parse("run id", run) {
                        out.push((run.clone(), Kind::RunDir(id)));
                    }
                }
            }
            Kind::ViewRoot(mode) => {
                for key in self
                    .children(&format!("{}{mode}/", layout::RUNS))
                    .await?
                    .iter()
                {
                    if Name::parse("key", key).is_ok() {
                        out.push((key.clone(), Kind::ViewKey(*mode, key.clone())));
                    }
                }
                // Keys made with mkdir, every run type, and today: where mkdir can make a run.
                let mut made: Vec<String> = lock(&self.keys)
                    .iter()
                    .filter(|(m, _)| m == mode)
                    .map(|(_, k)| k.clone())
                    .collect();
                match mode {
                    StorageMode::ByType => {
                        made.extend(RunType::ALL.iter().map(|t| t.as_str().to_string()))
                    }
                    StorageMode::ByDate if !self.opts.read_only => {
                        made.push(chrono::Utc::now().format("%Y-%m-%d").to_string())
                    }
                    _ => {}
                }
                for key in made {
                    if !out.iter().any(|(n, _)| *n == key) {
                        out.push((key.clone(), Kind::ViewKey(*mode, key)));
                    }
                }
            }
            Kind::ViewKey(mode, key) => {
                for run in self
                    .children(&format!("{}{mode}/{key}/", layout::RUNS))
                    .await?
                    .iter()
                {
                    if let Ok(id) = Name::parse("run id", run) {
                        out.push((run.clone(), Kind::RunDir(id)));
                    }
                }
            }
            Kind::RunDir(run) => out = self.run_children(run, "").await?,
            Kind::RunSubdir(run, prefix) => out = self.run_children(run, prefix).await?,
            Kind::ManifestsRoot => {
                let page =
                    list_all(self.data().backend().as_ref(), layout::MANIFESTS, true).await?;
                for o in &page.objects {
                    if let Some(Ok(run)) =
                        layout::run_of_manifest_key(&o.key).map(|r| Name::parse("run id", r))
                    {
                        out.push((format!("{run}.json"), Kind::ManifestFile(run)));
                    }
                }
            }
            Kind::DataFile(_)
            | Kind::MetadataFile(_)
            | Kind::UsedByLink(..)
            | Kind::RunFile(..)
            | Kind::ManifestFile(_) => {
                return Err(Error::NotDirectory(node.path.clone()));
            }
        }
        Ok(out)
    }

    /// The files and directories directly under `prefix` in a run (`""` for the run itself).
    async fn run_children(&self, run: &RunId, prefix: &str) -> Result<Vec<(String, Kind)>> {
        let Some(m) = self.manifest(run).await? else {
            return Ok(vec![]);
        };
        let mut out: Vec<(String, Kind)> = Vec::new();
        if prefix.is_empty() {
            for d in ["inputs", "outputs"] {
                out.push((d.into(), Kind::RunSubdir(run.clone(), d.into())));
            }
        }
        let base = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        // Files being written on this mount are there before their first commit.
        let writing: Vec<RelPath> = lock(&self.writes)
            .keys()
            .filter(|t| &t.run == run)
            .map(|t| t.path.clone())
            .collect();
        let dirs: Vec<String> = lock(&self.dirs)
            .iter()
            .filter(|(r, _)| r == run)
            .map(|(_, d)| format!("{d}/"))
            .collect();
        let files = m.0.files.keys().chain(writing.iter());
        let mut seen = std::collections::HashSet::new();
        for path in files
            .map(RelPath::as_str)
            .chain(dirs.iter().map(String::as_str))
        {
            let Some(rest) = path.strip_prefix(&base) else {
                continue;
            };
            match rest.split_once('/') {
                Some((dir, _)) => {
                    if !out.iter().any(|(n, _)| n == dir) {
                        out.push((
                            dir.to_string(),
                            Kind::RunSubdir(run.clone(), format!("{base}{dir}")),
                        ));
                    }
                }
                None => {
                    if seen.insert(rest.to_string())
                        && let Ok(p) = RelPath::parse(path)
                    {
                        out.push((rest.to_string(), Kind::RunFile(run.clone(), p)));
                    }
                }
            }
        }
        Ok(out)
    }

    /// The child `name` of the run's directory `prefix`, if there is one.
    async fn run_child(
        &self,
        run: &RunId,
        prefix: &str,
        name: &str,
    ) -> Result<Option<(String, Kind)>> {
        let Some(m) = self.manifest(run).await? else {
            return Ok(None);
        };
        let rel = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        let Ok(path) = RelPath::parse(&rel) else {
            return Ok(None);
        };
        if m.0.files.contains_key(&path) || self.writing(run, &path).is_some() {
            return Ok(Some((name.to_string(), Kind::RunFile(run.clone(), path))));
        }
        let is_dir = self.is_dir_in(run, &m.0, &rel);
        Ok(is_dir.then(|| (name.to_string(), Kind::RunSubdir(run.clone(), rel))))
    }

    /// Whether `path` is a directory in the run: `inputs`/`outputs`, implied by a file under
    /// it (stored or being written), or made with `mkdir` on this mount.
    fn is_dir_in(&self, run: &RunId, m: &Manifest, path: &str) -> bool {
        if matches!(path, "inputs" | "outputs") {
            return true;
        }
        let under = format!("{path}/");
        has_files_under(&m.files, path)
            || lock(&self.writes)
                .keys()
                .any(|t| &t.run == run && t.path.as_str().starts_with(&under))
            || lock(&self.dirs)
                .iter()
                .any(|(r, d)| r == run && (d == path || d.starts_with(&under)))
    }

    pub async fn readdir(&self, ino: u64) -> Result<Vec<DirEntry>> {
        let node = self.node(ino)?;
        let mut entries = Vec::new();
        let listed = self.list(&node).await?;
        if matches!(
            node.kind,
            Kind::ViewKey(..) | Kind::ViewRoot(StorageMode::Flat)
        ) {
            self.prefetch_manifests(listed.iter().filter_map(|(_, k)| match k {
                Kind::RunDir(run) => Some(run.clone()),
                _ => None,
            }));
        }
        for (name, kind) in listed {
            let child = self.intern(&node, &name, kind);
            entries.push(DirEntry {
                ino: child.ino,
                name,
                kind: file_type(&child.kind),
            });
        }
        Ok(entries)
    }

    /// Reads the manifests of the runs a view lists, [`PREFETCH_CONCURRENCY`] at a time, in the
    /// background: `ls -l` and `ls -lR` look each run up next, one request at a time, and then
    /// find its manifest in `runs`' cache instead of waiting for one GET after another. The
    /// listing itself returns at once.
    fn prefetch_manifests(&self, ids: impl Iterator<Item = RunId>) {
        let ids: Vec<RunId> = ids.collect();
        if ids.is_empty() {
            return;
        }
        let runs = self.runs.clone();
        tokio::spawn(async move {
            futures::stream::iter(ids)
                .for_each_concurrent(PREFETCH_CONCURRENCY, |run| {
                    let runs = runs.clone();
                    async move {
                        if let Err(e) = runs.current(&run).await {
                            tracing::debug!(%run, error = %e, "could not read a listed run's manifest ahead");
                        }
                    }
                })
                .await;
        });
    }

    /// The child `name` of directory `parent`, or `None`.
    pub async fn lookup(&self, parent: u64, name: &str) -> Result<Option<Attr>> {
        let node = self.node(parent)?;
        let found = match &node.kind {
            // Inside a run, one name is found without listing the directory (`ls -l` of a
            // directory of n files would otherwise cost n listings).
            Kind::RunDir(run) => self.run_child(run, "", name).await?,
            Kind::RunSubdir(run, prefix) => self.run_child(run, prefix, name).await?,
            _ => self.list(&node).await?.into_iter().find(|(n, _)| n == name),
        };
        if let Some((_, Kind::RunDir(run))) = &found {
            // Only where the run's manifest says it belongs: a stale pointer is not followed.
            let (mode, key) = match &node.kind {
                Kind::ViewKey(mode, key) => (*mode, Some(key.as_str())),
                _ => (StorageMode::Flat, None),
            };
            if !self.run_in_view(run, mode, key).await? {
                return Ok(None);
            }
        }
        match found {
            Some((name, kind)) => {
                let child = self.intern(&node, &name, kind);
                self.attr_of(&child).await
            }
            // Any project or model can be looked up, so that `mkdir by_project/new/run_1`
            // works without making `new` first; it is listed once it has a run.
            None => match &node.kind {
                Kind::ViewRoot(mode @ (StorageMode::ByProject | StorageMode::ByModel))
                    if !self.opts.read_only && Name::parse("key", name).is_ok() =>
                {
                    let child = self.intern(&node, name, Kind::ViewKey(*mode, name.to_string()));
                    self.attr_of(&child).await
                }
                _ => Ok(None),
            },
        }
    }

    pub async fn getattr(&self, ino: u64) -> Result<Option<Attr>> {
        let node = self.node(ino)?;
        self.attr_of(&node).await
    }

    async fn attr_of(&self, node: &Node) -> Result<Option<Attr>> {
        let dir = |ttl| Attr {
            ino: node.ino,
            kind: FileType::Directory,
            size: 0,
            mtime: self.mounted_at,
            perm: 0o555,
            ttl,
        };
        let file = |size, mtime, perm, ttl| Attr {
            ino: node.ino,
            kind: FileType::File,
            size,
            mtime,
            perm,
            ttl,
        };
        Ok(Some(match &node.kind {
            Kind::DataObject(h) => match self.metadata(h).await? {
                Some(_) => dir(IMMUTABLE_TTL),
                None => return Ok(None),
            },
            Kind::DataFile(h) => match self.metadata(h).await? {
                Some(m) => file(m.0.size, m.0.created_at.into(), 0o444, IMMUTABLE_TTL),
                None => return Ok(None),
            },
            Kind::MetadataFile(h) => match self.metadata(h).await? {
                Some(m) => file(
                    m.1.len() as u64,
                    m.0.created_at.into(),
                    0o444,
                    IMMUTABLE_TTL,
                ),
                None => return Ok(None),
            },
            Kind::UsedByLink(..) => Attr {
                ino: node.ino,
                kind: FileType::Symlink,
                size: self.readlink_of(node).await?.len() as u64,
                mtime: self.mounted_at,
                perm: 0o777,
                ttl: self.refresh,
            },
            Kind::RunDir(run) | Kind::RunSubdir(run, _) => match self.manifest(run).await? {
                Some(m) => Attr {
                    mtime: m.0.updated_at.into(),
                    perm: if self.opts.read_only { 0o555 } else { 0o755 },
                    ..dir(self.refresh)
                },
                None => return Ok(None),
            },
            Kind::RunFile(run, path) => {
                if let Some(w) = self.writing(run, path) {
                    let t = w.times();
                    return Ok(Some(file(
                        w.size(),
                        t.mtime().into(),
                        shown_mode(t.mode),
                        Duration::ZERO,
                    )));
                }
                match self
                    .manifest(run)
                    .await?
                    .and_then(|m| m.0.files.get(path).cloned())
                {
                    Some(e) => file(e.size, e.mtime.into(), shown_mode(e.mode), self.refresh),
                    None => return Ok(None),
                }
            }
            Kind::ManifestFile(run) => match self.manifest(run).await? {
                Some(m) => file(m.1.len() as u64, m.0.updated_at.into(), 0o444, self.refresh),
                None => return Ok(None),
            },
            Kind::Root
            | Kind::DataRoot
            | Kind::DataFanout(_)
            | Kind::UsedByDir(_)
            | Kind::ManifestsRoot => dir(self.refresh),
            Kind::RunsRoot => dir(self.refresh),
            Kind::ViewRoot(_) | Kind::ViewKey(..) => Attr {
                perm: if self.opts.read_only { 0o555 } else { 0o755 },
                ..dir(self.refresh)
            },
        }))
    }

    /// The target of a `used_by` symlink: the run's directory in its first view, relative to
    /// the link (`data/<hh>/<h>/used_by/<run>` is four levels deep).
    async fn readlink_of(&self, node: &Node) -> Result<String> {
        let Kind::UsedByLink(_, run) = &node.kind else {
            return Err(Error::BadRequest(format!(
                "{} is not a symbolic link",
                node.path
            )));
        };
        let Some(m) = self.manifest(run).await? else {
            return Ok(format!("../../../../manifests/{run}.json"));
        };
        let mode =
            m.0.storage_modes
                .first()
                .copied()
                .unwrap_or(StorageMode::Flat);
        let view = m.0.view_pointer_key(mode)?;
        Ok(format!(
            "../../../../{}",
            view.trim_end_matches("/run.json")
        ))
    }

    pub async fn readlink(&self, ino: u64) -> Result<String> {
        let node = self.node(ino)?;
        self.readlink_of(&node).await
    }

    /// The extended attributes of a node, by name.
    pub async fn xattrs(&self, ino: u64) -> Result<Vec<(String, Vec<u8>)>> {
        let node = self.node(ino)?;
        let file_attrs = |h: &Digest, size: u64, format: &str| {
            vec![
                ("user.mltrack.sha256".to_string(), h.to_hex().into_bytes()),
                (
                    "user.mltrack.size".to_string(),
                    size.to_string().into_bytes(),
                ),
                (
                    "user.mltrack.format".to_string(),
                    format.as_bytes().to_vec(),
                ),
            ]
        };
        Ok(match &node.kind {
            Kind::DataFile(h) => match self.metadata(h).await? {
                Some(m) => file_attrs(h, m.0.size, m.0.format.as_str()),
                None => vec![],
            },
            Kind::RunFile(run, path) => match self
                .manifest(run)
                .await?
                .and_then(|m| m.0.files.get(path).cloned())
            {
                Some(e) => file_attrs(&e.hash, e.size, e.format.as_str()),
                None => vec![],
            },
            Kind::RunDir(run) => match self.manifest(run).await? {
                Some(m) => vec![
                    (
                        "user.mltrack.run_id".to_string(),
                        run.as_str().as_bytes().to_vec(),
                    ),
                    (
                        "user.mltrack.run_type".to_string(),
                        m.0.run_type.as_str().as_bytes().to_vec(),
                    ),
                ],
                None => vec![],
            },
            _ => vec![],
        })
    }

    /// What an open of a file reads: the object behind it, or bytes held in memory.
    pub async fn open(&self, ino: u64) -> Result<Content> {
        let node = self.node(ino)?;
        let object = |h: Digest| async move {
            match self.metadata(&h).await? {
                Some(m) => Ok(Content::Object(Arc::new(m.0.clone()))),
                None => Err(Error::DataNotFound(h.to_string())),
            }
        };
        match &node.kind {
            Kind::DataFile(h) => object(*h).await,
            Kind::RunFile(run, path) => {
                if let Some(w) = self.writing(run, path) {
                    return Ok(Content::Spool(w));
                }
                match self
                    .manifest(run)
                    .await?
                    .and_then(|m| m.0.files.get(path).cloned())
                {
                    Some(e) => object(e.hash).await,
                    None => Err(Error::RunNotFound(run.clone())),
                }
            }
            Kind::MetadataFile(h) => match self.metadata(h).await? {
                Some(m) => Ok(Content::Bytes(m.1.clone())),
                None => Err(Error::DataNotFound(h.to_string())),
            },
            Kind::ManifestFile(run) => match self.manifest(run).await? {
                Some(m) => Ok(Content::Bytes(m.1.clone())),
                None => Err(Error::RunNotFound(run.clone())),
            },
            _ => Err(Error::IsDirectory(node.path.clone())),
        }
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

/// Whether some file of `files` lies under directory `dir` (a path relative to the run).
/// Paths sharing the prefix `dir` are contiguous in the map, so only those are looked at.
fn has_files_under<V>(files: &std::collections::BTreeMap<RelPath, V>, dir: &str) -> bool {
    let Ok(start) = RelPath::parse(dir) else {
        return false;
    };
    let under = format!("{dir}/");
    files
        .range(start..)
        .map(|(p, _)| p.as_str())
        .take_while(|p| p.starts_with(dir))
        .any(|p| p.starts_with(&under))
}

fn file_type(kind: &Kind) -> FileType {
    match kind {
        Kind::DataFile(_) | Kind::MetadataFile(_) | Kind::RunFile(..) | Kind::ManifestFile(_) => {
            FileType::File
        }
        Kind::UsedByLink(..) => FileType::Symlink,
        _ => FileType::Directory,
    }
}
