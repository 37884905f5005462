//! POSIX tools on the mount. `fsx` (the File System eXerciser, `cargo install fsx`) on a file
//! in a run directory, on both backends: random reads, writes, truncates, fsyncs, close/reopen,
//! `copy_file_range`, `sendfile`, `posix_fadvise` and shared `mmap` reads and writes, each
//! checked against an in-memory model of the file. `fallocate` is not supported on run files
//! (docs/SEMANTICS.md), so its weights are zero. `MLTRACK_FSX_OPS` sets the operations (default 2000;
//! `scripts/reliability` runs more). pjdfstest (`cargo install pjdfstest`) on a run directory,
//! with its expected failures in `tests/pjdfstest.toml`. `scripts/test` installs both tools.

use crate::common;

use std::process::Command;

use common::{Kind, TestStore, path_str, repo_file};

const FSX_CONFIG: &str = "flen = 4194304
[weights]
close_open = 1.0
read = 10.0
write = 10.0
truncate = 2.0
fsync = 1.0
fdatasync = 1.0
copy_file_range = 1.0
sendfile = 1.0
posix_fadvise = 1.0
mapread = 1.0
mapwrite = 1.0
posix_fallocate = 0.0
punch_hole = 0.0
invalidate = 0.0
";

fn fsx_on_a_run_file(kind: Kind) {
    let ops = std::env::var("MLTRACK_FSX_OPS").unwrap_or_else(|_| "2000".into());
    let t = TestStore::new(kind);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    std::fs::create_dir_all(m.path("runs/by_project/p/fsx")).expect("mkdir run");
    let config = t.file("fsx.toml", FSX_CONFIG.as_bytes());
    let artifacts = t.scratch();
    let file = m.path("runs/by_project/p/fsx/outputs/fsx.bin");
    let started = std::time::Instant::now();
    let out = Command::new("fsx")
        .args(["-N", &ops, "-S", "7", "-f", path_str(&config), "-P"])
        .arg(&artifacts)
        .arg(&file)
        .output()
        .expect("run fsx (scripts/test installs it: cargo install fsx)");
    assert!(
        out.status.success(),
        "fsx failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "fsx: {ops} operations passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // What fsx left is what the manifest holds.
    let data = std::fs::read(&file).expect("read the file back");
    let files = t.json(&["run", "show", "fsx"])["files"].clone();
    assert_eq!(files["outputs/fsx.bin"]["size"], data.len());
    assert_eq!(files["outputs/fsx.bin"]["hash"], common::sha256_hex(&data));
}

both_backends!(fsx_on_a_run_file);

/// pjdfstest on a run directory of a local-store mount: everything passes except the cases
/// `tests/pjdfstest.toml` expects to fail, each under its reason, and every one of those
/// still fails (a case that starts passing must leave the list). `--allow-other`, as on a
/// shared node: the cases that act as another user need to reach the mount.
#[test]
fn pjdfstest_on_a_run_directory() {
    let t = TestStore::new(Kind::Local);
    let m = t.mount(&t.dir.path().join("cache"), &["--allow-other"]);
    std::fs::create_dir_all(m.path("runs/by_project/p/pjd")).expect("mkdir run");
    let config = repo_file("tests/pjdfstest.toml");
    let out = Command::new("pjdfstest")
        .arg("-c")
        .arg(&config)
        .arg("-p")
        .arg(m.path("runs/by_project/p/pjd/outputs"))
        .current_dir(t.scratch())
        .output()
        .expect("run pjdfstest (scripts/test installs it: cargo install pjdfstest)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("Summary:"))
        .unwrap_or_else(|| {
            panic!(
                "no summary:\n{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    eprintln!("{summary}");
    let failed: Vec<&str> = stdout.lines().filter(|l| l.ends_with("FAILED")).collect();
    assert!(
        out.status.success() && failed.is_empty(),
        "unexpected failures:\n{}",
        failed.join("\n")
    );
    let listed = std::fs::read_to_string(&config)
        .expect("read the config")
        .lines()
        .filter(|l| l.trim_start().starts_with('"'))
        .count();
    assert!(
        summary.contains(&format!("{listed} expected failures")),
        "{listed} cases are listed as expected failures; some now pass: {summary}"
    );
}
