//! Moving and removing: `rename` within a run and between runs, and `unlink`. Each is a
//! manifest change made before the call returns (no data is copied or deleted: gc collects
//! what no run references), and carries along the files being written and the directories
//! under what moved.

use std::sync::Arc;

use super::changes::{join, run_dir};
use super::spool::{Target, WriteFile};
use super::{Tree, lock};
use crate::error::{Error, Result};
use crate::ids::{RelPath, RunId};
use crate::runs::change::ChangeSet;
use crate::runs::manifest::{DirEntry, FileEntry, LinkEntry, Manifest, Role, parent_dir};

impl Tree {
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
        if m.0.files.contains_key(&path) || m.0.links.contains_key(&path) {
            self.remove_entries(&run, |p| p == &path).await?;
            found = true;
        } else if self.is_dir_in(&run, &m.0, path.as_str()) {
            return Err(Error::IsDirectory(format!("{}/{name}", node.path)));
        }
        self.forget_file(&run, &path);
        if !found {
            return Err(Error::NoSuchPath(format!("{}/{name}", node.path)));
        }
        Ok(())
    }

    /// Stops the file open for writing at `path` from ever being recorded (it was removed or
    /// replaced); its handles keep working on the spool.
    pub(super) async fn detach(&self, run: &RunId, path: &RelPath) -> Option<Arc<WriteFile>> {
        let file = lock(&self.pending.writes).remove(&Target {
            run: run.clone(),
            path: path.clone(),
        })?;
        file.state.lock().await.detached = true;
        Some(file)
    }

    /// Removes the run's entries whose path matches, and the markers of data it no longer uses.
    pub(super) async fn remove_entries(
        &self,
        run: &RunId,
        matches: impl Fn(&RelPath) -> bool,
    ) -> Result<()> {
        self.runs.remove_files(run, matches).await?;
        Ok(())
    }

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
        let to_is_file = to_m.0.files.contains_key(&to)
            || to_m.0.links.contains_key(&to)
            || self.writing(&to_run, &to).is_some();
        if no_replace && (to_is_dir || to_is_file) {
            return Err(Error::Exists(shown));
        }
        let is_file = from_m.0.files.contains_key(&from)
            || from_m.0.links.contains_key(&from)
            || self.writing(&from_run, &from).is_some();
        if is_file {
            if to_is_dir {
                return Err(Error::IsDirectory(shown));
            }
            let parents = [parent_dir(from.as_str()), parent_dir(to.as_str())];
            self.move_paths(
                &from_run,
                &to_run,
                &|p: &RelPath| (p == &from).then(|| to.clone()),
                parents,
            )
            .await?;
            self.rekey(
                (&from_run, from.as_str()),
                (&to_run, to.as_str()),
                &to_node,
                &to_prefix,
                false,
            );
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
            // The directory itself (its entry in `dirs`) and everything under it.
            let moved = |p: &RelPath| {
                if p == &from {
                    return Some(to.clone());
                }
                p.as_str()
                    .strip_prefix(&old)
                    .and_then(|rest| RelPath::parse(&format!("{new}{rest}")).ok())
            };
            let parents = [parent_dir(from.as_str()), parent_dir(to.as_str())];
            self.move_paths(&from_run, &to_run, &moved, parents).await?;
            self.rekey(
                (&from_run, from.as_str()),
                (&to_run, to.as_str()),
                &to_node,
                &to_prefix,
                true,
            );
            Ok(())
        } else {
            Err(Error::NoSuchPath(format!("{}/{name}", from_node.path)))
        }
    }

    /// Moves every path of `from_run` that `moved` maps to a new path into `to_run`: files open
    /// for writing are retargeted, committed entries (files, links, directories) moved in the
    /// manifest(s). `parents` are the directory the move leaves and the one it enters, whose
    /// times change.
    pub(super) async fn move_paths(
        &self,
        from_run: &RunId,
        to_run: &RunId,
        moved: &(dyn Fn(&RelPath) -> Option<RelPath> + Sync),
        parents: [&str; 2],
    ) -> Result<()> {
        // Open files first: each is locked so no commit records it under its old path.
        let open: Vec<(Target, Arc<WriteFile>)> = lock(&self.pending.writes)
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
        let links: Vec<(RelPath, RelPath, LinkEntry)> =
            m.0.links
                .iter()
                .filter_map(|(p, l)| moved(p).map(|to| (p.clone(), to, l.clone())))
                .collect();
        let dirs: Vec<(String, String, DirEntry)> =
            m.0.dirs
                .iter()
                .filter_map(|(d, e)| {
                    let to = moved(&RelPath::parse(d).ok()?)?;
                    Some((d.clone(), to.as_str().to_string(), e.clone()))
                })
                .collect();
        for (_, to, _) in &entries {
            if let Some(replaced) = self.writing(to_run, to) {
                // Replaced while being written: the rename wins, as on any filesystem.
                lock(&self.pending.writes).remove(&replaced.target());
                if !open.iter().any(|(_, f)| Arc::ptr_eq(f, &replaced)) {
                    replaced.state.lock().await.detached = true;
                }
            }
        }
        let now = crate::time::now();
        // Takes the moved entries out of the run they leave.
        let take_out = |m: &Manifest, c: &mut ChangeSet| {
            for (from, _, _) in &entries {
                c.remove(from.clone());
            }
            for (from, _, _) in &links {
                c.remove(from.clone());
            }
            for (from, _, _) in &dirs {
                c.remove_dir(from);
            }
            c.dir_changed(m, parents[0], now);
        };
        // Puts the moved links and directories at their new paths, replacing what was there.
        let put_links_and_dirs = |m: &Manifest, c: &mut ChangeSet| {
            for (_, to, l) in &links {
                let link = LinkEntry {
                    ctime: Some(now),
                    ..l.clone()
                };
                c.put_link(to.clone(), link);
            }
            for (_, to, d) in &dirs {
                let dir = DirEntry {
                    ctime: Some(now),
                    ..d.clone()
                };
                c.put_dir(to, dir);
            }
            c.dir_changed(m, parents[1], now);
        };
        let moved_entry = |to: &RelPath, e: &FileEntry| FileEntry {
            role: Role::of(to),
            ctime: Some(now),
            ..e.clone()
        };
        if !entries.is_empty() || !links.is_empty() || !dirs.is_empty() {
            if from_run == to_run {
                self.runs
                    .update(from_run, |m| {
                        let mut c = ChangeSet::default();
                        take_out(m, &mut c);
                        for (_, to, e) in &entries {
                            c.put_file(to.clone(), moved_entry(to, e));
                        }
                        put_links_and_dirs(m, &mut c);
                        Ok(c)
                    })
                    .await?;
            } else {
                // Into the new run first, out of the old one after: a crash in between leaves
                // the file in both, never in neither.
                for (_, to, e) in &entries {
                    self.runs.record(to_run, to, moved_entry(to, e)).await?;
                }
                self.runs
                    .update(to_run, |m| {
                        let mut c = ChangeSet::default();
                        put_links_and_dirs(m, &mut c);
                        Ok(c)
                    })
                    .await?;
                self.runs
                    .update(from_run, |m| {
                        let mut c = ChangeSet::default();
                        take_out(m, &mut c);
                        Ok(c)
                    })
                    .await?;
            }
        }
        {
            let mut writes = lock(&self.pending.writes);
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
}
