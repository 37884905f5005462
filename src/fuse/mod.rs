//! The FUSE adapter: a thin layer that decodes kernel requests, calls the filesystem core
//! ([`crate::fs`]) on the async runtime, and replies. This file holds the handlers and the
//! open handles; `errno` is the one place where domain errors become error numbers,
//! `closers` decides whose `close()` commits a written file, and `passthrough` hands fully
//! cached objects to the kernel (read without coming here).
//!
//! fuser dispatches on several threads (`Config::n_threads`), so parallel readers do not
//! queue behind each other; each request blocks its dispatch thread on the runtime while the
//! core works.
//!
//! Files open for writing, and files being written, are opened with `FOPEN_DIRECT_IO`: every
//! write reaches the spool and every read sees it, with no page cache to keep coherent; a
//! shared mapping of such a file still gets pages (`FUSE_DIRECT_IO_ALLOW_MMAP`), written back
//! here. A stored object keeps its page cache between opens only while the inode still shows
//! the same object (a run file that was rewritten is read afresh). `flush` (every `close()`)
//! and `fsync` commit a written file and return its error, so `close()` fails with `EIO` if
//! the bytes are not stored. A close by a process that neither opened the file nor wrote
//! through it (a forked child closing the copy of the descriptor it inherited) commits
//! nothing (`closers`).

mod closers;
mod errno;
mod listings;
mod passthrough;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fuser::{
    CopyFileRangeFlags, Errno, FileAttr, FileHandle, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::error::Error;
use crate::fs::reader::{OpenFile, Reader};
use crate::fs::spool::WriteFile;
use crate::fs::status::{CACHED_XATTR, STATUS_XATTR};
use crate::fs::{Attr, Content, FileType, Owner, SetAttr, Tree, lock};
use crate::ids::Digest;
use closers::Closers;
pub use errno::errno;
use errno::{existing_name, new_name};
use listings::Listings;
use passthrough::Passthrough;

/// A directory's entries as `readdir` returns them: inode, type, name.
type Listing = Arc<Vec<(u64, fuser::FileType, String)>>;

/// An open file: what it reads, and the file it writes if it was opened for writing.
struct Handle {
    read: Arc<OpenFile>,
    write: Option<Arc<WriteFile>>,
    /// For a written file: whose close commits it.
    closers: Closers,
}

pub struct MltrackFs {
    tree: Arc<Tree>,
    reader: Arc<Reader>,
    rt: tokio::runtime::Handle,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    /// The object each inode showed at its last open: its page cache is kept only if the same.
    shown: Mutex<HashMap<u64, Digest>>,
    next_handle: AtomicU64,
    passthrough: Passthrough,
    /// Open directories: the listing each handle reads, made when it read from the start.
    dirs: Mutex<HashMap<u64, Listing>>,
    listings: Listings,
    uid: u32,
    gid: u32,
}

impl MltrackFs {
    pub fn new(tree: Arc<Tree>, reader: Arc<Reader>, rt: tokio::runtime::Handle) -> Self {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let listings = Listings::new(tree.refresh());
        MltrackFs {
            tree,
            reader,
            rt,
            handles: Mutex::new(HashMap::new()),
            shown: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            passthrough: Passthrough::default(),
            dirs: Mutex::new(HashMap::new()),
            listings,
            uid,
            gid,
        }
    }

    fn file_attr(&self, a: &Attr) -> FileAttr {
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.size.div_ceil(512),
            atime: a.mtime,
            mtime: a.mtime,
            ctime: a.ctime.unwrap_or(a.mtime),
            crtime: a.mtime,
            kind: kind_of(a.kind),
            perm: a.perm,
            nlink: a.links,
            uid: a.uid.unwrap_or(self.uid),
            gid: a.gid.unwrap_or(self.gid),
            rdev: 0,
            flags: 0,
            blksize: 128 * 1024,
        }
    }

    /// Who makes what `req` creates: the caller, when it is not the mounting user.
    fn owner(&self, req: &Request) -> Owner {
        Owner {
            uid: (req.uid() != self.uid).then(|| req.uid()),
            gid: (req.gid() != self.gid).then(|| req.gid()),
        }
    }

    fn handle(&self, fh: FileHandle) -> Option<Arc<Handle>> {
        lock(&self.handles).get(&u64::from(fh)).cloned()
    }

