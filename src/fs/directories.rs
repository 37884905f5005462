//! Directories: `mkdir` of a view key, of a run (which creates it, with the fields its view
//! sets) and of a directory inside a run, and `rmdir` (of an empty run: the run is deleted).
//! A directory made in a run is an entry of its manifest's `dirs` (mode, owner, times), so it
//! is there on every node, empty or not; one that only its files' paths imply shows defaults.

use chrono::Utc;

use super::changes::{join, run_dir};
use super::{Attr, Kind, Node, Owner, Tree, lock};
use crate::error::{Error, Result};
use crate::ids::{Name, RunId};
use crate::runs::RunSpec;
use crate::runs::change::ChangeSet;
use crate::runs::manifest::{DirEntry, Manifest, RunType, StorageMode};

/// The run fields a view key sets, checked as `mkdir` would use it.
pub(super) fn parse_key(mode: StorageMode, key: &str) -> Result<()> {
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
    /// `mkdir name` in directory `parent` with `mode` (the caller's umask applied), made by
    /// `owner`.
    pub async fn mkdir(&self, parent: u64, name: &str, mode: u32, owner: Owner) -> Result<Attr> {
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
                lock(&self.pending.keys).insert((mode, name.to_string()));
                let child = self.intern(&node, name, Kind::ViewKey(mode, name.to_string()));
                self.attr_or_gone(&child).await
            }
            Kind::ViewKey(mode, key) => self.make_run(&node, name, mode, Some(&key)).await,
            Kind::RunDir(_) | Kind::RunSubdir(..) => {
                let Some((run, prefix)) = run_dir(&node) else {
                    return Err(Self::not_here(&node));
                };
                let path = join(&prefix, name)?;
                let shown = format!("{}/{name}", node.path);
                let m = self.require_manifest(&run).await?;
                if self.writing(&run, &path).is_some() || self.is_dir_in(&run, &m.0, path.as_str())
                {
                    return Err(Error::Exists(shown));
                }
                self.runs
                    .update(&run, |m| {
                        if m.files.contains_key(&path)
                            || m.links.contains_key(&path)
                            || m.is_dir(path.as_str())
                        {
                            return Err(Error::Exists(shown.clone()));
                        }
                        let now = crate::time::now();
                        let dir = DirEntry::new(mode & 0o7777, now, owner.uid, owner.gid);
                        let mut c = ChangeSet::default();
                        c.put_dir(path.as_str(), dir);
                        c.parent_changed(m, path.as_str(), now);
                        Ok(c)
                    })
                    .await?;
                let child =
                    self.intern(&node, name, Kind::RunSubdir(run, path.as_str().to_string()));
                self.attr_or_gone(&child).await
            }
            _ => Err(Self::not_here(&node)),
        }
    }

    /// `mkdir` of a run in view `mode` (under `key`): the view sets its field, the defaults
    /// the rest. Default views that need a field the run does not have are left out.
    pub(super) async fn make_run(
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
        if let Some(key) = key {
            lock(&self.pending.keys).remove(&(mode, key.to_string()));
        }
        let child = self.intern(node, name, Kind::RunDir(run_id));
        self.attr_or_gone(&child).await
    }

    /// Whether directory `dir` of a run holds anything: a recorded file, link or directory,
    /// or a file being written on this mount.
    pub(super) fn has_entries(&self, run: &RunId, m: &Manifest, dir: &str) -> bool {
        let under = format!("{dir}/");
        m.has_entries_under(dir)
            || lock(&self.pending.writes)
                .keys()
                .any(|t| &t.run == run && t.path.as_str().starts_with(&under))
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
                self.runs
                    .update(&run, |m| {
                        if m.has_entries_under(&dir) {
                            return Err(Error::NotEmpty(shown.clone()));
                        }
                        let mut c = ChangeSet::default();
                        c.remove_dir(&dir);
                        c.parent_changed(m, &dir, crate::time::now());
                        Ok(c)
                    })
                    .await?;
                Ok(())
            }
            Kind::RunDir(run) => {
                let m = self.require_manifest(&run).await?;
                // `inputs` and `outputs` are always there: only what else is there counts.
                let busy = !m.0.files.is_empty()
                    || !m.0.links.is_empty()
                    || m.0
                        .dirs
                        .keys()
                        .any(|d| !matches!(d.as_str(), "" | "inputs" | "outputs"))
                    || lock(&self.pending.writes).keys().any(|t| t.run == run);
                if busy {
                    return Err(Error::NotEmpty(shown));
                }
                self.runs.delete(&run).await?;
                tracing::info!(%run, "run deleted (its data stays until gc)");
                Ok(())
            }
            Kind::ViewKey(mode, key) => {
                let child = self.intern(&node, name, Kind::ViewKey(mode, key.clone()));
                if !self.list(&child).await?.is_empty() {
                    return Err(Error::NotEmpty(shown));
                }
                lock(&self.pending.keys).remove(&(mode, key));
                Ok(())
            }
            Kind::RunFile(..) | Kind::RunLink(..) => Err(Error::NotDirectory(shown)),
            _ => Err(Self::not_here(&node)),
        }
    }
}
