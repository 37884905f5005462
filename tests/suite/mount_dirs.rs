//! Directories in runs keep what they carry: mode, owner, times and user attributes are
//! entries of the manifest's `dirs`, shown by every mount; an empty directory is there on
//! every node; an entry made, removed or renamed inside moves the directory's `mtime`. So
//! `tar x` then `tar c`, `cp -a` and `rsync -aX` of a whole tree round trip.

use crate::common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use common::write::{copy_tree, rsync_would_change, sh};
use common::{Kind, NOBODY, TestStore, bytes, path_str};

/// 2022-03-04T05:06:07Z, as `touch -d` is given it below.
const SET_TIME: i64 = 1_646_370_367;

fn directory_metadata_is_kept_and_seen_by_every_mount(kind: Kind) {
    let t = TestStore::new(kind);
    let m = t.mount(&t.dir.path().join("cache"), &["--refresh", "1"]);
    let run = m.path("runs/by_project/p/dirs");
    std::fs::create_dir_all(&run).expect("mkdir run");
    let d = run.join("outputs/empty");
    std::fs::create_dir(&d).expect("mkdir");
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o750)).expect("chmod");
    std::os::unix::fs::chown(&d, Some(1234), Some(5678)).expect("chown");
    sh(
        "setfattr -n user.note -v kept outputs/empty && touch -d '2022-03-04 05:06:07Z' outputs/empty",
        &run,
    );
    let dirs = &t.manifest("dirs")["dirs"];
    let e = &dirs["outputs/empty"];
    assert_eq!(
        (&e["mode"], &e["uid"], &e["gid"]),
        (&0o750.into(), &1234.into(), &5678.into()),
        "{dirs}"
    );
    assert_eq!(e["mtime"], "2022-03-04T05:06:07Z", "{dirs}");
    assert!(e["xattrs"]["user.note"].is_string(), "{dirs}");

    // Another mount, as another node: the empty directory and all it keeps.
    let other = t.mount(&t.dir.path().join("cache2"), &["--refresh", "1"]);
    let seen = other.path("runs/by_project/p/dirs/outputs/empty");
    let st = std::fs::metadata(&seen).expect("the empty directory is on the other mount");
    assert!(st.is_dir());
    assert_eq!(
        (st.mode() & 0o7777, st.uid(), st.gid(), st.mtime()),
        (0o750, 1234, 5678, SET_TIME)
    );
    let note = sh("getfattr --only-values -n user.note outputs/empty", &run);
    assert_eq!(note, "kept");

    // An entry made inside moves the directory's mtime and ctime; a removal too, and the
    // directory stays once its last file is gone.
    std::fs::write(d.join("f.txt"), b"inside").expect("write inside");
    let after_write = std::fs::metadata(&d).expect("stat");
    assert!(after_write.mtime() > SET_TIME, "a new file moved the mtime");
    std::thread::sleep(Duration::from_millis(20));
    std::fs::remove_file(d.join("f.txt")).expect("rm");
    let after_rm = std::fs::metadata(&d).expect("the directory outlives its last file");
    assert!(
        (after_rm.mtime(), after_rm.mtime_nsec()) > (after_write.mtime(), after_write.mtime_nsec()),
        "a removal moved the mtime"
    );
    assert_eq!(after_rm.mode() & 0o7777, 0o750, "the mode stays");

    // A directory moves with what it keeps; rmdir removes it for every mount.
    std::fs::rename(&d, run.join("outputs/moved")).expect("mv");
    let st = std::fs::metadata(run.join("outputs/moved")).expect("stat moved");
    assert_eq!((st.mode() & 0o7777, st.uid()), (0o750, 1234));
    assert!(t.manifest("dirs")["dirs"].get("outputs/empty").is_none());
    std::fs::remove_dir(run.join("outputs/moved")).expect("rmdir");
    assert!(t.manifest("dirs")["dirs"].get("outputs/moved").is_none());
    std::thread::sleep(Duration::from_millis(2500));
    let listed = sh("ls -A outputs", &run);
    assert_eq!(listed, "", "nothing left in outputs");
    let other_listed = sh("ls -A outputs", &other.path("runs/by_project/p/dirs"));
    assert_eq!(other_listed, "", "the other mount saw the rmdir");
}