    fn add_handle(&self, read: Content, write: Option<Arc<WriteFile>>, closers: Closers) -> u64 {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(
            fh,
            Arc::new(Handle {
                read: Arc::new(self.reader.open(read)),
                write,
                closers,
            }),
        );
        fh
    }

    /// Whether the inode showed the same object at its last open (so its pages are current).
    fn same_as_shown(&self, ino: u64, h: Digest) -> bool {
        lock(&self.shown).insert(ino, h) == Some(h)
    }

    /// The listing of directory `ino` for a `readdir` of handle `fh` from `offset`: made when
    /// the directory is read from its start, and kept with the handle for the rest.
    fn listing(&self, ino: INodeNo, fh: FileHandle, offset: u64) -> Result<Listing, Errno> {
        let ino = u64::from(ino);
        let kept = (offset != 0)
            .then(|| lock(&self.dirs).get(&u64::from(fh)).cloned())
            .flatten();
        if let Some(l) = kept {
            return Ok(l);
        }
        let before = self.listings.before();
        let entries = self
            .rt
            .block_on(self.tree.readdir(ino))
            .map_err(|e| errno("readdir", &e))?;
        let dots = [
            (ino, fuser::FileType::Directory, ".".to_string()),
            (ino, fuser::FileType::Directory, "..".to_string()),
        ];
        let listing: Listing = Arc::new(
            dots.into_iter()
                .chain(
                    entries
                        .into_iter()
                        .map(|e| (e.ino, kind_of(e.kind), e.name)),
                )
                .collect(),
        );
        if offset == 0 {
            self.listings
                .listed(ino, before.as_of(self.tree.as_of(ino)));
        }
        lock(&self.dirs).insert(u64::from(fh), listing.clone());
        Ok(listing)
    }

    /// `a` as the kernel is given it; a directory's is kept to be answered again (`listings`:
    /// the kernel asks again after each `readdir`), having been found after `before`.
    fn dir_attr_given(&self, before: listings::Before, a: &Attr) -> FileAttr {
        let attr = self.file_attr(a);
        if a.kind == FileType::Directory {
            let before = before.as_of(self.tree.as_of(a.ino));
            self.listings.dir_attr_found(before, attr, ttl(a));
        }
        attr
    }

    /// Runs a request that changes the tree (names, attributes, or what is stored): once it
    /// is done, or has failed, no directory listing or attributes kept from before are served
    /// again (`listings`).
    fn changing<T>(&self, change: impl std::future::Future<Output = T>) -> T {
        let done = self.rt.block_on(change);
        self.listings.changed();
        done
    }

    /// Commits a handle's written file, for `close()` (`closing`) and `fsync()`.
    fn commit(&self, closing: bool, w: Arc<WriteFile>, reply: ReplyEmpty) {
        let (op, committed) = if closing {
            ("close", self.changing(self.tree.close(&w)))
        } else {
            ("fsync", self.changing(self.tree.commit(&w)))
        };
        match committed {
            Ok(()) => reply.ok(),
            Err(e) => {
                let t = w.target();
                tracing::error!(run = %t.run, path = %t.path, "{op}: the file could not be stored");
                reply.error(match errno(op, &e) {
                    Errno::ENOSPC => Errno::ENOSPC,
                    _ => Errno::EIO,
                })
            }
        }
    }
}

fn to_time(t: TimeOrNow) -> chrono::DateTime<chrono::Utc> {
    match t {
        TimeOrNow::Now => crate::time::now(),
        TimeOrNow::SpecificTime(t) => t.into(),
    }
}

fn kind_of(kind: FileType) -> fuser::FileType {
    match kind {
        FileType::Directory => fuser::FileType::Directory,
        FileType::File => fuser::FileType::RegularFile,
        FileType::Symlink => fuser::FileType::Symlink,
    }
}

/// Entries of one `readdirplus` reply whose attributes are found at once (a reply holds some
/// 20 to 30; those found past the end of one are kept by the tree for the next).
const PLUS_BATCH: usize = 32;

/// What `readdirplus` gives for `.` and `..`, whose attributes the kernel does not read.
fn dot_attr(ino: u64, kind: fuser::FileType) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: std::time::UNIX_EPOCH,
        mtime: std::time::UNIX_EPOCH,
        ctime: std::time::UNIX_EPOCH,
        crtime: std::time::UNIX_EPOCH,
        kind,
        perm: 0o555,
        nlink: 2,
        uid: 0,
        gid: 0,
        rdev: 0,
        flags: 0,
        blksize: 4096,
    }
}

