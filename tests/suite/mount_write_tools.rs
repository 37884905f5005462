//! Writing into runs with the tools users already have: `mkdir` then `cp`, `cp -r`, `rsync`,
//! `tar` and Python (pyarrow too), read back through other views and fresh mounts; large files
//! written in every pattern hash right.

use crate::common;

use std::process::Command;
use std::sync::atomic::Ordering;

use common::write::*;
use common::{Kind, TestStore, bytes, path_str, sha256_hex};

fn mkdir_cp_and_read_back_everywhere(kind: Kind) {
    let t = TestStore::new(kind);
    let cache = t.dir.path().join("cache");
    let m = t.mount_with(&cache, &[], THREE_VIEWS);
    let run = m.path("runs/by_project/churn/run_42");
    std::fs::create_dir_all(&run).expect("mkdir makes a run");
    let mut top: Vec<String> = std::fs::read_dir(&run)
        .expect("list run")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    top.sort();
    assert_eq!(top, ["inputs", "outputs"]);
    // At once in its other views and in manifests/.
    assert!(m.path(&format!("runs/by_date/{}/run_42", today())).is_dir());
    assert!(m.path("runs/flat/run_42/inputs").is_dir());
    assert!(m.path("manifests/run_42.json").is_file());

    let big = bytes(1, 9 * 1024 * 1024 + 5);
    let train = t.file("train.bin", &big);
    sh(
        &format!("cp {} {}/inputs/", path_str(&train), path_str(&run)),
        t.dir.path(),
    );
    let src = source_tree(&t);
    sh(
        &format!("cp -r {} {}/outputs/", path_str(&src), path_str(&run)),
        t.dir.path(),
    );
    // Read back through another view, on the same mount.
    assert_eq!(
        std::fs::read(m.path("runs/flat/run_42/inputs/train.bin")).expect("read other view"),
        big
    );
    let want = files_under(&src);
    assert_eq!(files_under(&m.path("runs/flat/run_42/outputs/tree")), want);
    drop(m);

    // The manifest is complete, and a fresh mount with a fresh cache reads the same bytes.
    let files = manifest_files(&t, "run_42");
    assert_eq!(files["inputs/train.bin"]["hash"], sha256_hex(&big));
    assert_eq!(files["inputs/train.bin"]["role"], "input");
    for (rel, data) in &want {
        let e = &files[format!("outputs/tree/{rel}")];
        assert_eq!(e["hash"], sha256_hex(data), "{rel}");
        assert_eq!(e["role"], "output");
    }
    let m2 = t.mount(&t.dir.path().join("cache2"), &[]);
    assert_eq!(
        std::fs::read(m2.path(&format!("runs/by_date/{}/run_42/inputs/train.bin", today())))
            .expect("read after remount"),
        big
    );
    assert_eq!(
        files_under(&m2.path("runs/by_project/churn/run_42/outputs/tree")),
        want
    );
}

fn rsync_twice_transfers_nothing(kind: Kind) {
    let t = TestStore::new(kind);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    std::fs::create_dir_all(m.path("runs/by_project/p/sync")).expect("mkdir run");
    let src = source_tree(&t);
    let dest = m.path("runs/by_project/p/sync/outputs/");
    let rsync = format!(
        "rsync -a --itemize-changes {}/ {}",
        path_str(&src),
        path_str(&dest)
    );
    sh(&rsync, t.dir.path());
    assert_eq!(files_under(&dest), files_under(&src));
    let puts = t
        .server
        .as_ref()
        .map(|s| s.faults.puts.load(Ordering::SeqCst));
    let out = Command::new("sh")
        .arg("-c")
        .arg(&rsync)
        .output()
        .expect("rsync");
    assert!(out.status.success());
    let changed: Vec<&str> = std::str::from_utf8(&out.stdout)
        .expect("utf-8")
        .lines()
        .filter(|l| !l.starts_with(".d"))
        .collect();
    assert!(changed.is_empty(), "second rsync changed: {changed:?}");
    if let (Some(s), Some(puts)) = (&t.server, puts) {
        assert_eq!(
            s.faults.puts.load(Ordering::SeqCst),
            puts,
            "second rsync wrote to S3"
        );
    }
    // Times and modes were kept.
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (
        std::fs::metadata(src.join("nested/b.bin")).expect("stat"),
        std::fs::metadata(dest.join("nested/b.bin")).expect("stat"),
    );
    assert_eq!((a.mtime(), a.mode() & 0o777), (b.mtime(), b.mode() & 0o777));
}

