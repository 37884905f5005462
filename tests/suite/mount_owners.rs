//! Owners in runs: `chown` and `chgrp` are kept per file and directory in the manifest, so
//! `cp -a` and `rsync -a` as root restore them, every mount shows them, and the kernel's permission
//! checks (`default_permissions`) follow them.

use crate::common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::write::{rsync_would_change, sh};
use common::{Kind, NOBODY, TestStore, bytes, path_str};

fn chown_is_kept_and_seen_by_every_mount(kind: Kind) {
    let t = TestStore::new(kind);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let run = m.path("runs/by_project/p/own");
    std::fs::create_dir_all(&run).expect("mkdir run");
    let closed = run.join("outputs/closed.bin");
    std::fs::write(&closed, b"closed").expect("write");
    std::os::unix::fs::chown(&closed, Some(1234), Some(5678)).expect("chown a closed file");
    // While being written, as `cp -a` does (fchown before close).
    let open = run.join("outputs/open.bin");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&open).expect("create");
        f.write_all(&bytes(3, 100_000)).expect("write");
        std::os::unix::fs::fchown(&f, Some(NOBODY), Some(NOBODY)).expect("fchown while open");
        f.sync_all().expect("fsync");
    }
    let files = &t.manifest("own")["files"];
    assert_eq!(files["outputs/closed.bin"]["uid"], 1234, "{files}");
    assert_eq!(files["outputs/closed.bin"]["gid"], 5678, "{files}");
    assert_eq!(files["outputs/open.bin"]["uid"], NOBODY, "{files}");
    let other = t.mount(&t.dir.path().join("cache2"), &[]);
    let seen = other.path("runs/by_project/p/own/outputs");
    let st = std::fs::metadata(seen.join("closed.bin")).expect("stat");
    assert_eq!((st.uid(), st.gid()), (1234, 5678));
    let st = std::fs::metadata(seen.join("open.bin")).expect("stat");
    assert_eq!((st.uid(), st.gid()), (NOBODY, NOBODY));
    // Rewriting a file keeps its owner, as on any filesystem.
    std::fs::write(&closed, b"rewritten").expect("rewrite");
    assert_eq!(
        t.manifest("own")["files"]["outputs/closed.bin"]["uid"],
        1234
    );
}

/// `cp -a` as root of a tree whose files and directories belong to other users, then
/// `rsync -n -a`: nothing left to do.
#[test]
fn cp_a_as_root_restores_owners_modes_and_times() {
    let t = TestStore::new(Kind::Local);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let run = m.path("runs/by_project/p/cpa");
    std::fs::create_dir_all(&run).expect("mkdir run");
    let src = t.scratch().join("tree");
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    std::fs::write(src.join("a.csv"), b"x,y\n1,2\n").expect("write a");
    std::fs::write(src.join("sub/b.bin"), bytes(4, 70_000)).expect("write b");
    std::os::unix::fs::chown(src.join("a.csv"), Some(NOBODY), Some(NOBODY)).expect("chown a");
    std::os::unix::fs::chown(src.join("sub/b.bin"), Some(1001), Some(1002)).expect("chown b");
    std::os::unix::fs::chown(src.join("sub"), Some(1003), Some(1004)).expect("chown sub");
    std::fs::set_permissions(src.join("a.csv"), std::fs::Permissions::from_mode(0o640))
        .expect("chmod a");
    std::fs::set_permissions(src.join("sub"), std::fs::Permissions::from_mode(0o750))
        .expect("chmod sub");
    sh("touch -d '2023-05-06 07:08:09' a.csv sub/b.bin sub .", &src);
    let dst = run.join("outputs/tree");
    sh(
        &format!("cp -a '{}' '{}'", path_str(&src), path_str(&dst)),
        t.dir.path(),
    );
    let changes = rsync_would_change("-a", &src, &dst);
    assert!(changes.is_empty(), "rsync would still change:\n{changes}");
    let st = std::fs::metadata(dst.join("sub/b.bin")).expect("stat");
    assert_eq!((st.uid(), st.gid()), (1001, 1002));
    let st = std::fs::metadata(dst.join("sub")).expect("stat");
    assert_eq!(
        (st.uid(), st.gid(), st.mode() & 0o7777),
        (1003, 1004, 0o750)
    );
}