fn ttl(a: &Attr) -> Duration {
    a.ttl
}

/// `statvfs` of the nearest existing directory at or above `path`.
fn nix_statvfs(path: &std::path::Path) -> Option<libc::statvfs> {
    let dir = path.ancestors().find(|p| p.exists())?;
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    let mut out = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a valid NUL-terminated path and a buffer of the right type.
    if unsafe { libc::statvfs(c.as_ptr(), out.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the buffer.
    Some(unsafe { out.assume_init() })
}

impl Filesystem for MltrackFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        // No name this long can exist here, and POSIX says so with its own errno (FUSE passes
        // names up to 1024 bytes).
        if name.len() > crate::ids::MAX_NAME_LEN {
            return reply.error(Errno::ENAMETOOLONG);
        }
        let name = match existing_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let before = self.listings.before();
        match self.rt.block_on(self.tree.lookup(u64::from(parent), name)) {
            Ok(Some(a)) => reply.entry(&ttl(&a), &self.dir_attr_given(before, &a), Generation(0)),
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(errno("lookup", &e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if let Some((attr, ttl)) = self.listings.dir_attr(u64::from(ino)) {
            return reply.attr(&ttl, &attr);
        }
        let before = self.listings.before();
        match self.rt.block_on(self.tree.getattr(u64::from(ino))) {
            Ok(Some(a)) => reply.attr(&ttl(&a), &self.dir_attr_given(before, &a)),
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(errno("getattr", &e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.rt.block_on(self.tree.readlink(u64::from(ino))) {
            Ok(target) => reply.data(target.as_bytes()),
            Err(e) => reply.error(errno("readlink", &e)),
        }
    }

    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // No file here has an ACL (only `user.*` attributes are kept), and with this the
        // kernel keeps that answer with each inode: `ls -l` asks every entry for its ACL, a
        // request each time without it. Permissions are the kernel's already
        // (`default_permissions`), which this also implies.
        let _ = config.add_capabilities(InitFlags::FUSE_POSIX_ACL);
        // O_TRUNC arrives with the open, so a truncating open never copies the old bytes.
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        // Listings carry their entries' attributes (`readdirplus`).
        let _ = config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        // A shared writable mapping of a file being written (numpy `memmap`, SQLite's WAL
        // index) needs pages, which direct I/O alone does not give: since Linux 6.6 the kernel
        // may map such a file and writes the dirty pages back here, into the spool.
        let _ = config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        // Passthrough where the kernel has it: a fully cached object is then read by the kernel
        // straight from its cache file. Without it, every read goes through `read` below.
        if config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok()
        {
            self.passthrough.enable();
        }
        Ok(())
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let ino = u64::from(ino);
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            let truncate = flags.0 & libc::O_TRUNC != 0;
            return match self.rt.block_on(self.tree.open_for_write(ino, truncate)) {
                Ok(w) => {
                    let fh = self.add_handle(
                        Content::Spool(w.clone()),
                        Some(w),
                        Closers::opened_by(req.pid()),
                    );
                    reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO)
                }
                Err(e) => reply.error(errno("open", &e)),
            };
        }
        let content = match self.rt.block_on(self.tree.open(ino)) {
            Ok(c) => c,
            Err(e) => return reply.error(errno("open", &e)),
        };
        let Content::Object(meta) = &content else {
            // Documents and files being written: read afresh, never from stale pages.
            let fh = self.add_handle(content, None, Closers::default());
            return reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
        };
        let same = self.same_as_shown(ino, meta.hash);
        if self.passthrough.enabled() {
            let cache = self.reader.cache().clone();
            let m = meta.clone();
            let pinned = self.rt.block_on(async move {
                tokio::task::spawn_blocking(move || cache.open_pinned(&m))
                    .await
                    .ok()
                    .flatten()
            });
            if let Some(file) = pinned
                && let Some(id) = self.passthrough.backing(&reply, ino, meta.hash, &file)
            {
                // In the handle table too, so that a copy from this file (copy_file_range)
                // knows its object.
                let fh = self.add_handle(content.clone(), None, Closers::default());
                tracing::debug!(ino, "opened with passthrough");
                reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id);
                self.passthrough.opened(fh, id, file);
                crate::metrics::metrics().passthrough_opened();
                return;
            }
        }
        let fh = self.add_handle(content, None, Closers::default());
        // Objects never change: the kernel may keep their pages between opens, as long as the
        // inode still shows the same object.
        let flags = if same {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        };
        reply.opened(FileHandle(fh), flags);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match new_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let created = self.changing(self.tree.create(
            u64::from(parent),
            name,
            mode & !umask,
            self.owner(req),
        ));
        match created {
            Ok((attr, w)) => {
                let fh = self.add_handle(
                    Content::Spool(w.clone()),
                    Some(w),
                    Closers::opened_by(req.pid()),
                );
                reply.created(
                    &attr.ttl,
                    &self.file_attr(&attr),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::FOPEN_DIRECT_IO,
                )
            }
            Err(e) => reply.error(errno("create", &e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(h) = self.handle(fh) else {
            return reply.error(Errno::EBADF);
        };
        let started = std::time::Instant::now();
        let read = self.rt.block_on(self.reader.read(&h.read, offset, size));
        crate::metrics::metrics().read_took(started);
        match read {
            Ok(data) => reply.data(&data),
            // Bytes that fail verification are an error (EIO), never served; the object gone
            // from the store (collected) is ENOENT, and so on: one map for every handler.
            Err(e) => reply.error(errno("read", &e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(h) = self.handle(fh) else {
            return reply.error(Errno::EBADF);
        };
        let Some(w) = h.write.clone() else {
            return reply.error(Errno::EBADF);
        };
        h.closers.wrote(req.pid(), lock_owner.map(|o| o.0));
        match self.rt.block_on(self.tree.write(&w, offset, data)) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno("write", &e)),
        }
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Handles that write nothing (passthrough reads are not even in the table) commit nothing.
        let Some(h) = self.handle(fh) else {
            return reply.ok();
        };
        let Some(w) = h.write.clone() else {
            return reply.ok();
        };
        if !h.closers.commit_on_close(req.pid(), lock_owner.0) {
            let t = w.target();
            tracing::debug!(run = %t.run, path = %t.path, pid = req.pid(),
                "close by a process that neither opened nor wrote the file: not committed");
            return reply.ok();
        }
        self.commit(true, w, reply);
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _data: bool, reply: ReplyEmpty) {
        match self.handle(fh).and_then(|h| h.write.clone()) {
            Some(w) => self.commit(false, w, reply),
            None => reply.ok(),
        }
    }

    /// A directory's entries are its run's manifest, and every change to them is committed
    /// before its reply (an empty directory lives in memory until a file is put in it, as
    /// docs/SEMANTICS.md says): there is nothing left to sync. SQLite syncs its journal's
    /// directory.
    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let h = lock(&self.handles).remove(&u64::from(fh));
        self.passthrough.released(u64::from(fh));
        if let Some(w) = h.and_then(|h| h.write.clone()) {
            self.changing(self.tree.release(&w));
        }
        reply.ok();
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let h = fh.and_then(|fh| self.handle(fh));
        let w = h.as_ref().and_then(|h| h.write.clone());
        if let Some(h) = &h
            && w.is_some()
        {
            // `ftruncate`, `fchmod`, `futimens`: a change made through the handle.
            h.closers.wrote(req.pid(), None);
        }
        let change = SetAttr {
            mode,
            uid,
            gid,
            size,
            mtime: mtime.map(to_time),
        };
        let done = self.changing(self.tree.setattr(u64::from(ino), w, change));
        match done {
            Ok(a) => reply.attr(&ttl(&a), &self.file_attr(&a)),
            Err(e) => reply.error(errno("setattr", &e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        // A regular file is an empty file, as on ext4 (`os.mknod(path)`); a run records data,
        // so FIFOs, sockets and device nodes are refused (docs/SEMANTICS.md).
        let kind = mode & libc::S_IFMT;
        if kind != libc::S_IFREG && kind != 0 {
            return reply.error(Errno::EPERM);
        }
        let name = match new_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let made = self.changing(self.tree.mknod_file(
            u64::from(parent),
            name,
            mode & 0o7777 & !umask,
            self.owner(req),
        ));
        match made {
            Ok(a) => reply.entry(&ttl(&a), &self.file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno("mknod", &e)),
        }
    }

    fn ioctl(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        // Python's open() asks every file whether it is a terminal (TCGETS): the answer is
        // "not a terminal", and no ioctl is worth a warning in the log.
        tracing::debug!(ino = u64::from(ino), cmd, "ioctl: not a terminal or device");
        reply.error(Errno::ENOTTY);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let name = match new_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let made = self.tree.mkdir(
            u64::from(parent),
            name,
            mode & 0o7777 & !umask,
            self.owner(req),
        );
        match self.changing(made) {
            Ok(a) => reply.entry(&ttl(&a), &self.file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno("mkdir", &e)),
        }
    }

    /// `ln -s`: a link in a run, kept in its manifest. A target that is not UTF-8 cannot be
    /// recorded (`EINVAL`), as a name cannot.
    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let (name, target) = match (new_name(link_name), new_name(target.as_os_str())) {
            (Ok(n), Ok(t)) => (n, t),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        match self.changing(
            self.tree
                .symlink(u64::from(parent), name, target, self.owner(req)),
        ) {
            Ok(a) => reply.entry(&ttl(&a), &self.file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno("symlink", &e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match existing_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.changing(self.tree.unlink(u64::from(parent), name)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("unlink", &e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match existing_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.changing(self.tree.rmdir(u64::from(parent), name)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("rmdir", &e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = match (existing_name(name), new_name(newname)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return reply.error(Errno::EINVAL);
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let done = self.changing(self.tree.rename(
            u64::from(parent),
            name,
            u64::from(newparent),
            newname,
            no_replace,
        ));
        match done {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("rename", &e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let newname = match new_name(newname) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let done = self.changing(
            self.tree
                .link(u64::from(ino), u64::from(newparent), newname),
        );
        match done {
            Ok(a) => reply.entry(&ttl(&a), &self.file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno("link", &e)),
        }
    }

    fn copy_file_range(
        &self,
        req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let Some(out) = self.handle(fh_out) else {
            return reply.error(Errno::EBADF);
        };
        let Some(w) = out.write.clone() else {
            return reply.error(Errno::EBADF);
        };
        out.closers.wrote(req.pid(), None);
        // The reply counts in u32: never claim more than fits.
        let len = len.min(0xffff_f000);
        let source = self.handle(fh_in);
        let done = self.changing(async {
            if let Some(Content::Object(meta)) = source.as_ref().map(|h| &h.read.content)
                && let Some(n) = self
                    .tree
                    .copy_object(&w, meta, offset_in, offset_out, len)
                    .await?
            {
                return Ok(n);
            }
            // Any other copy is plain reads and writes, in 1 MiB pieces.
            let Some(src) = &source else {
                return Err(Error::BadRequest("the source is not open here".into()));
            };
            let mut done = 0u64;
            while done < len {
                let want = (len - done).min(1 << 20) as u32;
                let data = self.reader.read(&src.read, offset_in + done, want).await?;
                if data.is_empty() {
                    break;
                }
                self.tree.write(&w, offset_out + done, &data).await?;
                done += data.len() as u64;
            }
            Ok(done)
        });
        match done {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno("copy_file_range", &e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // The store has no fixed size: report the spool's filesystem, which is what fills up.
        match nix_statvfs(self.tree.spool_dir()) {
            Some(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                255,
                s.f_frsize as u32,
            ),
            None => reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096),
        }
    }

    /// Every directory's listing is kept by the kernel (`FOPEN_CACHE_DIR`), and served
    /// again without asking here while it is current (`listings`).
    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let mut flags = FopenFlags::FOPEN_CACHE_DIR;
        if self.listings.keep(u64::from(ino)) {
            flags |= FopenFlags::FOPEN_KEEP_CACHE;
        }
        reply.opened(FileHandle(fh), flags);
    }

    /// A directory is listed when it is read from its start, and the rest of that reading
    /// comes from the same listing (a listing of n entries takes n / 100 or so requests).
    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listing = match self.listing(ino, fh, offset) {
            Ok(l) => l,
            Err(e) => return reply.error(e),
        };
        for (i, (ino, kind, name)) in listing.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    /// `readdir` with each entry's attributes, so that `ls -l`, `find` and `du` need no lookup
    /// of the entries it lists. The kernel asks for it at a directory's start and, after
    /// that, only while lookups come between its reads (`FUSE_READDIRPLUS_AUTO`), so a plain
    /// `ls` of a big directory waits for one reply's worth of attributes, no more. Inside a
    /// run they cost nothing (the listing read its state); elsewhere an entry's attributes
    /// are found as its lookup finds them, [`PLUS_BATCH`] at a time, and an entry its lookup
    /// does not find (a view's stale pointer) is left out, as a lookup would refuse it.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let listing = match self.listing(ino, fh, offset) {
            Ok(l) => l,
            Err(e) => return reply.error(e),
        };
        let parent = u64::from(ino);
        let before = self.listings.before();
        let rest: Vec<_> = listing.iter().enumerate().skip(offset as usize).collect();
        let mut added = false;
        'batches: for batch in rest.chunks(PLUS_BATCH) {
            let found = self.rt.block_on(futures::future::join_all(batch.iter().map(
                |(_, (child, kind, name))| async move {
                    match name.as_str() {
                        // The kernel takes nothing from the dots' attributes.
                        "." | ".." => Ok(Some((dot_attr(*child, *kind), Duration::ZERO))),
                        _ => Ok(self
                            .tree
                            .lookup(parent, name)
                            .await?
                            .map(|a| (self.dir_attr_given(before, &a), ttl(&a)))),
                    }
                },
            )));
            for ((i, (child, _, name)), found) in batch.iter().zip(found) {
                let (attr, valid) = match found {
                    Ok(Some(given)) => given,
                    Ok(None) => continue,
                    // An empty reply would end the listing: the error is the answer.
                    Err(e) if !added => return reply.error(errno("readdirplus", &e)),
                    // What was added is sent; the kernel asks again from there.
                    Err(_) => break 'batches,
                };
                if reply.add(
                    INodeNo(*child),
                    (*i + 1) as u64,
                    name,
                    &valid,
                    &attr,
                    Generation(0),
                ) {
                    break 'batches;
                }
                added = true;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.dirs).remove(&u64::from(fh));
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        // Only `user.*` attributes exist here, answered without looking anything up.
        // An ACL is asked for by the kernel itself (`FUSE_POSIX_ACL`), which keeps "none"
        // with the inode. Any other namespace is one this filesystem does not keep, as
        // `setxattr` says too; `ENOTSUP` (not `ENODATA`) also lets GNU `ls -l` stop asking
        // every entry for `security.selinux` after the first (docs/MOUNT.md).
        let bytes = name.as_encoded_bytes();
        if !bytes.starts_with(b"user.") {
            return reply.error(if bytes.starts_with(b"system.posix_acl_") {
                Errno::NO_XATTR
            } else {
                Errno::ENOTSUP
            });
        }
        let ino = u64::from(ino);
        // The mount's own attributes, never listed (`fs::status`).
        let value = match name.to_str() {
            Some(STATUS_XATTR) if ino == crate::fs::ROOT_INO => {
                Some(serde_json::to_vec(&self.tree.status()).unwrap_or_default())
            }
            Some(CACHED_XATTR) => match self.rt.block_on(self.tree.cached_bytes(ino)) {
                Ok(n) => n.map(|n| n.to_string().into_bytes()),
                Err(e) => return reply.error(errno("getxattr", &e)),
            },
            _ => match self.rt.block_on(self.tree.xattrs(ino)) {
                Ok(a) => a
                    .into_iter()
                    .find(|(n, _)| Some(n.as_str()) == name.to_str())
                    .map(|(_, v)| v),
                Err(e) => return reply.error(errno("getxattr", &e)),
            },
        };
        let Some(value) = value else {
            return reply.error(Errno::NO_XATTR);
        };
        if size == 0 {
            reply.size(value.len() as u32);
        } else if (size as usize) < value.len() {
            reply.error(Errno::ERANGE);
        } else {
            reply.data(&value);
        }
    }

    /// `user.*` attributes of a run's file, kept in its manifest entry (`fs::attributes`).
    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let name = match new_name(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let how = (
            flags & libc::XATTR_CREATE != 0,
            flags & libc::XATTR_REPLACE != 0,
        );
        match self.changing(self.tree.set_xattr(u64::from(ino), name, Some(value), how)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("setxattr", &e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match existing_name(name) {
            Ok(n) => n,
            Err(_) => return reply.error(Errno::NO_XATTR),
        };
        match self.changing(
            self.tree
                .set_xattr(u64::from(ino), name, None, (false, false)),
        ) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("removexattr", &e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let attrs = match self.rt.block_on(self.tree.listed_xattrs(u64::from(ino))) {
            Ok(a) => a,
            Err(e) => return reply.error(errno("listxattr", &e)),
        };
        let mut names = Vec::new();
        for n in &attrs {
            names.extend_from_slice(n.as_bytes());
            names.push(0);
        }
        if size == 0 {
            reply.size(names.len() as u32);
        } else if (size as usize) < names.len() {
            reply.error(Errno::ERANGE);
        } else {
            reply.data(&names);
        }
    }
}
