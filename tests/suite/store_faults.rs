//! A mount over an S3 server that misbehaves: each kind of fault on command (500, 503,
//! `SlowDown`, a dropped connection, a stall, a GET body cut short, an upload's completion
//! whose answer is lost), a tenth of all requests
//! failing at random under a workload of files written and read back, and a server that goes
//! away and comes back, and one that lists runs but does not serve their manifests. Retries
//! absorb what can be absorbed; what cannot fails with `EIO` within a bounded time, and the
//! same mount works again once the server is back.
//!
//! `MLTRACK_FAULT_FILES` sets the size of the random-failure workload (default 200;
//! `scripts/reliability` runs more).

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::s3::{Fault, Target};
use common::{Kind, TestStore, bytes, env_u64, path_str, sha256_hex};

/// The bytes of workload file `i`: mostly small, every 25th a few MiB (several blocks), and
/// every 100th large enough for a multipart upload.
fn workload_file(i: u64) -> Vec<u8> {
    let len = if i % 100 == 7 {
        17 * 1024 * 1024 + 11
    } else if i % 25 == 3 {
        3 * 1024 * 1024 + 5
    } else {
        1 + (i as usize * 7919) % (64 * 1024)
    };
    bytes(7000 + i, len)
}

fn write_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[test]
fn each_fault_on_command_is_absorbed() {
    let t = TestStore::new(Kind::S3);
    let faults = &t.server().faults;
    let stored = bytes(1, 3 * 1024 * 1024);
    let f = t.file("stored.bin", &stored);
    t.ok(&["put", path_str(&f)]);
    let h = sha256_hex(&stored);
    let rel = format!("data/{}/{h}/data.bin", &h[..2]);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    std::fs::create_dir_all(m.path("runs/by_project/p/faults")).expect("mkdir run");
    let outputs = m.path("runs/by_project/p/faults/outputs");
    let faults_to_try = [
        Fault::InternalError,
        Fault::Unavailable,
        Fault::SlowDown,
        Fault::Reset,
        Fault::Stall(Duration::from_secs(2)),
        Fault::TruncateBody,
    ];
    for (i, fault) in faults_to_try.into_iter().enumerate() {
        // A write: the upload, the manifest update and the markers each meet the fault once.
        let data = bytes(100 + i as u64, 200_000);
        faults.inject(Target::Write, fault, 3);
        let name = format!("w{i}.bin");
        write_file(&outputs.join(&name), &data)
            .unwrap_or_else(|e| panic!("write under {fault:?}: {e}"));
        assert_eq!(faults.pending(), 0, "{fault:?} was never met by a write");
        let files = t.json(&["run", "show", "faults"])["files"].clone();
        assert_eq!(files[format!("outputs/{name}")]["hash"], sha256_hex(&data));

        // A cold read of a stored object: the first block GETs meet the fault.
        let cold = t.dir.path().join(format!("cold{i}"));
        let reader = t.mount(&cold, &[]);
        faults.inject(Target::DataGet, fault, 2);
        let back = std::fs::read(reader.path(&rel))
            .unwrap_or_else(|e| panic!("read under {fault:?}: {e}"));
        assert_eq!(faults.pending(), 0, "{fault:?} was never met by a read");
        assert!(back == stored, "wrong bytes under {fault:?}");
        drop(reader);
    }
}

/// A large file's upload is completed by the server, but the answer never reaches the mount
/// (the connection drops, or the answer comes after the client gave up): the completion tried
/// again finds no upload, and the close must not fail for it. The object is in place under
/// its hash, so the close succeeds and the file reads back, on this mount and a fresh one.
#[test]
fn a_completed_upload_whose_answer_is_lost_is_stored() {
    let t = TestStore::new(Kind::S3);
    let faults = &t.server().faults;
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    std::fs::create_dir_all(m.path("runs/by_project/p/lost")).expect("mkdir run");
    // Past the size uploaded in parts (16 MiB).
    let data = bytes(61, 17 * 1024 * 1024 + 3);
    faults.inject(Target::Completion, Fault::LostAnswer, 1);
    let path = m.path("runs/by_project/p/lost/outputs/model.bin");
    if let Err(e) = write_file(&path, &data) {
        let log = std::fs::read_to_string(t.dir.path().join("mount.log")).unwrap_or_default();
        panic!("the close of a file whose completion answer was lost: {e}\n{log}");
    }
    assert_eq!(faults.pending(), 0, "the completion was never met");
    assert_eq!(
        t.json(&["run", "show", "lost"])["files"]["outputs/model.bin"]["hash"],
        sha256_hex(&data)
    );
    assert!(std::fs::read(&path).expect("read back") == data);
    drop(m);
    let fresh = t.mount(&t.dir.path().join("cache2"), &[]);
    let back = std::fs::read(fresh.path("runs/by_project/p/lost/outputs/model.bin"));
    assert!(back.expect("read on a fresh mount") == data);
    drop(fresh);
    let fsck = t.json(&["fsck"]);
    assert_eq!(fsck["findings"].as_array().map(Vec::len), Some(0), "{fsck}");
}

