//! Faults outside test suites found in ordinary use of a mount, each reproduced as a user met
//! it: `chmod`/`touch` of a file another client recorded, the same bytes written and removed
//! in two loops at once, `mknod` of a regular file, `truncate` right after `close`, and the
//! log noise of Python's `open()` and of every unmount.

use crate::common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{Kind, TestStore, bytes, path_str, sha256_hex};

/// A file recorded by the CLI after the mount last wrote the run can be chmod-ed and touched,
/// as `stat`, `cat` and `ls` already show it.
fn chmod_and_touch_of_a_file_another_client_recorded(kind: Kind) {
    let t = TestStore::new(kind);
    let m = t.mount(&t.dir.path().join("cache"), &["--refresh", "1"]);
    let run = m.path("runs/by_project/p/r1");
    std::fs::create_dir_all(&run).expect("mkdir run");
    std::fs::write(run.join("outputs/a"), b"mine").expect("write through the mount");
    let f = t.file("b", b"recorded elsewhere");
    t.ok(&["run", "add-output", "r1", "b", path_str(&f)]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let b = run.join("outputs/b");
    assert_eq!(std::fs::read(&b).expect("cat"), b"recorded elsewhere");
    std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
    let out = std::process::Command::new("touch")
        .args(["-m", "-d", "2020-01-02 03:04:05Z", path_str(&b)])
        .output()
        .expect("touch");
    common::assert_succeeded(&out);
    let st = std::fs::metadata(&b).expect("stat");
    assert_eq!(st.mode() & 0o777, 0o600);
    assert_eq!(st.mtime(), 1_577_934_245);
    let e = &t.manifest("r1")["files"]["outputs/b"];
    assert_eq!(e["mode"], 0o600, "{e}");
    assert_eq!(e["mtime"], "2020-01-02T03:04:05Z", "{e}");
    assert!(
        t.manifest("r1")["files"]["outputs/a"].is_object(),
        "the mount's own file stays"
    );
}

/// Two loops `cp src a; rm a` and `cp src b; rm b` with the same bytes, in one run: every
/// close succeeds, and what is left recorded has its `used_by` marker.
fn same_bytes_written_and_removed_in_two_loops(kind: Kind) {
    let t = TestStore::new(kind);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let run = m.path("runs/by_project/p/r");
    std::fs::create_dir_all(&run).expect("mkdir run");
    let data = bytes(1800, 20_000);
    let h = sha256_hex(&data);
    let src = t.file("src", &data);
    let marker = format!("data/{}/{h}/used_by/r", &h[..2]);
    let backend = t.backend();
    let rounds = common::env_u64("MLTRACK_SAME_BYTES_ROUNDS", 60);
    std::thread::scope(|s| {
        for name in ["a", "b"] {
            let (run, src, marker, backend) = (&run, &src, &marker, &backend);
            s.spawn(move || {
                for i in 0..rounds {
                    let dest = run.join("outputs").join(name);
                    std::fs::copy(src, &dest)
                        .unwrap_or_else(|e| panic!("cp {name}, round {i}: {e}"));
                    // Recorded, so marked: the other loop's `rm` of the same bytes must not
                    // have taken the marker this entry needs.
                    let marked = common::block_on(backend.head(marker)).expect("head marker");
                    assert!(
                        marked.is_some(),
                        "{name}, round {i}: recorded without its marker"
                    );
                    std::fs::remove_file(&dest)
                        .unwrap_or_else(|e| panic!("rm {name}, round {i}: {e}"));
                }
            });
        }
    });
    // One copy left in place: its marker must be there, whatever the loops did before.
    std::fs::copy(&src, run.join("outputs/kept")).expect("cp kept");
    assert!(
        t.keys().contains(&marker),
        "no used_by marker for a recorded file"
    );
    let fsck = t.json(&["fsck"]);
    assert_eq!(fsck["findings"].as_array().map(Vec::len), Some(0), "{fsck}");
}

both_backends!(
    chmod_and_touch_of_a_file_another_client_recorded,
    same_bytes_written_and_removed_in_two_loops,
);

/// `os.mknod(path)` makes an empty regular file, recorded like any other; a FIFO is refused.
/// `truncate(path)` right after `close()`, from several threads at once (pjdfstest's
/// `truncate::shrink_not_empty`, which failed now and then in CI): the kernel sends the
/// close's `release` without waiting for it, so the truncate can reach the daemon while the
/// file is being let go. Every truncate is seen by `stat` at once and is what the run records.
#[test]
fn truncate_right_after_close_is_kept() {
    let t = TestStore::new(Kind::Local);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let run = m.path("runs/by_project/p/r");
    std::fs::create_dir_all(&run).expect("mkdir run");
    let rounds = common::env_u64("MLTRACK_TRUNCATE_ROUNDS", 150);
    let threads = 6;
    std::thread::scope(|s| {
        for th in 0..threads {
            let run = &run;
            s.spawn(move || {
                for i in 0..rounds {
                    let f = run.join(format!("outputs/t{th}_{i}"));
                    std::fs::write(&f, bytes(th * 1000 + i, 12_345)).expect("write");
                    for size in [23_456, 1] {
                        truncate(&f, size)
                            .unwrap_or_else(|e| panic!("truncate t{th}_{i} to {size}: {e}"));
                        let seen = std::fs::symlink_metadata(&f).expect("lstat").len();
                        assert_eq!(seen, size, "t{th}_{i}: stat after truncate to {size}");
                    }
                }
            });
        }
    });
    let files = t.manifest("r")["files"].clone();
    for th in 0..threads {
        for i in 0..rounds {
            let e = &files[format!("outputs/t{th}_{i}")];
            assert_eq!(e["size"], 1, "t{th}_{i} as recorded: {e}");
        }
    }
}

/// `truncate(2)`: by path, no open file (`File::set_len` would be `ftruncate`).
fn truncate(path: &std::path::Path, size: u64) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let size = libc::off_t::try_from(size).map_err(std::io::Error::other)?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    match unsafe { libc::truncate(c.as_ptr(), size) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

#[test]
fn mknod_of_a_regular_file_makes_an_empty_file() {
    let t = TestStore::new(Kind::Local);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let run = m.path("runs/by_project/p/r");
    std::fs::create_dir_all(&run).expect("mkdir run");
    let script = format!(
        "import os, errno\n\
         os.mknod({p:?})\n\
         try:\n    os.mkfifo({q:?})\n    print('fifo made')\n\
         except OSError as e:\n    print(errno.errorcode[e.errno])\n",
        p = path_str(&run.join("outputs/empty")),
        q = path_str(&run.join("outputs/fifo")),
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    common::assert_succeeded(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "EPERM");
    let st = std::fs::metadata(run.join("outputs/empty")).expect("stat");
    assert!(st.is_file() && st.len() == 0);
    let e = &t.manifest("r")["files"]["outputs/empty"];
    assert_eq!(e["size"], 0, "{e}");
}

/// Python's `open()` asks `isatty()` of every file; 200 opens and an unmount leave the
/// daemon's log without a warning.
#[test]
fn python_opens_and_unmount_log_nothing() {
    let t = TestStore::new(Kind::Local);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let run = m.path("runs/by_project/p/r");
    std::fs::create_dir_all(&run).expect("mkdir run");
    std::fs::write(run.join("outputs/f.txt"), b"text").expect("write");
    let script = format!(
        "for _ in range(200):\n    with open({p:?}) as f:\n        assert f.read() == 'text'\n        assert not f.isatty()\n",
        p = path_str(&run.join("outputs/f.txt")),
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    common::assert_succeeded(&out);
    assert!(m.unmount().success());
    let log = std::fs::read_to_string(t.dir.path().join("mount.log")).expect("mount log");
    assert!(!log.contains("WARN"), "the log has warnings:\n{log}");
}
