//! The run manifest (`manifests/<run_id>.json`), the source of truth for a run, and the types
//! it is made of: run types, storage modes (views), file entries and view pointers.
//!
//! The JSON is docs/STORE.md, "Manifests". Parsing a manifest validates everything a reader will
//! follow: identifiers, file paths, hashes, formats, that the run id matches the key it was
//! read from, and that every storage mode has the key it needs. A manifest that fails is
//! refused with the reason, never half-used.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cas::format::Format;
use crate::error::{Error, Result};
use crate::ids::{Digest, Name, RelPath, RunId};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunType {
    Experiment,
    Production,
    Evaluation,
    Development,
    Analysis,
}

impl RunType {
    pub const ALL: [RunType; 5] = [
        RunType::Experiment,
        RunType::Production,
        RunType::Evaluation,
        RunType::Development,
        RunType::Analysis,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            RunType::Experiment => "experiment",
            RunType::Production => "production",
            RunType::Evaluation => "evaluation",
            RunType::Development => "development",
            RunType::Analysis => "analysis",
        }
    }
}

impl fmt::Display for RunType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for RunType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        RunType::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| {
            Error::BadRequest(format!(
                "unknown run type {s:?}: use one of experiment, production, evaluation, development, analysis"
            ))
        })
    }
}

/// A view of the runs: which key, if any, groups them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageMode {
    ByProject,
    ByDate,
    ByType,
    ByModel,
    Flat,
}

impl StorageMode {
    pub const ALL: [StorageMode; 5] = [
        StorageMode::ByProject,
        StorageMode::ByDate,
        StorageMode::ByType,
        StorageMode::ByModel,
        StorageMode::Flat,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            StorageMode::ByProject => "by_project",
            StorageMode::ByDate => "by_date",
            StorageMode::ByType => "by_type",
            StorageMode::ByModel => "by_model",
            StorageMode::Flat => "flat",
        }
    }

    /// Parses a comma-separated list (`MLTRACK_DEFAULT_STORAGE_MODE`).
    pub fn parse_list(s: &str) -> Result<Vec<StorageMode>> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::parse)
            .collect()
    }
}

impl fmt::Display for StorageMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for StorageMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        StorageMode::ALL.into_iter().find(|m| m.as_str() == s).ok_or_else(|| {
            Error::BadRequest(format!(
                "unknown storage mode {s:?}: use one of by_project, by_date, by_type, by_model, flat"
            ))
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Input,
    Output,
}

impl Role {
    pub fn of(path: &RelPath) -> Role {
        if path.is_input() {
            Role::Input
        } else {
            Role::Output
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub hash: Digest,
    pub size: u64,
    pub format: Format,
    pub role: Role,
    #[serde(with = "crate::time::rfc3339")]
    pub mtime: DateTime<Utc>,
    pub mode: u32,
    #[serde(with = "crate::time::rfc3339")]
    pub added_at: DateTime<Utc>,
    /// The owner `chown` gave the file, or who made it through `--allow-other`; absent:
    /// whoever mounts (docs/SEMANTICS.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// When the entry last changed (bytes, mode, owner, attributes, name); absent in
    /// manifests from before it was kept: the file's `mtime` stands in.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::rfc3339_option"
    )]
    pub ctime: Option<DateTime<Utc>>,
    /// User extended attributes (`user.*`), name to base64 value (see [`super::xattrs`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: super::xattrs::Xattrs,
}

impl Stamp {
    /// A file new to the run: time `mtime` and `mode`, changed now, no owner or attributes.
    pub fn new(mtime: DateTime<Utc>, mode: u32) -> Stamp {
        Stamp {
            mtime,
            ctime: crate::time::now(),
            mode,
            uid: None,
            gid: None,
            xattrs: Default::default(),
        }
    }

    /// What `entry` keeps besides its data, changed now (a second name for its data).
    pub fn of(entry: &FileEntry) -> Stamp {
        Stamp {
            mtime: entry.mtime,
            ctime: crate::time::now(),
            mode: entry.mode,
            uid: entry.uid,
            gid: entry.gid,
            xattrs: entry.xattrs.clone(),
        }
    }
}

/// What a file's entry keeps besides its data: its time, mode, owner and user attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub mtime: DateTime<Utc>,
    /// The file's last change of any kind (its `ctime`).
    pub ctime: DateTime<Utc>,
    pub mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub xattrs: super::xattrs::Xattrs,
}

