//! The run states a long-lived process (a mount) has read or committed, so that every face
//! reads runs through one copy: each run is read at most once per refresh interval, a commit
//! of this process is seen by its next read at once (and a read that raced the commit never
//! puts the older state back), and the next update of a run can start from the state this
//! process committed (when the store honours create-if-absent, which refuses a log entry
//! whose number someone else took since). A commit is applied to the kept state in place: its
//! cost is the change's, not the run's.
//!
//! One read of a run at a time: a second reader of a run whose read is in flight waits for it
//! and takes its state (a listing's read-ahead and `ls`'s lookups of the same runs meet so),
//! instead of reading the run again.
//!
//! What it does not do: decide what a missing or unreadable manifest means (that is
//! [`super::Runs::current`]), cache object metadata (`cas` does), or cache view listings.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::change::LogEntry;
use super::manifest::Manifest;
use crate::ids::RunId;

/// A run's state (its manifest with its log applied, `log_seq` the last entry it includes),
/// and the bytes `manifests/<run>.json` shows for it through a mount: the stored manifest's
/// own bytes when no log entry was applied, else the state serialized when first asked for
/// (a manifest that would read back as the same state).
#[derive(Debug)]
pub struct State(pub Manifest, OnceLock<Bytes>);

impl State {
    /// A state read as `bytes` from the store, nothing applied since.
    pub fn stored(m: Manifest, bytes: Bytes) -> State {
        State(m, OnceLock::from(bytes))
    }

    /// A state with log entries applied: serialized only if asked.
    pub fn applied(m: Manifest) -> State {
        State(m, OnceLock::new())
    }

    /// Applies `entry`, the next of the run's log.
    pub fn apply(&mut self, entry: &LogEntry) {
        self.0.apply(&entry.changes, entry.at);
        self.0.log_seq = entry.seq;
        self.1 = OnceLock::new();
    }

    /// What `manifests/<run>.json` shows.
    pub fn json(&self) -> Bytes {
        self.1.get_or_init(|| Bytes::from(self.0.to_json())).clone()
    }
}

pub type Current = Arc<State>;

/// The oldest kept state an update may start from; an older one is read again.
pub const UPDATE_FROM_KEPT: Duration = Duration::from_secs(10);

/// The most runs whose states a process keeps. Past it, the quarter confirmed longest ago is
/// dropped (and read again when next needed), so that listing 100,000 runs does not hold
/// 100,000 manifests.
pub const MAX_KEPT: usize = 4096;

#[derive(Debug)]
pub struct ManifestCache {
    refresh: Duration,
    /// Updates may start from a kept state: the store honours create-if-absent.
    conditional: bool,
    map: Mutex<HashMap<RunId, Cached>>,
    /// The runs being read, each with the turn its readers take one after another.
    reading: Mutex<HashMap<RunId, Arc<tokio::sync::Mutex<()>>>>,
}

/// A reader's turn to read a run (see [`ManifestCache::turn`]); the run is forgotten from the
/// runs being read when the last reader waiting for it is done.
pub struct Turn<'a> {
    cache: &'a ManifestCache,
    run: RunId,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut reading = lock(&self.cache.reading);
        // Two holders, the table and this turn: nobody is waiting.
        if reading
            .get(&self.run)
            .is_some_and(|gate| Arc::strong_count(gate) == 2)
        {
            reading.remove(&self.run);
        }
    }
}

#[derive(Debug)]
struct Cached {
    /// `None`: this process deleted the run, or found it gone.
    current: Option<Current>,
    /// The number of the last log entry the state includes.
    seq: u64,
    /// When the state was known to be the stored one: a commit's time, or when the read that
    /// fetched it started.
    at: Instant,
}

