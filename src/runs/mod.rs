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
//! - Every change to a run is a [`change::ChangeSet`] computed from its current state under
//!   the machine-wide [`lock::RunLock`] and committed as the next entry of the run's manifest
//!   log with create-if-absent on its number; a writer that loses the number to another
//!   machine reads what it missed and takes the next one. Nothing a concurrent writer added is
//!   lost, and a commit costs what it changes, not the run's size.
//! - A run's state is its manifest with the log entries after its `log_seq` applied in order
//!   (see [`Runs::read_state`] for how a reader stays consistent with a compaction running).
//!   Compaction folds the log into the manifest (conditional on its ETag), then deletes the
//!   folded entries once they are old enough that no writer can still need their numbers.

pub mod cache;
pub mod change;
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
use crate::storage::{Body, Listings, PutMode, StorageError, children_kept, has_child, list_all};
use cache::ManifestCache;
pub use cache::{Current, State};
use change::{ChangeSet, LogEntry};
use lock::RunLock;
use manifest::{
    FileEntry, LinkEntry, Manifest, Role, RunType, SCHEMA_VERSION, Stamp, StorageMode, ViewPointer,
};

/// How often a manifest update is retried when other machines keep changing it.
const UPDATE_ATTEMPTS: u32 = 20;
/// Manifests fetched at once when listing runs.
const LIST_CONCURRENCY: usize = 32;
/// Log entries fetched at once when reading a run.
const LOG_CONCURRENCY: usize = 16;
/// How often a read is tried again when a compaction removed an entry it was about to read.
const READ_ATTEMPTS: u32 = 5;
/// How long a log entry stays after it was folded into the manifest. A writer takes the
/// number after the last entry its state includes; were that number free because the entry
/// had been folded and deleted, its entry would land at or below the manifest's `log_seq`,
/// where readers ignore it. A mount starts an update from its kept state only if that state
/// is younger than [`cache::UPDATE_FROM_KEPT`], so every entry after it is younger than that
/// too, and still there (with a margin for clocks that disagree).
pub const FOLDED_KEPT: Duration = Duration::from_secs(120);
/// A mount compacts a run it wrote to once the run has not changed for this long...
pub const COMPACT_QUIET: Duration = Duration::from_secs(3);
/// ...or once its log has this many entries (a run written without a pause).
pub const COMPACT_BOUND: u64 = 256;

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

/// What a face was given as text for a new run, before it is checked.
#[derive(Debug, Clone, Default)]
pub struct RunArgs<'a> {
    pub run_id: &'a str,
    pub run_type: Option<&'a str>,
    pub project: Option<&'a str>,
    pub model: Option<&'a str>,
    pub storage_modes: &'a [String],
    pub tags: Vec<(&'a str, &'a str)>,
}

impl RunSpec {
    /// Checks `args`; a run type or storage modes not given are `default_type` and
    /// `default_modes` (the configuration's).
    pub fn parse(
        args: RunArgs<'_>,
        default_type: RunType,
        default_modes: &[StorageMode],
    ) -> Result<RunSpec> {
        Ok(RunSpec {
            run_id: Name::parse("run id", args.run_id)?,
            run_type: args.run_type.map_or(Ok(default_type), str::parse)?,
            project: args
                .project
                .map(|p| Name::parse("project", p))
                .transpose()?,
            model: args.model.map(|m| Name::parse("model", m)).transpose()?,
            storage_modes: if args.storage_modes.is_empty() {
                default_modes.to_vec()
            } else {
                args.storage_modes
                    .iter()
                    .map(|v| v.parse())
                    .collect::<Result<_>>()?
            },
            tags: args
                .tags
                .into_iter()
                .map(|(k, v)| Ok((Name::parse("tag key", k)?, v.to_string())))
                .collect::<Result<_>>()?,
        })
    }
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
    /// Its whole-file digest and size already computed (by a reader that followed its
    /// writer): the file must not have changed.
    Digested(crate::ids::Digest, u64),
    /// Hashed now, in one pass, telling `Progress` the bytes read.
    Pass(Progress),
}

/// Which runs `run list` (and Python's `list_runs`) shows: every field given must match.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub project: Option<Name>,
    pub model: Option<Name>,
    pub run_type: Option<RunType>,
    /// `YYYY-MM-DD` of `created_at`, UTC.
    pub date: Option<chrono::NaiveDate>,
}

impl RunFilter {
    /// Parses a date filter, refusing anything but `YYYY-MM-DD`.
    pub fn parse_date(d: &str) -> Result<chrono::NaiveDate> {
        chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map_err(|_| Error::BadRequest(format!("date {d:?} is not of the form YYYY-MM-DD")))
    }

