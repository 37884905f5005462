//! The mounted tree, read as a user reads it: real FUSE mounts of a local store and of the
//! in-process S3 server, read with std::fs, `ls`, `find`, `cat` and xattr calls.

use crate::common;

use std::time::{Duration, Instant};

use common::{Kind, TestStore, bytes, disk_usage, path_str, repo_file, sha256_hex};

fn sha_of(path: &std::path::Path) -> String {
    sha256_hex(&std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())))
}

fn xattr(path: &std::path::Path, name: &str) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of the given length.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| String::from_utf8_lossy(&buf[..len as usize]).to_string())
}

/// Stores `len` pseudo-random bytes from `seed` with `mltrack put`; returns them and their hash.
fn put_object(t: &TestStore, seed: u64, len: usize) -> (Vec<u8>, String) {
    let data = bytes(seed, len);
    let f = t.file("d.bin", &data);
    t.ok(&["put", path_str(&f)]);
    let h = sha256_hex(&data);
    (data, h)
}

fn every_view_reads_the_stored_bytes(kind: Kind) {
    let t = TestStore::new(kind);
    let big = bytes(60, 5 * 1024 * 1024 + 123);
    let small = b"user_id,churned\n1,0\n".to_vec();
    let (fb, fs) = (t.file("big.bin", &big), t.file("labels.csv", &small));
    t.ok(&[
        "run",
        "create",
        "prod_001",
        "--type",
        "production",
        "--project",
        "churn",
        "--model",
        "xgb",
        "--view",
        "by_type",
        "--view",
        "by_model",
        "--view",
        "by_project",
        "--view",
        "flat",
    ]);
    t.ok(&[
        "run",
        "add-input",
        "prod_001",
        "data/big.bin",
        path_str(&fb),
    ]);
    t.ok(&["run", "add-output", "prod_001", "labels.csv", path_str(&fs)]);
    t.ok(&["run", "add-view", "prod_001", "by_date"]);
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let cache = t.dir.path().join("cache");
    let m = t.mount(&cache, &[]);

    let mut top: Vec<String> = std::fs::read_dir(&m.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(top, vec!["data", "manifests", "runs"]);
    let views = [
        "runs/by_type/production/prod_001".to_string(),
        "runs/by_model/xgb/prod_001".to_string(),
        "runs/by_project/churn/prod_001".to_string(),
        format!("runs/by_date/{today}/prod_001"),
        "runs/flat/prod_001".to_string(),
    ];
    for v in &views {
        assert_eq!(
            sha_of(&m.path(&format!("{v}/inputs/data/big.bin"))),
            sha256_hex(&big),
            "{v}"
        );
        assert_eq!(
            std::fs::read(m.path(&format!("{v}/outputs/labels.csv"))).unwrap(),
            small,
            "{v}"
        );
        let meta = std::fs::metadata(m.path(&format!("{v}/inputs/data/big.bin"))).unwrap();
        assert_eq!(meta.len(), big.len() as u64);
        assert_eq!(
            xattr(&m.path(v), "user.mltrack.run_id").as_deref(),
            Some("prod_001")
        );
        assert_eq!(
            xattr(&m.path(v), "user.mltrack.run_type").as_deref(),
            Some("production")
        );
    }
    let f = m.path(&format!("{}/inputs/data/big.bin", views[0]));
    assert_eq!(xattr(&f, "user.mltrack.sha256"), Some(sha256_hex(&big)));
    assert_eq!(xattr(&f, "user.mltrack.size"), Some(big.len().to_string()));
    assert_eq!(xattr(&f, "user.mltrack.format").as_deref(), Some("bin"));

    // The manifest, as a file, is the manifest in the store; listings match it.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.path("manifests/prod_001.json")).unwrap()).unwrap();
    assert_eq!(manifest, t.json(&["run", "show", "prod_001"]));
    let ls = std::process::Command::new("ls")
        .arg("-R")
        .arg(m.path(&views[1]))
        .output()
        .unwrap();
    let ls = String::from_utf8(ls.stdout).unwrap();
    for name in ["inputs", "outputs", "data", "big.bin", "labels.csv"] {
        assert!(ls.contains(name), "{name} missing from ls -R: {ls}");
    }

    // data/: the objects themselves, with used_by links that resolve to the run.
    for (content, fmt) in [(&big, "bin"), (&small, "csv")] {
        let h = sha256_hex(content);
        let obj = m.path(&format!("data/{}/{h}", &h[..2]));
        assert_eq!(sha_of(&obj.join(format!("data.{fmt}"))), h);
        let md: serde_json::Value =
            serde_json::from_slice(&std::fs::read(obj.join("metadata.json")).unwrap()).unwrap();
        assert_eq!(md["hash"], h);
        let link = obj.join("used_by/prod_001");
        let target = std::fs::canonicalize(&link).unwrap();
        assert!(
            target.starts_with(&m.dir) && target.ends_with("prod_001"),
            "{}",
            target.display()
        );
        assert!(target.join("inputs").is_dir());
    }
    let find = std::process::Command::new("find")
        .arg(&m.dir)
        .output()
        .unwrap();
    assert!(find.status.success());
    assert_eq!(
        String::from_utf8(find.stdout)
            .unwrap()
            .lines()
            .filter(|l| l.ends_with("/big.bin"))
            .count(),
        views.len()
    );

    // data/ and manifests/ are read-only; with --read-only, so are the runs.
    let err = std::fs::write(m.path("data/new.txt"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    assert!(m.unmount().success());
    let ro = t.mount(&cache, &["--read-only"]);
    let err = std::fs::write(ro.path("runs/flat/prod_001/outputs/new.txt"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    let err = std::fs::create_dir(ro.path("runs/flat/new_run")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    assert_eq!(
        std::fs::read(ro.path("runs/flat/prod_001/outputs/labels.csv")).unwrap(),
        small
    );
    assert!(ro.unmount().success());
    assert!(
        !t.keys().iter().any(|k| k.contains("new")),
        "nothing reached the store"
    );
}

fn a_run_made_elsewhere_appears_within_the_refresh(kind: Kind) {
    let t = TestStore::new(kind);
    t.ok(&["run", "create", "first", "--project", "p"]);
    // A view pointer whose run does not exist (a crash, a hostile bucket) is never followed.
    t.put_raw(
        "runs/by_project/p/ghost/run.json",
        br#"{"run_id":"ghost","manifest":"manifests/ghost.json"}"#,
    );
    let m = t.mount(&t.dir.path().join("cache"), &["--refresh", "1"]);
    assert!(m.path("runs/by_project/p/first").is_dir());
    assert!(!m.path("runs/by_project/p/ghost").exists());
    assert!(!m.path("runs/by_project/p/second").exists());
    let f = t.file("x.bin", b"made while mounted");
    t.ok(&["run", "create", "second", "--project", "p"]);
    t.ok(&["run", "add-output", "second", "x.bin", path_str(&f)]);
    let start = Instant::now();
    while !m.path("runs/by_project/p/second/outputs/x.bin").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the new run never appeared"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "took {:?} with --refresh 1",
        start.elapsed()
    );
    assert_eq!(
        std::fs::read(m.path("runs/by_project/p/second/outputs/x.bin")).unwrap(),
        b"made while mounted"
    );
    assert!(m.path("manifests/second.json").exists());
}

/// Names looked up one at a time on a fresh mount, before any listing: in a view, in
/// `runs/flat`, in a fan-out directory of `data/` and in `manifests/`, each found where it is
/// and not found where it is not. (These directories are searched for the one name, not
/// listed for it; the names are made to sort differently as text and as numbers.)
fn names_are_found_one_at_a_time(kind: Kind) {
    let t = TestStore::new(kind);
    let runs = ["r2", "r10", "r1", "r100", "r20", "R3", "r1_b"];
    for run in runs {
        t.ok(&[
            "run",
            "create",
            run,
            "--project",
            "p",
            "--view",
            "by_project",
            "--view",
            "flat",
        ]);
    }
    let (_, h) = put_object(&t, 7, 1000);
    let (_, other) = put_object(&t, 8, 1000);
    t.ok(&["run", "add-input", "r10", "x.bin", "--hash", &h]);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    for run in runs {
        for dir in [
            format!("runs/by_project/p/{run}"),
            format!("runs/flat/{run}"),
        ] {
            assert!(m.path(&dir).join("outputs").is_dir(), "{dir} not found");
        }
        let manifest = std::fs::read(m.path(&format!("manifests/{run}.json"))).unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(manifest["run_id"], run);
    }
    for missing in [
        "runs/by_project/p/r3",
        "runs/by_project/p/r1000",
        "runs/by_project/q/r1",
        "runs/flat/r",
        "runs/flat/r10_",
        "manifests/r3.json",
        "manifests/r1",
        "manifests/..json",
    ] {
        let e = std::fs::metadata(m.path(missing)).expect_err(missing);
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{missing}: {e}");
    }
    assert!(
        m.path(&format!("data/{}/{h}/metadata.json", &h[..2]))
            .is_file()
    );
    // Another object's hash is not in this fan-out directory, whatever its own holds.
    let elsewhere = format!("data/{}/{other}", &h[..2]);
    assert_eq!(
        other[..2] == h[..2],
        m.path(&elsewhere).exists(),
        "{elsewhere}"
    );
    let not_a_hash = format!("data/{}/{}", &h[..2], &h[..10]);
    assert!(!m.path(&not_a_hash).exists(), "{not_a_hash}");
    let used_by = format!("data/{}/{h}/used_by", &h[..2]);
    let link = std::fs::symlink_metadata(m.path(&format!("{used_by}/r10"))).unwrap();
    assert!(link.file_type().is_symlink());
    assert!(m.path(&format!("{used_by}/r10/outputs")).is_dir());
    for run in ["r1", "r100", "nobody"] {
        let path = format!("{used_by}/{run}");
        let e = std::fs::symlink_metadata(m.path(&path)).expect_err(&path);
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{path}: {e}");
    }
}

/// Run `big` of project `p`, with `files[i]` as its input `f{i}.bin`.
fn run_with_inputs(t: &TestStore, files: &[Vec<u8>]) {
    t.ok(&["run", "create", "big", "--project", "p"]);
    for (i, data) in files.iter().enumerate() {
        let f = t.file(&format!("f{i}.bin"), data);
        t.ok(&[
            "run",
            "add-input",
            "big",
            &format!("f{i}.bin"),
            path_str(&f),
        ]);
        std::fs::remove_file(f).unwrap();
    }
}

fn the_cache_stays_within_its_limit(kind: Kind) {
    let t = TestStore::new(kind);
    let files: Vec<Vec<u8>> = (0..4).map(|i| bytes(70 + i, 128 * 1024 * 1024)).collect();
    run_with_inputs(&t, &files);
    let cache = t.dir.path().join("cache");
    let limit = 64 * 1024 * 1024;
    let m = t.mount(&cache, &["--cache-size", "64MiB"]);
    for (i, data) in files.iter().enumerate() {
        assert!(
            sha_of(&m.path(&format!("runs/by_project/p/big/inputs/f{i}.bin"))) == sha256_hex(data),
            "file {i}"
        );
        let used = disk_usage(&cache.join("objects"));
        assert!(
            used <= limit,
            "cache uses {used} bytes after file {i}, over its {limit}"
        );
    }
    drop(m);
    assert!(disk_usage(&cache.join("objects")) <= limit);
}

/// Two mounts sharing one cache directory stay within its limit together.
#[test]
fn mounts_sharing_a_cache_stay_within_its_limit_together() {
    let t = TestStore::new(Kind::Local);
    let files: Vec<Vec<u8>> = (0..4).map(|i| bytes(90 + i, 96 * 1024 * 1024)).collect();
    run_with_inputs(&t, &files);
    let cache = t.dir.path().join("shared-cache");
    let limit = 64 * 1024 * 1024;
    let m1 = t.mount(&cache, &["--cache-size", "64MiB"]);
    let m2 = t.mount(&cache, &["--cache-size", "64MiB"]);
    std::thread::scope(|s| {
        for (mi, m) in [&m1, &m2].into_iter().enumerate() {
            let files = &files;
            s.spawn(move || {
                for round in 0..2 {
                    for i in [mi, mi + 2] {
                        let p = m.path(&format!("runs/by_project/p/big/inputs/f{i}.bin"));
                        assert!(
                            sha_of(&p) == sha256_hex(&files[i]),
                            "mount {mi} file {i} round {round}"
                        );
                    }
                }
            });
        }
        // Watch the directory while they read.
        for _ in 0..40 {
            let used = disk_usage(&cache.join("objects"));
            assert!(
                used <= limit,
                "shared cache uses {used} bytes, over its {limit}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let used = disk_usage(&cache.join("objects"));
    assert!(
        used <= limit,
        "shared cache uses {used} bytes, over its {limit}"
    );
}

fn corruption_is_never_served(kind: Kind) {
    let t = TestStore::new(kind);
    let (data, h) = put_object(&t, 80, 3 * 1024 * 1024);
    let cache = t.dir.path().join("cache");
    let rel = format!("data/{}/{h}/data.bin", &h[..2]);
    let m = t.mount(&cache, &[]);
    assert_eq!(sha_of(&m.path(&rel)), h);
    drop(m);

    // A byte flipped in a cached block: dropped, fetched again, right bytes.
    let cached = cache.join(format!("objects/{}/{h}", &h[..2]));
    let mut c = std::fs::read(&cached).unwrap();
    c[1024 * 1024 + 10] ^= 0xff;
    std::fs::write(&cached, &c).unwrap();
    let m = t.mount(&cache, &[]);
    assert_eq!(sha_of(&m.path(&rel)), h);
    drop(m);

    // Bytes appended to the complete cache file: never served (the kernel would read a file
    // handed to it for passthrough to its own end).
    let mut c = std::fs::OpenOptions::new()
        .append(true)
        .open(&cached)
        .unwrap();
    std::io::Write::write_all(&mut c, b"not part of the object").unwrap();
    drop(c);
    let m = t.mount(&cache, &[]);
    assert!(std::fs::read(m.path(&rel)).unwrap() == data);
    drop(m);

    // A byte flipped in the stored object, with a cold cache: the read fails, never lies.
    let mut bad = data.clone();
    bad[2 * 1024 * 1024 + 5] ^= 1;
    t.put_raw(&format!("data/{}/{h}/data.bin", &h[..2]), &bad);
    let cold = t.dir.path().join("cold");
    let m = t.mount(&cold, &[]);
    let err = std::fs::read(m.path(&rel)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // The intact blocks before it still read.
    let mut file = std::fs::File::open(m.path(&rel)).unwrap();
    let mut first = vec![0u8; 1024 * 1024];
    std::io::Read::read_exact(&mut file, &mut first).unwrap();
    assert!(first == data[..1024 * 1024]);
}

fn unmount_with_a_reader_in_the_middle(kind: Kind) {
    let t = TestStore::new(kind);
    let (_, h) = put_object(&t, 90, 8 * 1024 * 1024);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let mut reader =
        std::fs::File::open(m.path(&format!("data/{}/{h}/data.bin", &h[..2]))).unwrap();
    let mut buf = vec![0u8; 1024 * 1024];
    std::io::Read::read_exact(&mut reader, &mut buf).unwrap();
    let dir = m.dir.clone();
    let status = m.unmount();
    assert!(status.success(), "the daemon exits cleanly: {status}");
    let rest = std::io::Read::read_to_end(&mut reader, &mut Vec::new());
    assert!(
        rest.is_err(),
        "the reader sees an error, not a hang or made-up bytes"
    );
    assert!(!mltrack::mount::is_mounted(&dir));
    std::fs::write(dir.join("usable"), b"again").unwrap();
}

/// Reads `len` bytes at `offset` of `file`, which was told to expect random reads (no
/// read-ahead by the kernel, so each read reaches the daemon as it is).
fn pread(file: &std::fs::File, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    std::os::unix::fs::FileExt::read_exact_at(file, &mut buf, offset)
        .unwrap_or_else(|e| panic!("read {len} bytes at {offset}: {e}"));
    buf
}

fn open_for_random_reads(path: &std::path::Path) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // SAFETY: fadvise on a descriptor we own.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
    f
}

/// An object of several blocks is hashed in 64 KiB chunks too (docs/STORE.md, "Chunks"): a
/// random read of a cold file fetches, verifies and caches the chunks it touches, not whole
/// 1 MiB blocks; a damaged chunk fails alone; a damaged chunk list costs speed, not bytes; and
/// a sequential read afterwards still fills the cache with the whole, verified file.
fn random_reads_fetch_and_cache_only_their_chunks(kind: Kind) {
    const KIB: u64 = 1024;
    let t = TestStore::new(kind);
    let size = 12 * 1024 * KIB + 100;
    let (data, h) = put_object(&t, 97, size as usize);
    let prefix = format!("data/{}/{h}", &h[..2]);
    let meta: serde_json::Value =
        serde_json::from_slice(&t.get(&format!("{prefix}/metadata.json"))).unwrap();
    assert_eq!(meta["chunk_size"], 65536, "{meta}");
    let list = t.get(&format!("{prefix}/chunks"));
    assert_eq!(list.len() as u64, 32 * size.div_ceil(64 * KIB));
    assert_eq!(
        hex_of(&list[32..64]),
        sha256_hex(&data[64 * KIB as usize..128 * KIB as usize]),
        "the chunk list holds each chunk's SHA-256"
    );

    let cache = t.dir.path().join("cache");
    let rel = format!("{prefix}/data.bin");
    // Offsets in three blocks, one read crossing two chunks, and the object's last bytes; each
    // more than 2 MiB from where the one before ended, so none counts as sequential.
    let reads = [
        (5 * 1024 * KIB + 200 * KIB, 4096),
        (9 * 1024 * KIB + 60 * KIB, 8 * KIB as usize),
        (size - 50, 50),
    ];
    let m = t.mount(&cache, &[]);
    let f = open_for_random_reads(&m.path(&rel));
    for (at, len) in reads {
        assert!(
            pread(&f, at, len) == data[at as usize..at as usize + len],
            "{len} bytes at {at}"
        );
    }
    drop(f);
    drop(m);
    let used = disk_usage(&cache.join("objects"));
    assert!(
        used <= 4 * 64 * KIB,
        "random reads cached {used} bytes: whole blocks, not the four chunks they touched"
    );

    // A new mount on the same cache reads them from it (S3: no data GET at all).
    let data_gets = || {
        (kind == Kind::S3).then(|| {
            t.server()
                .faults
                .data_gets
                .load(std::sync::atomic::Ordering::SeqCst)
        })
    };
    let before = data_gets();
    let m = t.mount(&cache, &[]);
    let f = open_for_random_reads(&m.path(&rel));
    for (at, len) in reads {
        assert!(pread(&f, at, len) == data[at as usize..at as usize + len]);
    }
    assert_eq!(data_gets(), before, "the chunks came from the cache");
    drop(f);
    // A sequential read replaces the chunks with whole blocks: a complete, verified file.
    assert_eq!(sha_of(&m.path(&rel)), h);
    drop(m);
    let cached = cache.join(format!("objects/{}/{h}", &h[..2]));
    assert!(xattr(&cached, "user.mltrack.verified").is_some());
    assert!(std::fs::read(&cached).unwrap() == data);

    // A byte flipped in the stored object: the chunk holding it fails with EIO, the chunk
    // beside it in the same block still reads.
    let mut bad = data.clone();
    bad[6 * 1024 * 1024 + 70 * 1024] ^= 1;
    t.put_raw(&format!("{prefix}/data.bin"), &bad);
    let cold = t.dir.path().join("cold");
    let m = t.mount(&cold, &[]);
    let f = open_for_random_reads(&m.path(&rel));
    let mut buf = vec![0u8; 4096];
    let err = std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, 6 * 1024 * KIB + 66 * KIB)
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    drop(f);
    // Opened again: a read near the last one would count as sequential and read the block.
    let f = open_for_random_reads(&m.path(&rel));
    let at = 6 * 1024 * KIB + 10 * KIB;
    assert!(pread(&f, at, 4096) == data[at as usize..at as usize + 4096]);
    drop(f);
    drop(m);
    t.put_raw(&format!("{prefix}/data.bin"), &data);

    // A chunk list that does not match: the mount reads whole blocks instead, right bytes;
    // fsck names it and --repair writes it again.
    let mut wrong = list.clone();
    wrong[40] ^= 1;
    t.put_raw(&format!("{prefix}/chunks"), &wrong);
    let cold = t.dir.path().join("cold2");
    let m = t.mount(&cold, &[]);
    let f = open_for_random_reads(&m.path(&rel));
    for (at, len) in reads {
        assert!(pread(&f, at, len) == data[at as usize..at as usize + len]);
    }
    drop(f);
    drop(m);
    let out = t.run(&["--json", "fsck", "--repair"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("fsck JSON");
    let findings = report["findings"].as_array().expect("findings");
    assert!(
        findings
            .iter()
            .any(|f| f["kind"] == "bad_chunk_list" && f["repaired"] == true),
        "{report}"
    );
    assert!(
        t.get(&format!("{prefix}/chunks")) == list,
        "the list written again"
    );
    assert_eq!(
        t.json(&["fsck"])["findings"].as_array().map(Vec::len),
        Some(0)
    );
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn remounting_with_a_warm_cache_downloads_nothing() {
    let t = TestStore::new(Kind::S3);
    let (_, h) = put_object(&t, 95, 6 * 1024 * 1024 + 7);
    let cache = t.dir.path().join("cache");
    let rel = format!("data/{}/{h}/data.bin", &h[..2]);
    let m = t.mount(&cache, &[]);
    assert_eq!(sha_of(&m.path(&rel)), h);
    drop(m);
    let faults = &t.server().faults;
    let gets = || {
        (
            faults.data_gets.load(std::sync::atomic::Ordering::SeqCst),
            faults
                .metadata_gets
                .load(std::sync::atomic::Ordering::SeqCst),
        )
    };
    let before = gets();
    assert!(before.0 > 0 && before.1 > 0);
    // Every block was verified as it arrived, so the complete file is recorded as verified
    // whole (what lets a new mount hand it to the kernel without reading it all again).
    let cached = cache.join(format!("objects/{}/{h}", &h[..2]));
    assert!(
        xattr(&cached, "user.mltrack.verified").is_some(),
        "a cache file completed by reading is marked verified"
    );
    let m = t.mount(&cache, &[]);
    assert_eq!(sha_of(&m.path(&rel)), h);
    drop(m);
    // Neither the data nor its metadata.json is fetched again (listings still are: they can
    // change).
    assert_eq!(gets(), before, "the second read was served from the cache");
}

both_backends!(
    every_view_reads_the_stored_bytes,
    a_run_made_elsewhere_appears_within_the_refresh,
    names_are_found_one_at_a_time,
    the_cache_stays_within_its_limit,
    corruption_is_never_served,
    unmount_with_a_reader_in_the_middle,
    random_reads_fetch_and_cache_only_their_chunks,
);

/// Readers of one object at once, cold, as data-loader workers would: they share fetches and
/// blocks kept in memory, and each gets exactly the object's bytes.
#[test]
fn parallel_cold_readers_each_get_the_bytes() {
    let t = TestStore::new(Kind::S3);
    let (data, h) = put_object(&t, 97, 12 * 1024 * 1024 + 5);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let path = m.path(&format!("data/{}/{h}/data.bin", &h[..2]));
    std::thread::scope(|s| {
        for chunk in [4096usize, 128 * 1024, 1024 * 1024 + 3, 7 * 1024 * 1024] {
            let path = &path;
            let data = &data;
            s.spawn(move || {
                let mut file = std::fs::File::open(path).unwrap();
                let mut got = Vec::new();
                let mut buf = vec![0u8; chunk];
                loop {
                    let n = std::io::Read::read(&mut file, &mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                assert!(
                    got == *data,
                    "reader with {chunk}-byte reads got other bytes"
                );
            });
        }
    });
}

/// The tools of the mount issue on the tree: stat, du, sha256sum, getfattr -d, pandas.
#[test]
fn user_tools_work_on_the_tree() {
    let t = TestStore::new(Kind::Local);
    let pq = t.scratch().join("train.parquet");
    let py = format!(
        "import pandas as pd; pd.DataFrame({{'id': range(1000), 'y': [i % 3 for i in range(1000)]}}).to_parquet('{}')",
        path_str(&pq)
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &py])
        .output()
        .unwrap();
    common::assert_succeeded(&out);
    let h = t.json(&["put", path_str(&pq)])["hash"]
        .as_str()
        .unwrap()
        .to_string();
    let size = std::fs::metadata(&pq).unwrap().len();
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let file = m.path(&format!("data/{}/{h}/data.parquet", &h[..2]));
    let run = |cmd: &str| {
        let out = std::process::Command::new("sh")
            .args(["-c", cmd])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let f = path_str(&file);
    assert_eq!(run(&format!("stat -c %s {f}")).trim(), size.to_string());
    assert!(run(&format!("sha256sum {f}")).starts_with(&h));
    let du: u64 = run(&format!("du -b {f}"))
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(du, size);
    let attrs = run(&format!("getfattr -d {f}"));
    assert!(
        attrs.contains(&format!("user.mltrack.sha256=\"{h}\"")),
        "{attrs}"
    );
    assert!(attrs.contains("user.mltrack.format=\"parquet\""), "{attrs}");
    let rows = run(&format!(
        "python3 -c \"import pandas as pd; d = pd.read_parquet('{f}'); print(len(d), d['y'].sum())\""
    ));
    assert_eq!(rows.trim(), "1000 999");
}

/// The systemd unit, run as systemd runs it: its ExecStart with the environment file's
/// settings, then SIGTERM (what `systemctl stop` sends) unmounts and exits cleanly.
#[test]
fn the_systemd_unit_mounts_and_stops_cleanly() {
    let t = TestStore::new(Kind::Local);
    t.ok(&["run", "create", "r1", "--project", "p"]);
    let unit = std::fs::read_to_string(repo_file("systemd/mltrack.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let dir = t.dir.path().join("unit-mnt");
    std::fs::create_dir(&dir).unwrap();
    // The environment file, as an operator would fill it in.
    let env = [
        ("MLTRACK_MOUNTPOINT", path_str(&dir).to_string()),
        ("MLTRACK_STORE", t.url()),
        (
            "MLTRACK_CACHE_DIR",
            path_str(&t.dir.path().join("unit-cache")).to_string(),
        ),
        ("MLTRACK_MOUNT_OPTIONS", "--refresh 2".to_string()),
    ];
    let mut line = exec.replace("/usr/local/bin/mltrack", env!("CARGO_BIN_EXE_mltrack"));
    for (k, v) in &env {
        line = line
            .replace(&format!("${{{k}}}"), v)
            .replace(&format!("${k}"), v);
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut child = t
        .cmd()
        .args(&words[1..])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !mltrack::mount::is_mounted(&dir) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not mounted: {line}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(dir.join("runs/by_project/p/r1/inputs").is_dir());
    // SAFETY: kill of our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!mltrack::mount::is_mounted(&dir));
}

/// The helper as mount(8) calls it for an fstab line: `mount.fuse.mltrack STORE DIR -o OPTS`.
#[test]
fn the_mount_helper_turns_fstab_options_into_a_mount() {
    let t = TestStore::new(Kind::Local);
    t.ok(&["run", "create", "r1", "--project", "p"]);
    let dir = t.dir.path().join("fstab-mnt");
    std::fs::create_dir(&dir).unwrap();
    let cache = t.dir.path().join("helper-cache");
    let helper = repo_file("scripts/mount.fuse.mltrack");
    let out = std::process::Command::new(&helper)
        .args([
            &t.url(),
            path_str(&dir),
            "-o",
            &format!(
                "rw,_netdev,cache_dir={},cache_size=64MiB,refresh=2",
                path_str(&cache)
            ),
        ])
        .envs(
            t.cmd()
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))),
        )
        .env("MLTRACK_BIN", env!("CARGO_BIN_EXE_mltrack"))
        .output()
        .unwrap();
    common::assert_succeeded(&out);
    assert!(dir.join("runs/by_project/p/r1/inputs").is_dir());
    assert!(cache.join("objects").is_dir(), "cache_dir was passed on");
    t.ok(&["unmount", path_str(&dir)]);
    let start = Instant::now();
    while mltrack::mount::is_mounted(&dir) {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    }
    let bad = std::process::Command::new(helper)
        .args([&t.url(), path_str(&dir), "-o", "bogus=1"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown option bogus=1"));
}

/// A fully cached object open for passthrough is pinned: filling the cache with other data
/// never punches holes under the kernel's reads, and the cache still keeps to its limit.
#[test]
fn files_open_for_passthrough_are_never_evicted_under_the_reader() {
    let t = TestStore::new(Kind::Local);
    let a = bytes(100, 6 * 1024 * 1024);
    let b = bytes(101, 6 * 1024 * 1024);
    let (fa, fb) = (t.file("a.bin", &a), t.file("b.bin", &b));
    t.ok(&["run", "create", "r", "--project", "p"]);
    t.ok(&["run", "add-input", "r", "a.bin", path_str(&fa)]);
    t.ok(&["run", "add-input", "r", "b.bin", path_str(&fb)]);
    let cache = t.dir.path().join("cache");
    let limit = 8 * 1024 * 1024;
    let m = t.mount(&cache, &["--cache-size", "8MiB"]);
    let pa = m.path("runs/by_project/p/r/inputs/a.bin");
    assert_eq!(sha_of(&pa), sha256_hex(&a), "first read fills the cache");
    let mut held = std::fs::File::open(&pa).unwrap();
    assert_eq!(
        sha_of(&m.path("runs/by_project/p/r/inputs/b.bin")),
        sha256_hex(&b)
    );
    assert!(disk_usage(&cache.join("objects")) <= limit);
    let mut again = Vec::new();
    std::io::Read::read_to_end(&mut held, &mut again).unwrap();
    assert!(again == a, "the held file still reads its own bytes");
}
