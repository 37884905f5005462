//! What one manifest update changes, as data: a [`ChangeSet`] (entries put or removed,
//! directories put or removed, the views) is what every change to a run computes from the
//! run's current state, what the run's manifest log stores as one immutable entry
//! ([`LogEntry`], `manifests/<run>.log/<seq>.json`), and what [`Manifest::apply`] folds into a
//! manifest, for a writer, a reader and compaction alike (docs/STORE.md, "Manifest log").
//!
//! A change set is computed from a state it does not modify, so a change that is refused
//! leaves nothing half done, and applying one costs what it changes, not the run's size.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::manifest::{
    DEFAULT_DIR_MODE, DirEntry, Entry, FileEntry, LinkEntry, Manifest, StorageMode, check_dir,
    dir_keys, parent_dir,
};
use crate::error::{Error, Result};
use crate::ids::{Name, RelPath};

/// The changes of one manifest update.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeSet {
    /// Path to its new entry (a file or a link), or `null`: removed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<RelPath, Option<Entry>>,
    /// Directory path (`.`: the run directory) to what it keeps now, or `null`: removed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", with = "dir_keys")]
    pub dirs: BTreeMap<String, Option<DirEntry>>,
    /// The run's views, when they changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_modes: Option<Vec<StorageMode>>,
    /// The run's tags, all of them, when they changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<Name, String>>,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
            && self.dirs.is_empty()
            && self.storage_modes.is_none()
            && self.tags.is_none()
    }

    /// Puts file `entry` at `path` (replacing a file or link there).
    pub fn put_file(&mut self, path: RelPath, entry: FileEntry) {
        self.files.insert(path, Some(Entry::File(entry)));
    }

    /// Puts `link` at `path` (replacing a file or link there).
    pub fn put_link(&mut self, path: RelPath, link: LinkEntry) {
        self.files.insert(path, Some(Entry::Link(link)));
    }

    /// Removes the file or link at `path`.
    pub fn remove(&mut self, path: RelPath) {
        self.files.insert(path, None);
    }

    pub fn put_dir(&mut self, dir: &str, entry: DirEntry) {
        self.dirs.insert(dir.to_string(), Some(entry));
    }

    pub fn remove_dir(&mut self, dir: &str) {
        self.dirs.insert(dir.to_string(), None);
    }

    /// The entry (file or link) at `path` to change, as this set will record it; `None` if
    /// there is none.
    fn entry_mut(&mut self, m: &Manifest, path: &RelPath) -> Option<&mut Entry> {
        if !self.files.contains_key(path) {
            let current = match (m.files.get(path), m.links.get(path)) {
                (Some(f), _) => Entry::File(f.clone()),
                (None, Some(l)) => Entry::Link(l.clone()),
                (None, None) => return None,
            };
            self.files.insert(path.clone(), Some(current));
        }
        self.files.get_mut(path)?.as_mut()
    }

    /// The file at `path` to change, as this set will record it; `None` if there is none.
    pub fn file_mut(&mut self, m: &Manifest, path: &RelPath) -> Option<&mut FileEntry> {
        match self.entry_mut(m, path)? {
            Entry::File(f) => Some(f),
            Entry::Link(_) => None,
        }
    }

    /// The link at `path` to change, as this set will record it; `None` if there is none.
    pub fn link_mut(&mut self, m: &Manifest, path: &RelPath) -> Option<&mut LinkEntry> {
        match self.entry_mut(m, path)? {
            Entry::Link(l) => Some(l),
            Entry::File(_) => None,
        }
    }

    /// Directory `dir` as this set leaves it: its entry here, else the manifest's, else the
    /// defaults a directory without one shows; `None` if this set removes it.
    fn dir_after(&self, m: &Manifest, dir: &str) -> Option<DirEntry> {
        match self.dirs.get(dir) {
            Some(d) => d.clone(),
            None => Some(
                m.dirs
                    .get(dir)
                    .cloned()
                    .unwrap_or_else(|| DirEntry::new(DEFAULT_DIR_MODE, m.updated_at, None, None)),
            ),
        }
    }

    /// The entry of directory `dir` to change (`chmod`, `chown`, `touch`, `setxattr`), made
    /// with the defaults it showed if it had none; `None` if the run has no such directory.
    pub fn dir_mut(&mut self, m: &Manifest, dir: &str) -> Option<&mut DirEntry> {
        if !self.dirs.contains_key(dir) && !m.is_dir(dir) {
            return None;
        }
        let current = self.dir_after(m, dir)?;
        self.dirs
            .entry(dir.to_string())
            .or_insert(Some(current))
            .as_mut()
    }

    /// Notes that an entry was made, removed or renamed in directory `dir` at `at`: its
    /// `mtime` and `ctime` move, as on any filesystem. A directory without an entry gets one
    /// (mode `0755`), which also keeps it once its last file is gone.
    pub fn dir_changed(&mut self, m: &Manifest, dir: &str, at: DateTime<Utc>) {
        let Some(mut d) = self.dir_after(m, dir) else {
            return;
        };
        d.mtime = at;
        d.ctime = Some(at);
        self.dirs.insert(dir.to_string(), Some(d));
    }

    /// [`ChangeSet::dir_changed`] for the directory holding `path`.
    pub fn parent_changed(&mut self, m: &Manifest, path: &str, at: DateTime<Utc>) {
        self.dir_changed(m, parent_dir(path), at);
    }

    /// The data the run stops referencing once this set is applied to `m`: the hashes of the
    /// files it replaces or removes that no file of the resulting run still has.
    pub fn dropped_data(&self, m: &Manifest) -> Vec<crate::ids::Digest> {
        let mut dropped: Vec<_> = self
            .files
            .keys()
            .filter_map(|p| m.files.get(p).map(|f| f.hash))
            .collect();
        dropped.sort();
        dropped.dedup();
        dropped.retain(|h| {
            let kept_here = self
                .files
                .values()
                .any(|e| matches!(e, Some(Entry::File(f)) if &f.hash == h));
            let kept_elsewhere = m
                .files
                .iter()
                .any(|(p, f)| &f.hash == h && !self.files.contains_key(p));
            !kept_here && !kept_elsewhere
        });
        dropped
    }
}

