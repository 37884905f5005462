//! Changing the tree (docs/SEMANTICS.md): making runs
//! and directories, writing files, renaming, linking and removing. Plain async Rust, like the
//! rest of the core; the FUSE adapter only decodes and replies.
//!
//! The rules this module keeps:
//! - A file's bytes reach the store only at commit (`close()`, `fsync()`, the last release):
//!   hash, upload unless present, `used_by` marker, then the manifest entry, in that order
//!   (see [`crate::runs`]). A commit that fails leaves the spool dirty, so the error is
//!   reported and a later `close()` or `fsync()` tries again.
//! - Everything else (`mkdir` of a run, `rename`, `unlink`, `rmdir` of a run, `link`,
//!   `chmod`, `utimens`) is a manifest change, made before the call returns, and visible on
//!   this mount at once: the manifest cache is updated with what was committed.
//! - Directories are implied by the paths of a run's files. An empty directory made with
//!   `mkdir` lives in this mount's memory until a file is written under it.
//! - Nothing here writes under `data/` or `manifests/`: those fail with `EROFS`.

use std::io::{Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};

use super::spool::{State, Target, WriteFile};
use super::{Attr, Kind, Node, Tree, lock};
use crate::cas::metadata::ObjectMetadata;
use crate::error::{Error, Result};
use crate::ids::{Digest, Name, RelPath, RunId};
use crate::runs::manifest::{FileEntry, Manifest, Role, RunType, StorageMode};
use crate::runs::{Current, RunSpec};

/// A directory inside a run: the run and the directory's path in it (`""` for the run).
fn run_dir(node: &Node) -> Option<(RunId, String)> {
    match &node.kind {
        Kind::RunDir(run) => Some((run.clone(), String::new())),
        Kind::RunSubdir(run, prefix) => Some((run.clone(), prefix.clone())),
        _ => None,
    }
}

fn join(prefix: &str, name: &str) -> Result<RelPath> {
    let path = if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    };
    Ok(RelPath::parse(&path)?)
}

fn noop() -> crate::cas::Progress {
    Arc::new(|_| {})
}

/// The run fields a view key sets, checked as `mkdir` would use it.
fn parse_key(mode: StorageMode, key: &str) -> Result<()> {
    match mode {
        StorageMode::ByProject | StorageMode::ByModel => {
            Name::parse("key", key)?;
        }
        StorageMode::ByType => {
            key.parse::<RunType>()
                .map_err(|e| Error::BadRequest(e.to_string()))?;
        }
        StorageMode::ByDate => {
            let today = Utc::now().format("%Y-%m-%d").to_string();
            if key != today {
                return Err(Error::BadRequest(format!(
                    "runs/by_date/{key}: a run made with mkdir is dated today ({today}); \
                     use `mltrack run create` for other runs"
                )));
            }
        }
        StorageMode::Flat => {}
    }
    Ok(())
}

impl Tree {
    /// The file open for writing at `path` of `run` on this mount, if any.
    pub(super) fn writing(&self, run: &RunId, path: &RelPath) -> Option<Arc<WriteFile>> {
        lock(&self.writes)
            .get(&Target {
                run: run.clone(),
                path: path.clone(),
            })
            .cloned()
    }

    fn refuse_read_only(&self, node: &Node) -> Result<()> {
        if self.opts.read_only {
            return Err(Error::ReadOnly(format!(
                "{} (mounted --read-only)",
                node.path
            )));
        }
        Ok(())
    }

    /// The error for a change attempted outside the runs.
    fn not_here(node: &Node) -> Error {
        match &node.kind {
            Kind::Root | Kind::RunsRoot | Kind::ViewRoot(_) | Kind::ViewKey(..) => {
                Error::NotPermitted(format!(
                    "{}: only runs (directories) can be made here, and runs cannot be renamed",
                    if node.path.is_empty() {
                        "/"
                    } else {
                        &node.path
                    }
                ))
            }
            _ => Error::ReadOnly(if node.path.is_empty() {
                "/".into()
            } else {
                node.path.clone()
            }),
        }
    }