/// A symbolic link in a run: its target, kept as written (never followed by mltrack; a
/// relative target resolves from the link's directory in whatever view it is read through).
/// Stored in the manifest's `files` map with `"type": "symlink"` and no hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkEntry {
    pub target: String,
    #[serde(with = "crate::time::rfc3339")]
    pub mtime: DateTime<Utc>,
    #[serde(with = "crate::time::rfc3339")]
    pub added_at: DateTime<Utc>,
    /// The link's owner (`lchown`, or who made it through `--allow-other`); absent: whoever
    /// mounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// When the link last changed (made, renamed, chowned); absent: its `mtime`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::rfc3339_option"
    )]
    pub ctime: Option<DateTime<Utc>>,
}

impl LinkEntry {
    /// A link to `target` made now by `uid`/`gid` (`None`: the mounting user).
    pub fn new(target: String, uid: Option<u32>, gid: Option<u32>) -> LinkEntry {
        let now = crate::time::now();
        LinkEntry {
            target,
            mtime: now,
            added_at: now,
            uid,
            gid,
            ctime: Some(now),
        }
    }
}

/// What a directory of a run keeps: its mode, times, owner and user attributes. The
/// manifest's `dirs` map holds one for every directory made with `mkdir`, changed with
/// `chmod`/`chown`/`touch`/`setxattr`, or that had an entry made, removed or renamed in it;
/// a directory is also there, with the defaults, when only its files' paths imply it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub mode: u32,
    /// Its last `touch`, or the last entry made, removed or renamed in it.
    #[serde(with = "crate::time::rfc3339")]
    pub mtime: DateTime<Utc>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::rfc3339_option"
    )]
    pub ctime: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: super::xattrs::Xattrs,
}

/// The mode of a directory that has no entry of its own: `0755`.
pub const DEFAULT_DIR_MODE: u32 = 0o755;

impl DirEntry {
    /// A directory made at `at` with `mode`, owned by `uid`/`gid` (`None`: the mounting user).
    pub fn new(mode: u32, at: DateTime<Utc>, uid: Option<u32>, gid: Option<u32>) -> DirEntry {
        DirEntry {
            mode,
            mtime: at,
            ctime: Some(at),
            uid,
            gid,
            xattrs: Default::default(),
        }
    }
}

/// The longest link target kept, as Linux's `PATH_MAX` less its NUL.
pub const MAX_LINK_TARGET: usize = 4095;

impl LinkEntry {
    /// A target a link may have: not empty, no NUL, at most [`MAX_LINK_TARGET`] bytes.
    pub fn check_target(target: &str) -> Result<()> {
        if target.is_empty() || target.len() > MAX_LINK_TARGET || target.contains('\0') {
            return Err(Error::BadRequest(format!(
                "{:?}: a link target must be 1 to {MAX_LINK_TARGET} bytes with no NUL",
                target.chars().take(64).collect::<String>()
            )));
        }
        Ok(())
    }
}

/// One value of the manifest's `files` map: a file with its data, or a link (stored with
/// `"type": "symlink"`). Read through [`RawEntry`] in one pass (an untagged enum would parse
/// every entry twice, and manifests are read at every refresh).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File(FileEntry),
    Link(LinkEntry),
}

impl Entry {
    /// What a reader checks before it follows the entry: a file's attributes, a link's target.
    pub fn check(&self) -> Result<()> {
        match self {
            Entry::File(f) => super::xattrs::check(&f.xattrs),
            Entry::Link(l) => LinkEntry::check_target(&l.target),
        }
    }
}

