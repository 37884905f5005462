//! What `stat`, `readlink`, `getxattr` and `setattr` see and change: sizes, modes, owners and
//! times from manifest entries (files, links, directories) and object metadata, mltrack's
//! computed `user.mltrack.*` attributes, and `chmod`/`chown`/`touch`/`truncate`/`setxattr` as
//! manifest changes (docs/SEMANTICS.md).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::changes::run_dir;
use super::spool::{Target, WriteFile};
use super::{Attr, FileType, IMMUTABLE_TTL, Kind, Node, Tree, shown_mode};
use crate::error::{Error, Result};
use crate::ids::{Digest, RelPath, RunId};
use crate::runs::change::ChangeSet;
use crate::runs::manifest::{DEFAULT_DIR_MODE, StorageMode};
use crate::runs::xattrs;

impl Tree {
    pub async fn getattr(&self, ino: u64) -> Result<Option<Attr>> {
        let node = self.node(ino)?;
        self.attr_of(&node).await
    }

    pub(super) async fn attr_of(&self, node: &Node) -> Result<Option<Attr>> {
        let dir = |ttl| Attr {
            ino: node.ino,
            kind: FileType::Directory,
            size: 0,
            mtime: self.mounted_at,
            perm: 0o555,
            links: 2,
            ctime: None,
            uid: None,
            gid: None,
            ttl,
        };
        let file = |size, mtime, perm, ttl| Attr {
            ino: node.ino,
            kind: FileType::File,
            size,
            mtime,
            perm,
            links: 1,
            ctime: None,
            uid: None,
            gid: None,
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
                links: 1,
                ctime: None,
                uid: None,
                gid: None,
                ttl: self.refresh,
            },
            Kind::RunDir(run) | Kind::RunSubdir(run, _) => {
                let Some(m) = self.manifest(run).await? else {
                    return Ok(None);
                };
                let path = match &node.kind {
                    Kind::RunSubdir(_, p) => p.as_str(),
                    _ => "",
                };
                let writable = if self.opts.read_only { 0o555 } else { 0o777 };
                match m.0.dirs.get(path) {
                    Some(d) => Attr {
                        mtime: d.mtime.into(),
                        ctime: d.ctime.map(Into::into),
                        perm: shown_mode(d.mode) & writable,
                        uid: d.uid,
                        gid: d.gid,
                        ..dir(self.refresh)
                    },
                    // Implied by its files' paths: the defaults, and the run's last change.
                    None => Attr {
                        mtime: m.0.updated_at.into(),
                        perm: shown_mode(DEFAULT_DIR_MODE) & writable,
                        ..dir(self.refresh)
                    },
                }
            }
            Kind::RunLink(run, path) => {
                let Some(m) = self.manifest(run).await? else {
                    return Ok(None);
                };
                let links = m.0.storage_modes.len().max(1) as u32;
                match m.0.links.get(path) {
                    Some(l) => Attr {
                        ino: node.ino,
                        kind: FileType::Symlink,
                        size: l.target.len() as u64,
                        mtime: l.mtime.into(),
                        perm: 0o777,
                        links,
                        ctime: l.ctime.map(Into::into),
                        uid: l.uid,
                        gid: l.gid,
                        ttl: self.refresh,
                    },
                    None => return Ok(None),
                }
            }
            Kind::RunFile(run, path) => {
                let m = self.manifest(run).await?;
                let links = m
                    .as_ref()
                    .map_or(1, |m| m.0.storage_modes.len().max(1) as u32);
                if let Some(w) = self.writing(run, path) {
                    let t = w.times();
                    return Ok(Some(Attr {
                        links,
                        ctime: Some(t.changed.into()),
                        uid: t.uid,
                        gid: t.gid,
                        ..file(
                            w.size(),
                            t.mtime().into(),
                            shown_mode(t.mode),
                            Duration::ZERO,
                        )
                    }));
                }
                match m.and_then(|m| m.0.files.get(path).cloned()) {
                    Some(e) => Attr {
                        links,
                        ctime: e.ctime.map(Into::into),
                        uid: e.uid,
                        gid: e.gid,
                        ..file(e.size, e.mtime.into(), shown_mode(e.mode), self.refresh)
                    },
                    None => return Ok(None),
                }
            }
            Kind::ManifestFile(run) => match self.manifest(run).await? {
                Some(m) => file(
                    m.json().len() as u64,
                    m.0.updated_at.into(),
                    0o444,
                    self.refresh,
                ),
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

    /// The target of a symbolic link: a run's link as it was written; a `used_by` link's, the
    /// run's directory in its first view, relative to the link (`data/<hh>/<h>/used_by/<run>`
    /// is four levels deep).
    pub(super) async fn readlink_of(&self, node: &Node) -> Result<String> {
        if let Kind::RunLink(run, path) = &node.kind {
            return self
                .manifest(run)
                .await?
                .and_then(|m| m.0.links.get(path).map(|l| l.target.clone()))
                .ok_or_else(|| Error::NoSuchPath(node.path.clone()));
        }
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
            Kind::RunFile(run, path) => {
                let entry = self
                    .manifest(run)
                    .await?
                    .and_then(|m| m.0.files.get(path).cloned());
                match (entry, self.writing(run, path)) {
                    // Being written: its bytes have no hash yet; its attributes are the file's.
                    (_, Some(w)) => decoded(&w.xattrs()),
                    (Some(e), None) => {
                        let mut attrs = decoded(&e.xattrs);
                        attrs.extend(file_attrs(&e.hash, e.size, e.format.as_str()));
                        attrs
                    }
                    (None, None) => vec![],
                }
            }
            Kind::RunDir(run) => match self.manifest(run).await? {
                Some(m) => {
                    let mut attrs =
                        m.0.dirs
                            .get("")
                            .map(|d| decoded(&d.xattrs))
                            .unwrap_or_default();
                    attrs.push((
                        "user.mltrack.run_id".to_string(),
                        run.as_str().as_bytes().to_vec(),
                    ));
                    attrs.push((
                        "user.mltrack.run_type".to_string(),
                        m.0.run_type.as_str().as_bytes().to_vec(),
                    ));
                    attrs
                }
                None => vec![],
            },
            Kind::RunSubdir(run, dir) => match self.manifest(run).await? {
                Some(m) => {
                    m.0.dirs
                        .get(dir)
                        .map(|d| decoded(&d.xattrs))
                        .unwrap_or_default()
                }
                None => vec![],
            },
            _ => vec![],
        })
    }

