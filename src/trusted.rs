//! Directories mltrack keeps its own files in (the run locks, the block cache and its spool,
//! the local store, the mount log), reached so that no other local user can steer what
//! mltrack creates, writes, changes or removes there.
//!
//! A daemon running as root that opens `<dir>/<name>` by path follows whatever another user
//! planted there: a symbolic link to `/etc/shadow`, a hard link to it, or a parent directory
//! swapped for a link elsewhere. So a [`TrustedDir`] is an open directory descriptor, checked
//! once when opened, and everything below it is reached relative to that descriptor, one
//! component at a time, with `O_NOFOLLOW`:
//!
//! - The directory itself is trusted only if it is owned by root or by the current user and
//!   no one else can write to it (for a lock directory, a sticky one owned by root or us is
//!   accepted too, as `/tmp` is). Otherwise opening it fails with one sentence naming it and
//!   the fix. A symbolic link naming it is followed only if the link belongs to root or us.
//! - Subdirectories are opened with `O_DIRECTORY | O_NOFOLLOW` and checked the same way;
//!   missing ones are made with `mkdirat`, then opened and checked (never "exists, then act").
//!   One of ours that others can write (made by an older mltrack under umask 0002) has that
//!   write access taken away with `fchmod` on the open descriptor.
//! - Files are opened with `O_NOFOLLOW | O_CLOEXEC` (and `O_NONBLOCK`, so a planted FIFO
//!   cannot hang us), then checked with `fstat`: a regular file, owned by root or us, and, when
//!   opened for writing, with one link. Renames, links and removals are `*at` calls on the
//!   checked descriptors.
//!
//! What mltrack creates is private (files `0600`, directories `0700`) unless the directory it
//! was asked to use shares more: the group and other read bits of that root directory are
//! given to what is created below it, so `chmod 0750` on a store root lets its group read it.
//! docs/SECURITY.md has the reasons and the cases the tests cover.

use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

/// What a directory is used for, which decides who else may write to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Only its owner writes to it (a store, a cache).
    Private,
    /// Run locks: like `Private`, or a sticky directory (`/tmp`-like) shared by the users of
    /// the machine.
    Locks,
}

/// How [`TrustedDir::open_file`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write, created if missing.
    ReadWriteCreate,
    /// Write only, created; fails if the name exists.
    CreateNew,
    /// Appending, created if missing (a log).
    Append,
    /// Read only, created if missing: enough to take an `flock`.
    Lock,
}

/// An open, checked directory; see the module documentation.
#[derive(Debug)]
pub struct TrustedDir {
    fd: OwnedFd,
    path: PathBuf,
    /// Group and other read bits (`0o044`) given to files created below.
    share: u32,
    /// Sticky and shared: files in it may belong to other users.
    shared_sticky: bool,
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn owned_by_us_or_root(st: &Stat) -> bool {
    st.st_uid == 0 || st.st_uid == euid()
}

fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

fn refused(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, msg)
}

/// The names a relative path is made of; `.`, `..` and empty components are refused.
fn components(rel: &str) -> io::Result<impl Iterator<Item = &str>> {
    if rel
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{rel:?} is not a plain relative path"),
        ));
    }
    Ok(rel.split('/'))
}