/// What a reader checks of a `dirs` key (`""`, the run directory, or a relative path) and of
/// what it keeps; the reason names the key.
pub(super) fn check_dir(path: &str, d: Option<&DirEntry>) -> std::result::Result<(), String> {
    if !path.is_empty() {
        RelPath::parse(path).map_err(|e| format!("dirs: {e}"))?;
    }
    if let Some(d) = d {
        super::xattrs::check(&d.xattrs).map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(())
}

/// A link as stored: its entry with `"type": "symlink"`.
#[derive(Serialize)]
struct StoredLink<'a> {
    #[serde(rename = "type")]
    kind: LinkType,
    #[serde(flatten)]
    link: &'a LinkEntry,
}

impl Serialize for Entry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Entry::File(f) => f.serialize(s),
            Entry::Link(link) => StoredLink {
                kind: LinkType::Symlink,
                link,
            }
            .serialize(s),
        }
    }
}

#[derive(Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum LinkType {
    Symlink,
}

/// Every field an entry of either kind may have; which are required depends on `type`.
#[derive(Deserialize)]
struct RawEntry {
    #[serde(rename = "type", default)]
    kind: Option<LinkType>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    hash: Option<Digest>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    format: Option<Format>,
    #[serde(default)]
    role: Option<Role>,
    #[serde(default, with = "crate::time::rfc3339_option")]
    mtime: Option<DateTime<Utc>>,
    #[serde(default)]
    mode: Option<u32>,
    #[serde(default, with = "crate::time::rfc3339_option")]
    added_at: Option<DateTime<Utc>>,
    #[serde(default, with = "crate::time::rfc3339_option")]
    ctime: Option<DateTime<Utc>>,
    #[serde(default)]
    uid: Option<u32>,
    #[serde(default)]
    gid: Option<u32>,
    #[serde(default)]
    xattrs: super::xattrs::Xattrs,
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let r = RawEntry::deserialize(d)?;
        let missing = |field: &'static str| D::Error::missing_field(field);
        Ok(match r.kind {
            Some(LinkType::Symlink) => Entry::Link(LinkEntry {
                target: r.target.ok_or_else(|| missing("target"))?,
                mtime: r.mtime.ok_or_else(|| missing("mtime"))?,
                added_at: r.added_at.ok_or_else(|| missing("added_at"))?,
                uid: r.uid,
                gid: r.gid,
                ctime: r.ctime,
            }),
            None => Entry::File(FileEntry {
                hash: r.hash.ok_or_else(|| missing("hash"))?,
                size: r.size.ok_or_else(|| missing("size"))?,
                format: r.format.ok_or_else(|| missing("format"))?,
                role: r.role.ok_or_else(|| missing("role"))?,
                mtime: r.mtime.ok_or_else(|| missing("mtime"))?,
                mode: r.mode.ok_or_else(|| missing("mode"))?,
                added_at: r.added_at.ok_or_else(|| missing("added_at"))?,
                ctime: r.ctime,
                uid: r.uid,
                gid: r.gid,
                xattrs: r.xattrs,
            }),
        })
    }
}

/// The manifest as stored: files and links in one `files` map. [`Manifest`] keeps them apart
/// in memory, so that everything about data (markers, gc, fsck, stats) sees only files.
#[derive(Serialize, Deserialize)]
struct StoredManifest {
    schema_version: u32,
    run_id: RunId,
    run_type: RunType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    project: Option<Name>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<Name>,
    #[serde(with = "crate::time::rfc3339")]
    created_at: DateTime<Utc>,
    #[serde(with = "crate::time::rfc3339")]
    updated_at: DateTime<Utc>,
    storage_modes: Vec<StorageMode>,
    #[serde(default)]
    tags: BTreeMap<Name, String>,
    #[serde(default)]
    files: BTreeMap<RelPath, Entry>,
    /// Directory path to what it keeps; checked by [`Manifest::parse`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", with = "dir_keys")]
    dirs: BTreeMap<String, DirEntry>,
    /// The last log entry folded in (docs/STORE.md, "Manifest log").
    #[serde(default, skip_serializing_if = "is_zero")]
    log_seq: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A map keyed by directory path as stored: the run directory, `""` in memory, is `.` (a key
/// other tools can read).
pub(super) mod dir_keys {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    const RUN_DIR: &str = ".";

    pub fn serialize<V: Serialize, S: Serializer>(
        map: &BTreeMap<String, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(
            map.iter()
                .map(|(k, v)| (if k.is_empty() { RUN_DIR } else { k.as_str() }, v)),
        )
    }

    pub fn deserialize<'de, V: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, V>, D::Error> {
        Ok(BTreeMap::<String, V>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| (if k == RUN_DIR { String::new() } else { k }, v))
            .collect())
    }
}

