//! Symbolic links in runs, as the tools ML engineers use make them: a Hugging Face hub cache
//! (`snapshots/<rev>/file -> ../../blobs/<hash>`), a checkpoint folder's `latest ->
//! step_1000`, a dangling link, and `rsync -a` of a tree with links. Each is a manifest entry
//! with its target, shown the same in every view and on every mount, removed and moved like
//! a file, and never followed by mltrack itself.

use crate::common;

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;

use common::write::{THREE_VIEWS, rsync_would_change, sh};
use common::{Kind, TestStore, bytes, path_str};

fn hub_cache_layout_reads_through_every_view_and_mount(kind: Kind) {
    let t = TestStore::new(kind);
    let m = t.mount_with(&t.dir.path().join("cache"), &[], THREE_VIEWS);
    let run = m.path("runs/by_project/p/hub");
    std::fs::create_dir_all(&run).expect("mkdir run");
    let model = run.join("inputs/models--org--bert");
    let blob = bytes(1, 200_000);
    std::fs::create_dir_all(model.join("blobs")).expect("mkdir blobs");
    std::fs::create_dir_all(model.join("snapshots/abc123")).expect("mkdir snapshots");
    std::fs::write(model.join("blobs/4f2e"), &blob).expect("write blob");
    std::os::unix::fs::symlink(
        "../../blobs/4f2e",
        model.join("snapshots/abc123/model.safetensors"),
    )
    .expect("ln -s blob");
    std::os::unix::fs::symlink("step_1000", run.join("outputs/latest")).expect("ln -s latest");
    std::fs::create_dir(run.join("outputs/step_1000")).expect("mkdir step");
    std::fs::write(run.join("outputs/step_1000/ckpt.pt"), b"weights").expect("write ckpt");

    let e =
        &t.manifest("hub")["files"]["inputs/models--org--bert/snapshots/abc123/model.safetensors"];
    assert_eq!(e["type"], "symlink", "{e}");
    assert_eq!(e["target"], "../../blobs/4f2e", "{e}");
    assert!(e.get("hash").is_none(), "a link has no data: {e}");

    // Another view, then another mount (another node): the same links, followed by the kernel.
    let other = t.mount(&t.dir.path().join("cache2"), &[]);
    let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
    for root in [
        m.path(&format!("runs/by_date/{date}/hub")),
        m.path("runs/flat/hub"),
        other.path("runs/by_project/p/hub"),
    ] {
        let link = root.join("inputs/models--org--bert/snapshots/abc123/model.safetensors");
        assert!(
            std::fs::symlink_metadata(&link)
                .expect("lstat")
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            std::fs::read_link(&link).expect("readlink"),
            Path::new("../../blobs/4f2e")
        );
        assert!(std::fs::read(&link).expect("read through the link") == blob);
        assert_eq!(
            std::fs::read(root.join("outputs/latest/ckpt.pt")).expect("read latest/ckpt.pt"),
            b"weights"
        );
    }
    // find sees links as links, through readdir's types.
    let out = Command::new("find")
        .args([path_str(&other.path("runs/by_project/p/hub")), "-type", "l"])
        .output()
        .expect("find");
    common::assert_succeeded(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
}

fn links_are_removed_moved_and_never_followed_by_mltrack(kind: Kind) {
    let t = TestStore::new(kind);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let run = m.path("runs/by_project/p/l");
    let other_run = m.path("runs/by_project/p/l2");
    std::fs::create_dir_all(&run).expect("mkdir run");
    std::fs::create_dir_all(&other_run).expect("mkdir run 2");
    let out = run.join("outputs");

    // Dangling, and pointing out of the run: kept as written.
    std::os::unix::fs::symlink("/etc/passwd", out.join("outside")).expect("ln -s outside");
    std::os::unix::fs::symlink("missing.bin", out.join("dangling")).expect("ln -s dangling");
    assert_eq!(
        std::fs::read_link(out.join("outside")).expect("readlink"),
        Path::new("/etc/passwd")
    );
    let err = std::fs::metadata(out.join("dangling")).expect_err("stat of a dangling link");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    // O_NOFOLLOW on a link: ELOOP.
    let err = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(out.join("outside"))
        .expect_err("O_NOFOLLOW");
    assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
    // A link cannot be made over a file, nor a file's name taken by one.
    std::fs::write(out.join("data.bin"), b"data").expect("write");
    let err = std::os::unix::fs::symlink("x", out.join("data.bin")).expect_err("ln -s over a file");
    assert_eq!(err.raw_os_error(), Some(libc::EEXIST));

    // mv within the run, to another run, and rm.
    std::fs::rename(out.join("dangling"), out.join("renamed")).expect("mv link");
    std::fs::rename(out.join("outside"), other_run.join("outputs/moved")).expect("mv to run 2");
    let files = &t.manifest("l")["files"];
    assert!(files.get("outputs/dangling").is_none(), "{files}");
    assert!(files.get("outputs/outside").is_none(), "{files}");
    assert_eq!(files["outputs/renamed"]["target"], "missing.bin");
    assert_eq!(
        t.manifest("l2")["files"]["outputs/moved"]["target"],
        "/etc/passwd"
    );
    std::fs::remove_file(out.join("renamed")).expect("rm link");
    assert!(t.manifest("l")["files"].get("outputs/renamed").is_none());
    assert!(std::fs::symlink_metadata(out.join("renamed")).is_err());
    // A directory holding only a link is not empty.
    std::fs::create_dir(out.join("d")).expect("mkdir d");
    std::os::unix::fs::symlink("x", out.join("d/l")).expect("ln -s in d");
    let err = std::fs::remove_dir(out.join("d")).expect_err("rmdir of a directory with a link");
    assert_eq!(err.raw_os_error(), Some(libc::ENOTEMPTY));
    let fsck = t.json(&["fsck"]);
    assert_eq!(fsck["findings"].as_array().map(Vec::len), Some(0), "{fsck}");
}

/// `rsync -a` of a tree with files, links (relative, absolute, dangling) and times into a run:
/// a second, dry run finds nothing to do (directory times aside: docs/SEMANTICS.md).
#[test]
fn rsync_a_of_a_tree_with_links_round_trips() {
    let t = TestStore::new(Kind::Local);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let run = m.path("runs/by_project/p/rs");
    std::fs::create_dir_all(&run).expect("mkdir run");
    let src = t.scratch().join("env");
    std::fs::create_dir_all(src.join("bin")).expect("mkdir bin");
    std::fs::create_dir_all(src.join("lib/python3.11")).expect("mkdir lib");
    std::fs::write(src.join("bin/python3.11"), bytes(9, 50_000)).expect("write python");
    std::fs::write(src.join("lib/python3.11/os.py"), b"import sys\n").expect("write os.py");
    sh(
        "ln -s python3.11 bin/python && ln -s bin/python python-link && \
         ln -s /usr/lib/x86_64-linux-gnu abs && ln -s nowhere dangling && \
         touch -h -d '2024-01-02 03:04:05' bin/python",
        &src,
    );
    let dst = run.join("outputs/env");
    sh(
        &format!("rsync -a '{}/' '{}/'", path_str(&src), path_str(&dst)),
        t.dir.path(),
    );
    let changes = rsync_would_change("-a", &src, &dst);
    assert!(changes.is_empty(), "rsync would still change:\n{changes}");
}

both_backends!(
    hub_cache_layout_reads_through_every_view_and_mount,
    links_are_removed_moved_and_never_followed_by_mltrack,
);
