//! What a node operator sees: Prometheus metrics scraped over HTTP while a mount reads and
//! writes, `mltrack status` with an upload in flight, `mltrack warmup` (then a cold remount
//! that reads with no data GET), and progress bars on a terminal and not in a pipe.

use crate::common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::s3::{Fault, Target};
use common::{Kind, Mount, TestStore, bytes, path_str, sha256_hex};

const MIB: usize = 1024 * 1024;

/// The mount's status, as `mltrack status --json` gives it.
fn status(t: &TestStore, m: &Mount) -> serde_json::Value {
    t.json(&["status", path_str(&m.dir)])
}

/// One scrape of the metrics with curl, parsed by a Prometheus text parser: sample values by
/// name and labels (`name{k="v",...}` with labels sorted).
fn scrape(addr: &str) -> HashMap<String, f64> {
    let out = Command::new("curl")
        .args(["-sSf", "--noproxy", "*", &format!("http://{addr}/metrics")])
        .output()
        .expect("run curl");
    common::assert_succeeded(&out);
    let text = String::from_utf8(out.stdout).expect("utf-8 metrics");
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text that parses");
    let mut values = HashMap::new();
    for s in scrape.samples {
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        labels.sort();
        let key = if labels.is_empty() {
            s.metric.clone()
        } else {
            format!("{}{{{}}}", s.metric, labels.join(","))
        };
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        values.insert(key, v);
    }
    values
}

fn get(values: &HashMap<String, f64>, key: &str) -> f64 {
    values.get(key).copied().unwrap_or(0.0)
}