impl TrustedDir {
    /// Opens the directory `path`, creating it (`0700`, and its missing parents as the umask
    /// makes them) when `create` is set, and checks that it can be trusted under `policy`.
    /// `hint` says how the user picks another directory (for the refusal message).
    pub fn open(path: &Path, policy: Policy, create: bool, hint: &str) -> io::Result<TrustedDir> {
        let name = path.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} does not name a directory", path.display()),
            )
        })?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if create {
            std::fs::create_dir_all(parent)?;
        }
        let parent_fd = rustix::fs::open(
            parent,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        if create {
            match rustix::fs::mkdirat(&parent_fd, name, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let fd = match open_dir_at(&parent_fd, name) {
            Ok(fd) => fd,
            Err(e) if e == Errno::LOOP || e == Errno::NOTDIR => {
                // A symbolic link: followed only if nobody else could have put it there.
                let st = rustix::fs::statat(&parent_fd, name, AtFlags::SYMLINK_NOFOLLOW)?;
                if file_type(&st) != FileType::Symlink {
                    return Err(io::Error::new(
                        io::ErrorKind::NotADirectory,
                        format!("{} is not a directory", path.display()),
                    ));
                }
                if !owned_by_us_or_root(&st) {
                    return Err(refused(format!(
                        "{} is a symbolic link made by uid {}, not by you (uid {}) or root: mltrack does not follow it ({hint})",
                        path.display(),
                        st.st_uid,
                        euid()
                    )));
                }
                rustix::fs::openat(
                    &parent_fd,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )?
            }
            Err(e) => return Err(e.into()),
        };
        let st = rustix::fs::fstat(&fd)?;
        let mode = st.st_mode & 0o7777;
        let sticky = mode & 0o1000 != 0;
        if !owned_by_us_or_root(&st) {
            return Err(refused(format!(
                "{} belongs to uid {}, not to you (uid {}) or root: another user could redirect mltrack's files through it; {hint}",
                path.display(),
                st.st_uid,
                euid()
            )));
        }
        let others_write = mode & 0o022 != 0;
        if others_write && !(policy == Policy::Locks && sticky) {
            return Err(refused(format!(
                "{} can be written by other users (mode {mode:04o}): they could redirect mltrack's files through it; run `chmod go-w {}` or {hint}",
                path.display(),
                path.display()
            )));
        }
        Ok(TrustedDir {
            fd,
            path: path.to_path_buf(),
            share: if others_write { 0o044 } else { mode & 0o044 },
            shared_sticky: others_write,
        })
    }

    /// The path this directory was opened under (for messages; never opened again).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file_mode(&self) -> Mode {
        Mode::from_raw_mode(0o600 | self.share)
    }

    fn dir_mode(&self) -> Mode {
        // A directory readable by some is searchable by them too.
        Mode::from_raw_mode(0o700 | self.share | ((self.share & 0o044) >> 2))
    }

    /// Opens the subdirectory `rel` (names separated by `/`), creating what is missing when
    /// `create` is set. Every component must be a real directory owned by root or us that no
    /// one else can write to.
    pub fn subdir(&self, rel: &str, create: bool) -> io::Result<TrustedDir> {
        let mut fd: Option<OwnedFd> = None;
        let mut path = self.path.clone();
        for name in components(rel)? {
            path.push(name);
            let at = fd.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
            let next = match open_dir_at(at, name) {
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(at, name, self.dir_mode()) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    open_dir_at(at, name)
                }
                other => other,
            }
            .map_err(|e| not_followed_dir(e, at, name, &path))?;
            let mut st = rustix::fs::fstat(&next)?;
            if st.st_uid == euid() && st.st_mode & 0o022 != 0 {
                // Ours, made group- or world-writable by an older mltrack under a loose umask
                // (0002 is common): closed again through the descriptor, so nothing can swap
                // it between the check and the change.
                let mode = st.st_mode & 0o7777 & !0o022;
                rustix::fs::fchmod(&next, Mode::from_raw_mode(mode))?;
                tracing::info!(dir = %path.display(), mode = format!("{mode:04o}"), "took write access from group and others");
                st = rustix::fs::fstat(&next)?;
            }
            if !owned_by_us_or_root(&st) || st.st_mode & 0o022 != 0 {
                return Err(refused(format!(
                    "{} belongs to uid {} with mode {:04o}: mltrack does not use a directory another user can change",
                    path.display(),
                    st.st_uid,
                    st.st_mode & 0o7777
                )));
            }
            fd = Some(next);
        }
        Ok(TrustedDir {
            fd: fd.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty path"))?,
            path,
            share: self.share,
            shared_sticky: false,
        })
    }

    /// Opens the file `name` in this directory; see [`Open`]. Refuses (without following) a
    /// symbolic link, and anything that is not a regular file owned by root or us, or, when
    /// opened for writing, a file with more than one link.
    pub fn open_file(&self, name: impl AsRef<OsStr>, how: Open) -> io::Result<File> {
        let name = name.as_ref();
        let flags = match how {
            Open::Read => OFlags::RDONLY,
            Open::ReadWrite => OFlags::RDWR,
            Open::ReadWriteCreate => OFlags::RDWR | OFlags::CREATE,
            Open::CreateNew => OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
            Open::Append => OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE,
            Open::Lock => OFlags::RDONLY | OFlags::CREATE,
        };
        let mode = if how == Open::Lock && self.shared_sticky {
            // Other users of a shared lock directory open it to lock it too.
            Mode::from_raw_mode(0o644)
        } else {
            self.file_mode()
        };
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            mode,
        )
        .map_err(|e| not_followed(e, &self.path.join(name)))?;
        let st = rustix::fs::fstat(&fd)?;
        let shown = || self.path.join(name).display().to_string();
        if file_type(&st) != FileType::RegularFile {
            return Err(refused(format!("{} is not a regular file", shown())));
        }
        let shared_lock = how == Open::Lock && self.shared_sticky;
        if !(owned_by_us_or_root(&st) || shared_lock) {
            return Err(refused(format!(
                "{} belongs to uid {}, not to you or root",
                shown(),
                st.st_uid
            )));
        }
        if how != Open::Read && st.st_nlink != 1 {
            return Err(refused(format!(
                "{} has {} hard links: mltrack does not write to a file that is also elsewhere",
                shown(),
                st.st_nlink
            )));
        }
        // Back to blocking reads and writes: O_NONBLOCK was only for the open.
        rustix::fs::fcntl_setfl(&fd, rustix::fs::fcntl_getfl(&fd)? & !OFlags::NONBLOCK)?;
        Ok(File::from(fd))
    }

    /// Opens the file `name` as [`TrustedDir::open_file`] does and takes an exclusive `flock`
    /// on it, waiting for it; the lock is released when the file is closed.
    pub fn lock_exclusive(&self, name: impl AsRef<OsStr>, how: Open) -> io::Result<File> {
        let file = self.open_file(name, how)?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
        Ok(file)
    }

    /// Opens an anonymous file (`O_TMPFILE`) in this directory, read-write, mode `0600`.
    pub fn tmpfile(&self) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            c".",
            OFlags::RDWR | OFlags::TMPFILE | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        Ok(File::from(fd))
    }

    /// The entry `name`, not following a symbolic link; `None` if there is none.
    pub fn stat(&self, name: impl AsRef<OsStr>) -> io::Result<Option<Stat>> {
        match rustix::fs::statat(&self.fd, name.as_ref(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Renames `name` here to `to_name` in `to` (replacing a file there).
    pub fn rename(&self, name: &str, to: &TrustedDir, to_name: &str) -> io::Result<()> {
        Ok(rustix::fs::renameat(&self.fd, name, &to.fd, to_name)?)
    }

    /// Links `name` here as `to_name` in `to`; fails with `AlreadyExists` if that is taken.
    pub fn link(&self, name: &str, to: &TrustedDir, to_name: &str) -> io::Result<()> {
        Ok(rustix::fs::linkat(
            &self.fd,
            name,
            &to.fd,
            to_name,
            AtFlags::empty(),
        )?)
    }

    /// Gives the anonymous file `file` (an `O_TMPFILE` no one else can reach) the name `name`
    /// here, with the mode a file created here gets; refuses a file that has a name already.
    pub fn name_anonymous(&self, file: &File, name: &str) -> io::Result<()> {
        let st = rustix::fs::fstat(file)?;
        if file_type(&st) != FileType::RegularFile || st.st_nlink != 0 {
            return Err(refused(format!(
                "{name}: only an anonymous regular file is taken in"
            )));
        }
        rustix::fs::fchmod(file, self.file_mode())?;
        self.link_open_file(file, name)
    }

    /// Gives the anonymous or open `file` the name `name` here (`linkat` through /proc, the
    /// way an `O_TMPFILE` file is named); fails with `AlreadyExists` if the name is taken.
    pub fn link_open_file(&self, file: &File, name: &str) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let proc = format!("/proc/self/fd/{}", file.as_raw_fd());
        Ok(rustix::fs::linkat(
            rustix::fs::CWD,
            proc.as_str(),
            &self.fd,
            name,
            AtFlags::SYMLINK_FOLLOW,
        )?)
    }

    /// Removes the file `name` (a link to it, never what a link points to).
    pub fn remove_file(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(
            &self.fd,
            name.as_ref(),
            AtFlags::empty(),
        )?)
    }

    /// Removes the empty directory `name`.
    pub fn remove_dir(&self, name: &str) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR)?)
    }

    /// The names in this directory (without `.` and `..`) and their types; a name that is
    /// not UTF-8 is left out (mltrack never makes one).
    pub fn entries(&self) -> io::Result<Vec<(String, FileType)>> {
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.fd)? {
            let entry = entry?;
            let name: &CStr = entry.file_name();
            let bytes = name.to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            let Ok(name) = std::str::from_utf8(bytes) else {
                continue;
            };
            let mut kind = entry.file_type();
            if kind == FileType::Unknown {
                kind = match self.stat(name)? {
                    Some(st) => file_type(&st),
                    None => continue,
                };
            }
            out.push((name.to_string(), kind));
        }
        Ok(out)
    }

    /// Makes what was renamed or linked into this directory durable.
    pub fn sync(&self) -> io::Result<()> {
        Ok(rustix::fs::fsync(&self.fd)?)
    }
}

