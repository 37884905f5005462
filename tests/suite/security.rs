//! Other local users, as root sees them: a link or a file planted where mltrack keeps its run
//! locks, its cache (objects, lock, spool, log) and the local store, a directory someone else
//! owns or can write, modes from the bucket, and the modes of what mltrack itself writes.
//! Each planted link points at a file or directory root owns; after mltrack has run, that
//! victim has its mode, owner and bytes as before, and mltrack either worked or said why not
//! in one sentence. docs/SECURITY.md lists the cases. Run as root (scripts/test is).

use crate::common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{Kind, NOBODY, TestStore, as_nobody, bytes, open_path_to, path_str, sha256_hex};

/// A root-owned file someone would like to change, and what it must still be.
struct Victim {
    path: PathBuf,
}

impl Victim {
    fn file(dir: &Path) -> Victim {
        let path = dir.join("victim");
        std::fs::write(&path, b"secret").expect("victim");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        Victim { path }
    }

    fn dir(dir: &Path) -> Victim {
        let path = dir.join("victim-dir");
        std::fs::create_dir(&path).expect("victim dir");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        Victim { path }
    }

    /// Asserts the victim is as it was made.
    fn intact(&self, context: &str) {
        let m = std::fs::symlink_metadata(&self.path).expect("victim still there");
        assert_eq!(m.uid(), 0, "{context}: owner changed");
        if m.is_dir() {
            assert_eq!(m.mode() & 0o7777, 0o700, "{context}: mode changed");
            let names: Vec<_> = std::fs::read_dir(&self.path).expect("list").collect();
            assert!(names.is_empty(), "{context}: something was made in it");
        } else {
            assert_eq!(m.mode() & 0o7777, 0o600, "{context}: mode changed");
            assert_eq!(
                std::fs::read(&self.path).expect("read"),
                b"secret",
                "{context}"
            );
            assert_eq!(m.nlink(), if context.contains("hard") { 2 } else { 1 });
        }
    }
}

