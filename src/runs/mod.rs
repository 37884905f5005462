//! Runs: creating them, recording their inputs and outputs, giving them views, listing and
//! deleting them. The manifest is the source of truth; view pointers and `used_by` markers are
//! derived from it, written so that they never lag behind it in a way that loses data.
//!
//! Ordering rules, each for a reason:
//! - A file is recorded as: data stored, `used_by` marker written, data presence re-checked,
//!   then the manifest entry. A marker never lags a manifest entry, so gc (which trusts fresh
//!   markers) never collects data a manifest is about to reference.
//! - A run is created manifest first (with create-if-absent, so two creators cannot both win),
//!   then its view pointers; deleted markers and pointers first, manifest last. A crash in
//!   between leaves a run that `fsck --repair` or a repeated command completes.
//! - Every manifest change is a read-modify-write under the machine-wide [`lock::RunLock`],
//!   committed with `If-Match` on the ETag read, and retried if another machine got there
//!   first. Nothing a concurrent writer added is lost.

pub mod cache;
pub mod lock;
pub mod manifest;
pub mod xattrs;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::cas::metadata::ObjectMetadata;
use crate::cas::{DataStore, Progress};
use crate::error::{Error, Result};
use crate::ids::{Digest, Name, RelPath, RunId};
use crate::layout;
use crate::storage::{Body, Listings, PutMode, StorageError, children_kept, list_all};
pub use cache::Current;
use cache::ManifestCache;
use lock::RunLock;
use manifest::{
    FileEntry, LinkEntry, Manifest, Role, RunType, SCHEMA_VERSION, Stamp, StorageMode, ViewPointer,
};

/// How often a manifest update is retried when other machines keep changing it.
const UPDATE_ATTEMPTS: u32 = 20;
/// Manifests fetched at once when listing runs.
const LIST_CONCURRENCY: usize = 32;

/// What `run create` asks for.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub run_id: RunId,
    pub run_type: RunType,
    pub project: Option<Name>,
    pub model: Option<Name>,
    pub storage_modes: Vec<StorageMode>,
    pub tags: BTreeMap<Name, String>,
}

/// Where the bytes of a recorded file come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A local file, hashed and stored unless already present.
    File(PathBuf),
    /// Data already in the store: a reference, nothing uploaded.
    Hash(Digest),
}

/// How a file to be stored gets its hash.
pub enum Hashing {
    /// Already hashed (by a reader that followed its writer): the file must not have changed.
    Done(crate::cas::hashing::ContentHash),
    /// Hashed now, in one pass, telling `Progress` the bytes read.
    Pass(Progress),
}

/// The runs found in the store, and the manifests that had to be skipped.
#[derive(Debug, Default)]
pub struct Listing {
    pub runs: Vec<Manifest>,
    /// The manifests that had to be skipped.
    pub problems: Vec<Skipped>,
    /// Runs whose manifest exists but cannot be read: they may still reference data.
    pub unreadable: BTreeSet<String>,
}

/// A manifest that could not be used: its key, and a sentence naming it and saying why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Skipped {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "skipped {}", self.message)
    }
}

#[derive(Debug, Clone)]
pub struct Runs {
    data: DataStore,
    /// Manifests read and committed by this process (a mount); none for a CLI command, which
    /// reads what is stored each time.
    cache: Option<std::sync::Arc<ManifestCache>>,
    /// View listings kept for the refresh time (a mount); none for a CLI command.
    listings: Option<std::sync::Arc<Listings>>,
}

impl Runs {
    pub fn new(data: DataStore) -> Self {
        Runs {
            data,
            cache: None,
            listings: None,
        }
    }

    /// Keeps the manifests this process reads and commits (see [`cache`]): reads are served
    /// from them for `refresh`; updates start from them when `conditional` (the store honours
    /// `If-Match`, which catches a stale copy).
    pub fn caching(mut self, refresh: Duration, conditional: bool) -> Self {
        self.cache = Some(std::sync::Arc::new(ManifestCache::new(
            refresh,
            conditional,
        )));
        self.listings = Some(std::sync::Arc::new(Listings::new(refresh)));
        self.data = self.data.caching_listings(refresh);
        self
    }