impl Manifest {
    /// Folds `c`, committed at `at`, into this manifest.
    pub fn apply(&mut self, c: &ChangeSet, at: DateTime<Utc>) {
        for (path, entry) in &c.files {
            match entry {
                Some(Entry::File(f)) => {
                    self.links.remove(path);
                    self.files.insert(path.clone(), f.clone());
                }
                Some(Entry::Link(l)) => {
                    self.files.remove(path);
                    self.links.insert(path.clone(), l.clone());
                }
                None => {
                    self.files.remove(path);
                    self.links.remove(path);
                }
            }
        }
        for (dir, entry) in &c.dirs {
            match entry {
                Some(d) => {
                    self.dirs.insert(dir.clone(), d.clone());
                }
                None => {
                    self.dirs.remove(dir);
                }
            }
        }
        if let Some(modes) = &c.storage_modes {
            self.storage_modes = modes.clone();
        }
        if let Some(tags) = &c.tags {
            self.tags = tags.clone();
        }
        self.updated_at = self.updated_at.max(at);
    }
}

/// One entry of a run's manifest log: a change set, its number and who committed it when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub seq: u64,
    #[serde(with = "crate::time::rfc3339")]
    pub at: DateTime<Utc>,
    /// Host and process that committed it, for people reading the log.
    pub writer: String,
    #[serde(flatten)]
    pub changes: ChangeSet,
}

impl LogEntry {
    pub fn to_json(&self) -> Vec<u8> {
        // Plain data with string keys always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses the entry stored under `key` for run `run`, checking what a reader will follow
    /// as a manifest's own entries are checked.
    pub fn parse(key: &str, seq: u64, bytes: &[u8]) -> Result<LogEntry> {
        let corrupt = |reason: String| Error::Corrupt {
            key: key.to_string(),
            reason,
        };
        let e: LogEntry = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if e.seq != seq {
            return Err(corrupt(format!("it says it is entry {}", e.seq)));
        }
        for (path, entry) in &e.changes.files {
            if let Some(entry) = entry {
                entry
                    .check()
                    .map_err(|err| corrupt(format!("{path}: {err}")))?;
            }
        }
        for (dir, d) in &e.changes.dirs {
            check_dir(dir, d.as_ref()).map_err(corrupt)?;
        }
        Ok(e)
    }

    /// Who is writing: `host:pid`, read once per process (every commit names it).
    pub fn writer() -> String {
        static WRITER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        WRITER
            .get_or_init(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_default();
                format!("{host}:{}", std::process::id())
            })
            .clone()
    }
}