    /// The names `listxattr` shows. On a run's file or directory, only the user's own
    /// attributes: the computed `user.mltrack.*` ones answer `getxattr` but are not listed,
    /// so that `cp -a` and `rsync -X` neither copy them out of a run as if they were the
    /// user's nor try to remove them (refused) when copying into one.
    pub async fn listed_xattrs(&self, ino: u64) -> Result<Vec<String>> {
        let run_file = matches!(
            self.node(ino)?.kind,
            Kind::RunFile(..) | Kind::RunDir(_) | Kind::RunSubdir(..)
        );
        Ok(self
            .xattrs(ino)
            .await?
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| !(run_file && n.starts_with("user.mltrack.")))
            .collect())
    }

    /// Sets (`value`) or removes (`None`) user attribute `name` of a run's file; `create` and
    /// `replace` are `setxattr`'s flags. A file being written keeps the change and records it
    /// at commit (`cp -a` and `rsync -X` set attributes before they close).
    pub async fn set_xattr(
        &self,
        ino: u64,
        name: &str,
        value: Option<&[u8]>,
        (create, replace): (bool, bool),
    ) -> Result<()> {
        let node = self.node(ino)?;
        let shown = format!("{}: {name}", node.path);
        let (run, path) = match &node.kind {
            Kind::RunFile(run, path) => (run, path),
            Kind::RunDir(_) | Kind::RunSubdir(..) => {
                self.refuse_read_only(&node)?;
                xattrs::check_name(name)?;
                let Some((run, dir)) = run_dir(&node) else {
                    return Err(Self::not_here(&node));
                };
                self.runs
                    .update(&run, |m| {
                        let mut c = ChangeSet::default();
                        let d = c
                            .dir_mut(m, &dir)
                            .ok_or_else(|| Error::NoSuchPath(node.path.clone()))?;
                        change_xattr(&mut d.xattrs, name, value, (create, replace), &shown)?;
                        d.ctime = Some(crate::time::now());
                        Ok(c)
                    })
                    .await?;
                return Ok(());
            }
            // Linux itself refuses `user.*` attributes on links.
            Kind::RunLink(..) => {
                return Err(Error::Unsupported(format!(
                    "{}: extended attributes are not kept on links",
                    node.path
                )));
            }
            _ => return Err(Self::not_here(&node)),
        };
        self.refuse_read_only(&node)?;
        xattrs::check_name(name)?;
        let change = |x: &mut xattrs::Xattrs| -> Result<()> {
            change_xattr(x, name, value, (create, replace), &shown)
        };
        let file = self.writing(run, path);
        if let Some(f) = &file {
            f.change_xattrs(change)?;
            f.set_times(|t| t.changed = crate::time::now());
            if f.state.lock().await.dirty {
                // Recorded with the bytes at commit.
                return Ok(());
            }
        }
        self.runs
            .update(run, |m| {
                let mut c = ChangeSet::default();
                let e = c
                    .file_mut(m, path)
                    .ok_or_else(|| Error::NoSuchPath(node.path.clone()))?;
                if file.is_some() {
                    // Already changed on the open file: the same set is recorded.
                    e.xattrs = file.as_ref().map(|f| f.xattrs()).unwrap_or_default();
                } else {
                    change(&mut e.xattrs)?;
                }
                e.ctime = Some(crate::time::now());
                Ok(c)
            })
            .await?;
        Ok(())
    }

    /// `chmod`, `chown`, `truncate`, `utimens` on a node; `file` is the handle's write file,
    /// if any.
    pub async fn setattr(
        &self,
        ino: u64,
        file: Option<Arc<WriteFile>>,
        change: SetAttr,
    ) -> Result<Attr> {
        let size = change.size;
        let node = self.node(ino)?;
        let (run, path) = match &node.kind {
            Kind::RunFile(run, path) => (run.clone(), path.clone()),
            // A link keeps its time (`touch -h`, `rsync -a`) and owner (`lchown`); its mode
            // is always 0777.
            Kind::RunLink(run, path) if size.is_none() => {
                self.refuse_read_only(&node)?;
                if change.keeps_anything() {
                    self.runs
                        .update(run, |m| {
                            let mut c = ChangeSet::default();
                            let l = c
                                .link_mut(m, path)
                                .ok_or_else(|| Error::NoSuchPath(node.path.clone()))?;
                            change.apply(
                                None,
                                &mut l.mtime,
                                (&mut l.uid, &mut l.gid),
                                &mut l.ctime,
                            );
                            Ok(c)
                        })
                        .await?;
                }
                return self.attr_or_gone(&node).await;
            }
            Kind::RunDir(_) | Kind::RunSubdir(..) if size.is_none() => {
                self.refuse_read_only(&node)?;
                let Some((run, dir)) = run_dir(&node) else {
                    return Err(Self::not_here(&node));
                };
                if change.keeps_anything() {
                    self.runs
                        .update(&run, |m| {
                            let mut c = ChangeSet::default();
                            let d = c
                                .dir_mut(m, &dir)
                                .ok_or_else(|| Error::NoSuchPath(node.path.clone()))?;
                            let owner = (&mut d.uid, &mut d.gid);
                            change.apply(Some(&mut d.mode), &mut d.mtime, owner, &mut d.ctime);
                            Ok(c)
                        })
                        .await?;
                }
                return self.attr_or_gone(&node).await;
            }
            // A view key has nothing to keep.
            Kind::ViewKey(..) if size.is_none() => {
                return self.attr_or_gone(&node).await;
            }
            _ => return Err(Self::not_here(&node)),
        };
        self.refuse_read_only(&node)?;
        // Without the caller's handle, a handle of our own: shared with an open writer (counted,
        // so that writer's last release cannot commit and let go of the file between our
        // change and its record), or opened for a truncate. Released below, which commits it
        // if it is the last.
        let own = if file.is_some() {
            None
        } else {
            let target = Target {
                run: run.clone(),
                path: path.clone(),
            };
            match self.share_write(&target) {
                Some(shared) => Some(shared),
                None if size.is_some() => {
                    Some(self.open_write(target, 0o644, size == Some(0)).await?)
                }
                None => None,
            }
        };
        let result = self.set_file_attr(&run, &path, file.as_ref().or(own.as_ref()), change);
        let result = match (result.await, &own) {
            // `truncate(2)` returns with the file stored, as a close would.
            (Ok(()), Some(f)) if size.is_some() => self.commit(f).await,
            (result, _) => result,
        };
        if let Some(f) = &own {
            self.release(f).await;
        }
        result?;
        self.attr_or_gone(&node).await
    }

    /// `setattr` of a run's file through `file`, the open write file if there is one.
    async fn set_file_attr(
        &self,
        run: &RunId,
        path: &RelPath,
        file: Option<&Arc<WriteFile>>,
        change: SetAttr,
    ) -> Result<()> {
        let SetAttr {
            mode,
            uid,
            gid,
            size,
            mtime,
        } = change;
        if let Some(size) = size {
            match file {
                Some(f) => self.truncate(f, size).await?,
                // Nothing open and nothing to open: `setattr` made sure of a handle.
                None => return Err(Error::NoSuchPath(format!("{run}/{path}"))),
            }
        }
        if change.keeps_anything() {
            let mut record = true;
            if let Some(f) = file {
                f.set_times(|t| {
                    if let Some(m) = mode {
                        t.mode = m & 0o7777;
                    }
                    if mtime.is_some() {
                        t.mtime = mtime;
                    }
                    if uid.is_some() {
                        t.uid = uid;
                    }
                    if gid.is_some() {
                        t.gid = gid;
                    }
                    t.changed = crate::time::now();
                });
                // A dirty file records its mode and times when it commits.
                record = !f.state.lock().await.dirty;
            }
            if record {
                self.runs
                    .update(run, |m| {
                        let mut c = ChangeSet::default();
                        let e = c
                            .file_mut(m, path)
                            .ok_or_else(|| Error::NoSuchPath(format!("{run}/{path}")))?;
                        let owner = (&mut e.uid, &mut e.gid);
                        change.apply(Some(&mut e.mode), &mut e.mtime, owner, &mut e.ctime);
                        Ok(c)
                    })
                    .await?;
            }
        }
        Ok(())
    }
}