    /// Forgets cached view listings, after a run was made or deleted.
    fn forget_views(&self) {
        lock(&self.listings).retain(|prefix, _| !prefix.starts_with(crate::layout::RUNS));
    }

    async fn require_manifest(&self, run: &RunId) -> Result<Current> {
        self.manifest(run)
            .await?
            .ok_or_else(|| Error::RunNotFound(run.clone()))
    }

    async fn attr_or_gone(&self, node: &Node) -> Result<Attr> {
        self.attr_of(node)
            .await?
            .ok_or_else(|| Error::NoSuchPath(node.path.clone()))
    }

    // ---- mkdir ------------------------------------------------------------------------------

    pub async fn mkdir(&self, parent: u64, name: &str) -> Result<Attr> {
        let node = self.node(parent)?;
        self.refuse_read_only(&node)?;
        match node.kind.clone() {
            Kind::ViewRoot(StorageMode::Flat) => {
                self.make_run(&node, name, StorageMode::Flat, None).await
            }
            Kind::ViewRoot(mode) => {
                parse_key(mode, name)?;
                if self.list(&node).await?.iter().any(|(n, _)| n == name) {
                    return Err(Error::Exists(format!("{}/{name}", node.path)));
                }
                lock(&self.keys).insert((mode, name.to_string()));
                let child = self.intern(&node, name, Kind::ViewKey(mode, name.to_string()));
                self.attr_or_gone(&child).await
            }
            Kind::ViewKey(mode, key) => self.make_run(&node, name, mode, Some(&key)).await,
            Kind::RunDir(_) | Kind::RunSubdir(..) => {
                let Some((run, prefix)) = run_dir(&node) else {
                    return Err(Self::not_here(&node));
                };
                let path = join(&prefix, name)?;
                let m = self.require_manifest(&run).await?;
                if m.0.files.contains_key(&path)
                    || self.writing(&run, &path).is_some()
                    || self.is_dir_in(&run, &m.0, path.as_str())
                {
                    return Err(Error::Exists(format!("{}/{name}", node.path)));
                }
                lock(&self.dirs).insert((run.clone(), path.as_str().to_string()));
                let child =
                    self.intern(&node, name, Kind::RunSubdir(run, path.as_str().to_string()));
                self.attr_or_gone(&child).await
            }
            _ => Err(Self::not_here(&node)),
        }
    }

    /// `mkdir` of a run in view `mode` (under `key`): the view sets its field, the defaults
    /// the rest. Default views that need a field the run does not have are left out.
    async fn make_run(
        &self,
        node: &Node,
        name: &str,
        mode: StorageMode,
        key: Option<&str>,
    ) -> Result<Attr> {
        let run_id = Name::parse("run id", name)?;
        let mut spec = RunSpec {
            run_id: run_id.clone(),
            run_type: self.opts.default_run_type,
            project: None,
            model: None,
            storage_modes: vec![mode],
            tags: Default::default(),
        };
        if let Some(key) = key {
            parse_key(mode, key)?;
            match mode {
                StorageMode::ByProject => spec.project = Some(Name::parse("project", key)?),
                StorageMode::ByModel => spec.model = Some(Name::parse("model", key)?),
                StorageMode::ByType => {
                    spec.run_type = key
                        .parse()
                        .map_err(|e: Error| Error::BadRequest(e.to_string()))?
                }
                StorageMode::ByDate | StorageMode::Flat => {}
            }
        }
        for m in &self.opts.default_modes {
            let satisfiable = match m {
                StorageMode::ByProject => spec.project.is_some(),
                StorageMode::ByModel => spec.model.is_some(),
                StorageMode::ByDate | StorageMode::ByType | StorageMode::Flat => true,
            };
            if satisfiable {
                spec.storage_modes.push(*m);
            }
        }
        match self.runs.create(spec).await {
            Ok(m) => m,
            Err(Error::RunExists(r)) => return Err(Error::Exists(format!("run {r}"))),
            Err(e) => return Err(e),
        };
        tracing::info!(run = %run_id, view = %node.path, "run created");
        self.forget_views();
        if let Some(key) = key {
            lock(&self.keys).remove(&(mode, key.to_string()));
        }
        let child = self.intern(node, name, Kind::RunDir(run_id));
        self.attr_or_gone(&child).await
    }

