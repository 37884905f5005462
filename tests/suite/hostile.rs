//! Hostile input and security, through a real mount: names no store should take, manifests and
//! metadata in the bucket written by someone else to escape the tree or exhaust the daemon,
//! other users on the machine, and credentials in the daemon's own logs at trace level.

use crate::common;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Kind, TestStore, as_nobody, bytes, open_path_to, path_str, sha256_hex};

fn errno_of<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

/// Every path under `dir`, recursively (not following symlinks or crossing into mounts).
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if mltrack::mount::is_mounted(&p) {
            continue;
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(tree(&p));
        }
        out.push(p);
    }
    out
}

fn hostile_names_are_refused_and_nothing_is_recorded(kind: Kind) {
    let t = TestStore::new(kind);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    std::fs::create_dir_all(m.path("runs/by_project/p/r")).expect("mkdir run");
    let dir = m.path("runs/by_project/p/r/outputs");
    std::fs::write(dir.join("good.txt"), b"good").expect("a good name");
    let invalid_utf8 = std::ffi::OsStr::from_bytes(b"bad\xff\xfe.bin");
    for (name, want) in [
        (std::ffi::OsStr::new("bell\u{7}.txt"), libc::EINVAL),
        (std::ffi::OsStr::new("new\nline.txt"), libc::EINVAL),
        (invalid_utf8, libc::EINVAL),
    ] {
        assert_eq!(
            errno_of(std::fs::write(dir.join(name), b"x")),
            want,
            "{name:?}"
        );
        assert_eq!(
            errno_of(std::fs::create_dir(dir.join(name))),
            want,
            "{name:?}"
        );
    }
    // Longer than a component may be (FUSE itself passes names up to 1024 bytes).
    let long = "n".repeat(256);
    assert_eq!(
        errno_of(std::fs::write(dir.join(&long), b"x")),
        libc::ENAMETOOLONG
    );
    let longest = "n".repeat(255);
    std::fs::write(dir.join(&longest), b"255 bytes is allowed").expect("255-byte name");
    // Renames into a bad name are refused the same way.
    assert_eq!(
        errno_of(std::fs::rename(dir.join("good.txt"), dir.join("tab\there"))),
        libc::EINVAL
    );
    let files = t.json(&["run", "show", "r"])["files"].clone();
    let mut names: Vec<&String> = files.as_object().expect("files").keys().collect();
    names.sort();
    assert_eq!(
        names,
        [
            &"outputs/good.txt".to_string(),
            &format!("outputs/{longest}")
        ]
    );
    // Runs, projects and dates are names too.
    for bad in ["runs/by_project/p/r\u{1b}[31m", "runs/by_project/..x/../y"] {
        let r = std::fs::create_dir(m.path(bad));
        assert!(r.is_err(), "{bad:?} was made");
    }
    assert_eq!(
        errno_of(std::fs::create_dir(m.path("runs/by_date/2026-13-45"))),
        libc::EINVAL
    );
    assert_eq!(
        errno_of(std::fs::create_dir(m.path("runs/by_type/prod"))),
        libc::EINVAL
    );
    assert_eq!(t.json(&["run", "list"]).as_array().map(Vec::len), Some(1));
}