#[test]
fn metrics_move_by_what_the_mount_did() {
    let t = TestStore::new(Kind::S3);
    let data = bytes(7100, 5 * MIB);
    let f = t.file("cold.bin", &data);
    t.ok(&["run", "create", "r", "--project", "p"]);
    t.ok(&["run", "add-input", "r", "cold.bin", path_str(&f)]);
    let m = t.mount(&t.dir.path().join("cache"), &["--metrics", "127.0.0.1:0"]);
    let st = status(&t, &m);
    let addr = st["metrics"]
        .as_str()
        .expect("status names the metrics address")
        .to_string();
    assert!(addr.starts_with("127.0.0.1:"), "loopback: {addr}");
    let before = scrape(&addr);

    // A cold read of 5 MiB: 5 MiB of blocks from the store, 5 misses, GETs that succeeded.
    let got = std::fs::read(m.path("runs/by_project/p/r/inputs/cold.bin")).expect("cold read");
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
    let after = scrape(&addr);
    let delta = |k: &str| get(&after, k) - get(&before, k);
    assert_eq!(
        delta(r#"mltrack_read_bytes_total{source="store"}"#),
        (5 * MIB) as f64
    );
    assert!(delta(r#"mltrack_store_bytes_total{op="get"}"#) >= (5 * MIB) as f64);
    assert_eq!(delta("mltrack_cache_misses_total"), 5.0);
    assert!(delta(r#"mltrack_store_requests_total{op="get",outcome="ok"}"#) >= 5.0);
    assert!(get(&after, "mltrack_cache_size_bytes") >= (5 * MIB) as f64);
    assert!(delta("mltrack_read_duration_seconds_count") > 0.0);

    // A write of 3 MiB: one commit, its bytes put to the store.
    let written = bytes(7101, 3 * MIB);
    std::fs::write(m.path("runs/by_project/p/r/outputs/w.bin"), &written).expect("write");
    // A refused write: counted by its errno.
    let refused = std::fs::write(m.path("data/x"), b"no");
    assert!(refused.is_err());
    let later = scrape(&addr);
    let delta = |k: &str| get(&later, k) - get(&after, k);
    assert_eq!(delta("mltrack_commits_total"), 1.0);
    assert_eq!(delta("mltrack_commit_duration_seconds_count"), 1.0);
    assert!(delta(r#"mltrack_store_bytes_total{op="put"}"#) >= (3 * MIB) as f64);
    assert!(delta(r#"mltrack_store_requests_total{op="put",outcome="ok"}"#) >= 2.0);
    assert_eq!(get(&later, "mltrack_commits_in_flight"), 0.0);
    let refusals: f64 = ["EROFS", "EACCES", "EPERM", "ENOENT"]
        .iter()
        .map(|e| delta(&format!("mltrack_errors_total{{errno=\"{e}\"}}")))
        .sum();
    assert!(refusals >= 1.0, "the refused write is counted");

    // The same numbers through `mltrack status`.
    let st = status(&t, &m);
    let c = &st["counters"];
    assert_eq!(c["read_bytes"]["store"], (5 * MIB) as u64);
    assert_eq!(c["commits"], 1);
    assert_eq!(st["pending_writes"].as_array().map(Vec::len), Some(0));
    assert!(
        st["store"].as_str().is_some_and(|s| s.starts_with("s3://")),
        "{st}"
    );
}

#[test]
fn metrics_are_off_unless_asked_and_a_bad_address_fails_the_mount() {
    let t = TestStore::new(Kind::Local);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    assert!(status(&t, &m)["metrics"].is_null());
    drop(m);
    let out = t.run(&[
        "mount",
        path_str(&t.scratch()),
        "--foreground",
        "--metrics",
        "nowhere:port",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--metrics"), "{stderr}");
}

/// A slow upload shows as a pending write being committed; once `close()` returned, nothing
/// is pending.
#[test]
fn status_shows_a_slow_upload_in_flight() {
    let t = TestStore::new(Kind::S3);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    std::fs::create_dir_all(m.path("runs/by_project/p/slow")).expect("mkdir run");
    t.server()
        .faults
        .inject(Target::Write, Fault::Stall(Duration::from_secs(4)), 1);
    let path = m.path("runs/by_project/p/slow/outputs/big.bin");
    let data = bytes(7200, 2 * MIB);
    let seen = std::thread::scope(|s| {
        let writer = s.spawn(|| std::fs::write(&path, &data));
        let start = Instant::now();
        let mut seen = None;
        while start.elapsed() < Duration::from_secs(4) && seen.is_none() {
            let st = status(&t, &m);
            let committing = st["pending_writes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|w| w["state"] == "committing")
                .cloned();
            if committing.is_some() {
                assert_eq!(st["counters"]["commits_in_flight"], 1, "{st}");
                seen = committing;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        writer.join().expect("writer").expect("close succeeded");
        seen
    });
    let w = seen.expect("status showed the upload in flight");
    assert_eq!(w["run"], "slow");
    assert_eq!(w["path"], "outputs/big.bin");
    assert_eq!(w["bytes"], 2 * MIB as u64);
    // The last release comes just after close() returns.
    let start = Instant::now();
    loop {
        let st = status(&t, &m);
        let pending = st["pending_writes"].as_array().map_or(0, Vec::len);
        if pending == 0 && st["counters"]["commits_in_flight"] == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still pending: {st}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = t.ok(&["status", path_str(&m.dir)]);
    assert!(text.contains("0 pending"), "{text}");
}

#[test]
fn status_of_what_is_not_a_mount_says_so() {
    let t = TestStore::new(Kind::Local);
    let err = t.fails(&["status", path_str(&t.scratch())]);
    assert!(err.contains("is not an mltrack mount"), "{err}");
}

/// Inputs of a run on the S3 store: one of 5 MiB, one of 2 MiB, and the 2 MiB one again under
/// another name (one object).
fn run_with_inputs(t: &TestStore) -> Vec<(String, Vec<u8>)> {
    t.ok(&["run", "create", "train", "--project", "p"]);
    let inputs = vec![
        ("a.bin".to_string(), bytes(7300, 5 * MIB)),
        ("b.bin".to_string(), bytes(7301, 2 * MIB)),
        ("copy_of_b.bin".to_string(), bytes(7301, 2 * MIB)),
    ];
    for (name, data) in &inputs {
        let f = t.file(name, data);
        t.ok(&["run", "add-input", "train", name, path_str(&f)]);
    }
    inputs
}

#[test]
fn warmup_then_a_cold_remount_reads_with_no_data_get() {
    let t = TestStore::new(Kind::S3);
    let inputs = run_with_inputs(&t);
    let cache = t.dir.path().join("cache");
    let m = t.mount(&cache, &[]);
    let gets = || t.server().faults.data_gets.load(Ordering::SeqCst);
    let before = gets();
    // Other tests' mounts have a run "train" too: this one is named.
    let mnt = path_str(&m.dir).to_string();
    let report = t.json(&["warmup", "train", "--mount", &mnt]);
    assert_eq!(report["files"], 3, "{report}");
    assert_eq!(report["objects"], 2, "{report}");
    assert_eq!(report["fetched_bytes"], 7 * MIB as u64, "{report}");
    assert_eq!(report["cached_bytes"], 0, "{report}");
    assert!(gets() > before, "the warmup fetched");

    // Again: everything is cached, nothing is fetched.
    let before = gets();
    let again = t.json(&["warmup", "train", "--mount", &mnt]);
    assert_eq!(again["fetched_bytes"], 0, "{again}");
    assert_eq!(again["cached_bytes"], 7 * MIB as u64, "{again}");
    assert_eq!(gets(), before, "a second warmup made data GETs");

    // A path in the mount works as well as a run id.
    let dir = m.path("runs/by_project/p/train");
    let by_path = t.json(&["warmup", path_str(&dir)]);
    assert_eq!(by_path["fetched_bytes"], 0, "{by_path}");
    m.unmount();

    // A cold remount on the same cache: every byte read, none fetched.
    let m = t.mount(&cache, &[]);
    let before = gets();
    for (name, data) in &inputs {
        let got = std::fs::read(m.path(&format!("runs/by_project/p/train/inputs/{name}")))
            .expect("read after warmup");
        assert!(got == *data, "{name} read back different");
    }
    assert_eq!(gets() - before, 0, "reads after the warmup made data GETs");
}

#[test]
fn warmup_of_what_is_not_there_fails_clearly() {
    let t = TestStore::new(Kind::Local);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let missing = m.path("runs/by_project/p/nothing");
    let err = t.fails(&["warmup", path_str(&missing)]);
    assert!(err.contains("does not exist"), "{err}");
    let err = t.fails(&["warmup", "no_such_run"]);
    assert!(
        err.contains("no_such_run") && err.contains("does not exist"),
        "{err}"
    );
    let outside = t.file("outside.bin", b"x");
    let err = t.fails(&["warmup", path_str(&outside)]);
    assert!(err.contains("is not in an mltrack mount"), "{err}");
    let err = t.fails(&["warmup", "bad/../id"]);
    assert!(!err.is_empty());
    drop(m);
}

/// Two stores mounted on one node, each with a run `shared`: a run id alone does not choose
/// between them; `--mount` does.
#[test]
fn warmup_of_a_run_in_two_mounts_asks_which() {
    let (a, b) = (TestStore::new(Kind::Local), TestStore::new(Kind::Local));
    for t in [&a, &b] {
        t.ok(&["run", "create", "shared", "--project", "p"]);
        let f = t.file("x.bin", b"an input");
        t.ok(&["run", "add-input", "shared", "x.bin", path_str(&f)]);
    }
    let ma = a.mount(&a.dir.path().join("cache"), &[]);
    let mb = b.mount(&b.dir.path().join("cache"), &[]);
    let err = a.fails(&["warmup", "shared"]);
    assert!(err.contains("name one with --mount"), "{err}");
    for m in [&ma, &mb] {
        let root = std::fs::canonicalize(&m.dir).unwrap();
        assert!(err.contains(path_str(&root)), "{err}");
    }
    let report = a.json(&["warmup", "shared", "--mount", path_str(&mb.dir)]);
    assert_eq!(report["files"], 1, "{report}");
}

#[test]
fn warmup_of_more_than_the_cache_holds_says_so_and_fetches_what_fits() {
    let t = TestStore::new(Kind::S3);
    run_with_inputs(&t);
    let m = t.mount(&t.dir.path().join("cache"), &["--cache-size", "6MiB"]);
    let out = t.run(&["--json", "warmup", "train", "--mount", path_str(&m.dir)]);
    common::assert_succeeded(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("do not fit in the cache"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["fetched_bytes"], 5 * MIB as u64, "{report}");
    assert_eq!(report["left_out_bytes"], 2 * MIB as u64, "{report}");
    assert_eq!(
        report["left_out"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    drop(m);
}

/// Runs `cmd` (a shell command line) under a pseudo-terminal with `script`; returns all it
/// printed.
fn on_a_terminal(cmd: &str) -> String {
    let out = Command::new("script")
        .args(["-q", "-e", "-c", cmd, "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .expect("run script (util-linux)");
    common::assert_succeeded(&out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn progress_bars_on_a_terminal_and_not_in_a_pipe() {
    let t = TestStore::new(Kind::Local);
    let big = t.file("big.bin", &bytes(7400, 80 * MIB));
    let bin = env!("CARGO_BIN_EXE_mltrack");
    let store = t.url();
    let put = format!("{bin} --store {store} put {}", path_str(&big));
    let shown = on_a_terminal(&put);
    assert!(shown.contains("hashing"), "no bar on a terminal: {shown:?}");
    assert!(shown.contains("MiB"), "the bar shows bytes: {shown:?}");

    let out = t.run(&["put", path_str(&big)]);
    common::assert_succeeded(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("hashing"), "a bar in a pipe: {stderr:?}");

    let h = sha256_hex(&bytes(7400, 80 * MIB));
    let copy = t.scratch().join("copy.bin");
    let get = format!("{bin} --store {store} get {h} -o {}", path_str(&copy));
    let shown = on_a_terminal(&get);
    assert!(shown.contains("fetching"), "no bar for get: {shown:?}");
    let json = on_a_terminal(&format!("{put} --json"));
    assert!(!json.contains("hashing"), "a bar with --json: {json:?}");
    assert!(Path::new(&copy).exists());
}
