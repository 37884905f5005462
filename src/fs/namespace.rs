//! What the tree holds: listing a directory and looking up a name, for every kind of node
//! (docs/MOUNT.md). Listings come from `cas` and `runs` (which keep them for the refresh
//! interval), run directories from the run's manifest plus what exists on this mount only.
//! A listed view reads its runs' manifests ahead, so that `ls -l` finds them in the cache.

use futures::StreamExt;

use super::{Attr, DirEntry, Kind, Node, Tree, file_type, lock};
use crate::cas::Described;
use crate::error::{Error, Result};
use crate::ids::{Digest, Name, RelPath, RunId};
use crate::runs::Current;
use crate::runs::manifest::{Manifest, RunType, StorageMode};

/// Manifests read at once when a view is listed.
pub(super) const PREFETCH_CONCURRENCY: usize = 32;

/// Runs in a listed view from which reading them ahead also lists `manifests/` (one LIST
/// page for every 1,000 runs in the store) to save a HEAD for each run without a log.
const LIST_LOGS_FROM: usize = 256;

impl Tree {
    /// The run's manifest, as `runs` keeps it for the refresh time; `None` if the run does not
    /// exist or its manifest is unreadable.
    pub async fn manifest(&self, run: &RunId) -> Result<Option<Current>> {
        self.runs.current(run).await
    }

    /// The object's metadata, as `cas` keeps it; `None` if not stored or unreadable.
    pub async fn metadata(&self, h: &Digest) -> Result<Option<Described>> {
        self.data().described(h).await
    }

