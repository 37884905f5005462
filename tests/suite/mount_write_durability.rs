//! A close that returned is durable, and one that could not be made durable says so: many
//! writers on two mounts, a daemon killed mid-write, a store refusing uploads, a full spool
//! disk, reads of a file while it is written, and a forked child's close.

use crate::common;

use std::process::Command;
use std::sync::atomic::Ordering;

use common::write::*;
use common::{Kind, TestStore, bytes, path_str, sha256_hex};

fn two_mounts_sixteen_writers(kind: Kind) {
    let t = TestStore::new(kind);
    let m1 = t.mount(&t.dir.path().join("cache1"), &[]);
    let m2 = t.mount(&t.dir.path().join("cache2"), &[]);
    std::fs::create_dir_all(m1.path("runs/by_project/p/shared")).expect("mkdir run");
    std::thread::scope(|s| {
        for (mi, m) in [&m1, &m2].into_iter().enumerate() {
            for i in 0..8u64 {
                let dir = m.path("runs/by_project/p/shared/outputs");
                s.spawn(move || {
                    let data = bytes(1000 + mi as u64 * 100 + i, 200_000 + i as usize);
                    std::fs::write(dir.join(format!("m{mi}_{i}.bin")), &data).expect("write");
                });
            }
        }
    });
    let files = manifest_files(&t, "shared");
    assert_eq!(files.as_object().expect("files").len(), 16, "{files}");
    for mi in 0..2u64 {
        for i in 0..8u64 {
            let data = bytes(1000 + mi * 100 + i, 200_000 + i as usize);
            assert_eq!(
                files[format!("outputs/m{mi}_{i}.bin")]["hash"],
                sha256_hex(&data)
            );
        }
    }
}

fn killed_daemon_loses_no_acknowledged_file(kind: Kind) {
    let t = TestStore::new(kind);
    let cache = t.dir.path().join("cache");
    let m = t.mount(&cache, &[]);
    std::fs::create_dir_all(m.path("runs/by_project/p/crash")).expect("mkdir run");
    let dir = m.path("runs/by_project/p/crash/outputs");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let acknowledged = std::thread::scope(|s| {
        let writer = s.spawn(|| write_many(&dir, 32, &stop));
        std::thread::sleep(std::time::Duration::from_millis(700));
        m.kill();
        stop.store(true, Ordering::SeqCst);
        writer.join().expect("writer")
    });
    let m2 = t.mount(&cache, &[]);
    let files = manifest_files(&t, "crash");
    for name in &acknowledged {
        let i: u64 = name[1..name.len() - 4].parse().expect("index");
        let data = bytes(5000 + i, 300_000 + i as usize * 1000);
        assert_eq!(
            files[format!("outputs/{name}")]["hash"],
            sha256_hex(&data),
            "{name}"
        );
        assert_eq!(
            std::fs::read(m2.path(&format!("runs/by_project/p/crash/outputs/{name}")))
                .expect("read"),
            data
        );
    }
    // A crash can leave a `used_by` marker without its manifest entry (it protects data from
    // gc a little longer) and an object uploaded without its metadata.json (never referenced);
    // nothing else. fsck --repair removes the first, gc the second.
    t.assert_only_crash_leftovers_then_clean("after the kill");
    drop(m2);
}

fn store_refusing_uploads_fails_close(kind: Kind) {
    let t = TestStore::new(kind);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    std::fs::create_dir_all(m.path("runs/by_project/p/down")).expect("mkdir run");
    let data = bytes(9, 1024 * 1024 + 3);
    let f = t.file("x.bin", &data);
    let dest = m.path("runs/by_project/p/down/outputs/x.bin");
    let s = t.server();
    s.faults.go_down();
    let out = Command::new("cp").arg(&f).arg(&dest).output().expect("cp");
    assert!(!out.status.success(), "cp succeeded with the store down");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Input/output error"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.faults.heal();
    assert!(
        manifest_files(&t, "down")
            .as_object()
            .expect("files")
            .is_empty()
    );
    sh(
        &format!("cp {} {}", path_str(&f), path_str(&dest)),
        t.dir.path(),
    );
    assert_eq!(
        manifest_files(&t, "down")["outputs/x.bin"]["hash"],
        sha256_hex(&data)
    );
}

#[test]
fn s3_store_refusing_uploads_fails_close() {
    store_refusing_uploads_fails_close(Kind::S3);
}