fn hostile_bucket_contents_are_skipped_and_escape_nothing(kind: Kind) {
    let t = TestStore::new(kind);
    let good = bytes(600, 100_000);
    let f = t.file("good.bin", &good);
    t.ok(&["run", "create", "fine", "--project", "p"]);
    t.ok(&["run", "add-output", "fine", "good.bin", path_str(&f)]);
    let h = sha256_hex(&good);
    let entry = |path: &str, hash: &str| {
        serde_json::json!({
            "schema_version": 1, "run_id": "evil", "run_type": "experiment", "project": "p",
            "created_at": "2026-11-26T10:00:00Z", "updated_at": "2026-11-26T10:00:00Z",
            "storage_modes": ["by_project"], "tags": {},
            "files": {path: {"hash": hash, "size": 100000, "format": "bin", "role": "output",
                "mtime": "2026-11-26T10:00:00Z", "mode": 420,
                "added_at": "2026-11-26T10:00:00Z"}},
        })
    };
    let pointer = |run: &str| format!(r#"{{"run_id":"{run}","manifest":"manifests/{run}.json"}}"#);
    // A manifest whose file climbs out of the run, one whose hash is a path, one far too
    // deep for a parser's stack, one of 20 MiB of garbage, and a pointer to /etc/passwd.
    let plants: Vec<(&str, Vec<u8>)> = vec![
        (
            "evil",
            entry("../../../../escape.txt", &h).to_string().into_bytes(),
        ),
        (
            "evil2",
            entry("outputs/x.bin", "../../../../escape")
                .to_string()
                .into_bytes(),
        ),
        (
            "deep",
            format!("{}{}", "[".repeat(200_000), "]".repeat(200_000)).into_bytes(),
        ),
        ("huge", vec![b'{'; 20 * 1024 * 1024]),
    ];
    for (run, body) in &plants {
        t.put_raw(&format!("manifests/{run}.json"), body);
        t.put_raw(
            &format!("runs/by_project/p/{run}/run.json"),
            pointer(run).as_bytes(),
        );
    }
    t.put_raw(
        "runs/by_project/p/trick/run.json",
        br#"{"run_id":"trick","manifest":"../../../../etc/passwd"}"#,
    );
    // Metadata whose format would make a key outside the object.
    let other = bytes(601, 5000);
    let g = t.file("other.bin", &other);
    t.ok(&["run", "add-output", "fine", "other.bin", path_str(&g)]);
    let oh = sha256_hex(&other);
    let meta_key = format!("data/{}/{oh}/metadata.json", &oh[..2]);
    let meta = String::from_utf8(t.get(&meta_key)).expect("utf-8");
    t.put_raw(
        &meta_key,
        meta.replace("\"format\": \"bin\"", "\"format\": \"../../../../escape\"")
            .as_bytes(),
    );
    assert!(
        String::from_utf8(t.get(&meta_key))
            .expect("utf-8")
            .contains("escape")
    );

    let before: Vec<PathBuf> = tree(t.dir.path());
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    // (manifests/ lists the keys as they are; reading one gives its raw bytes, read-only.)
    let ls = Command::new("ls")
        .args(["-laR", path_str(&m.path("runs"))])
        .output()
        .expect("ls");
    let listing = String::from_utf8_lossy(&ls.stdout);
    // A view lists its run ids from the pointers' names (one LIST, no GET per run); a run is
    // checked against its manifest when looked up, and a bad one is refused there.
    for run in ["evil", "evil2", "deep", "huge", "trick"] {
        assert_eq!(
            errno_of(std::fs::metadata(
                m.path(&format!("runs/by_project/p/{run}"))
            )),
            libc::ENOENT,
            "{run}"
        );
    }
    assert!(listing.contains("good.bin"), "{listing}");
    assert!(
        std::fs::read(m.path("runs/by_project/p/fine/outputs/good.bin")).expect("read") == good
    );
    // The object with the hostile metadata is refused, not followed.
    let refused = errno_of(std::fs::read(
        m.path("runs/by_project/p/fine/outputs/other.bin"),
    ));
    assert!(
        refused == libc::EIO || refused == libc::ENOENT,
        "errno {refused}"
    );
    let m_dir = m.dir.clone();
    drop(m);
    let created: Vec<PathBuf> = tree(t.dir.path())
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    for p in &created {
        // Its cache, the store itself (the local store's lock files, the S3 server's own
        // files), its log and the mount point: nothing else.
        let inside = ["cache", "store", "s3"]
            .iter()
            .any(|d| p.starts_with(t.dir.path().join(d)))
            || p.file_name() == Some("mount.log".as_ref())
            || p == &m_dir;
        assert!(inside, "the mount created {}", p.display());
        assert!(!p.to_string_lossy().contains("escape"), "{}", p.display());
    }
    assert!(!Path::new("/tmp/escape.txt").exists() && !Path::new("/escape.txt").exists());
    // fsck names each one.
    let report: serde_json::Value =
        serde_json::from_slice(&t.run(&["--json", "fsck"]).stdout).expect("fsck JSON");
    let keys: Vec<String> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["key"].as_str().unwrap_or("").to_string())
        .collect();
    for key in [
        "manifests/evil.json",
        "manifests/evil2.json",
        "manifests/deep.json",
        "manifests/huge.json",
        meta_key.as_str(),
    ] {
        assert!(keys.iter().any(|k| k == key), "{key} not named: {report}");
    }
}

both_backends!(
    hostile_names_are_refused_and_nothing_is_recorded,
    hostile_bucket_contents_are_skipped_and_escape_nothing,
);

#[test]
fn other_users_see_the_mount_only_with_allow_other() {
    let t = TestStore::new(Kind::Local);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    open_path_to(&m.dir);
    // nobody can reach the directory the mount sits in: what stops them is the mount.
    let parent = as_nobody(&["ls", path_str(t.dir.path())]);
    assert!(parent.status.success(), "{parent:?}");
    let denied = as_nobody(&["ls", path_str(&m.path("runs"))]);
    assert!(!denied.status.success(), "another user listed the mount");
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("Permission denied"),
        "{denied:?}"
    );
    assert!(m.path("runs").is_dir(), "the owner still sees it");
    drop(m);

    let m = t.mount(&t.dir.path().join("cache"), &["--allow-other"]);
    open_path_to(&m.dir);
    let allowed = as_nobody(&["ls", path_str(&m.path("runs"))]);
    assert!(allowed.status.success(), "{allowed:?}");
    assert!(String::from_utf8_lossy(&allowed.stdout).contains("by_project"));
}

#[test]
fn credentials_never_appear_in_mount_logs() {
    let t = TestStore::new(Kind::S3);
    let stored = bytes(700, 2 * 1024 * 1024);
    let f = t.file("s.bin", &stored);
    t.ok(&["put", path_str(&f)]);
    let h = sha256_hex(&stored);
    let m = t.mount_with(&t.dir.path().join("cache"), &[], &[("RUST_LOG", "trace")]);
    std::fs::create_dir_all(m.path("runs/by_project/p/r")).expect("mkdir run");
    std::fs::write(
        m.path("runs/by_project/p/r/outputs/o.bin"),
        bytes(701, 300_000),
    )
    .expect("write");
    let rel = format!("data/{}/{h}/data.bin", &h[..2]);
    assert!(std::fs::read(m.path(&rel)).expect("read") == stored);
    // Errors too: a server that refuses, then is gone.
    t.server().faults.inject(
        common::s3::Target::Write,
        common::s3::Fault::InternalError,
        2,
    );
    std::fs::write(m.path("runs/by_project/p/r/outputs/p.bin"), b"retried").expect("write");
    t.server().faults.go_down();
    let _ = std::fs::write(m.path("runs/by_project/p/r/outputs/q.bin"), b"fails");
    t.server().faults.heal();
    drop(m);
    let log = std::fs::read_to_string(t.dir.path().join("mount.log")).expect("mount log");
    assert!(
        log.len() > 100_000,
        "trace logging wrote {} bytes",
        log.len()
    );
    assert!(
        log.contains("InternalError") || log.contains("500"),
        "the errors were logged"
    );
    assert!(
        !log.contains(common::s3::SECRET_KEY),
        "the secret key is in the mount log"
    );
}