#[test]
fn a_tenth_of_requests_failing_loses_nothing() {
    let count = env_u64("MLTRACK_FAULT_FILES", 200);
    let t = TestStore::new(Kind::S3);
    let faults = &t.server().faults;
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    std::fs::create_dir_all(m.path("runs/by_project/p/flaky")).expect("mkdir run");
    let outputs = m.path("runs/by_project/p/flaky/outputs");
    faults.fail_at_random(100, 42);
    let started = Instant::now();
    std::thread::scope(|s| {
        for w in 0..4u64 {
            let outputs = &outputs;
            s.spawn(move || {
                for i in (w..count).step_by(4) {
                    write_file(&outputs.join(format!("f{i}.bin")), &workload_file(i))
                        .unwrap_or_else(|e| panic!("write f{i}.bin: {e}"));
                }
            });
        }
    });
    eprintln!(
        "{count} files written in {:.1} s, {} faults injected in {} requests",
        started.elapsed().as_secs_f64(),
        faults.injected.load(std::sync::atomic::Ordering::SeqCst),
        faults.requests.load(std::sync::atomic::Ordering::SeqCst)
    );
    // Read back through a second mount with a cold cache, so that every byte comes from the
    // flaky server, and through the writer's mount.
    let reader = t.mount(&t.dir.path().join("cold"), &[]);
    let started = Instant::now();
    std::thread::scope(|s| {
        for w in 0..4u64 {
            let (reader, m) = (&reader, &m);
            s.spawn(move || {
                for i in (w..count).step_by(4) {
                    let rel = format!("runs/by_project/p/flaky/outputs/f{i}.bin");
                    let want = workload_file(i);
                    for mount in [reader, m] {
                        let got = std::fs::read(mount.path(&rel))
                            .unwrap_or_else(|e| panic!("read f{i}.bin: {e}"));
                        assert!(got == want, "f{i}.bin read back wrong");
                    }
                }
            });
        }
    });
    eprintln!(
        "read back in {:.1} s, {} faults injected in all",
        started.elapsed().as_secs_f64(),
        faults.injected.load(std::sync::atomic::Ordering::SeqCst)
    );
    faults.fail_at_random(0, 0);
    assert!(faults.injected.load(std::sync::atomic::Ordering::SeqCst) >= count / 10);
    let files = t.json(&["run", "show", "flaky"])["files"].clone();
    assert_eq!(files.as_object().map(|f| f.len()), Some(count as usize));
    for i in 0..count {
        assert_eq!(
            files[format!("outputs/f{i}.bin")]["hash"],
            sha256_hex(&workload_file(i)),
            "f{i}.bin"
        );
    }
    let fsck = t.json(&["fsck"]);
    assert_eq!(fsck["findings"].as_array().map(Vec::len), Some(0), "{fsck}");
}

/// How long an operation on a dead server may take before it must have failed.
const DEAD_SERVER_BOUND: Duration = Duration::from_secs(60);

fn fails_with_eio_in_bounded_time<T: std::fmt::Debug>(
    what: &str,
    op: impl FnOnce() -> std::io::Result<T>,
) {
    let started = Instant::now();
    let r = op();
    let took = started.elapsed();
    eprintln!("{what} against a dead server: {r:?} after {took:?}");
    match r {
        Ok(v) => panic!("{what} succeeded against a dead server: {v:?}"),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{what}: {e}"),
    }
    assert!(took < DEAD_SERVER_BOUND, "{what} took {took:?}");
}