fn reads_see_a_file_while_it_is_written(kind: Kind) {
    let t = TestStore::new(kind);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    std::fs::create_dir_all(m.path("runs/by_project/p/live")).expect("mkdir run");
    let path = m.path("runs/by_project/p/live/outputs/log.txt");
    use std::io::Write;
    let mut w = std::fs::File::create(&path).expect("create");
    w.write_all(b"epoch 1\n").expect("write");
    // Another open on this node sees the bytes before close, and the listing has the file.
    assert_eq!(std::fs::read(&path).expect("read while open"), b"epoch 1\n");
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), 8);
    w.write_all(b"epoch 2\n").expect("write");
    assert_eq!(
        std::fs::read(&path).expect("read while open"),
        b"epoch 1\nepoch 2\n"
    );
    // Asked of the CLI, a child process: it inherits the open file and closes its copy, which
    // commits nothing (it neither opened nor wrote the file).
    assert!(
        manifest_files(&t, "live").get("outputs/log.txt").is_none(),
        "not before close"
    );
    drop(w);
    assert_eq!(
        manifest_files(&t, "live")["outputs/log.txt"]["hash"],
        sha256_hex(b"epoch 1\nepoch 2\n")
    );
    // Runs are not renamed by mv: that would change what the manifest says.
    assert_eq!(
        errno_of(std::fs::rename(
            m.path("runs/by_project/p/live"),
            m.path("runs/by_project/p/dead")
        )),
        libc::EPERM
    );
}

/// Every fork copies the parent's open descriptors, and the child's close of its copy (at
/// `exec`, or when it exits) reaches the mount as a close like any other. It must not commit a
/// file the child never wrote: other nodes would see it empty or half written, and a training
/// script that forks loader workers or runs tools while it writes a large file would have that
/// file hashed and uploaded again at every fork. A child that writes through its copy commits
/// what it wrote when it closes it.
fn a_childs_close_commits_only_what_it_wrote(kind: Kind) {
    use std::io::Write;
    use std::os::fd::IntoRawFd;
    let t = TestStore::new(kind);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    std::fs::create_dir_all(m.path("runs/by_project/p/forks")).expect("mkdir run");
    let path = m.path("runs/by_project/p/forks/outputs/model.bin");
    let data = bytes(31, 3 * 1024 * 1024 + 5);
    let mut f = std::fs::File::create(&path).expect("create");
    // A child started right after the open: `exec` closes its close-on-exec copy.
    sh("true", t.dir.path());
    f.write_all(&data[..1024 * 1024]).expect("write");
    // A forked child that exits without writing, as a data loader's worker does.
    // SAFETY: the child calls only _exit, which is async-signal-safe.
    let child = unsafe { libc::fork() };
    if child == 0 {
        unsafe { libc::_exit(0) };
    }
    assert!(child > 0, "fork");
    let mut status = 0;
    // SAFETY: waits for the child just forked.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    // The CLI is a child too: its exec closes another copy.
    assert!(
        manifest_files(&t, "forks")
            .get("outputs/model.bin")
            .is_none(),
        "a child that wrote nothing committed the file half written"
    );
    f.write_all(&data[1024 * 1024..]).expect("write");
    // close(2) itself, to see its result (dropping a File ignores it).
    // SAFETY: the descriptor is ours, and closed once.
    assert_eq!(unsafe { libc::close(f.into_raw_fd()) }, 0, "close");
    assert_eq!(
        manifest_files(&t, "forks")["outputs/model.bin"]["hash"],
        sha256_hex(&data)
    );
    assert_eq!(std::fs::read(&path).expect("read back"), data);

    // A child given the open file as its stdout writes to it and exits: what it wrote is
    // stored, although the parent still has the file open.
    let log_path = m.path("runs/by_project/p/forks/outputs/train.log");
    let log = std::fs::File::create(&log_path).expect("create");
    let status = Command::new("sh")
        .args(["-c", "printf 'epoch 1\\n'"])
        .stdout(log.try_clone().expect("dup"))
        .status()
        .expect("sh");
    assert!(status.success());
    assert_eq!(
        manifest_files(&t, "forks")["outputs/train.log"]["hash"],
        sha256_hex(b"epoch 1\n")
    );
    // SAFETY: as above.
    assert_eq!(unsafe { libc::close(log.into_raw_fd()) }, 0, "close");
    assert_eq!(std::fs::read(&log_path).expect("read back"), b"epoch 1\n");
}

