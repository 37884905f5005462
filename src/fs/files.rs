//! Files: opening, creating (also by `mknod`), writing to the spool, truncating, copying a
//! stored object by reference, committing on close or `fsync`, releasing, and hard links.
//!
//! A file's bytes reach the store only at commit (`close()`, `fsync()`, the last release):
//! hash, upload unless present, `used_by` marker, then the manifest entry, in that order (see
//! [`crate::runs`]). A commit that fails leaves the spool dirty, so the error is reported and
//! a later `close()` or `fsync()` tries again.

use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::changes::{join, run_dir};
use super::matching::Matcher;
use super::spool::{State, Target, WriteFile};
use super::{Attr, Content, Kind, Owner, Tree, lock};
use crate::cas::hashing;
use crate::cas::metadata::ObjectMetadata;
use crate::error::{Error, Result};
use crate::ids::Digest;
use crate::runs::Hashing;
use crate::runs::manifest::{LinkEntry, Stamp};

pub(super) fn noop() -> crate::cas::Progress {
    Arc::new(|_| {})
}

impl Tree {
    /// What an open of a file reads: the object behind it, or bytes held in memory.
    pub async fn open(&self, ino: u64) -> Result<Content> {
        let node = self.node(ino)?;
        let object = |h: Digest| async move {
            match self.metadata(&h).await? {
                Some(m) => Ok(Content::Object(Arc::new(m.0.clone()))),
                None => Err(Error::DataNotFound(h.to_string())),
            }
        };
        match &node.kind {
            Kind::DataFile(h) => object(*h).await,
            Kind::RunFile(run, path) => {
                if let Some(w) = self.writing(run, path) {
                    return Ok(Content::Spool(w));
                }
                match self
                    .manifest(run)
                    .await?
                    .and_then(|m| m.0.files.get(path).cloned())
                {
                    Some(e) => object(e.hash).await,
                    None => Err(Error::RunNotFound(run.clone())),
                }
            }
            Kind::MetadataFile(h) => match self.metadata(h).await? {
                Some(m) => Ok(Content::Bytes(m.1.clone())),
                None => Err(Error::DataNotFound(h.to_string())),
            },
            Kind::ManifestFile(run) => match self.manifest(run).await? {
                Some(m) => Ok(Content::Bytes(m.json())),
                None => Err(Error::RunNotFound(run.clone())),
            },
            _ => Err(Error::IsDirectory(node.path.clone())),
        }
    }

    /// `mknod` of a regular file: an empty file, recorded at once (there is no handle whose
    /// close would record it).
    pub async fn mknod_file(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        owner: Owner,
    ) -> Result<Attr> {
        let (attr, file) = self.create(parent, name, mode, owner).await?;
        let committed = self.commit(&file).await;
        self.release(&file).await;
        committed?;
        self.attr_or_gone(&*self.node(attr.ino)?).await
    }

    /// Creates (or truncates) the file `name` in a run directory and opens it for writing; a
    /// new file belongs to `owner`.
    pub async fn create(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        owner: Owner,
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
        if !m.0.files.contains_key(&path) && owner != Owner::default() {
            file.set_times(|t| {
                t.uid = owner.uid;
                t.gid = owner.gid;
            });
        }
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

    pub(super) async fn open_write(
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
            file.set_times(|t| {
                t.mtime = (!truncate).then_some(e.mtime);
                t.uid = e.uid;
                t.gid = e.gid;
                t.changed = e.ctime.unwrap_or(e.mtime);
            });
            let _ = file.change_xattrs(|x| {
                *x = e.xattrs.clone();
                Ok(())
            });
            file.state.lock().await.committed = Some(e.clone());
        }
        let mut writes = lock(&self.pending.writes);
        // Another open may have made it meanwhile: share theirs.
        if let Some(theirs) = writes.get(&target) {
            theirs.opens.fetch_add(1, Ordering::SeqCst);
            return Ok(theirs.clone());
        }
        writes.insert(target, file.clone());
        Ok(file)
    }

    pub(super) fn share_write(&self, target: &Target) -> Option<Arc<WriteFile>> {
        let writes = lock(&self.pending.writes);
        let file = writes.get(target)?;
        file.opens.fetch_add(1, Ordering::SeqCst);
        Some(file.clone())
    }