fn open_dir_at(at: impl AsFd, name: impl rustix::path::Arg) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        at,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// `O_NOFOLLOW` on a symbolic link fails with `ELOOP`: said in words, since "too many levels
/// of symbolic links" would mislead.
fn not_followed(e: Errno, path: &Path) -> io::Error {
    if e == Errno::LOOP {
        return link_refused(path);
    }
    e.into()
}

/// As [`not_followed`], for `O_DIRECTORY | O_NOFOLLOW`, which fails with `ENOTDIR` on a link.
fn not_followed_dir(e: Errno, at: BorrowedFd<'_>, name: &str, path: &Path) -> io::Error {
    if e == Errno::LOOP || e == Errno::NOTDIR {
        let st = rustix::fs::statat(at, name, AtFlags::SYMLINK_NOFOLLOW);
        if st.is_ok_and(|st| file_type(&st) == FileType::Symlink) {
            return link_refused(path);
        }
    }
    e.into()
}

fn link_refused(path: &Path) -> io::Error {
    refused(format!(
        "{} is a symbolic link: mltrack does not follow links in its own directories",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;

    fn mode_of(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn creates_private_directories_and_files() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("store");
        let dir = TrustedDir::open(&root, Policy::Private, true, "hint").unwrap();
        assert_eq!(mode_of(&root), 0o700);
        let sub = dir.subdir("a/b", true).unwrap();
        assert_eq!(mode_of(&root.join("a/b")), 0o700);
        let mut f = sub.open_file("f", Open::CreateNew).unwrap();
        f.write_all(b"x").unwrap();
        assert_eq!(mode_of(&root.join("a/b/f")), 0o600);
        let mut s = String::new();
        sub.open_file("f", Open::Read)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "x");
    }

    #[test]
    fn a_shared_root_shares_reading_only() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("store");
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o750)).unwrap();
        let dir = TrustedDir::open(&root, Policy::Private, true, "hint").unwrap();
        dir.subdir("d", true).unwrap();
        dir.open_file("f", Open::CreateNew).unwrap();
        assert_eq!(mode_of(&root.join("d")) & 0o077, 0o050);
        assert_eq!(mode_of(&root.join("f")) & 0o077, 0o040);
    }

    #[test]
    fn links_are_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("store");
        let dir = TrustedDir::open(&root, Policy::Private, true, "hint").unwrap();
        let victim = t.path().join("victim");
        std::fs::write(&victim, b"secret").unwrap();
        std::os::unix::fs::symlink(&victim, root.join("f")).unwrap();
        let e = dir.open_file("f", Open::ReadWriteCreate).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        std::fs::hard_link(&victim, root.join("g")).unwrap();
        let e = dir.open_file("g", Open::ReadWrite).unwrap_err();
        assert!(e.to_string().contains("hard links"), "{e}");
        std::os::unix::fs::symlink(t.path(), root.join("d")).unwrap();
        let e = dir.subdir("d/x", true).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(!t.path().join("x").exists());
        assert_eq!(std::fs::read(&victim).unwrap(), b"secret");
    }

    #[test]
    fn our_own_open_subdirectories_are_closed_again() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("store");
        let dir = TrustedDir::open(&root, Policy::Private, true, "hint").unwrap();
        std::fs::create_dir(root.join("old")).unwrap();
        std::fs::set_permissions(root.join("old"), std::fs::Permissions::from_mode(0o777)).unwrap();
        dir.subdir("old", false).unwrap();
        assert_eq!(mode_of(&root.join("old")), 0o755);
    }

    #[test]
    fn directories_others_can_write_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("open");
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = TrustedDir::open(&root, Policy::Private, true, "set X").unwrap_err();
        assert!(
            e.to_string().contains("can be written by other users"),
            "{e}"
        );
        assert!(e.to_string().contains("set X"), "{e}");
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(TrustedDir::open(&root, Policy::Private, true, "").is_err());
        let locks = TrustedDir::open(&root, Policy::Locks, true, "").unwrap();
        locks.open_file("l", Open::Lock).unwrap();
        assert_eq!(mode_of(&root.join("l")), 0o644);
    }
}
