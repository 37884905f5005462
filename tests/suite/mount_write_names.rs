//! The names in a run: renames within and between runs, hard links, removals, and the
//! error number each refusal and each unsupported operation gives (docs/SEMANTICS.md).

use crate::common;

use std::path::Path;
use std::process::Command;

use common::write::*;
use common::{Kind, TestStore, bytes, path_str, sha256_hex};

fn rename_link_remove(kind: Kind) {
    let t = TestStore::new(kind);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let (a, b) = (m.path("runs/by_project/p/a"), m.path("runs/by_project/p/b"));
    std::fs::create_dir_all(&a).expect("mkdir a");
    std::fs::create_dir_all(&b).expect("mkdir b");
    let data = bytes(3, 2 * 1024 * 1024 + 1);
    std::fs::write(a.join("outputs/x.bin"), &data).expect("write");
    // Within a run, into a new subdirectory, then between runs.
    std::fs::create_dir(a.join("outputs/sub")).expect("mkdir sub");
    std::fs::rename(a.join("outputs/x.bin"), a.join("outputs/sub/y.bin")).expect("mv in run");
    std::fs::rename(a.join("outputs/sub"), a.join("outputs/moved")).expect("mv dir");
    std::fs::rename(a.join("outputs/moved/y.bin"), b.join("inputs/z.bin")).expect("mv runs");
    assert_eq!(
        std::fs::read(b.join("inputs/z.bin")).expect("read moved"),
        data
    );
    assert!(
        manifest_files(&t, "a")
            .as_object()
            .expect("files")
            .is_empty()
    );
    assert_eq!(manifest_files(&t, "b")["inputs/z.bin"]["role"], "input");
    // A hard link from data/ and from another run: references, nothing read.
    let h = sha256_hex(&data);
    let obj = m.path(&format!("data/{}/{h}/data.bin", &h[..2]));
    std::fs::hard_link(&obj, a.join("inputs/from_data.bin")).expect("ln from data/");
    std::fs::hard_link(b.join("inputs/z.bin"), a.join("inputs/from_b.bin")).expect("ln from b");
    assert_eq!(manifest_files(&t, "a")["inputs/from_b.bin"]["hash"], h);
    assert_eq!(
        std::fs::read(a.join("inputs/from_data.bin")).expect("read link"),
        data
    );
    // chmod and touch are kept in the manifest.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        a.join("inputs/from_b.bin"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    sh(
        &format!(
            "touch -d 2020-01-02T03:04:05Z {}",
            path_str(&a.join("inputs/from_b.bin"))
        ),
        t.dir.path(),
    );
    let e = &manifest_files(&t, "a")["inputs/from_b.bin"];
    assert_eq!(
        (e["mode"].as_u64(), e["mtime"].as_str()),
        (Some(0o600), Some("2020-01-02T03:04:05Z"))
    );
    // rm drops the reference; rmdir of a run with files is refused, of an empty run deletes it.
    assert_eq!(errno_of(std::fs::remove_dir(&a)), libc::ENOTEMPTY);
    std::fs::remove_file(a.join("inputs/from_b.bin")).expect("rm");
    std::fs::remove_file(a.join("inputs/from_data.bin")).expect("rm");
    std::fs::remove_dir_all(&a).expect("rm -r of an empty run");
    assert!(!a.exists());
    t.fails(&["run", "show", "a"]);
    assert_eq!(t.ok(&["runs-using", &h]).trim(), "b");
}

fn refusals_have_their_errno(kind: Kind) {
    let t = TestStore::new(kind);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let run = m.path("runs/by_project/p/r");
    std::fs::create_dir_all(&run).expect("mkdir run");
    for (path, want) in [
        ("runs/by_type/foo".to_string(), libc::EINVAL),
        ("runs/by_date/2001-01-01".to_string(), libc::EINVAL),
        ("runs/by_project/p/bad\u{1}name".to_string(), libc::EINVAL),
        ("runs/by_project/p/r".to_string(), libc::EEXIST),
        ("data/aa".to_string(), libc::EROFS),
        ("manifests/x".to_string(), libc::EROFS),
        ("runs/other".to_string(), libc::EPERM),
    ] {
        assert_eq!(
            errno_of(std::fs::create_dir(m.path(&path))),
            want,
            "mkdir {path}"
        );
    }
    assert_eq!(
        errno_of(std::fs::write(m.path("data/x"), b"x")),
        libc::EROFS
    );
    assert_eq!(
        errno_of(std::fs::write(m.path("manifests/r.json"), b"{}")),
        libc::EROFS
    );
    assert_eq!(
        errno_of(std::fs::write(run.join("inputs"), b"x")),
        libc::EISDIR
    );
    // mkdir by type sets the type; the run shows it as an xattr-free fact in its manifest.
    std::fs::create_dir(m.path("runs/by_type/production/prod_7")).expect("mkdir by type");
    assert_eq!(t.json(&["run", "show", "prod_7"])["run_type"], "production");
    // Nothing was written by the refusals.
    let runs: Vec<String> = t
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("manifests/"))
        .collect();
    assert_eq!(runs, ["manifests/prod_7.json", "manifests/r.json"]);
}

/// The "not supported" list of docs/SEMANTICS.md, claim by claim.
fn unsupported_operations_fail_cleanly(kind: Kind) {
    use std::io::Write;
    let t = TestStore::new(kind);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let run = m.path("runs/by_project/p/u");
    std::fs::create_dir_all(&run).expect("mkdir run");
    std::fs::write(run.join("outputs/a.txt"), b"a").expect("write");
    // Symbolic links work (mount_links.rs); FIFOs do not (mount_posix_bugs.rs). Directories
    // keep attributes, owners, modes and times (mount_dirs.rs).
    // Extended attributes outside `user.` are refused, on files as on directories.
    for target in [run.join("outputs"), run.join("outputs/a.txt")] {
        let out = Command::new("setfattr")
            .args(["-n", "trusted.x", "-v", "1"])
            .arg(&target)
            .output()
            .expect("setfattr");
        assert!(!out.status.success(), "trusted.x on {target:?}");
    }
    // Exchanging renames are refused.
    let c = |p: &Path| std::ffi::CString::new(path_str(p)).expect("path");
    let (a, b) = (c(&run.join("outputs/a.txt")), c(&run.join("outputs/b.txt")));
    std::fs::write(run.join("outputs/b.txt"), b"b").expect("write");
    // SAFETY: two valid C strings; renameat2 only reads them.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(
        (r, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::EINVAL))
    );
    // Reading a closed file through a mapping works (shared writable mappings: mount_mmap.rs).
    let py = format!(
        "import mmap\nf = open('{p}', 'rb')\nassert mmap.mmap(f.fileno(), 1, prot=mmap.PROT_READ)[:] == b'a'",
        p = path_str(&run.join("outputs/a.txt"))
    );
    let out = Command::new("python3")
        .args(["-c", &py])
        .output()
        .expect("python");
    common::assert_succeeded(&out);
    // A file removed while open is written on, and never recorded.
    let mut f = std::fs::File::create(run.join("outputs/gone.txt")).expect("create");
    f.write_all(b"before").expect("write");
    std::fs::remove_file(run.join("outputs/gone.txt")).expect("rm while open");
    f.write_all(b"after").expect("write after rm");
    f.sync_all().expect("fsync after rm");
    drop(f);
    let files = manifest_files(&t, "u");
    assert!(files.get("outputs/gone.txt").is_none(), "{files}");
    assert!(!run.join("outputs/gone.txt").exists());
}

both_backends!(
    rename_link_remove,
    refusals_have_their_errno,
    unsupported_operations_fail_cleanly,
);
