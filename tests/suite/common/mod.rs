//! Helpers shared by the integration tests: a store (local directory or in-process S3) with
//! the `mltrack` binary pointed at it, and direct access to its keys for inspection and for
//! planting corruption.

#![allow(dead_code)]

pub mod s3;
pub mod write;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use mltrack::storage::local::LocalStore;
use mltrack::storage::s3::S3Store;
use mltrack::storage::{Body, DynStore, PutMode, list_all};

pub const PREFIX: &str = "team/ml";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Local,
    S3,
}

pub struct TestStore {
    pub kind: Kind,
    pub dir: tempfile::TempDir,
    pub server: Option<s3::S3Server>,
}

/// Runs `f` to completion on a private runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("test runtime")
        .block_on(f)
}

impl TestStore {
    pub fn new(kind: Kind) -> TestStore {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = (kind == Kind::S3).then(|| s3::S3Server::start(&dir.path().join("s3")));
        TestStore { kind, dir, server }
    }

    pub fn url(&self) -> String {
        match self.kind {
            Kind::Local => self.dir.path().join("store").display().to_string(),
            Kind::S3 => format!("s3://{}/{PREFIX}", s3::BUCKET),
        }
    }

    pub fn server(&self) -> &s3::S3Server {
        self.server.as_ref().expect("an S3 test store")
    }

    /// A scratch directory for input files.
    pub fn scratch(&self) -> PathBuf {
        let p = self.dir.path().join("scratch");
        std::fs::create_dir_all(&p).expect("scratch dir");
        p
    }

    /// Writes `bytes` to a scratch file and returns its path.
    pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.scratch().join(name);
        std::fs::write(&p, bytes).expect("write scratch file");
        p
    }

    /// The `mltrack` binary with this store configured and a clean, hermetic environment.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mltrack"));
        for var in [
            "MLTRACK_STORE",
            "MLTRACK_S3_BUCKET",
            "MLTRACK_DEFAULT_RUN_TYPE",
            "MLTRACK_DEFAULT_STORAGE_MODE",
            "AWS_PROFILE",
            "RUST_LOG",
        ] {
            c.env_remove(var);
        }
        c.env("MLTRACK_STORE", self.url())
            .env("MLTRACK_CACHE_DIR", self.dir.path().join("cache"))
            .env("HOME", self.dir.path());
        if let Some(server) = &self.server {
            for f in ["aws-config", "aws-credentials"] {
                std::fs::write(self.dir.path().join(f), b"").expect("empty AWS file");
            }
            c.env("AWS_ENDPOINT_URL", server.endpoint())
                .env("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY)
                .env("AWS_SECRET_ACCESS_KEY", s3::SECRET_KEY)
                .env("AWS_REGION", "us-east-1")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env("AWS_CONFIG_FILE", self.dir.path().join("aws-config"))
                .env(
                    "AWS_SHARED_CREDENTIALS_FILE",
                    self.dir.path().join("aws-credentials"),
                );
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run mltrack")
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "mltrack {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs a command that must succeed with `--json`; returns the parsed value.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).expect("JSON output")
    }

    /// What a crash may leave and nothing else: `fsck` finds at most `used_by` markers ahead of
    /// their entries, the marker of new data whose entry landed just before the crash (it is
    /// written beside the entry), and uploads without `metadata.json`; after `fsck --repair`
    /// and `gc` it finds nothing. Returns the clean report. `context` names the moment in failure messages.
    pub fn assert_only_crash_leftovers_then_clean(&self, context: &str) -> serde_json::Value {
        let out = self.run(&["--json", "fsck"]);
        let fsck: serde_json::Value = serde_json::from_slice(&out.stdout).expect("fsck JSON");
        for f in fsck["findings"].as_array().expect("findings") {
            assert!(
                f["kind"] == "stale_marker"
                    || f["kind"] == "missing_marker"
                    || f["kind"] == "incomplete_object",
                "{context}: {f}"
            );
        }
        self.run(&["fsck", "--repair"]);
        self.ok(&["gc", "--grace", "0s"]);
        let fsck = self.json(&["fsck"]);
        assert_eq!(
            fsck["findings"].as_array().map(Vec::len),
            Some(0),
            "{context}: {fsck}"
        );
        fsck
    }

    /// Runs a command that must fail; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "mltrack {args:?} succeeded:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).expect("utf-8 stderr")
    }

    /// The backend, opened the way production opens it, for inspecting keys.
    pub fn backend(&self) -> DynStore {
        match self.kind {
            Kind::Local => {
                Arc::new(LocalStore::open(self.dir.path().join("store")).expect("open local store"))
            }
            Kind::S3 => Arc::new(S3Store::with_client(
                s3::client(&self.server().endpoint()),
                s3::BUCKET,
                PREFIX,
            )),
        }
    }

    /// Every key in the store, sorted.
    pub fn keys(&self) -> Vec<String> {
        let store = self.backend();
        let mut keys: Vec<String> = block_on(list_all(store.as_ref(), "", false))
            .expect("list store")
            .objects
            .into_iter()
            .map(|o| o.key)
            .filter(|k| !k.starts_with(".mltrack-probe/"))
            .collect();
        keys.sort();
        keys
    }

    pub fn get(&self, key: &str) -> Vec<u8> {
        block_on(self.backend().get(key, None))
            .expect("get key")
            .data
            .to_vec()
    }

    /// The run's manifest as stored, read straight from the backend.
    /// The run's state as every reader sees it (its manifest with its log applied), in the
    /// manifest's JSON form: `mltrack run show --json`.
    pub fn manifest(&self, run: &str) -> serde_json::Value {
        self.json(&["run", "show", run])
    }

    /// The run's manifest object as stored, without the log entries not yet folded into it.
    pub fn stored_manifest(&self, run: &str) -> serde_json::Value {
        serde_json::from_slice(&self.get(&format!("manifests/{run}.json"))).expect("manifest")
    }

    pub fn put_raw(&self, key: &str, bytes: &[u8]) {
        block_on(
            self.backend()
                .put(key, Body::Bytes(bytes.to_vec().into()), PutMode::Overwrite),
        )
        .expect("put key");
    }

    pub fn delete(&self, key: &str) {
        block_on(self.backend().delete(key)).expect("delete key");
    }
}