    // ---- files: create, open, write, commit, release ---------------------------------------

    /// `mknod` of a regular file: an empty file, recorded at once (there is no handle whose
    /// close would record it).
    pub async fn mknod_file(&self, parent: u64, name: &str, mode: u32) -> Result<Attr> {
        let (attr, file) = self.create(parent, name, mode).await?;
        let committed = self.commit(&file).await;
        self.release(&file).await;
        committed?;
        self.attr_or_gone(&*self.node(attr.ino)?).await
    }

    /// Creates (or truncates) the file `name` in a run directory and opens it for writing.
    pub async fn create(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
    ) -> Result<(Attr, Arc<WriteFile>)> {
        let node = self.node(parent)?;
        self.refuse_read_only(&node)?;
        let (run, prefix) = run_dir(&node).ok_or_else(|| Self::not_here(&node))?;
        let path = join(&prefix, name)?;
        let m = self.require_manifest(&run).await?;
        if self.is_dir_in(&run, &m.0, path.as_str()) {
            return Err(Error::IsDirectory(format!("{}/{name}", node.path)));
        }
        let file = self
            .open_write(
                Target {
                    run: run.clone(),
                    path: path.clone(),
                },
                mode & 0o7777,
                true,
            )
            .await?;
        let child = self.intern(&node, name, Kind::RunFile(run, path));
        Ok((self.attr_or_gone(&child).await?, file))
    }

    /// Opens the file at inode `ino` for writing (`truncate` for `O_TRUNC`).
    pub async fn open_for_write(&self, ino: u64, truncate: bool) -> Result<Arc<WriteFile>> {
        let node = self.node(ino)?;
        self.refuse_read_only(&node)?;
        let Kind::RunFile(run, path) = &node.kind else {
            return Err(Self::not_here(&node));
        };
        self.open_write(
            Target {
                run: run.clone(),
                path: path.clone(),
            },
            0o644,
            truncate,
        )
        .await
    }

    async fn open_write(
        &self,
        target: Target,
        mode: u32,
        truncate: bool,
    ) -> Result<Arc<WriteFile>> {
        if let Some(file) = self.share_write(&target) {
            if truncate {
                self.truncate(&file, 0).await?;
            }
            return Ok(file);
        }
        let m = self.require_manifest(&target.run).await?;
        let existing = m.0.files.get(&target.path).cloned();
        let reference = match (&existing, truncate) {
            (Some(e), false) => Some(Arc::new(
                self.metadata(&e.hash)
                    .await?
                    .ok_or_else(|| Error::DataNotFound(e.hash.to_string()))?
                    .0
                    .clone(),
            )),
            _ => None,
        };
        let mode = existing.as_ref().map_or(mode, |e| e.mode & 0o7777);
        let file = Arc::new(WriteFile::create(
            &self.opts.spool,
            target.clone(),
            mode,
            reference,
        )?);
        if let Some(e) = &existing {
            file.set_times(|t| t.mtime = (!truncate).then_some(e.mtime));
            file.state.lock().await.committed = Some(e.clone());
        }
        let mut writes = lock(&self.writes);
        // Another open may have made it meanwhile: share theirs.
        if let Some(theirs) = writes.get(&target) {
            theirs.opens.fetch_add(1, Ordering::SeqCst);
            return Ok(theirs.clone());
        }
        writes.insert(target, file.clone());
        Ok(file)
    }

    fn share_write(&self, target: &Target) -> Option<Arc<WriteFile>> {
        let writes = lock(&self.writes);
        let file = writes.get(target)?;
        file.opens.fetch_add(1, Ordering::SeqCst);
        Some(file.clone())
    }