    /// Has the data store keep the metadata this process reads and stores (see
    /// [`crate::cas::described`]).
    pub fn caching_metadata(
        mut self,
        keeper: Option<std::sync::Arc<dyn crate::cas::MetadataKeeper>>,
    ) -> Self {
        self.data = self.data.caching_metadata(keeper);
        self
    }

    pub fn is_caching(&self) -> bool {
        self.cache.is_some()
    }

    /// Remembers what this process just committed (its reads see it at once).
    fn committed(&self, m: &Manifest, json: Bytes, etag: String) {
        if let Some(c) = &self.cache {
            c.committed(&m.run_id, std::sync::Arc::new((m.clone(), json)), etag);
        }
    }

    fn forget(&self, run: &RunId) {
        if let Some(c) = &self.cache {
            c.forget(run);
        }
    }

    /// Forgets the kept view listings, after this process made, deleted or re-viewed a run.
    fn forget_views(&self) {
        if let Some(l) = &self.listings {
            l.forget_under(layout::RUNS);
        }
    }

    /// The names directly under `prefix`, kept for the refresh time in a mount.
    async fn children(&self, prefix: &str) -> Result<std::sync::Arc<Vec<String>>> {
        Ok(children_kept(self.listings.as_deref(), self.store(), prefix).await?)
    }

    /// The keys of view `mode` that have runs (`by_project`: the projects), from the view
    /// pointers alone: one LIST, however many runs. Names that are not valid keys are left out.
    pub async fn view_keys(&self, mode: StorageMode) -> Result<Vec<String>> {
        Ok(self
            .children(&format!("{}{mode}/", layout::RUNS))
            .await?
            .iter()
            .filter(|k| Name::parse("key", k).is_ok())
            .cloned()
            .collect())
    }

    /// The runs with a pointer in view `mode` under `key` (`None` for `flat`), from the
    /// pointers alone: a pointer is not checked against its run's manifest here (see
    /// [`Runs::in_view`]).
    pub async fn runs_in_view(&self, mode: StorageMode, key: Option<&str>) -> Result<Vec<RunId>> {
        let prefix = match key {
            Some(key) => format!("{}{mode}/{key}/", layout::RUNS),
            None => format!("{}{mode}/", layout::RUNS),
        };
        Ok(self
            .children(&prefix)
            .await?
            .iter()
            .filter_map(|r| Name::parse("run id", r).ok())
            .collect())
    }

    /// Whether the run's manifest puts it in view `mode` under `key`: a pointer whose run says
    /// otherwise (stale or hostile) is not followed.
    pub async fn in_view(&self, run: &RunId, mode: StorageMode, key: Option<&str>) -> Result<bool> {
        Ok(match self.current(run).await? {
            Some(m) => {
                m.0.storage_modes.contains(&mode)
                    && m.0.view_key(mode).ok().flatten().as_deref() == key
            }
            None => false,
        })
    }

    /// The ids of every run with a manifest, from one listing; names that are not run ids
    /// are left out.
    pub async fn run_ids(&self) -> Result<Vec<RunId>> {
        let page = list_all(self.store(), layout::MANIFESTS, true).await?;
        Ok(page
            .objects
            .iter()
            .filter_map(|o| layout::run_of_manifest_key(&o.key))
            .filter_map(|r| Name::parse("run id", r).ok())
            .collect())
    }