fn tar_and_python_write_into_a_run(kind: Kind) {
    let t = TestStore::new(kind);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    std::fs::create_dir_all(m.path("runs/by_project/p/t1")).expect("mkdir run");
    let src = source_tree(&t);
    let tarball = t.dir.path().join("tree.tar");
    sh(
        &format!("tar -cf {} -C {} .", path_str(&tarball), path_str(&src)),
        t.dir.path(),
    );
    let out = m.path("runs/by_project/p/t1/outputs");
    sh(
        &format!("tar -xf {} -C {}", path_str(&tarball), path_str(&out)),
        t.dir.path(),
    );
    assert_eq!(files_under(&out), files_under(&src));

    // Python: sequential, seek-back and append writes, like real libraries do.
    let py = format!(
        r#"
import os
p = "{dir}/model.ckpt"
with open(p, "wb") as f:
    f.write(b"A" * 100000)
    f.seek(10)
    f.write(b"header")
    f.seek(0, 2)
    f.write(b"tail")
with open(p, "ab") as f:
    f.write(b"more")
with open(p, "r+b") as f:
    f.truncate(50000)
    f.seek(49990)
    f.write(b"0123456789")
    os.fsync(f.fileno())
"#,
        dir = path_str(&out)
    );
    sh(&format!("python3 -c '{py}'"), t.dir.path());
    let mut want = b"A".repeat(100000);
    want[10..16].copy_from_slice(b"header");
    want.extend_from_slice(b"tail");
    want.extend_from_slice(b"more");
    want.truncate(50000);
    want[49990..50000].copy_from_slice(b"0123456789");
    drop(m);
    let m2 = t.mount(&t.dir.path().join("cache2"), &[]);
    assert_eq!(
        std::fs::read(m2.path("runs/flat/t1/outputs/model.ckpt"))
            .or_else(|_| std::fs::read(m2.path("runs/by_project/p/t1/outputs/model.ckpt")))
            .expect("read after remount"),
        want
    );
}

#[test]
fn large_files_hash_right_whatever_the_write_pattern() {
    use std::io::{Seek, SeekFrom, Write};
    let t = TestStore::new(Kind::Local);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    std::fs::create_dir_all(m.path("runs/by_project/p/big")).expect("mkdir run");
    let dir = m.path("runs/by_project/p/big/outputs");
    let data = bytes(41, 20 * 1024 * 1024 + 3);
    // In order, then a write back near the start: hashed again at close, not by the follower.
    let mut f = std::fs::File::create(dir.join("patched.bin")).expect("create");
    f.write_all(&data).expect("write");
    f.seek(SeekFrom::Start(100)).expect("seek");
    f.write_all(b"patch").expect("patch");
    drop(f);
    let mut patched = data.clone();
    patched[100..105].copy_from_slice(b"patch");
    // In order, fsync (a commit), then more: the second commit hashes everything.
    let mut f = std::fs::File::create(dir.join("grown.bin")).expect("create");
    f.write_all(&data).expect("write");
    f.sync_all().expect("fsync");
    f.write_all(b"tail").expect("append");
    drop(f);
    let mut grown = data.clone();
    grown.extend_from_slice(b"tail");
    // Only in order: the follower's hash.
    std::fs::write(dir.join("plain.bin"), &data).expect("write");
    let files = manifest_files(&t, "big");
    for (name, want) in [("patched", &patched), ("grown", &grown), ("plain", &data)] {
        assert_eq!(
            files[format!("outputs/{name}.bin")]["hash"],
            sha256_hex(want),
            "{name}"
        );
        assert_eq!(
            &std::fs::read(dir.join(format!("{name}.bin"))).expect("read"),
            want
        );
    }
}