    /// Copies the object a reference stands for into the spool, verified.
    async fn materialize(&self, file: &WriteFile, st: &mut State) -> Result<()> {
        let Some(meta) = st.reference.clone() else {
            return Ok(());
        };
        let mut out = file.file();
        out.seek(SeekFrom::Start(0))
            .map_err(Error::io(file.path()))?;
        out.set_len(0).map_err(Error::io(file.path()))?;
        self.data().export(&meta, &mut out, noop()).await?;
        out.set_len(file.size()).map_err(Error::io(file.path()))?;
        file.materialized_locked(st);
        Ok(())
    }

    pub async fn write(&self, file: &WriteFile, offset: u64, data: &[u8]) -> Result<()> {
        let mut st = file.state.lock().await;
        self.materialize(file, &mut st).await?;
        file.write_locked(&mut st, offset, data)
    }

    pub async fn truncate(&self, file: &WriteFile, size: u64) -> Result<()> {
        let mut st = file.state.lock().await;
        if size == file.size() && !st.dirty {
            return Ok(());
        }
        if size == 0 {
            st.reference = None;
        } else if let Some(m) = st.reference.clone()
            && size < file.size()
        {
            // Still a reference, only shorter: copied and cut at commit.
            file.refer_locked(&mut st, m, size);
            return Ok(());
        } else {
            self.materialize(file, &mut st).await?;
        }
        file.truncate_locked(&mut st, size)
    }

    /// A copy of stored data into a file, from the start, in one or more calls (the kernel
    /// copies at most about 2 GiB per call): recorded as a reference, nothing read or
    /// uploaded. Returns the bytes copied, or `None` when the copy is not of that shape.
    pub async fn copy_object(
        &self,
        file: &WriteFile,
        meta: &Arc<ObjectMetadata>,
        offset_in: u64,
        offset_out: u64,
        len: u64,
    ) -> Result<Option<u64>> {
        let mut st = file.state.lock().await;
        let at = file.size();
        let continues = match &st.reference {
            Some(m) => m.hash == meta.hash,
            None => at == 0,
        };
        if !continues || offset_in != at || offset_out != at || at >= meta.size {
            return Ok(None);
        }
        let end = meta.size.min(at.saturating_add(len));
        file.refer_locked(&mut st, meta.clone(), end);
        Ok(Some(end - at))
    }

    /// Stores the file's bytes and records them in its run. Returns once both are done.
    pub async fn commit(&self, file: &WriteFile) -> Result<()> {
        let mut st = file.state.lock().await;
        if !st.dirty || st.detached {
            return Ok(());
        }
        let result = self.commit_locked(file, &mut st).await;
        st.failed = result.is_err();
        result
    }

    async fn commit_locked(&self, file: &WriteFile, st: &mut State) -> Result<()> {
        let target = file.target();
        if st.reference.as_ref().is_some_and(|m| m.size != file.size()) {
            // Part of an object: its bytes are copied and stored as new data.
            self.materialize(file, st).await?;
        }
        let meta = match &st.reference {
            Some(m) => (**m).clone(),
            None => {
                let name = Name::parse("name", target.path.file_name())?;
                match file.followed_hash(st).await {
                    Some(hash) => {
                        self.data()
                            .put_hashed(file.path(), Some(&name), hash)
                            .await?
                            .meta
                    }
                    None => {
                        self.data()
                            .put_file(file.path(), Some(&name), noop())
                            .await?
                            .meta
                    }
                }
            }
        };
        let times = file.times();
        let entry = FileEntry {
            hash: meta.hash,
            size: meta.size,
            format: meta.format.clone(),
            role: Role::of(&target.path),
            mtime: times.mtime(),
            mode: times.mode,
            added_at: crate::time::now(),
        };
        self.runs
            .record(&target.run, &target.path, entry.clone())
            .await?;
        st.dirty = false;
        st.committed = Some(entry);
        tracing::debug!(run = %target.run, path = %target.path, hash = %meta.hash, "committed");
        Ok(())
    }