    /// The run's manifest as a reader sees it: from this process's cache if fresh, else read;
    /// `None` if the run does not exist, and also if its manifest does not parse or breaks
    /// the rules (skipped with a warning, never followed: docs/STORE.md).
    pub async fn current(&self, run: &RunId) -> Result<Option<Current>> {
        if let Some(c) = self.cache.as_ref().and_then(|c| c.fresh(run)) {
            return Ok(Some(c));
        }
        let started = std::time::Instant::now();
        let key = layout::manifest_key(run);
        let (current, etag) = match self.store().get(&key, None).await {
            Ok(got) => match Manifest::parse(run.as_str(), &key, &got.data) {
                Ok(m) => (Some(std::sync::Arc::new((m, got.data))), got.etag),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping run with an unreadable manifest");
                    (None, None)
                }
            },
            Err(StorageError::NotFound { .. }) => (None, None),
            Err(e) => return Err(e.into()),
        };
        if let Some(c) = &self.cache {
            c.read(run, current.clone(), etag, started);
        }
        Ok(current)
    }

    pub fn data(&self) -> &DataStore {
        &self.data
    }

    fn store(&self) -> &dyn crate::storage::ObjectStore {
        self.data.backend().as_ref()
    }

    async fn lock(&self, run: &RunId) -> Result<RunLock> {
        RunLock::acquire(&self.store().describe(), run).await
    }

    pub async fn create(&self, spec: RunSpec) -> Result<Manifest> {
        let now = crate::time::now();
        let mut modes = spec.storage_modes.clone();
        modes.sort();
        modes.dedup();
        if modes.is_empty() {
            return Err(Error::BadRequest(format!(
                "run {} needs at least one storage mode",
                spec.run_id
            )));
        }
        let manifest = Manifest {
            schema_version: SCHEMA_VERSION,
            run_id: spec.run_id.clone(),
            run_type: spec.run_type,
            project: spec.project,
            model: spec.model,
            created_at: now,
            updated_at: now,
            storage_modes: modes,
            tags: spec.tags,
            files: BTreeMap::new(),
            links: BTreeMap::new(),
            dirs: BTreeMap::new(),
        };
        for mode in &manifest.storage_modes {
            manifest.view_key(*mode)?;
        }
        let _lock = self.lock(&spec.run_id).await?;
        let key = layout::manifest_key(&spec.run_id);
        match self
            .store()
            .put(
                &key,
                Body::Bytes(manifest.to_json().into()),
                PutMode::Create,
            )
            .await
        {
            Ok(etag) => self.committed(&manifest, Bytes::from(manifest.to_json()), etag),
            Err(StorageError::AlreadyExists { .. }) => return Err(Error::RunExists(spec.run_id)),
            Err(e) => return Err(e.into()),
        }
        for mode in &manifest.storage_modes {
            self.write_pointer(&manifest, *mode).await?;
        }
        self.forget_views();
        Ok(manifest)
    }

    async fn write_pointer(&self, m: &Manifest, mode: StorageMode) -> Result<()> {
        let body = Body::Bytes(ViewPointer::of(&m.run_id).to_json().into());
        self.store()
            .put(&m.view_pointer_key(mode)?, body, PutMode::Overwrite)
            .await?;
        Ok(())
    }

    /// The run's manifest and the ETag it was read at.
    pub async fn load(&self, run: &RunId) -> Result<(Manifest, Option<String>)> {
        let key = layout::manifest_key(run);
        match self.store().get(&key, None).await {
            Ok(got) => Ok((Manifest::parse(run.as_str(), &key, &got.data)?, got.etag)),
            Err(StorageError::NotFound { .. }) => Err(Error::RunNotFound(run.clone())),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn exists(&self, run: &RunId) -> Result<bool> {
        Ok(self
            .store()
            .head(&layout::manifest_key(run))
            .await?
            .is_some())
    }

    /// Applies `change` to the current manifest and commits it, retrying from a fresh read if
    /// another writer committed first.
    pub async fn update(
        &self,
        run: &RunId,
        change: impl FnMut(&mut Manifest) -> Result<()>,
    ) -> Result<Manifest> {
        let held = self.lock(run).await?;
        self.update_locked(&held, run, change).await
    }

    /// Changes the run's files: `change` returns the data its entries stopped referencing, and
    /// the `used_by` markers of those the committed manifest no longer references anywhere
    /// are dropped, under the same run lock, so that no other writer of the run on this machine
    /// records a file with that data between the commit and the marker's removal.
    pub async fn change_files(
        &self,
        run: &RunId,
        mut change: impl FnMut(&mut Manifest) -> Result<Vec<Digest>>,
    ) -> Result<Manifest> {
        let held = self.lock(run).await?;
        let mut dropped = Vec::new();
        let m = self
            .update_locked(&held, run, |m| {
                dropped = change(m)?;
                Ok(())
            })
            .await?;
        self.unmark_unused(&m, dropped).await?;
        Ok(m)
    }

    /// [`Runs::update`] for a caller holding the run's lock (`_held`).
    async fn update_locked(
        &self,
        _held: &RunLock,
        run: &RunId,
        mut change: impl FnMut(&mut Manifest) -> Result<()>,
    ) -> Result<Manifest> {
        let key = layout::manifest_key(run);
        let mut from_cache = false;
        for attempt in 0..UPDATE_ATTEMPTS {
            let cached = self.cache.as_ref().and_then(|c| c.for_update(run));
            let (mut m, etag) = match cached {
                Some((m, etag)) if attempt == 0 => {
                    from_cache = true;
                    (m, Some(etag))
                }
                _ => self.load(run).await?,
            };
            if let Err(e) = change(&mut m) {
                if from_cache && attempt == 0 {
                    // Refused on the copy this process last committed, which may be stale (a
                    // file another client recorded is missing from it): what is stored decides.
                    self.forget(run);
                    continue;
                }
                return Err(e);
            }
            m.updated_at = crate::time::now();
            let mode = match etag {
                Some(e) => PutMode::Update(e),
                None => PutMode::Overwrite,
            };
            let json = Bytes::from(m.to_json());
            match self
                .store()
                .put(&key, Body::Bytes(json.clone()), mode)
                .await
            {
                Ok(etag) => {
                    self.committed(&m, json, etag);
                    return Ok(m);
                }
                Err(StorageError::PreconditionFailed { .. } | StorageError::NotFound { .. })
                    if attempt == 0 =>
                {
                    // Someone wrote since: start again from what is stored, at once.
                    self.forget(run);
                }
                Err(StorageError::PreconditionFailed { .. }) => {
                    let jitter = u64::from(std::process::id() % 7 + attempt) * 10;
                    tokio::time::sleep(Duration::from_millis(20 + jitter)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Contention {
            run: run.clone(),
            attempts: UPDATE_ATTEMPTS,
        })
    }

    /// Records `path` in the run, with bytes from `source`. Returns the entry and whether the
    /// bytes were new to the store.
    pub async fn add_file(
        &self,
        run: &RunId,
        path: RelPath,
        source: Source,
        progress: Progress,
    ) -> Result<(FileEntry, bool)> {
        if !self.exists(run).await? {
            return Err(Error::RunNotFound(run.clone()));
        }
        match &source {
            Source::File(file) => {
                let m = std::fs::metadata(file).map_err(Error::io(file))?;
                let mtime = DateTime::<Utc>::from_timestamp(m.mtime(), m.mtime_nsec() as u32)
                    .unwrap_or_else(Utc::now);
                let stamp = Stamp::new(mtime, m.mode() & 0o7777);
                self.store_and_record(run, &path, file, Hashing::Pass(progress), stamp)
                    .await
            }
            Source::Hash(h) => {
                let meta = self.data.require(h).await?;
                let stamp = Stamp::new(crate::time::now(), 0o644);
                let entry = self.record_object(run, &path, &meta, stamp).await?;
                Ok((entry, false))
            }
        }
    }

    /// Stores the bytes of the local file `file`, uploading them only if absent, and records
    /// them at `path` of the run with `stamp`'s time, mode and owner: one call from bytes to manifest
    /// entry, for the mount's commits and the CLI alike. Returns the entry and whether the
    /// bytes were new.
    pub async fn store_and_record(
        &self,
        run: &RunId,
        path: &RelPath,
        file: &std::path::Path,
        hashing: Hashing,
        stamp: Stamp,
    ) -> Result<(FileEntry, bool)> {
        let name = Name::parse("name", path.file_name())?;
        let stored = match hashing {
            Hashing::Done(hash) => self.data.put_hashed(file, Some(&name), hash).await?,
            Hashing::Pass(progress) => self.data.put_file(file, Some(&name), progress).await?,
        };
        let entry = self.record_object(run, path, &stored.meta, stamp).await?;
        Ok((entry, stored.new))
    }

    /// Records `path` of the run as stored object `meta`, with the file's time, mode and owner:
    /// the entry is made here, then recorded as [`Runs::record`] does. Returns the entry.
    pub async fn record_object(
        &self,
        run: &RunId,
        path: &RelPath,
        meta: &ObjectMetadata,
        stamp: Stamp,
    ) -> Result<FileEntry> {
        let entry = FileEntry {
            hash: meta.hash,
            size: meta.size,
            format: meta.format.clone(),
            role: Role::of(path),
            mtime: stamp.mtime,
            mode: stamp.mode,
            added_at: crate::time::now(),
            ctime: Some(stamp.ctime),
            uid: stamp.uid,
            gid: stamp.gid,
            xattrs: stamp.xattrs,
        };
        self.record(run, path, entry.clone()).await?;
        Ok(entry)
    }

    /// Points `path` of the run at stored data: marker, presence check, manifest entry; drops
    /// the marker of data the path referenced before if nothing else in the run does.
    pub async fn record(&self, run: &RunId, path: &RelPath, entry: FileEntry) -> Result<Manifest> {
        // Held from the marker to the removal of the old data's marker: a concurrent `rm` of a
        // file with the same data in this run cannot drop the marker this entry needs.
        let held = self.lock(run).await?;
        self.data.mark_used(&entry.hash, run).await?;
        if self
            .store()
            .head(&layout::metadata_key(&entry.hash))
            .await?
            .is_none()
        {
            return Err(Error::DataNotFound(entry.hash.to_string()));
        }
        let mut replaced = None;
        let m = self
            .update_locked(&held, run, |m| {
                if m.is_dir(path.as_str()) {
                    return Err(Error::IsDirectory(format!("{run}/{path}")));
                }
                let was_link = m.links.remove(path).is_some();
                replaced = m
                    .files
                    .insert(path.clone(), entry.clone())
                    .map(|old| old.hash);
                if replaced.is_none() && !was_link {
                    m.parent_changed(path.as_str(), entry.added_at);
                }
                Ok(())
            })
            .await?;
        self.unmark_unused(&m, replaced).await?;
        Ok(m)
    }

    /// Drops the `used_by` markers of the `dropped` data that `m`, just committed, no longer
    /// references anywhere. The caller holds the run's lock.
    async fn unmark_unused(
        &self,
        m: &Manifest,
        dropped: impl IntoIterator<Item = Digest>,
    ) -> Result<()> {
        let dropped: BTreeSet<Digest> = dropped.into_iter().collect();
        for h in dropped {
            if !m.files.values().any(|f| f.hash == h) {
                self.data.unmark_used(&h, &m.run_id).await?;
            }
        }
        Ok(())
    }

    /// Removes the run's files whose path matches (the data stays until gc), and the markers
    /// of data the run no longer uses.
    pub async fn remove_files(
        &self,
        run: &RunId,
        matches: impl Fn(&RelPath) -> bool,
    ) -> Result<Manifest> {
        self.change_files(run, |m| {
            let mut removed = Vec::new();
            let mut parents = BTreeSet::new();
            m.files.retain(|p, e| {
                let gone = matches(p);
                if gone {
                    removed.push(e.hash);
                    parents.insert(manifest::parent_dir(p.as_str()).to_string());
                }
                !gone
            });
            m.links.retain(|p, _| {
                let gone = matches(p);
                if gone {
                    parents.insert(manifest::parent_dir(p.as_str()).to_string());
                }
                !gone
            });
            let now = crate::time::now();
            for dir in parents {
                m.dir_changed(&dir, now);
            }
            Ok(removed)
        })
        .await
    }

    /// Records a symbolic link at `path` of the run; refused if a file or link is there.
    pub async fn record_link(
        &self,
        run: &RunId,
        path: &RelPath,
        link: LinkEntry,
    ) -> Result<Manifest> {
        LinkEntry::check_target(&link.target)?;
        self.update(run, |m| {
            if m.files.contains_key(path) || m.links.contains_key(path) || m.is_dir(path.as_str()) {
                return Err(Error::Exists(format!("{run}/{path}")));
            }
            m.links.insert(path.clone(), link.clone());
            m.parent_changed(path.as_str(), link.added_at);
            Ok(())
        })
        .await
    }

    pub async fn add_view(&self, run: &RunId, mode: StorageMode) -> Result<Manifest> {
        let m = self
            .update(run, |m| {
                if !m.storage_modes.contains(&mode) {
                    m.view_key(mode)?;
                    m.storage_modes.push(mode);
                    m.storage_modes.sort();
                }
                Ok(())
            })
            .await?;
        self.write_pointer(&m, mode).await?;
        self.forget_views();
        Ok(m)
    }

    /// Deletes the run: its markers, view pointers and manifest. The data stays until gc.
    pub async fn delete(&self, run: &RunId) -> Result<Manifest> {
        let _lock = self.lock(run).await?;
        let (m, _) = self.load(run).await?;
        let hashes: BTreeSet<Digest> = m.files.values().map(|f| f.hash).collect();
        for h in &hashes {
            self.data.unmark_used(h, run).await?;
        }
        for mode in &m.storage_modes {
            self.store().delete(&m.view_pointer_key(*mode)?).await?;
        }
        self.store().delete(&layout::manifest_key(run)).await?;
        self.forget(run);
        self.forget_views();
        Ok(m)
    }

    /// Every run in the store, sorted by id; unreadable manifests are skipped and reported.
    pub async fn list(&self) -> Result<Listing> {
        let page = list_all(self.store(), layout::MANIFESTS, true).await?;
        let mut listing = Listing::default();
        let mut ids = Vec::new();
        for o in &page.objects {
            match layout::run_of_manifest_key(&o.key).map(|r| Name::parse("run id", r)) {
                Some(Ok(id)) => ids.push(id),
                Some(Err(e)) => listing.problems.push(Skipped {
                    key: o.key.clone(),
                    message: format!("{}: {e}", o.key),
                }),
                None => listing.problems.push(Skipped {
                    key: o.key.clone(),
                    message: format!("{}: not a manifest name", o.key),
                }),
            }
        }
        let mut loaded = futures::stream::iter(ids)
            .map(|id| async move { (self.load(&id).await, id) })
            .buffer_unordered(LIST_CONCURRENCY);
        while let Some((result, id)) = loaded.next().await {
            match result {
                Ok((m, _)) => listing.runs.push(m),
                // Deleted between the list and the get: not a problem, just gone.
                Err(Error::RunNotFound(_)) => {}
                Err(e @ Error::Corrupt { .. }) => {
                    listing.problems.push(Skipped {
                        key: layout::manifest_key(&id),
                        message: e.to_string(),
                    });
                    listing.unreadable.insert(id.to_string());
                }
                Err(e) => {
                    tracing::debug!(run = %id, error = %e, "listing runs failed");
                    return Err(e);
                }
            }
        }
        listing.runs.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        listing.problems.sort();
        Ok(listing)
    }

    /// Writes a scratch object twice with create-if-absent: a server that honours conditional
    /// writes refuses the second. The probe object is removed afterwards.
    pub async fn probe_conditional_writes(&self) -> Result<bool> {
        let key = format!(
            "{}{}-{}",
            layout::PROBES,
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or_default()
        );
        let put = || {
            self.store().put(
                &key,
                Body::Bytes(Bytes::from_static(b"probe")),
                PutMode::Create,
            )
        };
        put().await?;
        let honoured = match put().await {
            Ok(_) => false,
            Err(StorageError::AlreadyExists { .. }) => true,
            Err(e) => {
                let _ = self.store().delete(&key).await;
                return Err(e.into());
            }
        };
        self.store().delete(&key).await?;
        Ok(honoured)
    }
}