impl From<StoredManifest> for Manifest {
    fn from(s: StoredManifest) -> Manifest {
        let mut files = BTreeMap::new();
        let mut links = BTreeMap::new();
        for (path, entry) in s.files {
            match entry {
                Entry::File(f) => {
                    files.insert(path, f);
                }
                Entry::Link(link) => {
                    links.insert(path, link);
                }
            }
        }
        Manifest {
            schema_version: s.schema_version,
            run_id: s.run_id,
            run_type: s.run_type,
            project: s.project,
            model: s.model,
            created_at: s.created_at,
            updated_at: s.updated_at,
            storage_modes: s.storage_modes,
            tags: s.tags,
            files,
            links,
            dirs: s.dirs,
            log_seq: s.log_seq,
        }
    }
}

impl From<Manifest> for StoredManifest {
    fn from(m: Manifest) -> StoredManifest {
        let mut files: BTreeMap<RelPath, Entry> = m
            .files
            .into_iter()
            .map(|(p, f)| (p, Entry::File(f)))
            .collect();
        for (p, link) in m.links {
            files.insert(p, Entry::Link(link));
        }
        StoredManifest {
            schema_version: m.schema_version,
            run_id: m.run_id,
            run_type: m.run_type,
            project: m.project,
            model: m.model,
            created_at: m.created_at,
            updated_at: m.updated_at,
            storage_modes: m.storage_modes,
            tags: m.tags,
            files,
            dirs: m.dirs,
            log_seq: m.log_seq,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredManifest", into = "StoredManifest")]
pub struct Manifest {
    pub schema_version: u32,
    pub run_id: RunId,
    pub run_type: RunType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<Name>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Name>,
    #[serde(with = "crate::time::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::time::rfc3339")]
    pub updated_at: DateTime<Utc>,
    pub storage_modes: Vec<StorageMode>,
    #[serde(default)]
    pub tags: BTreeMap<Name, String>,
    /// Files with data: what markers, gc, fsck and stats see.
    pub files: BTreeMap<RelPath, FileEntry>,
    /// Symbolic links (stored in the same `files` map as the files, docs/STORE.md).
    pub links: BTreeMap<RelPath, LinkEntry>,
    /// Directories by path relative to the run (`""`: the run directory itself).
    pub dirs: BTreeMap<String, DirEntry>,
    /// The last entry of the run's manifest log folded into this manifest (0: none); the
    /// run's state is this manifest with every later entry applied (docs/STORE.md).
    pub log_seq: u64,
}

impl Manifest {
    /// Parses the manifest stored under `key` for run `run`, checking it can be trusted.
    pub fn parse(run: &str, key: &str, bytes: &[u8]) -> Result<Self> {
        let corrupt = |reason: String| Error::Corrupt {
            key: key.to_string(),
            reason,
        };
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if m.schema_version != SCHEMA_VERSION {
            return Err(corrupt(format!(
                "unsupported schema_version {}",
                m.schema_version
            )));
        }
        if m.run_id.as_str() != run {
            return Err(corrupt(format!(
                "it is the manifest of run {:?}",
                m.run_id.as_str()
            )));
        }
        for mode in &m.storage_modes {
            m.view_key(*mode).map_err(|e| corrupt(e.to_string()))?;
        }
        for (path, f) in &m.files {
            super::xattrs::check(&f.xattrs).map_err(|e| corrupt(format!("{path}: {e}")))?;
        }
        for (path, link) in &m.links {
            LinkEntry::check_target(&link.target).map_err(|e| corrupt(format!("{path}: {e}")))?;
        }
        for (path, d) in &m.dirs {
            check_dir(path, Some(d)).map_err(corrupt)?;
        }
        Ok(m)
    }

    /// Whether `dir` (`""`: the run directory) is a directory of the run: it has an entry, or
    /// an entry of any kind lies under it. `inputs` and `outputs` always are.
    pub fn is_dir(&self, dir: &str) -> bool {
        dir.is_empty()
            || matches!(dir, "inputs" | "outputs")
            || self.dirs.contains_key(dir)
            || self.has_entries_under(dir)
    }

    /// Whether a file, link or directory entry lies under directory `dir`.
    pub fn has_entries_under(&self, dir: &str) -> bool {
        if dir.is_empty() {
            return !self.files.is_empty()
                || !self.links.is_empty()
                || self.dirs.keys().any(|d| !d.is_empty());
        }
        let under = format!("{dir}/");
        let dirs_under = self
            .dirs
            .range(under.clone()..)
            .next()
            .is_some_and(|(d, _)| d.starts_with(&under));
        dirs_under || any_under(&self.files, dir) || any_under(&self.links, dir)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Plain data with string keys always serializes.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// The key directory of this run in view `mode` (`None` for `flat`), or why it has none.
    pub fn view_key(&self, mode: StorageMode) -> Result<Option<String>> {
        let missing = |field: &str| {
            Error::BadRequest(format!(
                "run {}: storage mode {mode} needs a {field}, and the run has none",
                self.run_id
            ))
        };
        Ok(match mode {
            StorageMode::ByProject => Some(
                self.project
                    .as_ref()
                    .ok_or_else(|| missing("project"))?
                    .to_string(),
            ),
            StorageMode::ByModel => Some(
                self.model
                    .as_ref()
                    .ok_or_else(|| missing("model"))?
                    .to_string(),
            ),
            StorageMode::ByType => Some(self.run_type.to_string()),
            StorageMode::ByDate => Some(self.created_at.format("%Y-%m-%d").to_string()),
            StorageMode::Flat => None,
        })
    }

    /// The key of this run's pointer in view `mode`.
    pub fn view_pointer_key(&self, mode: StorageMode) -> Result<String> {
        Ok(match self.view_key(mode)? {
            Some(k) => format!("{}{mode}/{k}/{}/run.json", crate::layout::RUNS, self.run_id),
            None => format!("{}{mode}/{}/run.json", crate::layout::RUNS, self.run_id),
        })
    }

    /// Bytes referenced by the run's files.
    pub fn referenced_bytes(&self) -> u64 {
        self.files.values().map(|f| f.size).sum()
    }
}

/// Whether some path of `map` lies under directory `dir` (a path relative to the run).
/// Paths sharing the prefix `dir` are contiguous in the map, so only those are looked at.
fn any_under<V>(map: &BTreeMap<RelPath, V>, dir: &str) -> bool {
    let Ok(start) = RelPath::parse(dir) else {
        return false;
    };
    let under = format!("{dir}/");
    map.range(start..)
        .map(|(p, _)| p.as_str())
        .take_while(|p| p.starts_with(dir))
        .any(|p| p.starts_with(&under))
}

/// The directory holding `path` in a run (`""`: the run directory).
pub fn parent_dir(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// `runs/<mode>/<key>/<run_id>/run.json`: where a view finds the run's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewPointer {
    pub run_id: RunId,
    pub manifest: String,
}

impl ViewPointer {
    pub fn of(run: &RunId) -> Self {
        ViewPointer {
            run_id: run.clone(),
            manifest: crate::layout::manifest_key(run),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a pointer, refusing one that points anywhere but its run's own manifest.
    pub fn parse(key: &str, bytes: &[u8]) -> Result<Self> {
        let corrupt = |reason: String| Error::Corrupt {
            key: key.to_string(),
            reason,
        };
        let p: ViewPointer = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if p.manifest != crate::layout::manifest_key(&p.run_id) {
            return Err(corrupt(format!("it points at {:?}", p.manifest)));
        }
        Ok(p)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        let json = r#"{
          "schema_version": 1, "run_id": "prod_001", "run_type": "production",
          "project": "customer_churn", "model": "xgb-v3",
          "created_at": "2026-11-26T10:00:00Z", "updated_at": "2026-11-26T10:05:00Z",
          "storage_modes": ["by_type", "by_model"], "tags": {"owner": "ana"},
          "files": {"inputs/training_data.parquet": {
            "hash": "a3f5a3f5a3f5a3f5a3f5a3f5a3f5a3f5a3f5a3f5a3f5a3f5a3f5a3f5a3f5a3f5",
            "size": 1048576, "format": "parquet", "role": "input",
            "mtime": "2026-11-26T10:01:00Z", "mode": 420, "added_at": "2026-11-26T10:01:02Z"}}
        }"#;
        Manifest::parse("prod_001", "manifests/prod_001.json", json.as_bytes()).unwrap()
    }

    #[test]
    fn links_share_the_files_map_and_round_trip() {
        let mut m = sample();
        let t = m.created_at;
        m.links.insert(
            RelPath::parse("outputs/latest").unwrap(),
            LinkEntry {
                target: "step_1000".into(),
                mtime: t,
                added_at: t,
                uid: Some(1005),
                gid: None,
                ctime: None,
            },
        );
        let json: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
        let link = &json["files"]["outputs/latest"];
        assert_eq!(link["type"], "symlink");
        assert_eq!(link["target"], "step_1000");
        assert!(link.get("hash").is_none());
        let back = Manifest::parse("prod_001", "k", &m.to_json()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.files.len(), 1, "the link is not a file with data");
        let mut bad = json.clone();
        bad["files"]["outputs/latest"]["target"] = "".into();
        let bad = serde_json::to_vec(&bad).unwrap();
        assert!(
            Manifest::parse("prod_001", "k", &bad).is_err(),
            "an empty target"
        );
    }

    #[test]
    fn directories_round_trip_with_the_run_directory_as_dot() {
        let mut m = sample();
        let t = m.created_at;
        m.dirs
            .insert(String::new(), DirEntry::new(0o700, t, None, None));
        m.dirs.insert(
            "outputs/ckpt".into(),
            DirEntry::new(0o750, t, Some(7), None),
        );
        let json: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
        assert_eq!(json["dirs"]["."]["mode"], 0o700);
        assert_eq!(json["dirs"]["outputs/ckpt"]["uid"], 7);
        let back = Manifest::parse("prod_001", "k", &m.to_json()).unwrap();
        assert_eq!(back, m);
        assert!(back.is_dir("outputs/ckpt") && back.is_dir("outputs") && !back.is_dir("x"));
        assert!(back.has_entries_under("outputs") && !back.has_entries_under("outputs/ckpt"));
        for hostile in ["../up", "/abs", "a//b"] {
            let mut bad = json.clone();
            bad["dirs"][hostile] = json["dirs"]["."].clone();
            let bad = serde_json::to_vec(&bad).unwrap();
            assert!(Manifest::parse("prod_001", "k", &bad).is_err(), "{hostile}");
        }
    }

    #[test]
    fn directory_times_follow_the_entries_made_in_them() {
        use crate::runs::change::ChangeSet;
        let mut m = sample();
        let later = m.updated_at + chrono::Duration::seconds(5);
        let mut c = ChangeSet::default();
        c.parent_changed(&m, "outputs/ckpt/w.bin", later);
        c.parent_changed(&m, "top.txt", later);
        assert!(c.dir_mut(&m, "nowhere").is_none());
        m.apply(&c, later);
        assert_eq!(
            m.dirs["outputs/ckpt"].mtime, later,
            "made with the defaults"
        );
        assert_eq!(m.dirs["outputs/ckpt"].mode, DEFAULT_DIR_MODE);
        assert_eq!(m.dirs[""].ctime, Some(later), "the run directory itself");
        assert_eq!(m.updated_at, later);
        assert_eq!(parent_dir("a/b/c"), "a/b");
    }

    #[test]
    fn tags_set_in_a_log_entry_replace_the_runs_tags() {
        use crate::runs::change::{ChangeSet, LogEntry};
        let mut m = sample();
        let mut tags = m.tags.clone();
        tags.insert(Name::parse("tag key", "outcome").unwrap(), "raised".into());
        let entry = LogEntry {
            seq: 1,
            at: m.updated_at,
            writer: "node:1".into(),
            changes: ChangeSet {
                tags: Some(tags.clone()),
                ..ChangeSet::default()
            },
        };
        let back = LogEntry::parse("k", 1, &entry.to_json()).unwrap();
        assert_eq!(back, entry);
        assert!(!back.changes.is_empty());
        m.apply(&back.changes, back.at);
        assert_eq!(m.tags, tags);
        let hostile = String::from_utf8(entry.to_json())
            .unwrap()
            .replace("\"outcome\"", "\"../x\"");
        assert!(LogEntry::parse("k", 1, hostile.as_bytes()).is_err());
    }

    #[test]
    fn the_product_example_round_trips() {
        let m = sample();
        assert_eq!(m.run_type, RunType::Production);
        assert_eq!(
            m.view_pointer_key(StorageMode::ByModel).unwrap(),
            "runs/by_model/xgb-v3/prod_001/run.json"
        );
        assert_eq!(
            m.view_pointer_key(StorageMode::ByDate).unwrap(),
            "runs/by_date/2026-11-26/prod_001/run.json"
        );
        assert_eq!(
            m.view_pointer_key(StorageMode::Flat).unwrap(),
            "runs/flat/prod_001/run.json"
        );
        let again = Manifest::parse("prod_001", "k", &m.to_json()).unwrap();
        assert_eq!(again, m);
        let text = String::from_utf8(m.to_json()).unwrap();
        assert!(
            text.contains("\"created_at\": \"2026-11-26T10:00:00Z\""),
            "{text}"
        );
    }

    #[test]
    fn hostile_manifests_are_refused() {
        let good = String::from_utf8(sample().to_json()).unwrap();
        for (from, to) in [
            ("\"prod_001\"", "\"../etc\""),
            ("inputs/training_data.parquet", "../../escape"),
            ("\"parquet\"", "\"../x\""),
            ("\"production\"", "\"prod\""),
            ("\"customer_churn\"", "\"a/b\""),
        ] {
            let bad = good.replacen(from, to, 1);
            assert!(
                Manifest::parse("prod_001", "k", bad.as_bytes()).is_err(),
                "{from} -> {to}"
            );
        }
        assert!(Manifest::parse("other", "k", good.as_bytes()).is_err());
        let no_model = good.replacen("\"model\": \"xgb-v3\",", "", 1);
        assert!(Manifest::parse("prod_001", "k", no_model.as_bytes()).is_err());
    }

    #[test]
    fn view_pointers_must_point_home() {
        let p = ViewPointer::of(&Name::parse("run id", "r1").unwrap());
        assert_eq!(ViewPointer::parse("k", &p.to_json()).unwrap(), p);
        let bad = br#"{"run_id": "r1", "manifest": "manifests/r2.json"}"#;
        assert!(ViewPointer::parse("k", bad).is_err());
    }

    #[test]
    fn modes_and_types_parse_by_their_manifest_names() {
        assert_eq!(
            StorageMode::parse_list("by_type, by_model").unwrap(),
            vec![StorageMode::ByType, StorageMode::ByModel]
        );
        assert!(StorageMode::parse_list("by_nothing").is_err());
        assert!(
            "prod"
                .parse::<RunType>()
                .unwrap_err()
                .to_string()
                .contains("\"prod\"")
        );
    }
}