#[test]
fn python_pyarrow_writes_parquet_into_a_run() {
    if Command::new("python3")
        .args(["-c", "import pyarrow, pandas"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        panic!("pyarrow and pandas are needed: scripts/test installs them");
    }
    let t = TestStore::new(Kind::Local);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let run = m.path("runs/by_project/p/pq");
    std::fs::create_dir_all(&run).expect("mkdir run");
    let py = format!(
        r#"
import pandas as pd, pyarrow as pa, pyarrow.parquet as pq
df = pd.DataFrame({{"user_id": range(100000), "score": [i * 0.5 for i in range(100000)]}})
df.to_parquet("{out}/outputs/scores.parquet")
back = pd.read_parquet("{out}/outputs/scores.parquet")
assert back.equals(df), "read back differs"
print(len(back))
"#,
        out = path_str(&run)
    );
    sh(&format!("python3 -c '{py}'"), t.dir.path());
    let files = manifest_files(&t, "pq");
    assert_eq!(files["outputs/scores.parquet"]["format"], "parquet");
    let meta = t.json(&["run", "show", "pq"]);
    assert_eq!(meta["run_id"], "pq");
}

/// A project or model directory is there once a run has that key or `mkdir` made it, and not
/// before: `mkdir` of a new project works, and a name nothing made is not found.
fn a_project_is_there_once_made_or_used(kind: Kind) {
    let t = TestStore::new(kind);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let errno = |r: std::io::Result<()>| r.err().and_then(|e| e.raw_os_error());
    let listed = |m: &common::Mount, view: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(m.path(view))
            .expect("list view")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        names.sort();
        names
    };
    assert!(
        !m.path("runs/by_project/typo").exists(),
        "a name nothing made"
    );
    assert_eq!(
        errno(std::fs::create_dir(m.path("runs/by_project/newproj/run_1"))),
        Some(libc::ENOENT),
        "a run in a project not made yet needs mkdir -p, as on local disk"
    );
    // `mkdir` of a project, then of a run in it.
    std::fs::create_dir(m.path("runs/by_project/newproj")).expect("mkdir a project");
    assert_eq!(listed(&m, "runs/by_project"), ["newproj"]);
    assert_eq!(
        errno(std::fs::create_dir(m.path("runs/by_project/newproj"))),
        Some(libc::EEXIST)
    );
    std::fs::create_dir(m.path("runs/by_project/newproj/run_1")).expect("mkdir a run");
    assert_eq!(t.manifest("run_1")["project"], "newproj");
    // `mkdir -p` makes both at once; a model sets the model.
    sh(
        &format!("mkdir -p {}", path_str(&m.path("runs/by_model/m1/run_2"))),
        t.dir.path(),
    );
    assert_eq!(t.manifest("run_2")["model"], "m1");
    assert!(m.path("runs/by_model/m1/run_2/inputs").is_dir());
    // An empty project made with mkdir can be removed again, and lives in this mount only.
    std::fs::create_dir(m.path("runs/by_project/empty")).expect("mkdir another project");
    let other = t.mount(&t.dir.path().join("cache2"), &[]);
    assert_eq!(listed(&other, "runs/by_project"), ["newproj"]);
    assert!(other.path("runs/by_project/newproj/run_1/outputs").is_dir());
    assert!(!other.path("runs/by_project/empty").exists());
    assert_eq!(listed(&m, "runs/by_project"), ["empty", "newproj"]);
    std::fs::remove_dir(m.path("runs/by_project/empty")).expect("rmdir an empty project");
    assert!(!m.path("runs/by_project/empty").exists());
    assert_eq!(listed(&m, "runs/by_project"), ["newproj"]);
}

both_backends!(
    mkdir_cp_and_read_back_everywhere,
    a_project_is_there_once_made_or_used,
    rsync_twice_transfers_nothing,
    tar_and_python_write_into_a_run,
);

/// `du` counts a run once, however many views show it: its files have one inode number in
/// every view and a link count of the run's views, as hard links do.
#[test]
fn du_counts_a_run_once_across_its_views() {
    let t = TestStore::new(Kind::Local);
    let m = t.mount_with(&t.dir.path().join("cache"), &[], THREE_VIEWS);
    let run = m.path("runs/by_project/p/du");
    std::fs::create_dir_all(&run).expect("mkdir run");
    std::fs::write(run.join("outputs/a.bin"), bytes(1, 3 * 1024 * 1024)).expect("write a");
    std::fs::write(run.join("inputs/b.bin"), bytes(2, 1024 * 1024 + 5)).expect("write b");
    let out = Command::new("du")
        .args(["-sb", path_str(&m.path("runs"))])
        .output()
        .expect("du");
    common::assert_succeeded(&out);
    let total: u64 = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("du prints a number");
    assert_eq!(total, 4 * 1024 * 1024 + 5, "du -sb of a run in three views");
}