    pub fn matches(&self, m: &Manifest) -> bool {
        self.project
            .as_ref()
            .is_none_or(|p| m.project.as_ref() == Some(p))
            && self
                .model
                .as_ref()
                .is_none_or(|p| m.model.as_ref() == Some(p))
            && self.run_type.is_none_or(|t| m.run_type == t)
            && self.date.is_none_or(|d| m.created_at.date_naive() == d)
    }
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
    /// The runs this process wrote log entries to, for compaction (see
    /// [`Runs::compact_written`]).
    written: std::sync::Arc<std::sync::Mutex<BTreeMap<RunId, Written>>>,
    /// Files waiting to be recorded, by run: committed together (see [`Runs::record`]).
    queue: std::sync::Arc<Queue>,
}

/// Files waiting to be recorded while another writer of their run holds its lock.
#[derive(Default)]
struct Queue {
    next_id: std::sync::atomic::AtomicU64,
    waiting: std::sync::Mutex<BTreeMap<RunId, Vec<Queued>>>,
}

/// A file waiting to be recorded, and where its outcome goes.
struct Queued {
    id: u64,
    path: RelPath,
    entry: FileEntry,
    presence: Presence,
    done: tokio::sync::oneshot::Sender<Result<Current>>,
}

/// What is known of an entry's data when it is recorded, which decides how the data is kept
/// from gc until the entry lands (docs/STORE.md, "Order of writes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Stored before, perhaps long ago: its `used_by` marker is written, then its presence
    /// checked, before the entry, so that a gc removing it in between is caught.
    Check,
    /// Uploaded by this very commit, its `metadata.json` created moments ago: gc keeps data
    /// written within its grace, so no check is needed, and its marker is written beside the
    /// entry instead of before it (two round trips fewer for a close of new data).
    JustStored,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").finish_non_exhaustive()
    }
}

impl Queue {
    fn waiting(&self) -> std::sync::MutexGuard<'_, BTreeMap<RunId, Vec<Queued>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(
        &self,
        run: &RunId,
        path: RelPath,
        entry: FileEntry,
        presence: Presence,
        done: tokio::sync::oneshot::Sender<Result<Current>>,
    ) -> u64 {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let queued = Queued {
            id,
            path,
            entry,
            presence,
            done,
        };
        self.waiting().entry(run.clone()).or_default().push(queued);
        id
    }

    /// Takes request `id` back, if no one took it to commit it.
    fn take_back(&self, run: &RunId, id: u64) -> bool {
        let mut waiting = self.waiting();
        let Some(queued) = waiting.get_mut(run) else {
            return false;
        };
        let before = queued.len();
        queued.retain(|q| q.id != id);
        let found = queued.len() != before;
        if queued.is_empty() {
            waiting.remove(run);
        }
        found
    }

    fn take_all(&self, run: &RunId) -> Vec<Queued> {
        self.waiting().remove(run).unwrap_or_default()
    }
}

/// A run this process wrote to: when last, and how many entries since its last compaction.
#[derive(Debug, Clone, Copy)]
struct Written {
    at: std::time::Instant,
    entries: u64,
}

/// How [`Runs::read_state`] reads a run's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// As every face reads: one HEAD when the log is empty.
    Quick,
    /// Everything, gaps included: for fsck and gc.
    Thorough,
    /// A listing of `manifests/`, made before this read, showed no log for the run (no
    /// `<run>.log/` prefix): the manifest alone, as a thorough read that listed first would
    /// find it. `Runs::list` reads most runs so, one GET each.
    NoLogListed,
}

/// The runs that a listing of `manifests/` showed with a log, and when it was made
/// ([`Runs::logs_listed`]).
pub struct LogsListed {
    at: std::time::Instant,
    logged: std::collections::HashSet<String>,
}

/// A run's state as read from the store.
struct Loaded {
    current: Current,
    /// The number of the last log entry there is (applied, or skipped as unreadable).
    seq: u64,
    /// Log entries that could not be used, and why.
    skipped: Vec<Skipped>,
}