    /// One handle of the file is gone; the last one commits what is left (an error can only
    /// be logged here) and hands a clean spool to the cache as the object's cache file.
    pub async fn release(&self, file: &Arc<WriteFile>) {
        if file.opens.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        let target = file.target();
        if file.state.lock().await.failed {
            tracing::warn!(run = %target.run, path = %target.path,
                "discarding a file whose close failed; nothing was recorded");
        } else if let Err(e) = self.commit(file).await {
            tracing::error!(run = %target.run, path = %target.path, error = %e,
                "the last close of a file could not store it; its bytes are lost");
        }
        {
            let mut writes = lock(&self.writes);
            if file.opens.load(Ordering::SeqCst) != 0 {
                return; // opened again meanwhile
            }
            if writes.get(&target).is_some_and(|w| Arc::ptr_eq(w, file)) {
                writes.remove(&target);
            }
        }
        let st = file.state.lock().await;
        // A spool holding exactly what was committed becomes the object's cache file. Its
        // metadata was remembered when it was stored.
        if let (Some(cache), Some(entry), false, None) =
            (&self.cache, &st.committed, st.dirty, &st.reference)
            && entry.size == file.size()
            && let Ok(Some(meta)) = self.metadata(&entry.hash).await
        {
            let cache = cache.clone();
            let file = file.clone();
            let _ =
                tokio::task::spawn_blocking(move || cache.adopt(&meta.0, file.spool_file())).await;
        }
    }

    // ---- attributes -------------------------------------------------------------------------

    /// `chmod`, `truncate`, `utimens` on a node; `file` is the handle's write file, if any.
    pub async fn setattr(
        &self,
        ino: u64,
        file: Option<Arc<WriteFile>>,
        mode: Option<u32>,
        size: Option<u64>,
        mtime: Option<DateTime<Utc>>,
    ) -> Result<Attr> {
        let node = self.node(ino)?;
        let (run, path) = match &node.kind {
            Kind::RunFile(run, path) => (run.clone(), path.clone()),
            // Directories are implied: their mode and times are not kept.
            Kind::RunDir(_) | Kind::RunSubdir(..) | Kind::ViewKey(..) if size.is_none() => {
                return self.attr_or_gone(&node).await;
            }
            _ => return Err(Self::not_here(&node)),
        };
        self.refuse_read_only(&node)?;
        let file = file.or_else(|| self.writing(&run, &path));
        if let Some(size) = size {
            match &file {
                Some(f) => self.truncate(f, size).await?,
                None => {
                    let target = Target {
                        run: run.clone(),
                        path: path.clone(),
                    };
                    let f = self.open_write(target, 0o644, size == 0).await?;
                    let result = self.truncate(&f, size).await;
                    let committed = match result {
                        Ok(()) => self.commit(&f).await,
                        Err(e) => Err(e),
                    };
                    self.release(&f).await;
                    committed?;
                }
            }
        }
        if mode.is_some() || mtime.is_some() {
            let mut record = true;
            if let Some(f) = &file {
                f.set_times(|t| {
                    if let Some(m) = mode {
                        t.mode = m & 0o7777;
                    }
                    if mtime.is_some() {
                        t.mtime = mtime;
                    }
                });
                // A dirty file records its mode and times when it commits.
                record = !f.state.lock().await.dirty;
            }
            if record {
                self.runs
                    .update(&run, |m| match m.files.get_mut(&path) {
                        Some(e) => {
                            if let Some(mode) = mode {
                                e.mode = mode & 0o7777;
                            }
                            if let Some(t) = mtime {
                                e.mtime = t;
                            }
                            Ok(())
                        }
                        None => Err(Error::NoSuchPath(format!("{run}/{path}"))),
                    })
                    .await?;
            }
        }
        self.attr_or_gone(&node).await
    }

    // ---- unlink, rmdir ----------------------------------------------------------------------