#[test]
fn a_full_spool_disk_fails_writes_with_enospc_and_recovers() {
    let t = TestStore::new(Kind::Local);
    let cache = Tmpfs::new(t.dir.path().join("small-disk"), "16m");
    let m = t.mount(&cache.0, &["--cache-size", "1MiB"]);
    std::fs::create_dir_all(m.path("runs/by_project/p/full")).expect("mkdir run");
    let dir = m.path("runs/by_project/p/full/outputs");
    let first = bytes(1, 1024 * 1024);
    std::fs::write(dir.join("first.bin"), &first).expect("write a small file");
    let err = std::fs::write(dir.join("huge.bin"), bytes(2, 32 * 1024 * 1024)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    // What was acknowledged is intact. As on a local disk, the file that hit the limit keeps
    // the bytes written before it: a prefix of what was asked.
    assert_eq!(std::fs::read(dir.join("first.bin")).expect("read"), first);
    let partial = std::fs::read(dir.join("huge.bin")).expect("read the partial file");
    assert!(partial.len() < 32 * 1024 * 1024);
    assert_eq!(partial, bytes(2, 32 * 1024 * 1024)[..partial.len()]);
    let files = manifest_files(&t, "full");
    assert_eq!(files["outputs/huge.bin"]["size"], partial.len(), "{files}");
    // The failed file's spool is gone with its last close: space is back.
    let after = bytes(3, 2 * 1024 * 1024);
    std::fs::write(dir.join("after.bin"), &after).expect("write once space is back");
    assert_eq!(
        manifest_files(&t, "full")["outputs/after.bin"]["hash"],
        sha256_hex(&after)
    );
    drop(m);
}

/// The close of a file's last handle may hand its spool to a local store as the object
/// itself (docs/MOUNT.md, "Writing on the local store"). A duplicated descriptor (one handle)
/// that writes on after that close changes the file, never the object stored at the close.
fn a_duplicate_writing_after_the_close_leaves_the_stored_object_alone(kind: Kind) {
    use std::io::Write;
    let t = TestStore::new(kind);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    std::fs::create_dir_all(m.path("runs/by_project/p/dup")).expect("mkdir run");
    let path = m.path("runs/by_project/p/dup/outputs/log.bin");
    let (first, more) = (bytes(71, 3 * 1024 * 1024 + 5), bytes(72, 100_000));
    let mut f = std::fs::File::create(&path).expect("create");
    f.write_all(&first).expect("write");
    let mut dup = f.try_clone().expect("dup");
    drop(f); // close(): the handle's commit
    assert_eq!(
        manifest_files(&t, "dup")["outputs/log.bin"]["hash"],
        sha256_hex(&first)
    );
    dup.write_all(&more).expect("write through the duplicate");
    drop(dup);
    let whole = [first.clone(), more].concat();
    assert_eq!(std::fs::read(&path).expect("read"), whole);
    assert_eq!(
        manifest_files(&t, "dup")["outputs/log.bin"]["hash"],
        sha256_hex(&whole)
    );
    let h = sha256_hex(&first);
    let key = format!("data/{}/{h}/data.bin", &h[..2]);
    assert!(
        t.get(&key) == first,
        "the object stored at the close changed"
    );
    drop(m);
    let fsck = t.json(&["fsck"]);
    assert_eq!(fsck["findings"].as_array().map(Vec::len), Some(0), "{fsck}");
}

/// On the local store a new file is written to disk once: the spool, linked into the store at
/// its close, not copied there. Counted as the bytes the daemon wrote (`write_bytes` of
/// `/proc/<pid>/io`: every page it dirtied, the spool's and any copy's).
#[test]
fn a_new_file_on_the_local_store_is_written_once() {
    let t = TestStore::new(Kind::Local);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    std::fs::create_dir_all(m.path("runs/by_project/p/once")).expect("mkdir run");
    let size = 32 * 1024 * 1024;
    let data = bytes(73, size);
    let src = t.file("big.bin", &data);
    let written = || {
        std::fs::read_to_string(format!("/proc/{}/io", m.pid()))
            .expect("the daemon's io")
            .lines()
            .find_map(|l| l.strip_prefix("write_bytes: "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .expect("write_bytes")
    };
    let before = written();
    sh(
        &format!(
            "cp {} {}",
            path_str(&src),
            path_str(&m.path("runs/by_project/p/once/outputs/"))
        ),
        t.dir.path(),
    );
    let wrote = written() - before;
    eprintln!("the daemon wrote {wrote} bytes for a file of {size}");
    assert!(
        wrote < size as u64 * 3 / 2,
        "{wrote} bytes written for a new file of {size}"
    );
    assert!(wrote >= size as u64, "{wrote}: the spool itself is written");
    assert_eq!(
        std::fs::read(m.path("runs/by_project/p/once/outputs/big.bin")).expect("read"),
        data
    );
    drop(m);
    let fsck = t.json(&["fsck"]);
    assert_eq!(fsck["findings"].as_array().map(Vec::len), Some(0), "{fsck}");
}

both_backends!(
    a_duplicate_writing_after_the_close_leaves_the_stored_object_alone,
    two_mounts_sixteen_writers,
    killed_daemon_loses_no_acknowledged_file,
    reads_see_a_file_while_it_is_written,
    a_childs_close_commits_only_what_it_wrote,
);