#[test]
fn a_server_that_goes_away_fails_operations_and_the_mount_recovers() {
    let t = TestStore::new(Kind::S3);
    let faults = &t.server().faults;
    let stored = bytes(2, 2 * 1024 * 1024);
    let f = t.file("stored.bin", &stored);
    t.ok(&["put", path_str(&f)]);
    let h = sha256_hex(&stored);
    let rel = format!("data/{}/{h}/data.bin", &h[..2]);
    let m = t.mount(&t.dir.path().join("cache"), &["--refresh", "1"]);
    std::fs::create_dir_all(m.path("runs/by_project/p/outage")).expect("mkdir run");
    let outputs = m.path("runs/by_project/p/outage/outputs");
    // The object's directory is looked up while the server is up; its bytes are not read.
    assert!(m.path(&rel).exists());

    faults.go_down();
    fails_with_eio_in_bounded_time("a cold read", || std::fs::read(m.path(&rel)));
    fails_with_eio_in_bounded_time("a write's close", || {
        write_file(
            &outputs.join("during.bin"),
            b"written while the store is down",
        )
    });

    faults.heal();
    assert!(std::fs::read(m.path(&rel)).expect("read after recovery") == stored);
    let after = bytes(3, 300_000);
    write_file(&outputs.join("after.bin"), &after).expect("write after recovery");
    let files = t.json(&["run", "show", "outage"])["files"].clone();
    assert_eq!(files["outputs/after.bin"]["hash"], sha256_hex(&after));
    // The write that failed is not in the manifest with bytes it never stored.
    if let Some(entry) = files.get("outputs/during.bin") {
        let hash = entry["hash"].as_str().expect("hash");
        assert!(
            t.keys()
                .iter()
                .any(|k| k == &format!("data/{}/{hash}/metadata.json", &hash[..2])),
            "a manifest entry points at data that is not stored: {entry}"
        );
    }
    drop(m);
}

/// A listing carries its entries' attributes (`readdirplus`); for a view's runs they come from
/// the runs' manifests, while their names come from the view's listing alone. When the store
/// serves the view's listing but not the manifests, the names are listed and each run's
/// attributes fail with `EIO` within the bound (never an entry with made-up attributes), and
/// the same mount shows the runs once the store answers again.
#[test]
fn a_listing_whose_attributes_cannot_be_read_fails_and_recovers() {
    let t = TestStore::new(Kind::S3);
    let faults = &t.server().faults;
    for run in ["r1", "r2", "r3"] {
        t.ok(&["run", "create", run, "--project", "p"]);
    }
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let view = m.path("runs/by_project/p");
    let names = || -> std::io::Result<Vec<String>> {
        let mut names = std::fs::read_dir(&view)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    };
    faults.fail_every(Target::ManifestGet, Fault::InternalError);
    assert_eq!(
        names().expect("names from the view's listing"),
        ["r1", "r2", "r3"]
    );
    fails_with_eio_in_bounded_time("the attributes of a listed run", || {
        std::fs::metadata(view.join("r2"))
    });
    assert!(
        faults
            .manifest_gets
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0,
        "no manifest was asked for"
    );

    faults.heal();
    assert_eq!(names().expect("list after recovery"), ["r1", "r2", "r3"]);
    for run in ["r1", "r2", "r3"] {
        let meta = std::fs::metadata(view.join(run)).expect("a run after recovery");
        assert!(meta.is_dir(), "{run}");
        assert!(view.join(run).join("outputs").is_dir(), "{run}/outputs");
    }
}

/// A GET body that breaks off or arrives damaged is retried like any other transient fault,
/// with the same bound, on the mount and in the CLI: a torn transfer is the network's fault,
/// not a reason to fail a training job's read.
#[test]
fn torn_and_damaged_get_bodies_are_retried() {
    let t = TestStore::new(Kind::S3);
    let faults = &t.server().faults;
    let stored = bytes(4, 3 * 1024 * 1024 + 17);
    let f = t.file("stored.bin", &stored);
    t.ok(&["put", path_str(&f)]);
    let h = sha256_hex(&stored);
    let rel = format!("data/{}/{h}/data.bin", &h[..2]);
    // More in a row than was absorbed before: a torn body was tried 5 times, a damaged one
    // twice.
    for (fault, times) in [(Fault::TruncateBody, 8), (Fault::CorruptBody, 4)] {
        faults.inject(Target::DataGet, fault, times);
        let out = t.dir.path().join(format!("got-{fault:?}"));
        t.ok(&["get", &h, "-o", path_str(&out)]);
        assert_eq!(faults.pending(), 0, "{fault:?} was never met by the CLI");
        assert!(
            std::fs::read(&out).expect("read got") == stored,
            "{fault:?}"
        );

        let m = t.mount(&t.dir.path().join(format!("cache-{fault:?}")), &[]);
        faults.inject(Target::DataGet, fault, times);
        let back =
            std::fs::read(m.path(&rel)).unwrap_or_else(|e| panic!("read under {fault:?}: {e}"));
        assert_eq!(faults.pending(), 0, "{fault:?} was never met by the mount");
        assert!(back == stored, "wrong bytes under {fault:?}");
    }
}