    /// Copies the object a reference stands for into the spool, verified.
    pub(super) async fn materialize(&self, file: &WriteFile, st: &mut State) -> Result<()> {
        let Some(meta) = st.reference.clone() else {
            return Ok(());
        };
        let path = st.spool.path().to_path_buf();
        let mut out = st.spool.file();
        out.seek(SeekFrom::Start(0)).map_err(Error::io(&path))?;
        out.set_len(0).map_err(Error::io(&path))?;
        self.data().export(&meta, &mut out, noop()).await?;
        out.set_len(file.size()).map_err(Error::io(&path))?;
        file.materialized_locked(st);
        Ok(())
    }

    pub async fn write(&self, file: &WriteFile, offset: u64, data: &[u8]) -> Result<()> {
        let mut st = file.state.lock().await;
        self.materialize(file, &mut st).await?;
        if st.matching.is_some() {
            if file.match_locked(&mut st, offset, data) {
                return Ok(());
            }
            self.unmatch(&mut st).await?;
        }
        if file.write_locked(&mut st, offset, data)? {
            self.try_match(file, &mut st).await;
        }
        Ok(())
    }

    /// Takes a file written in order that just passed `spool::FOLLOW_AFTER` for a copy of
    /// stored data, if its first blocks are those of an object this mount knows (has read,
    /// stored, or found in the cache at start) whose bytes are on the node (in the cache whole,
    /// or in a local store): its later writes are then
    /// checked against the object instead of being spooled (see [`super::matching`]). Only
    /// objects on the node, so that ending a match late costs a local copy, not a download.
    async fn try_match(&self, file: &WriteFile, st: &mut State) {
        let Ok(spool) = st.spool.file().try_clone() else {
            return;
        };
        let data = self.data().clone();
        let cache = self.cache.clone();
        let end = file.size();
        let found = tokio::task::spawn_blocking(move || {
            let block = hashing::BLOCK_SIZE;
            let (_, first) =
                hashing::read_block(&spool, 0, block as usize, Some(hashing::CHUNK_SIZE)).ok()?;
            let described = data.described_starting_with(&first)?;
            let meta = &described.0;
            let on_node = !data.backend().is_remote() || cache.is_some_and(|c| c.holds_whole(meta));
            if meta.size < end || !on_node {
                return None;
            }
            let whole = end / block;
            for b in 1..whole {
                crate::cache::read_block_verified(&spool, meta, b)?;
            }
            let mut rest = vec![0u8; (end - whole * block) as usize];
            spool.read_exact_at(&mut rest, whole * block).ok()?;
            Matcher::new(Arc::new(meta.clone()), whole * block, &rest)
        })
        .await
        .ok()
        .flatten();
        if let Some(m) = found {
            tracing::debug!(hash = %m.meta().hash, "a file being written starts as a stored object; matching it");
            file.matched_locked(st, m);
        }
    }

    /// Offers the objects the cache holds two blocks or more of as what a file being written
    /// may be a copy of (see [`Tree::try_match`]), from the copies of their `metadata.json` the
    /// cache keeps: no request is made. Done when the mount starts, so that after a restart a
    /// copy of a cached dataset is recognised as it was before. Returns how many.
    pub fn offer_cached_objects(&self) -> usize {
        let Some(cache) = &self.cache else {
            return 0;
        };
        // Loading an object's kept metadata indexes it by its first block
        // (`DataStore::described_starting_with`): that is the offer.
        let objects = cache.objects_with_blocks(2);
        objects
            .iter()
            .filter(|h| self.data().described_kept(h).is_some())
            .count()
    }

