//! The FUSE adapter: a thin layer that decodes kernel requests, calls the filesystem core
//! ([`crate::fs`]) on the async runtime, and replies. [`errno`] is the one place where domain
//! errors become error numbers.
//!
//! fuser dispatches on several threads (`Config::n_threads`), so parallel readers do not
//! queue behind each other; each request blocks its dispatch thread on the runtime while the
//! core works. A fully cached object is opened with FUSE passthrough where the kernel supports
//! it: its cache file, verified and pinned, is read by the kernel without coming here. The tree is read-only in this version: the mount is made with `ro`, so the
//! kernel refuses every write with `EROFS` before it reaches us.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyXattr, Request,
};

use crate::error::Error;
use crate::fs::reader::{OpenFile, Reader};
use crate::fs::{Attr, Content, FileType, Tree};
use crate::storage::StorageError;

pub struct MltrackFs {
    tree: Arc<Tree>,
    reader: Arc<Reader>,
    rt: tokio::runtime::Handle,
    handles: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next_handle: AtomicU64,
    /// Whether the kernel accepted FUSE passthrough at init.
    passthrough: AtomicBool,
    /// Backing ids by inode: every open of one inode must reuse the same one.
    backing: Mutex<HashMap<u64, Weak<BackingId>>>,
    /// Passthrough handles: the backing id and the pinned cache file, kept while open.
    passthrough_handles: Mutex<HashMap<u64, (Arc<BackingId>, std::fs::File)>>,
    uid: u32,
    gid: u32,
}

/// The error number a user sees for a domain error; logged once here with its cause.
pub fn errno(op: &str, e: &Error) -> Errno {
    let code = match e {
        Error::RunNotFound(_) | Error::DataNotFound(_) => Errno::ENOENT,
        Error::Storage(StorageError::NotFound { .. }) => Errno::ENOENT,
        Error::Storage(StorageError::InvalidKey { .. }) | Error::Invalid(_) => Errno::EINVAL,
        Error::Storage(s) if s.is_no_space() => Errno::ENOSPC,
        Error::Storage(_)
        | Error::Io { .. }
        | Error::Corrupt { .. }
        | Error::BadBlock { .. }
        | Error::Changed { .. } => Errno::EIO,
        Error::AmbiguousPrefix { .. }
        | Error::RunExists(_)
        | Error::Contention { .. }
        | Error::Refused(_) => Errno::EIO,
    };
    tracing::warn!(op, error = %e, "request failed");
    code
}

impl MltrackFs {
    pub fn new(tree: Arc<Tree>, reader: Arc<Reader>, rt: tokio::runtime::Handle) -> Self {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        MltrackFs {
            tree,
            reader,
            rt,
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            passthrough: AtomicBool::new(false),
            backing: Mutex::new(HashMap::new()),
            passthrough_handles: Mutex::new(HashMap::new()),
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
            ctime: a.mtime,
            crtime: a.mtime,
            kind: match a.kind {
                FileType::Directory => fuser::FileType::Directory,
                FileType::File => fuser::FileType::RegularFile,
                FileType::Symlink => fuser::FileType::Symlink,
            },
            perm: a.perm,
            nlink: if a.kind == FileType::Directory { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            flags: 0,
            blksize: 128 * 1024,
        }
    }

    fn handle(&self, fh: FileHandle) -> Option<Arc<OpenFile>> {
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&u64::from(fh))
            .cloned()
    }
}

fn ttl(a: &Attr) -> Duration {
    a.ttl
}

impl Filesystem for MltrackFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::ENOENT);
        };
        match self.rt.block_on(self.tree.lookup(u64::from(parent), name)) {
            Ok(Some(a)) => reply.entry(&ttl(&a), &self.file_attr(&a), Generation(0)),
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(errno("lookup", &e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.rt.block_on(self.tree.getattr(u64::from(ino))) {
            Ok(Some(a)) => reply.attr(&ttl(&a), &self.file_attr(&a)),
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
        // Passthrough where the kernel has it: a fully cached object is then read by the kernel
        // straight from its cache file. Without it, every read goes through `read` below.
        if config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok()
        {
            self.passthrough.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let content = match self.rt.block_on(self.tree.open(u64::from(ino))) {
            Ok(c) => c,
            Err(e) => return reply.error(errno("open", &e)),
        };
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        if let Content::Object(meta) = &content
            && self.passthrough.load(Ordering::Relaxed)
        {
            let cache = self.reader.cache().clone();
            let m = meta.clone();
            let pinned = self.rt.block_on(async move {
                tokio::task::spawn_blocking(move || cache.open_pinned(&m))
                    .await
                    .ok()
                    .flatten()
            });
            if let Some(file) = pinned {
                let mut backing = self.backing.lock().unwrap_or_else(|p| p.into_inner());
                let id = match backing.get(&u64::from(ino)).and_then(Weak::upgrade) {
                    Some(id) => Some(id),
                    None => reply.open_backing(&file).ok().map(Arc::new),
                };
                if let Some(id) = id {
                    backing.insert(u64::from(ino), Arc::downgrade(&id));
                    drop(backing);
                    tracing::debug!(ino = u64::from(ino), "opened with passthrough");
                    reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id);
                    self.passthrough_handles
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(fh, (id, file));
                    return;
                }
            }
        }
        // Objects never change: the kernel may keep their pages between opens.
        let keep = matches!(content, Content::Object(_));
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, Arc::new(OpenFile::new(content)));
        let flags = if keep {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::FOPEN_DIRECT_IO
        };
        reply.opened(FileHandle(fh), flags);
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
        let Some(file) = self.handle(fh) else {
            return reply.error(Errno::EBADF);
        };
        match self.rt.block_on(self.reader.read(&file, offset, size)) {
            Ok(data) => reply.data(&data),
            Err(e) => {
                // Any failure to produce verified bytes is an I/O error, never wrong bytes.
                tracing::error!(error = %e, "read failed");
                reply.error(Errno::EIO)
            }
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is buffered for writing: a read-only file has nothing to flush.
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
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&u64::from(fh));
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.rt.block_on(self.tree.readdir(u64::from(ino))) {
            Ok(e) => e,
            Err(e) => return reply.error(errno("readdir", &e)),
        };
        let dots = [
            (u64::from(ino), fuser::FileType::Directory, ".".to_string()),
            (u64::from(ino), fuser::FileType::Directory, "..".to_string()),
        ];
        let all = dots.into_iter().chain(entries.into_iter().map(|e| {
            let kind = match e.kind {
                FileType::Directory => fuser::FileType::Directory,
                FileType::File => fuser::FileType::RegularFile,
                FileType::Symlink => fuser::FileType::Symlink,
            };
            (e.ino, kind, e.name)
        }));
        for (i, (ino, kind, name)) in all.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let attrs = match self.rt.block_on(self.tree.xattrs(u64::from(ino))) {
            Ok(a) => a,
            Err(e) => return reply.error(errno("getxattr", &e)),
        };
        let Some((_, value)) = attrs
            .iter()
            .find(|(n, _)| Some(n.as_str()) == name.to_str())
        else {
            return reply.error(Errno::NO_XATTR);
        };
        if size == 0 {
            reply.size(value.len() as u32);
        } else if (size as usize) < value.len() {
            reply.error(Errno::ERANGE);
        } else {
            reply.data(value);
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let attrs = match self.rt.block_on(self.tree.xattrs(u64::from(ino))) {
            Ok(a) => a,
            Err(e) => return reply.error(errno("listxattr", &e)),
        };
        let mut names = Vec::new();
        for (n, _) in &attrs {
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
