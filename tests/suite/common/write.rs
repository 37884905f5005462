//! Helpers for the tests that write through a mount: shell commands, errno of a failure,
//! a source tree to copy, a directory read back whole, many writers at once, a small tmpfs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;

use super::{TestStore, bytes, path_str};

/// Runs made with `mkdir` get three views, so a test can read them back through each.
pub const THREE_VIEWS: &[(&str, &str)] =
    &[("MLTRACK_DEFAULT_STORAGE_MODE", "by_project,by_date,flat")];

/// Runs `cmd` with `sh -c` in `cwd`, which must succeed; its output, trimmed.
pub fn sh(cmd: &str, cwd: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(cwd)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn errno_of(r: std::io::Result<impl Sized>) -> i32 {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

/// Every regular file under `dir`, relative path to bytes.
pub fn files_under(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).expect("under root");
                out.insert(
                    rel.display().to_string(),
                    std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())),
                );
            }
        }
    }
    let mut out = Default::default();
    walk(dir, dir, &mut out);
    out
}

pub fn manifest_files(t: &TestStore, run: &str) -> serde_json::Value {
    t.json(&["run", "show", run])["files"].clone()
}

pub fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

/// A source tree with nested directories and a few sizes, for `cp -r`, rsync and tar.
pub fn source_tree(t: &TestStore) -> PathBuf {
    let src = t.scratch().join("tree");
    for (i, (rel, len)) in [
        ("a.csv", 100),
        ("nested/b.bin", 3 * 1024 * 1024 + 7),
        ("nested/deeper/c.txt", 0),
        ("d.json", 4096),
    ]
    .iter()
    .enumerate()
    {
        let p = src.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, bytes(100 + i as u64, *len)).expect("write");
    }
    src
}

/// Writes `count` files from several threads; returns the names whose `close()` succeeded.
pub fn write_many(dir: &Path, count: u64, stop: &std::sync::atomic::AtomicBool) -> Vec<String> {
    let done = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for w in 0..4u64 {
            let done = &done;
            s.spawn(move || {
                for i in (w..count).step_by(4) {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let name = format!("f{i}.bin");
                    let data = bytes(5000 + i, 300_000 + i as usize * 1000);
                    let ok = (|| -> std::io::Result<()> {
                        use std::io::Write;
                        let mut f = std::fs::File::create(dir.join(&name))?;
                        for chunk in data.chunks(64 * 1024) {
                            f.write_all(chunk)?;
                        }
                        // close() must succeed: File's drop ignores errors, so sync explicitly.
                        f.sync_all()?;
                        drop(f);
                        Ok(())
                    })();
                    if ok.is_ok() {
                        done.lock().expect("lock").push(name);
                    }
                }
            });
        }
    });
    done.into_inner().expect("lock")
}

/// A tmpfs mounted for the life of the value.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn new(dir: PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&dir).expect("mkdir");
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                // Private, as a cache directory must be (a tmpfs is 1777 by default).
                &format!("size={size},mode=0700"),
                "tmpfs",
                path_str(&dir),
            ])
            .status()
            .expect("mount tmpfs");
        assert!(ok.success(), "mount tmpfs");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Copies directory `from` to `to` (which must not exist yet) as `tool` does it: `cp -a`, or
/// `rsync -aX` (attributes too).
pub fn copy_tree(tool: &str, from: &Path, to: &Path) {
    let (from, to) = (path_str(from), path_str(to));
    let cmd = match tool {
        "cp" => format!("cp -a '{from}' '{to}'"),
        "rsync" => format!("rsync -aX '{from}/' '{to}/'"),
        _ => panic!("copy_tree: no tool {tool}"),
    };
    sh(&cmd, Path::new("/"));
}

/// What `rsync -n --itemize-changes` with `flags` would still change from `from` to `to`,
/// both directories: empty when `to` is a faithful copy.
pub fn rsync_would_change(flags: &str, from: &Path, to: &Path) -> String {
    let out = Command::new("rsync")
        .args(["-n", flags, "--itemize-changes"])
        .arg(format!("{}/", path_str(from)))
        .arg(format!("{}/", path_str(to)))
        .output()
        .expect("rsync -n");
    super::assert_succeeded(&out);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