    /// Ends a match (see [`super::matching`]): the spool gets the bytes written since the
    /// last verified block, kept in memory, and before them the verified bytes from the object
    /// (the cache's verified blocks, else the store's), and the file goes on as any file
    /// written out of order. If the object cannot be read, the match stays (stopped) and the
    /// error is returned; ending it again starts over.
    pub(super) async fn unmatch(&self, st: &mut State) -> Result<()> {
        let State {
            matching, spool, ..
        } = st;
        let Some(m) = matching else {
            return Ok(());
        };
        let verified = m.stop();
        let (meta, path, out) = (m.meta().clone(), spool.path().to_path_buf(), spool.file());
        tracing::debug!(hash = %meta.hash, verified, written = m.end(), "a file being written parts from the stored object it matched; spooling it");
        for (at, piece) in m.pieces() {
            out.write_all_at(piece, at).map_err(Error::io(&path))?;
        }
        // `verified` ends a block: a multiple of the block size, or the object's size, whose
        // last block may be short. That short block is verified, and its piece no longer
        // kept, once the whole copy is: it comes from the object too.
        for b in m.spooled() / meta.block_size..verified.div_ceil(meta.block_size) {
            let cached = self.cache.as_ref().and_then(|c| c.get(&meta, b));
            let bytes = match cached {
                Some(bytes) => bytes,
                None => self.data().read_blocks(&meta, b..b + 1).await.inspect_err(|e| {
                    // Not offered again: a copy written again is spooled from the start.
                    self.data().forget_start(&meta.hash);
                    tracing::error!(hash = %meta.hash, error = %e, "a file being written matched a stored object whose bytes can no longer be read; its close fails");
                })?,
            };
            let at = meta.block_range(b).start;
            out.write_all_at(&bytes, at).map_err(Error::io(&path))?;
        }
        out.set_len(m.end()).map_err(Error::io(&path))?;
        st.matching = None;
        Ok(())
    }

    pub async fn truncate(&self, file: &WriteFile, size: u64) -> Result<()> {
        let mut st = file.state.lock().await;
        self.unmatch(&mut st).await?;
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
        self.commit_as(file, false).await
    }

    /// [`Tree::commit`] for a `close()`. The close of the file's last handle may hand its spool
    /// to the store as the object itself (a local store on the spool's filesystem links it in
    /// instead of copying it: docs/MOUNT.md, "Writing on the local store"); a later write, from
    /// a handle opened meanwhile or a duplicated descriptor, then goes to a fresh spool.
    pub async fn close(&self, file: &WriteFile) -> Result<()> {
        self.commit_as(file, file.opens.load(Ordering::SeqCst) <= 1)
            .await
    }

    async fn commit_as(&self, file: &WriteFile, last_close: bool) -> Result<()> {
        let mut st = file.state.lock().await;
        if !st.dirty || st.detached {
            return Ok(());
        }
        let _counted = crate::metrics::metrics().commit(file.size());
        file.committing.store(true, Ordering::Relaxed);
        let result = self.commit_locked(file, &mut st, last_close).await;
        file.committing.store(false, Ordering::Relaxed);
        st.failed = result.is_err();
        result
    }

    /// `hand_over`: the spool need not be kept as it is (see [`Tree::close`]).
    pub(super) async fn commit_locked(
        &self,
        file: &WriteFile,
        st: &mut State,
        hand_over: bool,
    ) -> Result<()> {
        let target = file.target();
        let matched = self.commit_match(file, st, &target).await?;
        if st.reference.as_ref().is_some_and(|m| m.size != file.size()) {
            // Part of an object: its bytes are copied and stored as new data.
            self.materialize(file, st).await?;
        }
        let entry = match (matched, &st.reference) {
            (Some(entry), _) => entry,
            (None, Some(meta)) => {
                self.runs
                    .record_object(&target.run, &target.path, meta, file.stamp())
                    .await?
            }
            (None, None) => {
                let hashing = match file.followed_hash(st).await {
                    Some((digest, size)) => Hashing::Digested(digest, size),
                    None => Hashing::Pass(noop()),
                };
                let (run, path, spool) = (&target.run, &target.path, st.spool.path());
                self.runs
                    .store_and_record(run, path, spool, hand_over, hashing, file.stamp())
                    .await?
                    .0
            }
        };
        if hand_over && st.reference.is_none() && st.spool.is_stored() {
            let meta = self
                .metadata(&entry.hash)
                .await?
                .ok_or_else(|| Error::DataNotFound(entry.hash.to_string()))?;
            file.handed_over_locked(st, &self.opts.spool, Arc::new(meta.0.clone()))?;
        }
        tracing::debug!(run = %target.run, path = %target.path, hash = %entry.hash, "committed");
        st.dirty = false;
        st.committed = Some(entry);
        Ok(())
    }