    /// The children of a node, as (name, kind) pairs.
    pub(super) async fn list(&self, node: &Node) -> Result<Vec<(String, Kind)>> {
        let mut out = Vec::new();
        match &node.kind {
            Kind::Root => {
                out.push(("data".into(), Kind::DataRoot));
                out.push(("runs".into(), Kind::RunsRoot));
                out.push(("manifests".into(), Kind::ManifestsRoot));
            }
            Kind::DataRoot => {
                for fan in self.data().fanouts().await? {
                    out.push((fan.clone(), Kind::DataFanout(fan)));
                }
            }
            Kind::DataFanout(fan) => {
                for h in self.data().objects_in(fan).await? {
                    out.push((h.to_string(), Kind::DataObject(h)));
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
                for run in self.data().used_by(h).await? {
                    if let Ok(run) = Name::parse("run id", &run) {
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
                for run in self.runs.runs_in_view(StorageMode::Flat, None).await? {
                    out.push((run.to_string(), Kind::RunDir(run)));
                }
            }
            Kind::ViewRoot(mode) => {
                for key in self.runs.view_keys(*mode).await? {
                    out.push((key.clone(), Kind::ViewKey(*mode, key)));
                }
                // Keys made with mkdir, every run type, and today: where mkdir can make a run.
                let mut made: Vec<String> = lock(&self.pending.keys)
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
                for run in self.runs.runs_in_view(*mode, Some(key)).await? {
                    out.push((run.to_string(), Kind::RunDir(run)));
                }
            }
            Kind::RunDir(run) => out = self.run_children(run, "").await?,
            Kind::RunSubdir(run, prefix) => out = self.run_children(run, prefix).await?,
            Kind::ManifestsRoot => {
                for run in self.runs.run_ids().await? {
                    out.push((format!("{run}.json"), Kind::ManifestFile(run)));
                }
            }
            Kind::DataFile(_)
            | Kind::MetadataFile(_)
            | Kind::UsedByLink(..)
            | Kind::RunFile(..)
            | Kind::RunLink(..)
            | Kind::ManifestFile(_) => {
                return Err(Error::NotDirectory(node.path.clone()));
            }
        }
        Ok(out)
    }

    /// As of when directory `ino`'s listing and attributes show the store: when what they are
    /// made from (a run's state, a listing of the store) was read. `None`: read as they are
    /// made, or fixed. Another node's change shows within `--refresh` of that moment, so
    /// whoever keeps them (the kernel) keeps them for `--refresh` from then, not from when
    /// they were made.
    pub fn as_of(&self, ino: u64) -> Option<std::time::Instant> {
        let node = self.node(ino).ok()?;
        match &node.kind {
            Kind::RunDir(run) | Kind::RunSubdir(run, _) => self.runs.state_read_at(run),
            Kind::ViewRoot(mode) => self.runs.view_listed_at(*mode, None),
            Kind::ViewKey(mode, key) => self.runs.view_listed_at(*mode, Some(key)),
            Kind::DataRoot => self.data().listed_at(None),
            Kind::DataFanout(fan) => self.data().listed_at(Some(fan)),
            _ => None,
        }
    }

    /// The files and directories directly under `prefix` in a run (`""` for the run itself).
    pub(super) async fn run_children(
        &self,
        run: &RunId,
        prefix: &str,
    ) -> Result<Vec<(String, Kind)>> {
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
        let writing: Vec<RelPath> = lock(&self.pending.writes)
            .keys()
            .filter(|t| &t.run == run)
            .map(|t| t.path.clone())
            .collect();
        let dirs: Vec<String> =
            m.0.dirs
                .keys()
                .filter(|d| !d.is_empty())
                .map(|d| format!("{d}/"))
                .collect();
        let files =
            m.0.files
                .keys()
                .chain(m.0.links.keys())
                .chain(writing.iter());
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
                        let kind = if m.0.links.contains_key(&p) {
                            Kind::RunLink(run.clone(), p)
                        } else {
                            Kind::RunFile(run.clone(), p)
                        };
                        out.push((rest.to_string(), kind));
                    }
                }
            }
        }
        Ok(out)
    }

    /// The child `name` of the run's directory `prefix`, if there is one.
    pub(super) async fn run_child(
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
        if m.0.links.contains_key(&path) {
            return Ok(Some((name.to_string(), Kind::RunLink(run.clone(), path))));
        }
        let is_dir = self.is_dir_in(run, &m.0, &rel);
        Ok(is_dir.then(|| (name.to_string(), Kind::RunSubdir(run.clone(), rel))))
    }

    /// Whether `path` is a directory in the run: `inputs`/`outputs`, one in its manifest
    /// (made with `mkdir`, or implied by a file under it), or implied by a file being written
    /// under it on this mount.
    pub(super) fn is_dir_in(&self, run: &RunId, m: &Manifest, path: &str) -> bool {
        let under = format!("{path}/");
        m.is_dir(path)
            || lock(&self.pending.writes)
                .keys()
                .any(|t| &t.run == run && t.path.as_str().starts_with(&under))
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
    ///
    /// A view of [`LIST_LOGS_FROM`] runs or more also lists `manifests/` once, beside the
    /// reads: each run that listing shows without a log is then read with one GET, where a
    /// run read alone costs a GET and a HEAD that asks for a log entry. Runs read before the
    /// listing arrives are read alone; the listing is kept for the refresh interval, for every
    /// view listed in it.
    pub(super) fn prefetch_manifests(&self, ids: impl Iterator<Item = RunId>) {
        let ids: Vec<RunId> = ids.collect();
        if ids.is_empty() {
            return;
        }
        let runs = self.runs.clone();
        let logs = std::sync::Arc::new(tokio::sync::OnceCell::new());
        if ids.len() >= LIST_LOGS_FROM {
            let (runs, logs) = (runs.clone(), logs.clone());
            tokio::spawn(async move {
                match runs.logs_listed().await {
                    Ok(Some(l)) => {
                        let _ = logs.set(l);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "could not list manifests/ to read runs ahead")
                    }
                }
            });
        }
        tokio::spawn(async move {
            futures::stream::iter(ids)
                .for_each_concurrent(PREFETCH_CONCURRENCY, |run| {
                    let (runs, logs) = (runs.clone(), logs.clone());
                    async move {
                        if let Err(e) = runs.current_listed(&run, logs.get()).await {
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
            // The directories that can hold thousands of names are searched for the one name,
            // not listed: `ls -l` of a view of n runs would otherwise cost n² (the listing is
            // kept, but was built whole for every name).
            Kind::ViewKey(..) | Kind::ViewRoot(StorageMode::Flat) => {
                let (mode, key) = match &node.kind {
                    Kind::ViewKey(mode, key) => (*mode, Some(key.as_str())),
                    _ => (StorageMode::Flat, None),
                };
                match self.runs.view_lists(mode, key, name).await? {
                    // Only where the run's manifest says it belongs: a stale pointer is not
                    // followed.
                    Some(run) if self.runs.in_view(&run, mode, key).await? => {
                        Some((name.to_string(), Kind::RunDir(run)))
                    }
                    _ => None,
                }
            }
            Kind::DataFanout(fan) => self
                .data()
                .lists_object(fan, name)
                .await?
                .map(|h| (name.to_string(), Kind::DataObject(h))),
            // A dataset used by thousands of runs has as many markers: asked for, not listed.
            Kind::UsedByDir(h) => match Name::parse("run id", name) {
                Ok(run) if self.data().is_used_by(h, &run).await? => {
                    Some((name.to_string(), Kind::UsedByLink(*h, run)))
                }
                _ => None,
            },
            // A manifest is there when its run is: read, not listed (`attr_of` reads it anyway).
            Kind::ManifestsRoot => {
                match name.strip_suffix(".json").map(|r| Name::parse("run id", r)) {
                    Some(Ok(run)) if self.runs.current(&run).await?.is_some() => {
                        Some((name.to_string(), Kind::ManifestFile(run)))
                    }
                    _ => None,
                }
            }
            _ => self.list(&node).await?.into_iter().find(|(n, _)| n == name),
        };
        match found {
            Some((name, kind)) => {
                let child = self.intern(&node, &name, kind);
                self.attr_of(&child).await
            }
            // A project or model with no run is not there until `mkdir` makes it, as on any
            // filesystem: were every name found, `mkdir by_project/new` would fail with
            // `EEXIST` (the kernel looks the name up first) and `test -d` would hold for any
            // typo (docs/SEMANTICS.md, "Key directories").
            None => Ok(None),
        }
    }
}