/// With `--allow-other`, the kernel checks permissions against the kept owner and mode: a
/// file given to `nobody` with mode 0600 is readable by `nobody`, one kept by root is not;
/// and what `nobody` makes belongs to `nobody`.
#[test]
fn permission_checks_follow_the_kept_owner() {
    let t = TestStore::new(Kind::Local);
    common::open_path_to(t.dir.path());
    let m = t.mount(&t.dir.path().join("cache"), &["--allow-other"]);
    let run = m.path("runs/by_project/p/perm");
    std::fs::create_dir_all(&run).expect("mkdir run");
    let theirs = run.join("outputs/theirs.txt");
    let mine = run.join("outputs/mine.txt");
    std::fs::write(&theirs, b"for nobody").expect("write theirs");
    std::fs::write(&mine, b"for root").expect("write mine");
    for f in [&theirs, &mine] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
    }
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).expect("chown");
    let out = common::as_nobody(&["cat", path_str(&theirs)]);
    common::assert_succeeded(&out);
    assert_eq!(out.stdout, b"for nobody");
    let out = common::as_nobody(&["cat", path_str(&mine)]);
    assert!(!out.status.success(), "nobody read root's 0600 file");
    // What nobody makes in a directory given to it is nobody's, on every mount.
    let given = run.join("outputs/given");
    std::fs::create_dir(&given).expect("mkdir");
    std::os::unix::fs::chown(&given, Some(NOBODY), Some(NOBODY)).expect("chown dir");
    let out = common::as_nobody(&["touch", path_str(&given.join("f.txt"))]);
    common::assert_succeeded(&out);
    let out = common::as_nobody(&["mkdir", path_str(&given.join("d"))]);
    common::assert_succeeded(&out);
    let out = common::as_nobody(&["ln", "-s", "f.txt", path_str(&given.join("l"))]);
    common::assert_succeeded(&out);
    let other = t.mount(&t.dir.path().join("cache2"), &[]);
    let seen = other.path("runs/by_project/p/perm/outputs/given");
    for name in ["f.txt", "d", "l"] {
        let st = std::fs::symlink_metadata(seen.join(name)).expect("stat");
        assert_eq!((st.uid(), st.gid()), (NOBODY, NOBODY), "{name}");
    }
    let st = std::fs::metadata(&mine).expect("stat");
    assert_eq!(
        st.uid(),
        0,
        "what the mounting user makes shows the mounting user"
    );
}

both_backends!(chown_is_kept_and_seen_by_every_mount);

/// `ctime` is kept apart from `mtime`: chmod, chown and rename change it and leave `mtime`.
#[test]
fn metadata_changes_move_ctime_not_mtime() {
    let t = TestStore::new(Kind::Local);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let run = m.path("runs/by_project/p/ct");
    std::fs::create_dir_all(&run).expect("mkdir run");
    let f = run.join("outputs/f.txt");
    std::fs::write(&f, b"data").expect("write");
    sh("touch -d '2021-01-01 00:00:00Z' outputs/f.txt", &run);
    let before = std::fs::metadata(&f).expect("stat");
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let after = std::fs::metadata(&f).expect("stat");
    assert_eq!(after.mtime(), 1_609_459_200, "chmod left mtime");
    assert!(
        (after.ctime(), after.ctime_nsec()) > (before.ctime(), before.ctime_nsec()),
        "chmod moved ctime"
    );
    assert!(after.ctime() > after.mtime(), "ctime is not mtime");
    std::fs::rename(&f, run.join("outputs/g.txt")).expect("mv");
    let moved = std::fs::metadata(run.join("outputs/g.txt")).expect("stat");
    assert_eq!(moved.mtime(), 1_609_459_200, "rename left mtime");
    assert!(
        (moved.ctime(), moved.ctime_nsec()) > (after.ctime(), after.ctime_nsec()),
        "rename moved ctime"
    );
}