/// A live `mltrack mount --foreground` of a test store, unmounted on drop.
pub struct Mount {
    pub dir: PathBuf,
    pub cache: PathBuf,
    child: Option<std::process::Child>,
    mltrack: Command,
}

impl TestStore {
    /// Mounts the store at a fresh directory with the given cache directory and options.
    pub fn mount(&self, cache: &Path, extra: &[&str]) -> Mount {
        self.mount_with(cache, extra, &[])
    }

    /// Mounts with extra environment variables for the daemon.
    pub fn mount_with(&self, cache: &Path, extra: &[&str], env: &[(&str, &str)]) -> Mount {
        let dir = tempfile::Builder::new()
            .prefix("mnt")
            .tempdir_in(self.dir.path())
            .expect("mount dir")
            .keep();
        let mut cmd = self.cmd();
        cmd.args([
            "mount",
            path_str(&dir),
            "--foreground",
            "--cache-dir",
            path_str(cache),
        ])
        .args(extra)
        .envs(env.iter().copied());
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("mount.log")).expect("log"));
        let child = cmd.spawn().expect("start mltrack mount");
        let m = Mount {
            dir: dir.clone(),
            cache: cache.to_path_buf(),
            child: Some(child),
            mltrack: self.cmd(),
        };
        // Generous: on a shared machine whose disk is busy with other tests' fsyncs, a new
        // process has been seen to need a minute before its `main` runs (the daemon's own
        // start-up, from its first log line to "mounted", takes milliseconds).
        let start = std::time::Instant::now();
        while !mltrack::mount::is_mounted(&dir) {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(120),
                "not mounted: {}",
                std::fs::read_to_string(self.dir.path().join("mount.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if start.elapsed() > std::time::Duration::from_secs(5) {
            eprintln!("mounting took {:?}", start.elapsed());
        }
        m
    }
}

impl Mount {
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Sends the daemon SIGKILL, as a crash would, while others may still use the mount's
    /// paths; `kill` afterwards reaps it and detaches the dead mount.
    pub fn crash(&self) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
        }
    }

    /// Kills the daemon with SIGKILL, as a crash would, then detaches the dead mount.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.mltrack.args(["unmount", path_str(&self.dir)]).output();
    }

    /// Unmounts and waits for the daemon; returns its exit status.
    pub fn unmount(mut self) -> std::process::ExitStatus {
        self.stop().expect("daemon status")
    }

    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = self.mltrack.args(["unmount", path_str(&self.dir)]).output();
        let start = std::time::Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if start.elapsed() > std::time::Duration::from_secs(20) {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A file of this repository, found at run time: cargo runs tests from the package root and
/// sets `CARGO_MANIFEST_DIR` then too. (The compile-time `env!` would name the checkout that
/// built the binary, which a shared `CARGO_TARGET_DIR` may have reused from another clone.)
pub fn repo_file(rel: &str) -> PathBuf {
    let root =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from("."), PathBuf::from);
    root.join(rel)
}

/// The uid and gid of `nobody`, another user of the machine.
pub const NOBODY: u32 = 65534;

/// Makes every directory from `/` down to the one holding `dir` searchable by other users.
pub fn open_path_to(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for a in dir.ancestors().skip(1) {
        if a == Path::new("/") || a.as_os_str().is_empty() {
            break;
        }
        let mode = std::fs::metadata(a).expect("stat").permissions().mode();
        std::fs::set_permissions(a, std::fs::Permissions::from_mode(mode | 0o755)).expect("chmod");
    }
}

/// Runs a command as `nobody`.
pub fn as_nobody(args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    Command::new(args[0])
        .args(&args[1..])
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("run as nobody")
}

/// Runs a Python script with the system's `python3`; its standard output, trimmed.
pub fn python(script: &str) -> String {
    let out = Command::new("python3")
        .args(["-c", script])
        .output()
        .expect("python3");
    assert_succeeded(&out);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Asserts that a finished command succeeded, showing its stderr if it did not.
pub fn assert_succeeded(out: &Output) {
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Bytes of disk a directory tree really uses (allocated blocks, as `du` counts).
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for e in entries.flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.is_dir() {
            total += disk_usage(&e.path());
        } else {
            total += m.blocks() * 512;
        }
    }
    total
}

/// Deterministic pseudo-random bytes (xorshift), so that tests need no RNG crate.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A number from the environment (how many rounds a long run makes), or `default`.
pub fn env_u64(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Defines one test per backend from a function taking the store kind.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod local {
            $( #[test] fn $name() { super::$name($crate::common::Kind::Local) } )*
        }
        mod s3 {
            $( #[test] fn $name() { super::$name($crate::common::Kind::S3) } )*
        }
    };
}