impl ManifestCache {
    pub fn new(refresh: Duration, conditional: bool) -> ManifestCache {
        ManifestCache {
            refresh,
            conditional,
            map: Mutex::new(HashMap::new()),
            reading: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<RunId, Cached>> {
        lock(&self.map)
    }

    /// Waits until no other reader of this process is reading `run`, and holds it off until
    /// the returned turn is dropped: the reader then finds what the one before it read in
    /// [`ManifestCache::fresh`], or reads the run itself.
    pub async fn turn(&self, run: &RunId) -> Turn<'_> {
        let gate = lock(&self.reading).entry(run.clone()).or_default().clone();
        Turn {
            cache: self,
            run: run.clone(),
            _held: gate.lock_owned().await,
        }
    }

    /// When the run's kept state was read (as of when that read started) or last changed
    /// here.
    pub fn read_at(&self, run: &RunId) -> Option<Instant> {
        self.map().get(run).map(|c| c.at)
    }

    /// The run's state if it was read or committed less than the refresh interval ago.
    pub fn fresh(&self, run: &RunId) -> Option<Current> {
        self.map()
            .get(run)
            .filter(|c| c.at.elapsed() < self.refresh)
            .and_then(|c| c.current.clone())
    }

    /// What an update may start from: the state last read or committed, with the number of
    /// its last log entry, if the store will refuse the entry should that state be stale and
    /// the state is younger than [`UPDATE_FROM_KEPT`] (so the entries after it have not been
    /// deleted by a compaction: `super::FOLDED_KEPT`).
    pub fn for_update(&self, run: &RunId) -> Option<(Current, u64)> {
        if !self.conditional {
            return None;
        }
        let map = self.map();
        let c = map.get(run).filter(|c| c.at.elapsed() < UPDATE_FROM_KEPT)?;
        Some((c.current.clone()?, c.seq))
    }

    /// Applies `entry`, just committed by this process, to the kept state, in place unless a
    /// reader still holds it. `None` if the kept state is not the one the entry follows.
    pub fn apply(&self, run: &RunId, entry: &LogEntry) -> Option<Current> {
        let mut map = self.map();
        let c = map.get_mut(run)?;
        if c.seq + 1 != entry.seq {
            return None;
        }
        let current = c.current.as_mut()?;
        match Arc::get_mut(current) {
            Some(state) => state.apply(entry),
            None => {
                let mut state = State::applied(current.0.clone());
                state.apply(entry);
                *current = Arc::new(state);
            }
        }
        c.seq = entry.seq;
        c.at = Instant::now();
        Some(current.clone())
    }

    /// Remembers what this process just committed.
    pub fn committed(&self, run: &RunId, current: Current, seq: u64) {
        self.set(run, Some(current), seq, Instant::now());
    }

    /// Remembers what a read that started at `started` found (`None`: no such run), unless
    /// this process committed or deleted the run since: a read that raced a commit must not
    /// put the older state back (the mount would show its own change undone).
    pub fn read(&self, run: &RunId, current: Option<Current>, seq: u64, started: Instant) {
        let mut map = self.map();
        if map.get(run).is_some_and(|c| c.at > started) {
            return;
        }
        map.insert(
            run.clone(),
            Cached {
                current,
                seq,
                at: started,
            },
        );
        bound(&mut map);
    }

    /// Forgets the run's state: it was deleted, or a write found the copy stale.
    pub fn forget(&self, run: &RunId) {
        self.set(run, None, 0, Instant::now());
    }

    fn set(&self, run: &RunId, current: Option<Current>, seq: u64, at: Instant) {
        let mut map = self.map();
        map.insert(run.clone(), Cached { current, seq, at });
        bound(&mut map);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Drops the quarter of `map` confirmed longest ago once it holds more than [`MAX_KEPT`] runs
/// (a quarter at a time, so that the sort is paid once per thousand insertions).
fn bound(map: &mut HashMap<RunId, Cached>) {
    if map.len() <= MAX_KEPT {
        return;
    }
    let mut ats: Vec<Instant> = map.values().map(|c| c.at).collect();
    ats.sort_unstable();
    let cutoff = ats[ats.len() / 4];
    map.retain(|_, c| c.at > cutoff);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current(tag: &str) -> Current {
        let mut m = crate::runs::manifest::tests::sample();
        m.tags.clear();
        Arc::new(State::stored(m, Bytes::from(tag.to_string())))
    }

    #[test]
    fn a_read_that_raced_a_commit_does_not_undo_it() {
        let cache = ManifestCache::new(Duration::from_secs(60), true);
        let run = RunId::parse("run id", "prod_001").unwrap();
        let read_started = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        cache.committed(&run, current("committed"), 2);
        // The read's GET began before the commit and returns the older manifest.
        cache.read(&run, Some(current("older")), 1, read_started);
        assert_eq!(cache.fresh(&run).unwrap().json(), "committed");
        assert_eq!(cache.for_update(&run).unwrap().1, 2);
        // A read that began after the commit replaces it.
        cache.read(&run, Some(current("newer")), 3, Instant::now());
        assert_eq!(cache.fresh(&run).unwrap().json(), "newer");
        // A delete is not undone by a read that began before it either.
        let read_started = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        cache.forget(&run);
        cache.read(&run, Some(current("older")), 1, read_started);
        assert!(cache.fresh(&run).is_none());
    }

    #[test]
    fn at_most_max_kept_runs_are_kept_the_oldest_go_first() {
        let cache = ManifestCache::new(Duration::from_secs(60), true);
        let run = |i: usize| RunId::parse("run id", &format!("r{i}")).unwrap();
        for i in 0..=MAX_KEPT {
            cache.read(&run(i), Some(current("x")), 0, Instant::now());
        }
        assert!(cache.map().len() <= MAX_KEPT);
        assert!(cache.fresh(&run(0)).is_none(), "the oldest went first");
        assert!(cache.fresh(&run(MAX_KEPT)).is_some(), "the newest stays");
    }

    #[test]
    fn a_commit_applies_in_place_and_only_after_the_entry_it_follows() {
        let cache = ManifestCache::new(Duration::from_secs(60), true);
        let run = RunId::parse("run id", "prod_001").unwrap();
        cache.committed(&run, current("base"), 4);
        let path = crate::ids::RelPath::parse("outputs/new.bin").unwrap();
        let mut changes = crate::runs::change::ChangeSet::default();
        let file = current("x").0.files.values().next().unwrap().clone();
        changes.put_file(path.clone(), file);
        let entry = |seq| LogEntry {
            seq,
            at: chrono::Utc::now(),
            writer: "test".into(),
            changes: changes.clone(),
        };
        assert!(cache.apply(&run, &entry(6)).is_none(), "entry 5 is missing");
        let after = cache.apply(&run, &entry(5)).expect("follows 4");
        assert!(after.0.files.contains_key(&path));
        assert!(
            String::from_utf8_lossy(&after.json()).contains("outputs/new.bin"),
            "the shown manifest is the state"
        );
        assert_eq!(cache.for_update(&run).unwrap().1, 5);
    }
}