    pub async fn unlink(&self, parent: u64, name: &str) -> Result<()> {
        let node = self.node(parent)?;
        self.refuse_read_only(&node)?;
        let (run, prefix) = run_dir(&node).ok_or_else(|| Self::not_here(&node))?;
        let path = join(&prefix, name)?;
        let mut found = false;
        if let Some(file) = self.detach(&run, &path).await {
            drop(file);
            found = true;
        }
        let m = self.require_manifest(&run).await?;
        if m.0.files.contains_key(&path) {
            self.remove_entries(&run, |p| p == &path).await?;
            found = true;
        } else if self.is_dir_in(&run, &m.0, path.as_str()) {
            return Err(Error::IsDirectory(format!("{}/{name}", node.path)));
        }
        lock(&self.inodes)
            .by_file
            .remove(&(run.clone(), path.clone()));
        if !found {
            return Err(Error::NoSuchPath(format!("{}/{name}", node.path)));
        }
        Ok(())
    }

    /// Stops the file open for writing at `path` from ever being recorded (it was removed or
    /// replaced); its handles keep working on the spool.
    async fn detach(&self, run: &RunId, path: &RelPath) -> Option<Arc<WriteFile>> {
        let file = lock(&self.writes).remove(&Target {
            run: run.clone(),
            path: path.clone(),
        })?;
        file.state.lock().await.detached = true;
        Some(file)
    }

    /// Removes the run's entries whose path matches, and the markers of data it no longer uses.
    async fn remove_entries(&self, run: &RunId, matches: impl Fn(&RelPath) -> bool) -> Result<()> {
        self.runs.remove_files(run, matches).await?;
        Ok(())
    }

    /// Whether directory `dir` of a run holds anything: a recorded file, a file being written,
    /// or a directory made with `mkdir` (which lives in memory until a file is put in it).
    fn has_entries(&self, run: &RunId, m: &Manifest, dir: &str) -> bool {
        let under = format!("{dir}/");
        m.files.keys().any(|p| p.as_str().starts_with(&under))
            || lock(&self.writes)
                .keys()
                .any(|t| &t.run == run && t.path.as_str().starts_with(&under))
            || lock(&self.dirs)
                .iter()
                .any(|(r, d)| r == run && d.starts_with(&under))
    }

    pub async fn rmdir(&self, parent: u64, name: &str) -> Result<()> {
        let node = self.node(parent)?;
        self.refuse_read_only(&node)?;
        let found = self.list(&node).await?.into_iter().find(|(n, _)| n == name);
        let Some((_, kind)) = found else {
            return Err(Error::NoSuchPath(format!("{}/{name}", node.path)));
        };
        let shown = format!("{}/{name}", node.path);
        match kind {
            Kind::RunSubdir(run, dir) => {
                let m = self.require_manifest(&run).await?;
                if self.has_entries(&run, &m.0, &dir) {
                    return Err(Error::NotEmpty(shown));
                }
                lock(&self.dirs).remove(&(run, dir));
                Ok(())
            }
            Kind::RunDir(run) => {
                let m = self.require_manifest(&run).await?;
                let busy = !m.0.files.is_empty()
                    || lock(&self.writes).keys().any(|t| t.run == run)
                    || lock(&self.dirs).iter().any(|(r, _)| r == &run);
                if busy {
                    return Err(Error::NotEmpty(shown));
                }
                self.runs.delete(&run).await?;
                tracing::info!(%run, "run deleted (its data stays until gc)");
                self.forget_views();
                Ok(())
            }
            Kind::ViewKey(mode, key) => {
                let child = self.intern(&node, name, Kind::ViewKey(mode, key.clone()));
                if !self.list(&child).await?.is_empty() {
                    return Err(Error::NotEmpty(shown));
                }
                lock(&self.keys).remove(&(mode, key));
                Ok(())
            }
            Kind::RunFile(..) => Err(Error::NotDirectory(shown)),
            _ => Err(Self::not_here(&node)),
        }
    }

    // ---- rename, link -----------------------------------------------------------------------