/// The names in directory `d`, sorted (what `ls` shows).
fn names(d: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(d)
        .unwrap_or_else(|e| panic!("list {}: {e}", d.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

/// The kernel keeps each directory's listing, and serves it again without asking the mount
/// only while nothing has changed through the mount and it is younger than `--refresh`: a
/// change made in one view is listed at once in the run's other views and in `data/`, and
/// another node's change within the refresh interval.
fn kept_listings_show_every_change(kind: Kind) {
    let t = TestStore::new(kind);
    t.ok(&[
        "run",
        "create",
        "both",
        "--project",
        "p",
        "--view",
        "by_project",
        "--view",
        "flat",
    ]);
    let m = t.mount(&t.dir.path().join("cache"), &["--refresh", "2"]);
    let flat = m.path("runs/flat/both/outputs");
    let by_project = m.path("runs/by_project/p/both/outputs");
    assert!(names(&flat).is_empty());
    assert!(
        names(&flat).is_empty(),
        "listed again, from the kernel's copy"
    );
    let data = m.path("data");
    let fanouts = names(&data);

    // Written through the other view: this view's kept listing is not served any more.
    let body = bytes(41, 3000);
    std::fs::write(by_project.join("a.bin"), &body).expect("write a.bin");
    assert_eq!(
        names(&flat),
        ["a.bin"],
        "the run's other view lists the new file at once"
    );
    let hash = common::sha256_hex(&body);
    assert!(
        names(&data).contains(&hash[..2].to_string()),
        "data/ lists the new object's fan-out at once (before: {fanouts:?})"
    );
    assert_eq!(names(&data.join(&hash[..2])), std::slice::from_ref(&hash));

    // A rename in one view, and a removal: the other view lists each at once.
    std::fs::rename(by_project.join("a.bin"), by_project.join("b.bin")).expect("mv");
    assert_eq!(names(&flat), ["b.bin"]);
    std::fs::remove_file(flat.join("b.bin")).expect("rm");
    assert!(names(&by_project).is_empty());

    // Another node's run: listed here within the refresh interval of when this mount listed
    // the view from the store, however recently the kernel's listing was made from that. A
    // write here (a change, which does not make the view be listed from the store again)
    // makes the kernel's next listing of the view come from the daemon's, then kept.
    let view = m.path("runs/by_project/p");
    let other = t.mount(&t.dir.path().join("cache2"), &["--refresh", "2"]);
    assert_eq!(names(&view), ["both"]);
    let listed = std::time::Instant::now();
    std::fs::write(flat.join("d.bin"), b"a change here").expect("write d.bin");
    std::thread::sleep(Duration::from_millis(1200).saturating_sub(listed.elapsed()));
    assert_eq!(names(&view), ["both"]);
    std::fs::create_dir_all(other.path("runs/by_project/p/second"))
        .expect("mkdir on the other mount");
    std::thread::sleep(Duration::from_millis(2600).saturating_sub(listed.elapsed()));
    assert_eq!(
        names(&view),
        ["both", "second"],
        "the other node's run, --refresh after this mount listed the view"
    );
}

/// A listing carries each entry's attributes (`readdirplus`), which the kernel then gives
/// `stat` without asking again: on a mount that has listed nothing yet, `find` over a view
/// shows every mode, owner, time, size and link target that the same tree shows on local
/// disk, for the run's directory as for what is in it.
fn a_listing_shows_what_stat_shows(kind: Kind) {
    let t = TestStore::new(kind);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let local = t.scratch().join("p");
    for view in [m.path("runs/by_project/p"), local.clone()] {
        let run = view.join("listed");
        std::fs::create_dir_all(&run).expect("mkdir run");
        full_tree(&run);
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o751)).expect("chmod");
        // A run has these from the start; on local disk they are made here.
        sh(
            "mkdir -p listed/inputs listed/outputs
             touch -d '2023-04-05 06:07:08Z' listed/inputs listed/outputs listed",
            &view,
        );
    }
    let fresh = t.mount(&t.dir.path().join("cache2"), &[]);
    // Directories' sizes and link counts are the filesystem's own (ext4 gives 4096 and
    // counts subdirectories): the rest must match.
    let entries = "find . -mindepth 1 -printf '%y %m %U:%G %T@ %p -> %l\n' | sort; \
                   find . -mindepth 1 ! -type d -printf '%s %p\n' | sort";
    let seen = sh(entries, &fresh.path("runs/by_project/p"));
    assert_eq!(seen, sh(entries, &local));
    assert!(
        seen.contains("l 777 1005:1006 1612325106.0000000000 ./listed/links/dangling -> nowhere"),
        "{seen}"
    );
}

both_backends!(
    directory_metadata_is_kept_and_seen_by_every_mount,
    kept_listings_show_every_change,
    a_listing_shows_what_stat_shows
);

/// A tree with everything a run can keep: directories with modes, owners, times and
/// attributes; files with the same; an empty directory; symbolic links, one dangling, one
/// owned by another user.
fn full_tree(root: &Path) {
    std::fs::create_dir_all(root.join("data")).expect("mkdir");
    std::fs::create_dir_all(root.join("empty")).expect("mkdir");
    std::fs::create_dir_all(root.join("links")).expect("mkdir");
    std::fs::create_dir_all(root.join("ckpt/step_1")).expect("mkdir");
    std::fs::write(root.join("data/a.csv"), b"x,y\n1,2\n").expect("write");
    std::fs::write(root.join("data/b.bin"), bytes(21, 200_000)).expect("write");
    std::fs::write(root.join("ckpt/step_1/w.bin"), bytes(22, 70_000)).expect("write");
    sh(
        "set -e
         ln -s ../data/a.csv links/latest
         ln -s nowhere links/dangling
         ln -s step_1 ckpt/latest
         chmod 0640 data/a.csv; chmod 0600 data/b.bin; chmod 0750 data; chmod 0700 empty
         chown 1001:1002 data; chown 1003:1004 data/b.bin; chown -h 1005:1006 links/dangling
         setfattr -n user.dir -v yes data; setfattr -n user.checksum -v sha256:abc data/a.csv
         touch -d '2021-01-02 03:04:05.5Z' data/a.csv data/b.bin ckpt/step_1/w.bin
         touch -h -d '2021-02-03 04:05:06Z' links/latest links/dangling ckpt/latest
         touch -d '2022-03-04 05:06:07Z' data empty links ckpt/step_1 ckpt .",
        root,
    );
    std::os::unix::fs::chown(root.join("data/a.csv"), Some(NOBODY), Some(NOBODY)).expect("chown");
    sh("touch -d '2022-03-04 05:06:07Z' data", root);
}

/// `tar x` of an archive into a run, then `tar c` of the run: byte-identical, attributes,
/// owners, modes, times and links included.
#[test]
fn tar_x_then_tar_c_is_byte_identical() {
    let t = TestStore::new(Kind::Local);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let run = m.path("runs/by_project/p/tarred");
    std::fs::create_dir_all(&run).expect("mkdir run");
    let src = t.scratch().join("tree");
    full_tree(&src);
    let tar = "tar --xattrs --xattrs-include='user.*' --numeric-owner --sort=name \
               --format=posix --pax-option=delete=atime,delete=ctime";
    let (a, b) = (t.scratch().join("a.tar"), t.scratch().join("b.tar"));
    sh(&format!("{tar} -cf '{}' .", path_str(&a)), &src);
    let dst = run.join("outputs/unpacked");
    std::fs::create_dir(&dst).expect("mkdir");
    sh(&format!("{tar} -xpf '{}'", path_str(&a)), &dst);
    sh(&format!("{tar} -cf '{}' .", path_str(&b)), &dst);
    let (a, b) = (std::fs::read(&a).expect("a"), std::fs::read(&b).expect("b"));
    let has = |what: &[u8]| b.windows(what.len()).any(|w| w == what);
    assert!(
        has(b"SCHILY.xattr.user.dir=yes") && has(b"SCHILY.xattr.user.checksum"),
        "the archive carries the attributes of directories and files"
    );
    if a != b {
        let listing = |p: &str| sh(&format!("{tar} -tvvf {p} 2>&1 | head -40"), &t.scratch());
        panic!(
            "the archives differ:\n{}\n---\n{}",
            listing("a.tar"),
            listing("b.tar")
        );
    }
}

/// `cp -a` and `rsync -aX` of the full tree into a run, then a dry `rsync -n -aX`: nothing
/// left to do, directories included.
#[test]
fn cp_a_and_rsync_ax_of_a_full_tree_leave_nothing_to_do() {
    let t = TestStore::new(Kind::Local);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let run = m.path("runs/by_project/p/copied");
    std::fs::create_dir_all(&run).expect("mkdir run");
    let src = t.scratch().join("tree");
    full_tree(&src);
    for tool in ["cp", "rsync"] {
        let dst = run.join(format!("outputs/{tool}"));
        copy_tree(tool, &src, &dst);
        let changes = rsync_would_change("-aX", &src, &dst);
        assert!(
            changes.is_empty(),
            "after {tool}, rsync would still change:\n{changes}"
        );
        let st = std::fs::symlink_metadata(dst.join("links/dangling")).expect("lstat");
        assert_eq!(
            (st.uid(), st.gid()),
            (1005, 1006),
            "{tool}: the link's owner"
        );
    }
}