/// What `setattr` changes; `None` leaves a field as it is.
#[derive(Debug, Default, Clone, Copy)]
pub struct SetAttr {
    pub mode: Option<u32>,
    /// The owner (`chown`), kept per file, link and directory in the manifest.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub mtime: Option<DateTime<Utc>>,
}

impl SetAttr {
    /// Whether it changes anything a manifest entry keeps (its mode, time or owner).
    fn keeps_anything(&self) -> bool {
        self.mode.is_some() || self.mtime.is_some() || self.uid.is_some() || self.gid.is_some()
    }

    /// Applies it to the fields of a file's, link's or directory's entry (a link has no mode:
    /// `None`), and moves the entry's `ctime` to now.
    fn apply(
        &self,
        mode: Option<&mut u32>,
        mtime: &mut DateTime<Utc>,
        (uid, gid): (&mut Option<u32>, &mut Option<u32>),
        ctime: &mut Option<DateTime<Utc>>,
    ) {
        if let (Some(kept), Some(new)) = (mode, self.mode) {
            *kept = new & 0o7777;
        }
        *mtime = self.mtime.unwrap_or(*mtime);
        *uid = self.uid.or(*uid);
        *gid = self.gid.or(*gid);
        *ctime = Some(crate::time::now());
    }
}

/// Sets (`value`) or removes (`None`) attribute `name` of `x`, with `setxattr`'s `create`
/// and `replace` flags; `shown` names it in errors.
fn change_xattr(
    x: &mut xattrs::Xattrs,
    name: &str,
    value: Option<&[u8]>,
    (create, replace): (bool, bool),
    shown: &str,
) -> Result<()> {
    match value {
        Some(v) => {
            let had = x.contains_key(name);
            if create && had {
                return Err(Error::Exists(shown.to_string()));
            }
            if replace && !had {
                return Err(Error::NoAttribute(shown.to_string()));
            }
            x.insert(name.to_string(), xattrs::encode(v));
        }
        None => {
            if x.remove(name).is_none() {
                return Err(Error::NoAttribute(shown.to_string()));
            }
        }
    }
    xattrs::check(x)
}

/// Stored attributes as (name, value) pairs; a value that is not base64 (refused when the
/// manifest was read, so never here) is left out.
fn decoded(attrs: &xattrs::Xattrs) -> Vec<(String, Vec<u8>)> {
    attrs
        .iter()
        .filter_map(|(n, v)| Some((n.clone(), xattrs::decode(v).ok()?)))
        .collect()
}