impl Runs {
    pub fn new(data: DataStore) -> Self {
        Runs {
            data,
            cache: None,
            listings: None,
            written: Default::default(),
            queue: Default::default(),
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
            .children(&layout::view_prefix(mode, None))
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
        Ok(self
            .children(&layout::view_prefix(mode, key))
            .await?
            .iter()
            .filter_map(|r| Name::parse("run id", r).ok())
            .collect())
    }

    /// Run `name`, if view `mode` under `key` has a pointer of that name: what
    /// [`Runs::runs_in_view`] would list, found without building the list.
    pub async fn view_lists(
        &self,
        mode: StorageMode,
        key: Option<&str>,
        name: &str,
    ) -> Result<Option<RunId>> {
        let names = self.children(&layout::view_prefix(mode, key)).await?;
        Ok(match has_child(&names, name) {
            true => Name::parse("run id", name).ok(),
            false => None,
        })
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

    /// The run's state as a reader sees it: from this process's cache if fresh, else read;
    /// `None` if the run does not exist, and also if its manifest does not parse or breaks
    /// the rules (skipped with a warning, never followed: docs/STORE.md).
    pub async fn current(&self, run: &RunId) -> Result<Option<Current>> {
        self.current_listed(run, None).await
    }

    /// When the state this process keeps of the run was read from the store (or changed
    /// here); `None` if none is kept.
    pub fn state_read_at(&self, run: &RunId) -> Option<std::time::Instant> {
        self.cache.as_ref()?.read_at(run)
    }

    /// When the kept listing of view `mode` (under `key`) was made; `None` if none is kept.
    pub fn view_listed_at(
        &self,
        mode: StorageMode,
        key: Option<&str>,
    ) -> Option<std::time::Instant> {
        self.listings
            .as_ref()?
            .made_at(&layout::view_prefix(mode, key))
    }

    /// Which runs have a manifest log at all, from one listing of `manifests/` (its
    /// `<run>.log/` prefixes), kept like every listing of a mount; `None` where listings are
    /// not kept. What a read of many runs at once starts from.
    pub async fn logs_listed(&self) -> Result<Option<LogsListed>> {
        let Some(kept) = self.listings.as_deref() else {
            return Ok(None);
        };
        let (at, names) = kept.children_since(self.store(), layout::MANIFESTS).await?;
        let logged = names
            .iter()
            .filter_map(|n| n.strip_suffix(".log"))
            .map(str::to_string)
            .collect();
        Ok(Some(LogsListed { at, logged }))
    }

    /// [`Runs::current`]; a run that `logs` shows without a log is read with one GET, as
    /// things stood when that listing was made (its state is kept from then).
    pub async fn current_listed(
        &self,
        run: &RunId,
        logs: Option<&LogsListed>,
    ) -> Result<Option<Current>> {
        let Some(cache) = &self.cache else {
            return self.read_current(run, logs).await;
        };
        if let Some(c) = cache.fresh(run) {
            return Ok(Some(c));
        }
        // A read of the run in flight (the read-ahead of a listing, say) is waited for, not
        // made again.
        let _turn = cache.turn(run).await;
        if let Some(c) = cache.fresh(run) {
            return Ok(Some(c));
        }
        self.read_current(run, logs).await
    }

    /// [`Runs::current_listed`] read from the store, and remembered when this process keeps
    /// states.
    async fn read_current(
        &self,
        run: &RunId,
        logs: Option<&LogsListed>,
    ) -> Result<Option<Current>> {
        // With no log at the listing, the manifest alone is the run's state as of then (a log
        // begun since can only hold later changes); a thorough read that listed first would
        // find the same.
        let (how, started) = match logs {
            Some(l) if !l.logged.contains(run.as_str()) => (Read::NoLogListed, l.at),
            _ => (Read::Quick, std::time::Instant::now()),
        };
        let (current, seq) = match self.read_state(run, how).await {
            Ok(loaded) => {
                for s in &loaded.skipped {
                    tracing::warn!(%run, "{s}");
                }
                (Some(loaded.current), loaded.seq)
            }
            Err(e @ Error::Corrupt { .. }) => {
                tracing::warn!(error = %e, "skipping run with an unreadable manifest");
                (None, 0)
            }
            Err(Error::RunNotFound(_)) => (None, 0),
            Err(e) => return Err(e),
        };
        if let Some(c) = &self.cache {
            c.read(run, current.clone(), seq, started);
        }
        Ok(current)
    }

    /// Reads the run's state from the store: its manifest, then the log entries after the
    /// manifest's `log_seq`, applied in order. An entry that does not parse is skipped and
    /// reported (fsck names it), as is a gap in the numbers; an entry that a compaction
    /// removed meanwhile makes the read start again.
    ///
    /// [`Read::Quick`] first asks for entry `log_seq + 1` alone: most runs have none, and one
    /// HEAD says so, where a LIST costs some servers a walk of the whole bucket (s3s-fs). Only
    /// if it is there is the log listed; should that listing lack it, a compaction deleted it
    /// since the manifest was read, and the read starts again. So a quick read sees a
    /// consistent state, never later entries without earlier ones; it does not see entries
    /// past a gap right after `log_seq`. [`Read::Thorough`] lists the log first, then reads
    /// the manifest (a compaction between the two cannot hide an entry), and sees everything:
    /// fsck and gc read so.
    async fn read_state(&self, run: &RunId, how: Read) -> Result<Loaded> {
        let key = layout::manifest_key(run);
        let prefix = layout::manifest_log_prefix(run);
        'attempt: for _ in 0..READ_ATTEMPTS {
            let listed_first = match how {
                Read::Thorough => Some(self.log_seqs(run).await?),
                Read::NoLogListed => Some(Vec::new()),
                Read::Quick => None,
            };
            let got = match self.store().get(&key, None).await {
                Ok(got) => got,
                Err(StorageError::NotFound { .. }) => return Err(Error::RunNotFound(run.clone())),
                Err(e) => return Err(e.into()),
            };
            let base = Manifest::parse(run.as_str(), &key, &got.data)?;
            let seqs = match listed_first {
                Some(seqs) => seqs,
                None => {
                    let next = layout::manifest_log_key(run, base.log_seq + 1);
                    if self.store().head(&next).await?.is_none() {
                        let seq = base.log_seq;
                        return Ok(Loaded {
                            current: std::sync::Arc::new(State::stored(base, got.data)),
                            seq,
                            skipped: Vec::new(),
                        });
                    }
                    let seqs = self.log_seqs(run).await?;
                    if !seqs.contains(&(base.log_seq + 1)) {
                        continue 'attempt;
                    }
                    seqs
                }
            };
            let after: Vec<u64> = seqs.into_iter().filter(|s| *s > base.log_seq).collect();
            let mut fetched = futures::stream::iter(after.iter().copied())
                .map(|seq| async move {
                    let key = layout::manifest_log_key(run, seq);
                    (seq, self.store().get(&key, None).await)
                })
                .buffered(LOG_CONCURRENCY);
            let mut m = base;
            let mut last = m.log_seq;
            let mut skipped = Vec::new();
            let bytes = got.data;
            while let Some((seq, got)) = fetched.next().await {
                let key = layout::manifest_log_key(run, seq);
                let data = match got {
                    Ok(got) => got.data,
                    // Folded and deleted by a compaction since the listing: read again.
                    Err(StorageError::NotFound { .. }) => continue 'attempt,
                    Err(e) => return Err(e.into()),
                };
                if seq != last + 1 {
                    skipped.push(Skipped {
                        key: key.clone(),
                        message: format!(
                            "{prefix}: entries {} to {} are missing (a gap in the log)",
                            last + 1,
                            seq - 1
                        ),
                    });
                }
                match LogEntry::parse(&key, seq, &data).and_then(|e| {
                    for mode in e.changes.storage_modes.iter().flatten() {
                        m.view_key(*mode).map_err(|err| Error::Corrupt {
                            key: key.clone(),
                            reason: err.to_string(),
                        })?;
                    }
                    Ok(e)
                }) {
                    Ok(e) => m.apply(&e.changes, e.at),
                    Err(e) => skipped.push(Skipped {
                        key: key.clone(),
                        message: format!("{e}; the entry is left out"),
                    }),
                }
                last = seq;
            }
            let state = if after.is_empty() {
                State::stored(m, bytes)
            } else {
                m.log_seq = last;
                State::applied(m)
            };
            return Ok(Loaded {
                current: std::sync::Arc::new(state),
                seq: last,
                skipped,
            });
        }
        Err(Error::Contention {
            run: run.clone(),
            attempts: READ_ATTEMPTS,
        })
    }

    /// The numbers of the run's log entries, in order; keys that are not entries are ignored.
    async fn log_seqs(&self, run: &RunId) -> Result<Vec<u64>> {
        Ok(self
            .log_entries(run)
            .await?
            .into_iter()
            .map(|(s, _)| s)
            .collect())
    }

    /// The run's log entries, in order: number, and when the store last wrote it.
    async fn log_entries(&self, run: &RunId) -> Result<Vec<(u64, Option<DateTime<Utc>>)>> {
        let prefix = layout::manifest_log_prefix(run);
        let page = list_all(self.store(), &prefix, false).await?;
        let mut entries: Vec<_> = page
            .objects
            .iter()
            .filter_map(|o| Some((layout::seq_of_log_key(&prefix, &o.key)?, o.last_modified)))
            .collect();
        entries.sort_unstable();
        Ok(entries)
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
            log_seq: 0,
        };
        let mut manifest = manifest;
        for mode in &manifest.storage_modes {
            manifest.view_key(*mode)?;
        }
        let _lock = self.lock(&spec.run_id).await?;
        // Entries left by a run of the same id that was deleted while another machine still
        // wrote to it are not this run's.
        manifest.log_seq = self
            .log_seqs(&spec.run_id)
            .await?
            .last()
            .copied()
            .unwrap_or(0);
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
            Ok(_) => {
                if let Some(c) = &self.cache {
                    let json = Bytes::from(manifest.to_json());
                    let state = State::stored(manifest.clone(), json);
                    c.committed(&spec.run_id, std::sync::Arc::new(state), manifest.log_seq);
                }
            }
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

    /// The run's state as stored now (its manifest with its log applied); log entries that
    /// could not be used are logged as warnings.
    pub async fn load(&self, run: &RunId) -> Result<Current> {
        let loaded = self.read_state(run, Read::Quick).await?;
        for s in &loaded.skipped {
            tracing::warn!(%run, "{s}");
        }
        Ok(loaded.current)
    }

    pub async fn exists(&self, run: &RunId) -> Result<bool> {
        Ok(self
            .store()
            .head(&layout::manifest_key(run))
            .await?
            .is_some())
    }

    /// Commits the change set `change` computes from the run's current state as the next
    /// entry of its manifest log, computing it again from a fresh read if another writer took
    /// that entry first; then drops the `used_by` markers of the data the run no longer
    /// references, under the same run lock, so that no other writer of the run on this machine
    /// records a file with that data between the commit and the marker's removal. Returns the
    /// run's state after the change.
    pub async fn update(
        &self,
        run: &RunId,
        change: impl FnMut(&Manifest) -> Result<ChangeSet>,
    ) -> Result<Current> {
        let held = self.lock(run).await?;
        self.update_locked(&held, run, change).await
    }

    /// [`Runs::update`] for a caller holding the run's lock (`_held`).
    async fn update_locked(
        &self,
        _held: &RunLock,
        run: &RunId,
        mut change: impl FnMut(&Manifest) -> Result<ChangeSet>,
    ) -> Result<Current> {
        for attempt in 0..UPDATE_ATTEMPTS {
            let kept = match attempt {
                0 => self.cache.as_ref().and_then(|c| c.for_update(run)),
                _ => None,
            };
            let from_cache = kept.is_some();
            let (current, seq) = match kept {
                Some(kept) => kept,
                None => {
                    let loaded = self.read_state(run, Read::Quick).await?;
                    for s in &loaded.skipped {
                        tracing::warn!(%run, "{s}");
                    }
                    if let Some(c) = &self.cache {
                        c.committed(run, loaded.current.clone(), loaded.seq);
                    }
                    (loaded.current, loaded.seq)
                }
            };
            let changes = match change(&current.0) {
                Ok(c) => c,
                Err(_) if from_cache => {
                    // Refused on the state this process last knew, which may be stale (a file
                    // another client recorded is missing from it): what is stored decides.
                    self.forget(run);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if changes.is_empty() {
                return Ok(current);
            }
            let dropped = changes.dropped_data(&current.0);
            let entry = LogEntry {
                seq: seq + 1,
                at: crate::time::now(),
                writer: LogEntry::writer(),
                changes,
            };
            let key = layout::manifest_log_key(run, entry.seq);
            let body = Body::Bytes(Bytes::from(entry.to_json()));
            match self.store().put(&key, body, PutMode::Create).await {
                Ok(_) => {
                    let next = self.after_commit(run, current, &entry).await?;
                    self.note_written(run);
                    for h in dropped {
                        self.data.unmark_used(&h, run).await?;
                    }
                    return Ok(next);
                }
                Err(StorageError::AlreadyExists { .. }) => {
                    // Another machine took this number: read what it wrote, then try the next.
                    self.forget(run);
                    if attempt > 0 {
                        let jitter = u64::from(std::process::id() % 7 + attempt) * 10;
                        tokio::time::sleep(Duration::from_millis(20 + jitter)).await;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Contention {
            run: run.clone(),
            attempts: UPDATE_ATTEMPTS,
        })
    }

    /// The run's state once `entry`, just committed, is applied to `current`: in place in
    /// this process's cache when it keeps one.
    async fn after_commit(
        &self,
        run: &RunId,
        mut current: Current,
        entry: &LogEntry,
    ) -> Result<Current> {
        let Some(cache) = &self.cache else {
            match std::sync::Arc::get_mut(&mut current) {
                Some(state) => state.apply(entry),
                None => {
                    let mut state = State::applied(current.0.clone());
                    state.apply(entry);
                    current = std::sync::Arc::new(state);
                }
            }
            return Ok(current);
        };
        // Not held here, so that the kept state is changed in place.
        drop(current);
        if let Some(next) = cache.apply(run, entry) {
            return Ok(next);
        }
        let loaded = self.read_state(run, Read::Quick).await?;
        cache.committed(run, loaded.current.clone(), loaded.seq);
        Ok(loaded.current)
    }

    /// Notes that this process wrote a log entry of the run.
    fn note_written(&self, run: &RunId) {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let w = written.entry(run.clone()).or_insert(Written {
            at: std::time::Instant::now(),
            entries: 0,
        });
        w.at = std::time::Instant::now();
        w.entries += 1;
    }

    /// Folds the run's manifest log into its manifest: the manifest is replaced (conditional
    /// on the ETag it was read at) with the entries applied and `log_seq` advanced, then the
    /// folded entries are deleted; readers ignore entries at or below `log_seq`, so a crash
    /// between the two loses nothing. An entry that does not parse is not folded, nor is
    /// anything after it. Returns the number of entries folded.
    pub async fn compact(&self, run: &RunId) -> Result<u64> {
        let key = layout::manifest_key(run);
        let entries = self.log_entries(run).await?;
        let seqs: Vec<u64> = entries.iter().map(|(s, _)| *s).collect();
        let got = match self.store().get(&key, None).await {
            Ok(got) => got,
            Err(StorageError::NotFound { .. }) => return Err(Error::RunNotFound(run.clone())),
            Err(e) => return Err(e.into()),
        };
        let mut m = Manifest::parse(run.as_str(), &key, &got.data)?;
        let base_seq = m.log_seq;
        let mut folded = 0;
        let mut fetched = futures::stream::iter(seqs.iter().copied().filter(|s| *s > base_seq))
            .map(|seq| async move {
                let key = layout::manifest_log_key(run, seq);
                (seq, self.store().get(&key, None).await)
            })
            .buffered(LOG_CONCURRENCY);
        while let Some((seq, got)) = fetched.next().await {
            let entry_key = layout::manifest_log_key(run, seq);
            let data = match got {
                Ok(got) => got.data,
                // Another node compacted meanwhile; its base write will win or lose below.
                Err(StorageError::NotFound { .. }) => break,
                Err(e) => return Err(e.into()),
            };
            match LogEntry::parse(&entry_key, seq, &data) {
                Ok(e) => m.apply(&e.changes, e.at),
                Err(e) => {
                    tracing::warn!(%run, error = %e, "compaction stops at an unreadable log entry");
                    break;
                }
            }
            m.log_seq = seq;
            folded += 1;
        }
        drop(fetched);
        if folded > 0 {
            let mode = match got.etag {
                Some(etag) => PutMode::Update(etag),
                None => PutMode::Overwrite,
            };
            let json = Bytes::from(m.to_json());
            // Entries are immutable and the replacement is conditional, so only this write
            // takes the run's lock (where the store ignores `If-Match`, the lock at least
            // keeps two compactions on this machine from undoing each other). Writers wait
            // for one PUT, not for the entries to be read. The state this process keeps is
            // unchanged by a compaction: it stays.
            let _held = self.lock(run).await?;
            match self.store().put(&key, Body::Bytes(json), mode).await {
                Ok(_) => {}
                // Someone else replaced the manifest since (a compaction on another node).
                Err(StorageError::PreconditionFailed { .. }) => return Ok(0),
                Err(e) => return Err(e.into()),
            }
        }
        // A folded entry is kept for a while: a writer on another machine whose state ends
        // before it must find its number taken, not free (see FOLDED_KEPT).
        let old = Utc::now() - chrono::Duration::from_std(FOLDED_KEPT).unwrap_or_default();
        for (seq, written) in entries {
            if seq <= m.log_seq && written.is_some_and(|w| w < old) {
                self.store()
                    .delete(&layout::manifest_log_key(run, seq))
                    .await?;
            }
        }
        Ok(folded)
    }

    /// Compacts the runs this process wrote to whose log reached `bound` entries, or that
    /// have not changed for `quiet` (`Duration::ZERO`: all of them, as at unmount). A run that
    /// fails stays due and is tried again next time.
    pub async fn compact_written(&self, quiet: Duration, bound: u64) -> Result<()> {
        let due: Vec<(RunId, Written)> = {
            let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
            written
                .iter()
                .filter(|(_, w)| w.at.elapsed() >= quiet || w.entries >= bound)
                .map(|(r, w)| (r.clone(), *w))
                .collect()
        };
        let mut failed = None;
        for (run, w) in due {
            match self.compact(&run).await {
                Ok(_) | Err(Error::RunNotFound(_)) => {
                    let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
                    match written.get_mut(&run) {
                        Some(now) if now.at == w.at => {
                            written.remove(&run);
                        }
                        // Written to meanwhile: what came since is folded next time.
                        Some(now) => now.entries = now.entries.saturating_sub(w.entries),
                        None => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(%run, error = %e, "compacting the manifest log failed; will retry");
                    failed = Some(e);
                }
            }
        }
        failed.map_or(Ok(()), Err)
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
                let hashing = Hashing::Pass(progress);
                self.store_and_record(run, &path, file, false, hashing, stamp)
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
    /// them at `path` of the run with `stamp`'s time, mode and owner: one call from bytes to
    /// manifest entry, for the mount's commits and the CLI alike. `hand_over`: the caller never
    /// writes the file again, and the store may keep it as it is
    /// ([`DataStore::put_path`]). Returns the entry and whether the bytes were new.
    pub async fn store_and_record(
        &self,
        run: &RunId,
        path: &RelPath,
        file: &std::path::Path,
        hand_over: bool,
        hashing: Hashing,
        stamp: Stamp,
    ) -> Result<(FileEntry, bool)> {
        let name = Name::parse("name", path.file_name())?;
        let stored = match hashing {
            Hashing::Digested(digest, size) => {
                self.data
                    .put_digested(file, Some(&name), digest, size, hand_over)
                    .await?
            }
            Hashing::Pass(progress) => {
                self.data
                    .put_path(file, Some(&name), progress, hand_over)
                    .await?
            }
        };
        let presence = if stored.new {
            Presence::JustStored
        } else {
            Presence::Check
        };
        let entry = self
            .record_object_as(run, path, &stored.meta, stamp, presence)
            .await?;
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
        self.record_object_as(run, path, meta, stamp, Presence::Check)
            .await
    }

    async fn record_object_as(
        &self,
        run: &RunId,
        path: &RelPath,
        meta: &ObjectMetadata,
        stamp: Stamp,
        presence: Presence,
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
        self.record_as(run, path, entry.clone(), presence).await?;
        Ok(entry)
    }

    /// Points `path` of the run at stored data (stored before: see [`Presence`]): marker,
    /// presence check, manifest entry; drops the marker of data the path referenced before if
    /// nothing else in the run does.
    ///
    /// Group commit: files that arrive while another writer of the run holds its lock wait
    /// together, and the next one to get the lock records them all: their markers and
    /// presence checks at once, then one log entry. Parallel writers (`xargs -P`, a data
    /// loader writing shards) so share round trips. Each still gets its own outcome.
    pub async fn record(&self, run: &RunId, path: &RelPath, entry: FileEntry) -> Result<Current> {
        self.record_as(run, path, entry, Presence::Check).await
    }

    async fn record_as(
        &self,
        run: &RunId,
        path: &RelPath,
        entry: FileEntry,
        presence: Presence,
    ) -> Result<Current> {
        let (done, mut outcome) = tokio::sync::oneshot::channel();
        let id = self.queue.push(run, path.clone(), entry, presence, done);
        let dropped = || Error::Failed(format!("the commit of {run}/{path} was dropped"));
        let held = match self.lock(run).await {
            Ok(held) => held,
            Err(e) if self.queue.take_back(run, id) => return Err(e),
            // Another writer took it to commit it: its outcome is ours.
            Err(_) => return outcome.await.unwrap_or_else(|_| Err(dropped())),
        };
        // Whoever held the lock before may have committed it with theirs; else it is still
        // waiting (takers commit before they let go of the lock), with any that came since.
        if let Ok(done) = outcome.try_recv() {
            return done;
        }
        let batch = self.queue.take_all(run);
        self.commit_batch(&held, run, batch).await;
        drop(held);
        outcome.await.unwrap_or_else(|_| Err(dropped()))
    }

    /// Records `batch`, under the run's lock (`held`): the markers and presence checks of data
    /// stored before, at once (held from the marker to the removal of old data's markers, so
    /// that a concurrent `rm` of a file with the same data cannot drop a marker an entry
    /// needs), then one log entry for those that passed, with the markers of data this batch
    /// just stored beside it. Sends each its outcome.
    async fn commit_batch(&self, held: &RunLock, run: &RunId, batch: Vec<Queued>) {
        // Data any file of the batch only knows as stored before is checked, for all of them.
        let mut hashes: BTreeMap<Digest, Presence> = BTreeMap::new();
        for q in &batch {
            let p = hashes.entry(q.entry.hash).or_insert(q.presence);
            if q.presence == Presence::Check {
                *p = Presence::Check;
            }
        }
        let (checked, fresh): (Vec<Digest>, Vec<Digest>) =
            hashes.keys().partition(|h| hashes[*h] == Presence::Check);
        let results = futures::future::join_all(checked.iter().map(|h| async move {
            self.data.mark_used(h, run).await?;
            match self.store().head(&layout::metadata_key(h)).await? {
                Some(_) => Ok(()),
                None => Err(Error::DataNotFound(h.to_string())),
            }
        }))
        .await;
        let mut failed: BTreeMap<Digest, std::sync::Arc<Error>> = BTreeMap::new();
        for (h, r) in checked.iter().zip(results) {
            if let Err(e) = r {
                failed.insert(*h, std::sync::Arc::new(e));
            }
        }
        let (ready, unready): (Vec<Queued>, Vec<Queued>) = batch
            .into_iter()
            .partition(|q| !failed.contains_key(&q.entry.hash));
        for q in unready {
            let e = failed[&q.entry.hash].clone();
            let _ = q.done.send(Err(Error::Shared(e)));
        }
        let mut refused: Vec<Option<Error>> = Vec::new();
        let entry = self.update_locked(held, run, |m| {
            refused = ready.iter().map(|_| None).collect();
            let mut c = ChangeSet::default();
            for (q, refusal) in ready.iter().zip(refused.iter_mut()) {
                let path = &q.path;
                let made_dir = matches!(c.dirs.get(path.as_str()), Some(Some(_)));
                if made_dir || m.is_dir(path.as_str()) {
                    *refusal = Some(Error::IsDirectory(format!("{run}/{path}")));
                    continue;
                }
                let exists = match c.files.get(path) {
                    Some(e) => e.is_some(),
                    None => m.files.contains_key(path) || m.links.contains_key(path),
                };
                if !exists {
                    c.parent_changed(m, path.as_str(), q.entry.added_at);
                }
                c.put_file(path.clone(), q.entry.clone());
            }
            Ok(c)
        });
        // A marker that cannot be written does not fail a close whose entry landed: the bytes
        // and the entry are durable, and `fsck --repair` writes the marker from the manifest.
        let markers = futures::future::join_all(fresh.iter().map(|h| async move {
            if let Err(e) = self.data.mark_used(h, run).await {
                tracing::warn!(%run, hash = %h, error = %e,
                    "could not write a used_by marker; `mltrack fsck --repair` writes it");
            }
        }));
        let (committed, _) = futures::future::join(entry, markers).await;
        match committed {
            Ok(next) => {
                for (q, refusal) in ready.into_iter().zip(refused) {
                    let _ = q.done.send(refusal.map_or_else(|| Ok(next.clone()), Err));
                }
            }
            Err(e) => {
                let e = std::sync::Arc::new(e);
                for q in ready {
                    let _ = q.done.send(Err(Error::Shared(e.clone())));
                }
            }
        }
    }

    /// Removes the run's files and links whose path matches (the data stays until gc), and
    /// the markers of data the run no longer uses.
    pub async fn remove_files(
        &self,
        run: &RunId,
        matches: impl Fn(&RelPath) -> bool,
    ) -> Result<Current> {
        self.update(run, |m| {
            let mut c = ChangeSet::default();
            let mut parents = BTreeSet::new();
            for p in m.files.keys().chain(m.links.keys()).filter(|p| matches(p)) {
                c.remove(p.clone());
                parents.insert(manifest::parent_dir(p.as_str()));
            }
            let now = crate::time::now();
            for dir in parents {
                c.dir_changed(m, dir, now);
            }
            Ok(c)
        })
        .await
    }

    /// Records a symbolic link at `path` of the run; refused if a file or link is there.
    pub async fn record_link(
        &self,
        run: &RunId,
        path: &RelPath,
        link: LinkEntry,
    ) -> Result<Current> {
        LinkEntry::check_target(&link.target)?;
        self.update(run, |m| {
            if m.files.contains_key(path) || m.links.contains_key(path) || m.is_dir(path.as_str()) {
                return Err(Error::Exists(format!("{run}/{path}")));
            }
            let mut c = ChangeSet::default();
            c.put_link(path.clone(), link.clone());
            c.parent_changed(m, path.as_str(), link.added_at);
            Ok(c)
        })
        .await
    }

    pub async fn add_view(&self, run: &RunId, mode: StorageMode) -> Result<Current> {
        let m = self
            .update(run, |m| {
                let mut c = ChangeSet::default();
                if !m.storage_modes.contains(&mode) {
                    m.view_key(mode)?;
                    let mut modes = m.storage_modes.clone();
                    modes.push(mode);
                    modes.sort();
                    c.storage_modes = Some(modes);
                }
                Ok(c)
            })
            .await?;
        self.write_pointer(&m.0, mode).await?;
        self.forget_views();
        Ok(m)
    }

    /// Sets the run's tags in `tags` (other tags stay as they are).
    pub async fn set_tags(&self, run: &RunId, tags: &BTreeMap<Name, String>) -> Result<Current> {
        self.update(run, |m| {
            let mut all = m.tags.clone();
            all.extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
            let mut c = ChangeSet::default();
            if all != m.tags {
                c.tags = Some(all);
            }
            Ok(c)
        })
        .await
    }

    /// Deletes the run: its markers, view pointers and manifest. The data stays until gc.
    pub async fn delete(&self, run: &RunId) -> Result<Current> {
        let _lock = self.lock(run).await?;
        // Every entry, past a gap too: each file's marker goes.
        let m = self.read_state(run, Read::Thorough).await?.current;
        let hashes: BTreeSet<Digest> = m.0.files.values().map(|f| f.hash).collect();
        for h in &hashes {
            self.data.unmark_used(h, run).await?;
        }
        for mode in &m.0.storage_modes {
            self.store().delete(&m.0.view_pointer_key(*mode)?).await?;
        }
        // The log before the manifest: a crash in between leaves a run, not a stray log.
        for seq in self.log_seqs(run).await? {
            self.store()
                .delete(&layout::manifest_log_key(run, seq))
                .await?;
        }
        self.store().delete(&layout::manifest_key(run)).await?;
        self.forget(run);
        self.forget_views();
        Ok(m)
    }

    /// Every run in the store, sorted by id; unreadable manifests are skipped and reported.
    pub async fn list(&self) -> Result<Listing> {
        self.list_with(Read::Quick).await
    }

    /// [`Runs::list`], reading every run's whole log (gaps included): for fsck and gc.
    pub async fn list_thoroughly(&self) -> Result<Listing> {
        self.list_with(Read::Thorough).await
    }

    async fn list_with(&self, how: Read) -> Result<Listing> {
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
        // The same listing names the runs that have a log at all: the others are read with
        // one GET and nothing else (no HEAD or LIST of their log).
        let logged: std::collections::HashSet<&str> = page
            .prefixes
            .iter()
            .filter_map(|p| p.strip_prefix(layout::MANIFESTS)?.strip_suffix(".log/"))
            .collect();
        let mut loaded = futures::stream::iter(ids)
            .map(|id| {
                let how = if logged.contains(id.as_str()) {
                    how
                } else {
                    Read::NoLogListed
                };
                async move { (self.read_state(&id, how).await, id) }
            })
            .buffer_unordered(LIST_CONCURRENCY);
        while let Some((result, id)) = loaded.next().await {
            match result {
                Ok(loaded) => {
                    if !loaded.skipped.is_empty() {
                        // An entry that cannot be read may reference data: gc keeps it.
                        listing.unreadable.insert(id.to_string());
                        listing.problems.extend(loaded.skipped);
                    }
                    let state = std::sync::Arc::try_unwrap(loaded.current);
                    listing
                        .runs
                        .push(state.map_or_else(|shared| shared.0.clone(), |s| s.0));
                }
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