    /// At a commit of a file being matched (see [`super::matching`]): one that is the object,
    /// every block verified, is recorded as it and becomes a reference to it (its entry
    /// returned); any other ends the match, and is committed from its spool as usual. So does
    /// a copy of an object that left the store meanwhile (`mltrack gc`): its bytes are spooled
    /// from the node's copy and stored again.
    async fn commit_match(
        &self,
        file: &WriteFile,
        st: &mut State,
        target: &Target,
    ) -> Result<Option<crate::runs::manifest::FileEntry>> {
        let Some(m) = &mut st.matching else {
            return Ok(None);
        };
        if m.finish() {
            let meta = m.meta().clone();
            let recorded = self
                .runs
                .record_object(&target.run, &target.path, &meta, file.stamp())
                .await;
            match recorded {
                Ok(entry) => {
                    st.matching = None;
                    st.reference = Some(meta);
                    return Ok(Some(entry));
                }
                Err(e) if e.kind() == crate::error::Kind::NotFound => {
                    self.data().forget_start(&meta.hash);
                }
                Err(e) => return Err(e),
            }
        }
        self.unmatch(st).await?;
        Ok(None)
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
        } else if let Err(e) = self.commit_as(file, true).await {
            tracing::error!(run = %target.run, path = %target.path, error = %e,
                "the last close of a file could not store it; its bytes are lost");
        }
        {
            let mut writes = lock(&self.pending.writes);
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
            && let Ok(spool) = st.spool.file().try_clone()
        {
            let cache = cache.clone();
            let _ = tokio::task::spawn_blocking(move || cache.adopt(&meta.0, &spool)).await;
        }
    }

    /// `ln` of stored data (from `data/` or another run) into a run: a reference, nothing
    /// read or uploaded.
    pub async fn link(&self, ino: u64, new_parent: u64, new_name: &str) -> Result<Attr> {
        let source = self.node(ino)?;
        let node = self.node(new_parent)?;
        self.refuse_read_only(&node)?;
        let (run, prefix) = run_dir(&node).ok_or_else(|| Self::not_here(&node))?;
        let path = join(&prefix, new_name)?;
        let (hash, stamp) = match &source.kind {
            Kind::DataFile(h) => (*h, Stamp::new(crate::time::now(), 0o644)),
            Kind::RunFile(r, p) => {
                let m = self.require_manifest(r).await?;
                let e = m.0.files.get(p).ok_or_else(|| {
                    Error::NotPermitted(format!(
                        "{} has not been closed yet; link it once it is stored",
                        source.path
                    ))
                })?;
                (e.hash, Stamp::of(e))
            }
            _ => {
                return Err(Error::NotPermitted(format!(
                    "{}: only stored files can be linked",
                    source.path
                )));
            }
        };
        let m = self.require_manifest(&run).await?;
        if m.0.files.contains_key(&path)
            || m.0.links.contains_key(&path)
            || self.writing(&run, &path).is_some()
        {
            return Err(Error::Exists(format!("{}/{new_name}", node.path)));
        }
        let meta = self
            .metadata(&hash)
            .await?
            .ok_or_else(|| Error::DataNotFound(hash.to_string()))?;
        self.runs.record_object(&run, &path, &meta.0, stamp).await?;
        let child = self.intern(&node, new_name, Kind::RunFile(run, path));
        self.attr_or_gone(&child).await
    }

    /// `ln -s target name` in a run: a manifest entry with the target as written, never
    /// followed by mltrack itself.
    pub async fn symlink(
        &self,
        parent: u64,
        name: &str,
        target: &str,
        owner: Owner,
    ) -> Result<Attr> {
        let node = self.node(parent)?;
        self.refuse_read_only(&node)?;
        let (run, prefix) = run_dir(&node).ok_or_else(|| Self::not_here(&node))?;
        let path = join(&prefix, name)?;
        let m = self.require_manifest(&run).await?;
        if m.0.files.contains_key(&path)
            || m.0.links.contains_key(&path)
            || self.writing(&run, &path).is_some()
            || self.is_dir_in(&run, &m.0, path.as_str())
        {
            return Err(Error::Exists(format!("{}/{name}", node.path)));
        }
        let link = LinkEntry::new(target.to_string(), owner.uid, owner.gid);
        self.runs.record_link(&run, &path, link).await?;
        let child = self.intern(&node, name, Kind::RunLink(run, path));
        self.attr_or_gone(&child).await
    }
}