fn with_env(t: &TestStore, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut c = t.cmd();
    for (k, v) in env {
        c.env(k, v);
    }
    c.args(args).output().expect("run mltrack")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a command failed with a message containing `words`.
fn refused(out: &Output, words: &str, context: &str) {
    assert!(!out.status.success(), "{context}: it succeeded");
    let err = stderr(out);
    assert!(err.contains(words), "{context}: {err}");
    assert!(
        err.lines().count() <= 2,
        "{context}: not one sentence: {err}"
    );
}

fn chown_nobody(p: &Path) {
    std::os::unix::fs::lchown(p, Some(NOBODY), Some(NOBODY)).expect("lchown");
}

fn the_only_file_in(dir: &Path) -> PathBuf {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.remove(0)
}

#[test]
fn planted_run_locks_are_not_followed() {
    let t = TestStore::new(Kind::Local);
    let locks = t.dir.path().join("locks");
    let env = [("MLTRACK_LOCK_DIR", locks.as_path())];
    let f = t.file("d", b"data");
    assert!(
        with_env(&t, &env, &["run", "create", "r1", "--project", "p"])
            .status
            .success()
    );
    assert_eq!(
        std::fs::metadata(&locks).expect("lock dir").mode() & 0o7777,
        0o700
    );
    let lock = the_only_file_in(&locks);
    assert_eq!(
        std::fs::metadata(&lock).expect("lock").mode() & 0o777,
        0o600
    );

    // The issue's reproduction: the lock file replaced by a link to a root-owned file.
    let victim = Victim::file(t.dir.path());
    std::fs::remove_file(&lock).expect("rm lock");
    std::os::unix::fs::symlink(&victim.path, &lock).expect("plant symlink");
    let out = with_env(&t, &env, &["run", "add-output", "r1", "d", path_str(&f)]);
    refused(&out, "symbolic link", "symlinked lock");
    victim.intact("symlinked lock");

    std::fs::remove_file(&lock).expect("rm link");
    std::fs::hard_link(&victim.path, &lock).expect("plant hard link");
    let out = with_env(&t, &env, &["run", "add-output", "r1", "d", path_str(&f)]);
    refused(&out, "hard links", "hard-linked lock");
    victim.intact("hard-linked lock");
    std::fs::remove_file(&lock).expect("rm link");
    assert!(
        with_env(&t, &env, &["run", "add-output", "r1", "d", path_str(&f)])
            .status
            .success()
    );

    // The lock directory itself: a link another user planted, a directory they own, one they
    // can write.
    let add_with_locks_in = |dir: &Path| {
        let env = [("MLTRACK_LOCK_DIR", dir)];
        with_env(&t, &env, &["run", "add-output", "r1", "e", path_str(&f)])
    };
    let vdir = Victim::dir(t.dir.path());
    let planted = t.dir.path().join("planted-locks");
    std::os::unix::fs::symlink(&vdir.path, &planted).expect("plant dir link");
    chown_nobody(&planted);
    let out = add_with_locks_in(&planted);
    refused(
        &out,
        "symbolic link made by uid 65534",
        "symlinked lock dir",
    );
    vdir.intact("symlinked lock dir");

    let theirs = t.dir.path().join("their-locks");
    std::fs::create_dir(&theirs).expect("mkdir");
    chown_nobody(&theirs);
    let out = add_with_locks_in(&theirs);
    refused(&out, "belongs to uid 65534", "lock dir of another user");
    refused(&out, "MLTRACK_LOCK_DIR", "lock dir of another user");
    let doctor = with_env(&t, &[("MLTRACK_LOCK_DIR", &theirs)], &["--json", "doctor"]);
    assert!(
        String::from_utf8_lossy(&doctor.stdout).contains("belongs to uid 65534"),
        "doctor: {doctor:?}"
    );

    let open = t.dir.path().join("open-locks");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let out = add_with_locks_in(&open);
    refused(
        &out,
        "can be written by other users",
        "world-writable lock dir",
    );
    // Sticky, as /tmp is: shared by the users of the machine, and accepted.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let out = add_with_locks_in(&open);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn root_keeps_its_run_locks_in_run() {
    let t = TestStore::new(Kind::Local);
    let out = t
        .cmd()
        .env_remove("MLTRACK_LOCK_DIR")
        .args(["run", "create", "r1", "--project", "p"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    let m = std::fs::metadata("/run/mltrack/locks").expect("/run/mltrack/locks");
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o700));
}

/// Mounts in the background (as `mltrack mount` does by default) with `cache`; the output.
fn mount_background(t: &TestStore, cache: &Path) -> (PathBuf, Output) {
    let mnt = t.dir.path().join("mnt-bg");
    let _ = std::fs::create_dir(&mnt);
    let out = t
        .cmd()
        .args(["mount", path_str(&mnt), "--cache-dir", path_str(cache)])
        .output()
        .expect("run mltrack mount");
    (mnt, out)
}

#[test]
fn planted_cache_files_are_not_followed() {
    let t = TestStore::new(Kind::Local);
    let stored = bytes(1900, 3 * 1024 * 1024 + 17);
    let h = sha256_hex(&stored);
    t.ok(&["put", path_str(&t.file("s.bin", &stored))]);
    let rel = format!("data/{}/{h}/data.bin", &h[..2]);
    let cache = t.dir.path().join("cache");
    let objects = cache.join("objects").join(&h[..2]);
    std::fs::create_dir_all(&objects).expect("fanout");
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).expect("chmod");

    // The object's cache file, a link to a root-owned file: reads are still right (served
    // uncached), and the victim is untouched.
    for how in ["symlink", "hard link"] {
        let victim = Victim::file(t.dir.path());
        let planted = objects.join(&h);
        if how == "symlink" {
            std::os::unix::fs::symlink(&victim.path, &planted).expect("plant");
        } else {
            std::fs::hard_link(&victim.path, &planted).expect("plant");
        }
        let m = t.mount(&cache, &[]);
        assert!(
            std::fs::read(m.path(&rel)).expect("read") == stored,
            "{how}"
        );
        drop(m);
        victim.intact(how);
        std::fs::remove_file(&planted).expect("unplant");
        std::fs::remove_file(&victim.path).expect("rm victim");
    }

    // The lock, the spool and the log: the mount refuses to start, saying which and why.
    for (name, words) in [
        ("lock", "lock is a symbolic link"),
        ("spool", "spool is a symbolic link"),
        ("mount.log", "mount.log is a symbolic link"),
    ] {
        let victim = if name == "spool" {
            Victim::dir(t.dir.path())
        } else {
            Victim::file(t.dir.path())
        };
        let planted = cache.join(name);
        let _ = std::fs::remove_file(&planted);
        let _ = std::fs::remove_dir_all(&planted);
        std::os::unix::fs::symlink(&victim.path, &planted).expect("plant");
        let (mnt, out) = mount_background(&t, &cache);
        refused(&out, words, name);
        assert!(!mltrack::mount::is_mounted(&mnt), "{name}: mounted anyway");
        victim.intact(name);
        std::fs::remove_file(&planted).expect("unplant");
        if name == "spool" {
            std::fs::remove_dir(&victim.path).expect("rm victim");
        } else {
            std::fs::remove_file(&victim.path).expect("rm victim");
        }
    }

    // A cache directory another user owns, or links to.
    let theirs = t.dir.path().join("their-cache");
    std::fs::create_dir(&theirs).expect("mkdir");
    chown_nobody(&theirs);
    let (_, out) = mount_background(&t, &theirs);
    refused(&out, "belongs to uid 65534", "cache of another user");
    refused(&out, "MLTRACK_CACHE_DIR", "cache of another user");
    let vdir = Victim::dir(t.dir.path());
    let linked = t.dir.path().join("linked-cache");
    std::os::unix::fs::symlink(&vdir.path, &linked).expect("plant");
    chown_nobody(&linked);
    let (_, out) = mount_background(&t, &linked);
    refused(
        &out,
        "symbolic link made by uid 65534",
        "symlinked cache dir",
    );
    vdir.intact("symlinked cache dir");
    let out = with_env(&t, &[("MLTRACK_CACHE_DIR", &theirs)], &["--json", "doctor"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("belongs to uid 65534"),
        "doctor: {out:?}"
    );
}

#[test]
fn planted_store_files_are_not_followed() {
    let t = TestStore::new(Kind::Local);
    let store = t.dir.path().join("store");
    let f = t.file("d", b"data");
    t.ok(&["run", "create", "r1", "--project", "p"]);

    // A key lock in .locks, linked to a root-owned file.
    let victim = Victim::file(t.dir.path());
    let lock = store
        .join(".locks")
        .join(&sha256_hex(b"manifests/r1.json")[..24]);
    let _ = std::fs::remove_file(&lock);
    std::os::unix::fs::symlink(&victim.path, &lock).expect("plant");
    let out = t.run(&["run", "add-output", "r1", "d", path_str(&f)]);
    refused(&out, "symbolic link", "symlinked key lock");
    victim.intact("symlinked key lock");
    std::fs::remove_file(&lock).expect("unplant");
    t.ok(&["run", "add-output", "r1", "d", path_str(&f)]);

    // manifests/ swapped for a link to a root-owned directory.
    let vdir = Victim::dir(t.dir.path());
    let manifests = store.join("manifests");
    std::fs::rename(&manifests, store.join("manifests.real")).expect("move");
    std::os::unix::fs::symlink(&vdir.path, &manifests).expect("plant");
    let out = t.run(&["run", "create", "r2", "--project", "p"]);
    refused(&out, "symbolic link", "symlinked manifests/");
    vdir.intact("symlinked manifests/");
    std::fs::remove_file(&manifests).expect("unplant");
    std::fs::rename(store.join("manifests.real"), &manifests).expect("move back");
    t.ok(&["run", "show", "r1"]);

    // A store directory another user owns, or can write.
    let theirs = t.dir.path().join("their-store");
    std::fs::create_dir(&theirs).expect("mkdir");
    chown_nobody(&theirs);
    let out = with_env(&t, &[("MLTRACK_STORE", &theirs)], &["run", "list"]);
    refused(&out, "belongs to uid 65534", "store of another user");
    std::os::unix::fs::lchown(&theirs, Some(0), Some(0)).expect("chown");
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let out = with_env(&t, &[("MLTRACK_STORE", &theirs)], &["run", "list"]);
    refused(
        &out,
        "can be written by other users",
        "world-writable store",
    );
}

#[test]
fn a_mode_from_the_bucket_gives_other_users_no_write() {
    let t = TestStore::new(Kind::Local);
    let m = t.mount(&t.dir.path().join("cache"), &["--allow-other"]);
    let run = m.path("runs/by_project/p/r");
    std::fs::create_dir_all(&run).expect("mkdir run");
    let file = run.join("outputs/o.bin");
    std::fs::write(&file, b"original").expect("write");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o4777)).expect("chmod");
    let manifest = t.manifest("r");
    assert_eq!(
        manifest["files"]["outputs/o.bin"]["mode"], 0o4777,
        "recorded as given"
    );
    open_path_to(&m.dir);

    let shown = as_nobody(&["stat", "-c", "%a", path_str(&file)]);
    assert_eq!(
        String::from_utf8_lossy(&shown.stdout).trim(),
        "755",
        "{shown:?}"
    );
    let write = as_nobody(&["sh", "-c", &format!("echo changed > '{}'", path_str(&file))]);
    assert!(!write.status.success(), "another user wrote the file");
    assert!(stderr(&write).contains("Permission denied"), "{write:?}");
    assert_eq!(std::fs::read(&file).expect("read"), b"original");
}