    /// Moves a file or directory within a run or between runs: a manifest change, no data
    /// copied. Runs themselves cannot be renamed.
    pub async fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        no_replace: bool,
    ) -> Result<()> {
        let from_node = self.node(parent)?;
        let to_node = self.node(new_parent)?;
        self.refuse_read_only(&from_node)?;
        let (from_run, from_prefix) =
            run_dir(&from_node).ok_or_else(|| Self::not_here(&from_node))?;
        let (to_run, to_prefix) = run_dir(&to_node).ok_or_else(|| Self::not_here(&to_node))?;
        let from = join(&from_prefix, name)?;
        let to = join(&to_prefix, new_name)?;
        if from == to && from_run == to_run {
            return Ok(());
        }
        let from_m = self.require_manifest(&from_run).await?;
        let to_m = self.require_manifest(&to_run).await?;
        let shown = format!("{}/{new_name}", to_node.path);
        let to_is_dir = self.is_dir_in(&to_run, &to_m.0, to.as_str());
        let to_is_file = to_m.0.files.contains_key(&to) || self.writing(&to_run, &to).is_some();
        if no_replace && (to_is_dir || to_is_file) {
            return Err(Error::Exists(shown));
        }
        let is_file =
            from_m.0.files.contains_key(&from) || self.writing(&from_run, &from).is_some();
        if is_file {
            if to_is_dir {
                return Err(Error::IsDirectory(shown));
            }
            self.move_paths(&from_run, &to_run, &|p: &RelPath| {
                (p == &from).then(|| to.clone())
            })
            .await?;
            self.rekey(&from_run, &to_run, &to_node, &to_prefix, &|p| {
                (p == from.as_str()).then(|| to.as_str().to_string())
            });
            Ok(())
        } else if self.is_dir_in(&from_run, &from_m.0, from.as_str()) {
            if to_is_file {
                return Err(Error::NotDirectory(shown));
            }
            if from_run == to_run && to.as_str().starts_with(&format!("{from}/")) {
                return Err(Error::BadRequest(format!(
                    "cannot move {}/{name} into itself",
                    from_node.path
                )));
            }
            if to_is_dir && self.has_entries(&to_run, &to_m.0, to.as_str()) {
                return Err(Error::NotEmpty(shown));
            }
            let (old, new) = (format!("{from}/"), format!("{to}/"));
            let moved = |p: &RelPath| {
                p.as_str()
                    .strip_prefix(&old)
                    .and_then(|rest| RelPath::parse(&format!("{new}{rest}")).ok())
            };
            self.move_paths(&from_run, &to_run, &moved).await?;
            let mut dirs = lock(&self.dirs);
            let made: Vec<String> = dirs
                .iter()
                .filter(|(r, d)| r == &from_run && (d == from.as_str() || d.starts_with(&old)))
                .map(|(_, d)| d.clone())
                .collect();
            for d in made {
                dirs.remove(&(from_run.clone(), d.clone()));
                dirs.insert((to_run.clone(), format!("{to}{}", &d[from.as_str().len()..])));
            }
            drop(dirs);
            self.rekey(&from_run, &to_run, &to_node, &to_prefix, &|p| {
                if p == from.as_str() {
                    Some(to.as_str().to_string())
                } else {
                    p.strip_prefix(&old).map(|rest| format!("{new}{rest}"))
                }
            });
            Ok(())
        } else {
            Err(Error::NoSuchPath(format!("{}/{name}", from_node.path)))
        }
    }

    /// Moves every path of `from_run` that `moved` maps to a new path into `to_run`: files open
    /// for writing are retargeted, committed entries moved in the manifest(s).
    async fn move_paths(
        &self,
        from_run: &RunId,
        to_run: &RunId,
        moved: &(dyn Fn(&RelPath) -> Option<RelPath> + Sync),
    ) -> Result<()> {
        // Open files first: each is locked so no commit records it under its old path.
        let open: Vec<(Target, Arc<WriteFile>)> = lock(&self.writes)
            .iter()
            .filter(|(t, _)| &t.run == from_run && moved(&t.path).is_some())
            .map(|(t, f)| (t.clone(), f.clone()))
            .collect();
        let mut guards = Vec::new();
        for (_, f) in &open {
            guards.push(f.state.lock().await);
        }
        let m = self.require_manifest(from_run).await?;
        let entries: Vec<(RelPath, RelPath, FileEntry)> =
            m.0.files
                .iter()
                .filter_map(|(p, e)| moved(p).map(|to| (p.clone(), to, e.clone())))
                .collect();
        for (_, to, _) in &entries {
            if let Some(replaced) = self.writing(to_run, to) {
                // Replaced while being written: the rename wins, as on any filesystem.
                lock(&self.writes).remove(&replaced.target());
                if !open.iter().any(|(_, f)| Arc::ptr_eq(f, &replaced)) {
                    replaced.state.lock().await.detached = true;
                }
            }
        }
        let moved_entries = |m: &mut Manifest| {
            for (from, to, e) in &entries {
                m.files.remove(from);
                let mut e = e.clone();
                e.role = Role::of(to);
                m.files.insert(to.clone(), e);
            }
        };
        if !entries.is_empty() {
            if from_run == to_run {
                self.runs
                    .change_files(from_run, |m| {
                        let replaced: Vec<Digest> = entries
                            .iter()
                            .filter_map(|(_, to, _)| m.files.get(to).map(|e| e.hash))
                            .collect();
                        moved_entries(m);
                        Ok(replaced)
                    })
                    .await?;
            } else {
                // Into the new run first, out of the old one after: a crash in between leaves
                // the file in both, never in neither.
                for (_, to, e) in &entries {
                    let mut e = e.clone();
                    e.role = Role::of(to);
                    self.runs.record(to_run, to, e).await?;
                }
                let gone: std::collections::BTreeSet<RelPath> =
                    entries.iter().map(|(from, _, _)| from.clone()).collect();
                self.remove_entries(from_run, |p| gone.contains(p)).await?;
            }
        }
        {
            let mut writes = lock(&self.writes);
            for (t, f) in &open {
                if let Some(new) = moved(&t.path) {
                    writes.remove(t);
                    let nt = Target {
                        run: to_run.clone(),
                        path: new,
                    };
                    f.set_target(nt.clone());
                    writes.insert(nt, f.clone());
                }
            }
        }
        drop(guards);
        Ok(())
    }

    /// `ln` of stored data (from `data/` or another run) into a run: a reference, nothing
    /// read or uploaded.
    pub async fn link(&self, ino: u64, new_parent: u64, new_name: &str) -> Result<Attr> {
        let source = self.node(ino)?;
        let node = self.node(new_parent)?;
        self.refuse_read_only(&node)?;
        let (run, prefix) = run_dir(&node).ok_or_else(|| Self::not_here(&node))?;
        let path = join(&prefix, new_name)?;
        let (hash, mode, mtime) = match &source.kind {
            Kind::DataFile(h) => (*h, 0o644, crate::time::now()),
            Kind::RunFile(r, p) => {
                let m = self.require_manifest(r).await?;
                let e = m.0.files.get(p).ok_or_else(|| {
                    Error::NotPermitted(format!(
                        "{} has not been closed yet; link it once it is stored",
                        source.path
                    ))
                })?;
                (e.hash, e.mode, e.mtime)
            }
            _ => {
                return Err(Error::NotPermitted(format!(
                    "{}: only stored files can be linked",
                    source.path
                )));
            }
        };
        let m = self.require_manifest(&run).await?;
        if m.0.files.contains_key(&path) || self.writing(&run, &path).is_some() {
            return Err(Error::Exists(format!("{}/{new_name}", node.path)));
        }
        let meta = self
            .metadata(&hash)
            .await?
            .ok_or_else(|| Error::DataNotFound(hash.to_string()))?;
        let entry = FileEntry {
            hash,
            size: meta.0.size,
            format: meta.0.format.clone(),
            role: Role::of(&path),
            mtime,
            mode,
            added_at: crate::time::now(),
        };
        self.runs.record(&run, &path, entry).await?;
        let child = self.intern(&node, new_name, Kind::RunFile(run, path));
        self.attr_or_gone(&child).await
    }
}