/// Every file and directory below `dir`, with its mode.
fn modes_below(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("list").flatten() {
        let m = e.metadata().expect("stat");
        out.push((e.path(), m.mode() & 0o7777));
        if m.is_dir() {
            out.extend(modes_below(&e.path()));
        }
    }
    out
}

#[test]
fn what_is_stored_and_cached_stays_private() {
    let t = TestStore::new(Kind::Local);
    let secret = bytes(1901, 2 * 1024 * 1024);
    let f = t.file("secret.bin", &secret);
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let h = sha256_hex(&secret);
    t.ok(&["put", path_str(&f)]);
    let cache = t.dir.path().join("cache");
    let m = t.mount(&cache, &[]);
    let rel = format!("data/{}/{h}/data.bin", &h[..2]);
    assert!(std::fs::read(m.path(&rel)).expect("read") == secret);
    drop(m);

    let store = t.dir.path().join("store");
    let stored = store.join(&rel);
    let cached = cache.join("objects").join(&h[..2]).join(&h);
    assert!(cached.is_file(), "the read filled the cache");
    for (root, what) in [(&store, "store"), (&cache, "cache")] {
        assert_eq!(
            std::fs::metadata(root).expect("stat").mode() & 0o7777,
            0o700,
            "{what}"
        );
        for (p, mode) in modes_below(root) {
            assert_eq!(
                mode & 0o077,
                0,
                "{} is open to others ({mode:o})",
                p.display()
            );
        }
    }
    // Even with every directory on the way open, another user reads neither copy.
    open_path_to(&store);
    for p in [&stored, &cached] {
        let mut dir = p.parent();
        while let Some(d) = dir.filter(|d| d.starts_with(t.dir.path())) {
            let mode = std::fs::metadata(d).expect("stat").mode();
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode | 0o111))
                .expect("chmod");
            dir = d.parent();
        }
        let out = as_nobody(&["cat", path_str(p)]);
        assert!(!out.status.success(), "nobody read {}", p.display());
        assert!(stderr(&out).contains("Permission denied"), "{out:?}");
    }
}
