//! The manifest log (docs/STORE.md, "Manifest log"): a close commits a small immutable entry
//! instead of rewriting the run's manifest; readers see the manifest with its entries applied;
//! compaction folds them in at unmount and on `mltrack run compact`. A crash before
//! compaction loses nothing, an entry that does not parse or a gap in the numbers is named by
//! fsck and costs nothing else, and two machines and the CLI, each with its own lock
//! directory (so only create-if-absent keeps them apart), lose no entry of each other's.

use crate::common;

use common::write::sh;
use common::{Kind, TestStore, bytes, path_str};

/// The keys of run `run`'s log entries.
fn log_keys(t: &TestStore, run: &str) -> Vec<String> {
    let prefix = format!("manifests/{run}.log/");
    t.keys()
        .into_iter()
        .filter(|k| k.starts_with(&prefix))
        .collect()
}

fn log_key(run: &str, seq: u64) -> String {
    format!("manifests/{run}.log/{seq:020}.json")
}

fn file_names(state: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = state["files"]
        .as_object()
        .map(|f| f.keys().cloned().collect())
        .unwrap_or_default();
    names.sort();
    names
}

fn closes_are_log_entries_folded_at_unmount(kind: Kind) {
    let t = TestStore::new(kind);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let run = m.path("runs/by_project/p/lg");
    std::fs::create_dir_all(&run).expect("mkdir run");
    for i in 0..5u64 {
        std::fs::write(run.join(format!("outputs/f{i}.bin")), bytes(i, 1000)).expect("write");
    }
    // Each close is an entry of its own; the manifest object is not rewritten by them.
    assert!(
        log_keys(&t, "lg").len() >= 5,
        "one entry per close: {:?}",
        log_keys(&t, "lg")
    );
    let want: Vec<String> = (0..5).map(|i| format!("outputs/f{i}.bin")).collect();
    assert_eq!(
        file_names(&t.manifest("lg")),
        want,
        "readers see every entry"
    );
    let shown: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.path("manifests/lg.json")).expect("read"))
            .expect("the mount's manifests/ shows the state");
    assert_eq!(file_names(&shown), want);
    drop(m);
    // Unmounting folded the log into the manifest object itself.
    let stored = t.stored_manifest("lg");
    assert_eq!(file_names(&stored), want, "{stored}");
    assert!(stored["log_seq"].as_u64().unwrap_or(0) >= 5, "{stored}");
}

/// Writes run `run`'s next log entry by hand, as a writer that crashed before compaction
/// leaves it: file `path` with the entry `like` has (data that is stored and marked).
fn plant_entry(t: &TestStore, run: &str, seq: u64, path: &str, like: &serde_json::Value) {
    let entry = serde_json::json!({
        "seq": seq, "at": "2026-11-30T12:00:00Z", "writer": "crashed:1",
        "files": { path: like },
    });
    t.put_raw(&log_key(run, seq), entry.to_string().as_bytes());
}

fn a_crash_before_compaction_loses_nothing(kind: Kind) {
    let t = TestStore::new(kind);
    t.ok(&["run", "create", "cr", "--project", "p"]);
    let f = t.file("a.bin", &bytes(7, 5000));
    t.ok(&["run", "add-output", "cr", "a.bin", path_str(&f)]);
    let stored = t.stored_manifest("cr");
    let seq = stored["log_seq"].as_u64().expect("the CLI compacted") + 1;
    plant_entry(
        &t,
        "cr",
        seq,
        "outputs/b.bin",
        &stored["files"]["outputs/a.bin"],
    );
    // Every reader sees the entry: the CLI, a mount, fsck (nothing to report). The state
    // shown is a manifest that includes it (its `log_seq` says so).
    let state = t.manifest("cr");
    assert_eq!(file_names(&state), ["outputs/a.bin", "outputs/b.bin"]);
    assert_eq!(state["log_seq"], seq, "{state}");
    {
        let m = t.mount(&t.dir.path().join("cache"), &["--read-only"]);
        let b = std::fs::read(m.path("runs/by_project/p/cr/outputs/b.bin")).expect("read b");
        assert_eq!(b, bytes(7, 5000));
    }
    t.assert_only_crash_leftovers_then_clean("an entry not yet compacted");
    // Compaction folds it; the state is the same, now in the manifest object.
    let out = t.json(&["run", "compact", "cr"]);
    assert_eq!(out["folded"], 1, "{out}");
    assert_eq!(
        file_names(&t.stored_manifest("cr")),
        ["outputs/a.bin", "outputs/b.bin"]
    );
    assert_eq!(t.stored_manifest("cr")["log_seq"], seq);
    // A crash between the manifest's replacement and the entry's deletion leaves a folded
    // entry behind: readers ignore it, and it changes nothing.
    assert!(log_keys(&t, "cr").contains(&log_key("cr", seq)));
    assert_eq!(file_names(&t.manifest("cr")).len(), 2);
    t.assert_only_crash_leftovers_then_clean("a folded entry left behind");
}

fn an_unreadable_entry_and_a_gap_are_named_and_lose_nothing_else(kind: Kind) {
    let t = TestStore::new(kind);
    t.ok(&["run", "create", "bad", "--project", "p"]);
    let f = t.file("a.bin", &bytes(8, 3000));
    t.ok(&["run", "add-output", "bad", "a.bin", path_str(&f)]);
    let stored = t.stored_manifest("bad");
    let base = stored["log_seq"].as_u64().expect("compacted");
    t.put_raw(&log_key("bad", base + 1), b"{ not json");
    // base + 2 is missing: a gap.
    plant_entry(
        &t,
        "bad",
        base + 3,
        "outputs/after.bin",
        &stored["files"]["outputs/a.bin"],
    );
    let out = t.run(&["--json", "run", "show", "bad"]);
    common::assert_succeeded(&out);
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        file_names(&state),
        ["outputs/a.bin", "outputs/after.bin"],
        "the entries around the bad one still apply"
    );
    let warned = String::from_utf8_lossy(&out.stderr);
    assert!(warned.contains(&log_key("bad", base + 1)), "{warned}");

    let out = t.run(&["--json", "fsck"]);
    assert!(!out.status.success(), "fsck fails on a damaged log");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains(&log_key("bad", base + 1)), "{report}");
    assert!(
        report.contains(&format!("entries {} to {} are missing", base + 2, base + 2)),
        "{report}"
    );

    // Compaction never folds past what it cannot read, so nothing is lost to it.
    assert_eq!(t.json(&["run", "compact", "bad"])["folded"], 0);
    assert_eq!(t.stored_manifest("bad")["log_seq"], base);
    // Once the operator removes the bad entry, the rest folds.
    t.delete(&log_key("bad", base + 1));
    assert_eq!(t.json(&["run", "compact", "bad"])["folded"], 1);
    assert_eq!(
        file_names(&t.stored_manifest("bad")),
        ["outputs/a.bin", "outputs/after.bin"]
    );
}

/// Two mounts acting as two machines (each its own `MLTRACK_LOCK_DIR`) and the CLI with a
/// third write one run at once while `mltrack run compact` runs in a loop: every entry
/// lands, as each was acknowledged.
fn two_machines_and_the_cli_write_one_run(kind: Kind) {
    let t = TestStore::new(kind);
    t.ok(&["run", "create", "many", "--project", "p"]);
    let lock_dir = |name: &str| {
        let d = t.dir.path().join(name);
        std::fs::create_dir(&d).expect("mkdir lock dir");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        d
    };
    let (a, b, c) = (
        lock_dir("locks-a"),
        lock_dir("locks-b"),
        lock_dir("locks-c"),
    );
    let m1 = t.mount_with(
        &t.dir.path().join("cache1"),
        &["--refresh", "1"],
        &[("MLTRACK_LOCK_DIR", path_str(&a))],
    );
    let m2 = t.mount_with(
        &t.dir.path().join("cache2"),
        &["--refresh", "1"],
        &[("MLTRACK_LOCK_DIR", path_str(&b))],
    );
    let per_writer = 10u64;
    let writing = std::sync::atomic::AtomicUsize::new(3);
    std::thread::scope(|s| {
        let writing = &writing;
        let done = || writing.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        // Compactions from a fourth place all along, as other machines would run them.
        let (tc, cc) = (&t, &c);
        s.spawn(move || {
            while writing.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                let out = tc
                    .cmd()
                    .env("MLTRACK_LOCK_DIR", cc)
                    .args(["run", "compact", "many"])
                    .output()
                    .expect("run mltrack");
                common::assert_succeeded(&out);
            }
        });
        for (mi, m) in [&m1, &m2].into_iter().enumerate() {
            s.spawn(move || {
                let dir = m.path("runs/by_project/p/many/outputs");
                for i in 0..per_writer {
                    let data = bytes(100 * mi as u64 + i, 2000 + i as usize);
                    std::fs::write(dir.join(format!("m{mi}_{i}.bin")), &data)
                        .unwrap_or_else(|e| panic!("mount {mi}, file {i}: {e}"));
                }
                done();
            });
        }
        let (t, c) = (&t, &c);
        s.spawn(move || {
            for i in 0..per_writer {
                let f = t.file(&format!("cli{i}.bin"), &bytes(900 + i, 1500));
                let out = t
                    .cmd()
                    .env("MLTRACK_LOCK_DIR", c)
                    .args(["run", "add-output", "many"])
                    .arg(format!("cli_{i}.bin"))
                    .arg(&f)
                    .output()
                    .expect("run mltrack");
                common::assert_succeeded(&out);
            }
            done();
        });
    });
    let want = 3 * per_writer as usize;
    assert_eq!(file_names(&t.manifest("many")).len(), want);
    drop(m1);
    drop(m2);
    assert_eq!(
        file_names(&t.stored_manifest("many")).len(),
        want,
        "compacted at unmount"
    );
    t.assert_only_crash_leftovers_then_clean("after the writers");
}

both_backends!(
    closes_are_log_entries_folded_at_unmount,
    a_crash_before_compaction_loses_nothing,
    an_unreadable_entry_and_a_gap_are_named_and_lose_nothing_else,
    two_machines_and_the_cli_write_one_run,
);

/// What a close costs at the server, counted: the same small number of requests for the
/// 201st file of a run as for the first, none of them carrying the run's manifest (the
/// manifest object is not written by a close at all). A close of small new data makes four:
/// `data.<fmt>` (whose create-if-absent is its dedup check), `metadata.json`, and the log
/// entry with the `used_by` marker beside it; no presence check, since the data was stored
/// moments ago (docs/STORE.md). Data stored before is marked and then checked before its
/// entry.
#[test]
fn a_close_costs_the_same_requests_whatever_the_runs_size() {
    use std::sync::atomic::Ordering;
    let t = TestStore::new(Kind::S3);
    let faults = t.server().faults.clone();
    let m = t.mount(&t.dir.path().join("cache"), &["--refresh", "600"]);
    let run = m.path("runs/by_project/p/cost");
    std::fs::create_dir_all(&run).expect("mkdir run");
    let write = |from: u64, n: u64| {
        let before = faults.requests.load(Ordering::SeqCst);
        for i in from..from + n {
            std::fs::write(run.join(format!("outputs/f{i}.bin")), bytes(i, 4096)).expect("write");
        }
        (faults.requests.load(Ordering::SeqCst) - before) as f64 / n as f64
    };
    let heads = || faults.heads.load(Ordering::SeqCst);
    let heads_before = heads();
    let first = write(0, 5);
    assert_eq!(heads(), heads_before, "a close of new data checks nothing");
    write(5, 195);
    let stored = t.stored_manifest("cost");
    let late = write(200, 5);
    eprintln!("requests per close: {first:.1} for the first files, {late:.1} after 200");
    assert!(
        late <= first + 0.5,
        "{late} requests per close after 200 files, {first} before"
    );
    assert!(first <= 4.0, "{first} requests per close");
    // No close rewrote the manifest object meanwhile (unless a compaction ran in between).
    let after = t.stored_manifest("cost");
    assert!(
        after == stored || after["log_seq"] != stored["log_seq"],
        "a close rewrote the manifest"
    );
    // The markers written beside the entries are there.
    let h0 = common::sha256_hex(&bytes(0, 4096));
    let users = t.json(&["runs-using", &h0]);
    assert!(users.to_string().contains("cost"), "{users}");
    // Data stored before: marked, then checked present, before its entry.
    let heads_before = heads();
    std::fs::write(run.join("outputs/again.bin"), bytes(0, 4096)).expect("write");
    assert_eq!(
        heads(),
        heads_before + 1,
        "stored data is checked before it is recorded"
    );
}

/// Through a mount on a server that refuses a second create-if-absent PUT (the test server
/// does, and the mount probes it), small new data is stored without a dedup check: its create
/// succeeding says nothing was stored under its key. A close of it is four requests, none a
/// `metadata.json` GET. Stored data that follows is refused by its create, then checked;
/// the small file after stored data is checked first, until new data is seen again
/// (docs/STORE.md, "Order of writes").
#[test]
fn small_new_data_is_stored_without_a_dedup_check() {
    use std::sync::atomic::Ordering;
    let t = TestStore::new(Kind::S3);
    let faults = t.server().faults.clone();
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    std::fs::create_dir_all(m.path("runs/by_project/p/early")).expect("mkdir run");
    let out = m.path("runs/by_project/p/early/outputs");
    let checks = || faults.metadata_gets.load(Ordering::SeqCst);
    let requests = || faults.requests.load(Ordering::SeqCst);
    let write = |name: &str, seed: u64| {
        let (checks_before, requests_before) = (checks(), requests());
        std::fs::write(out.join(name), bytes(seed, 4096)).expect("write");
        (checks() - checks_before, requests() - requests_before)
    };
    assert_eq!(
        write("a.bin", 1),
        (0, 4),
        "new data: no check, four requests"
    );
    assert_eq!(
        write("a-again.bin", 1).0,
        1,
        "stored data: refused, then checked"
    );
    assert_eq!(write("b.bin", 2).0, 1, "after stored data, checked first");
    assert_eq!(write("c.bin", 3), (0, 4), "after new data, no check again");
    for (name, seed) in [("a.bin", 1), ("a-again.bin", 1), ("b.bin", 2), ("c.bin", 3)] {
        assert_eq!(
            std::fs::read(out.join(name)).expect("read"),
            bytes(seed, 4096),
            "{name}"
        );
    }
    let objects = t
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("data/") && k.ends_with("/metadata.json"))
        .count();
    assert_eq!(objects, 3, "one object per content");
    drop(m);
    let fsck = t.json(&["fsck"]);
    assert_eq!(fsck["findings"].as_array().map(Vec::len), Some(0), "{fsck}");
}

/// The same bytes stored first under one format and then, through a mount that makes no
/// dedup check for small new data, under another name's extension: the object keeps its
/// first format, the second copy is removed, and both files read back.
#[test]
fn small_data_stored_under_another_format_is_not_stored_twice() {
    let t = TestStore::new(Kind::S3);
    let first = t.dir.path().join("table.csv");
    std::fs::write(&first, bytes(5, 3000)).expect("write");
    let put = t.json(&["put", first.to_str().expect("path")]);
    assert_eq!(put["format"], "csv", "{put}");
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    std::fs::create_dir_all(m.path("runs/by_project/p/fmt")).expect("mkdir run");
    let out = m.path("runs/by_project/p/fmt/outputs");
    // New data first, so that the next small file goes out without its check.
    std::fs::write(out.join("new.bin"), bytes(6, 3000)).expect("write");
    std::fs::write(out.join("same.txt"), bytes(5, 3000)).expect("write");
    assert_eq!(
        std::fs::read(out.join("same.txt")).expect("read"),
        bytes(5, 3000)
    );
    let h = common::sha256_hex(&bytes(5, 3000));
    let files: Vec<String> = t
        .keys()
        .into_iter()
        .filter(|k| k.starts_with(&format!("data/{}/{h}/data.", &h[..2])))
        .collect();
    assert_eq!(files, vec![format!("data/{}/{h}/data.csv", &h[..2])]);
    drop(m);
    let fsck = t.json(&["fsck"]);
    assert_eq!(fsck["findings"].as_array().map(Vec::len), Some(0), "{fsck}");
}

/// Where the server is not known to honour create-if-absent (a CLI command does not probe),
/// small new data goes out together with its dedup check instead of after its answer: the
/// data's PUT arrives at the server while the check's GET is held there.
#[test]
fn a_small_put_goes_out_beside_its_dedup_check() {
    use common::s3::{Fault, Target};
    use std::sync::atomic::Ordering;
    let t = TestStore::new(Kind::S3);
    let faults = t.server().faults.clone();
    let file = t.dir.path().join("small.bin");
    std::fs::write(&file, bytes(9, 4096)).expect("write");
    // Long enough for a loaded machine to send the data meanwhile.
    faults.inject(
        Target::MetadataGet,
        Fault::Stall(std::time::Duration::from_secs(2)),
        1,
    );
    let put = t.json(&["put", file.to_str().expect("path")]);
    assert_eq!(put["new"], true, "{put}");
    assert_eq!(faults.pending(), 0, "its dedup check was held");
    assert_eq!(
        faults.data_puts_during_a_stall.load(Ordering::SeqCst),
        1,
        "the data went out before its check was answered"
    );
    let again = t.json(&["put", file.to_str().expect("path")]);
    assert_eq!(again["new"], false, "{again}");
}

/// The marker of new data goes beside its entry: if it cannot be written, the close still
/// succeeds (bytes and entry are durable), and `fsck` names the missing marker and repairs it.
#[test]
fn a_marker_that_fails_beside_its_entry_is_repaired_by_fsck() {
    use common::s3::{Fault, Target};
    let t = TestStore::new(Kind::S3);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let run = m.path("runs/by_project/p/marked");
    std::fs::create_dir_all(&run).expect("mkdir run");
    t.server()
        .faults
        .inject(Target::MarkerPut, Fault::AccessDenied, 1);
    let data = bytes(77, 5000);
    std::fs::write(run.join("outputs/a.bin"), &data).expect("the close succeeds");
    assert_eq!(t.server().faults.pending(), 0, "the marker PUT was refused");
    assert_eq!(
        std::fs::read(run.join("outputs/a.bin")).expect("read"),
        data
    );
    drop(m);
    let shown = t.json(&["run", "show", "marked"]);
    assert_eq!(file_names(&shown), vec!["outputs/a.bin"], "{shown}");
    let fsck = t.run(&["--json", "fsck"]);
    let report: serde_json::Value = serde_json::from_slice(&fsck.stdout).expect("fsck JSON");
    let kinds: Vec<&str> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter_map(|f| f["kind"].as_str())
        .collect();
    assert_eq!(kinds, vec!["missing_marker"], "{report}");
    t.run(&["fsck", "--repair"]);
    let fsck = t.json(&["fsck"]);
    assert_eq!(fsck["findings"].as_array().map(Vec::len), Some(0), "{fsck}");
    let users = t.json(&["runs-using", &common::sha256_hex(&data)]);
    assert!(users.to_string().contains("marked"), "{users}");
}

/// `ls -lR` of a view on a fresh mount: the listing reads its runs ahead while `ls` looks each
/// one up, and the two meet on the same runs; each run is still read once.
#[test]
fn a_first_listing_reads_each_run_once() {
    use std::sync::atomic::Ordering;
    let t = TestStore::new(Kind::S3);
    let runs = 40;
    for i in 0..runs {
        t.ok(&["run", "create", &format!("r{i:02}"), "--project", "p"]);
    }
    let m = t.mount(&t.dir.path().join("cache"), &["--refresh", "600"]);
    let faults = t.server().faults.clone();
    let before = faults.manifest_gets.load(Ordering::SeqCst);
    let listing = sh("ls -lR .", &m.path("runs/by_project/p"));
    for i in 0..runs {
        assert!(
            listing.contains(&format!("r{i:02}:")),
            "r{i:02} listed: {listing}"
        );
    }
    let gets = faults.manifest_gets.load(Ordering::SeqCst) - before;
    assert_eq!(gets, runs as u64, "manifest GETs for {runs} runs");
}

/// A view of many runs is read ahead with one listing of `manifests/` beside the reads: a
/// run that listing shows without a log costs one GET, not a GET and a HEAD for a log entry
/// (only the runs read before the listing arrives are asked). A run with a log is read with
/// its entries.
#[test]
fn a_large_view_is_read_ahead_without_asking_each_run_for_its_log() {
    use std::sync::atomic::Ordering;
    let t = TestStore::new(Kind::S3);
    let runs = 300;
    for i in 0..runs {
        let run = format!("r{i:03}");
        let manifest = serde_json::json!({
            "schema_version": 1, "run_id": run, "run_type": "experiment", "project": "p",
            "created_at": "2026-11-26T10:00:00Z", "updated_at": "2026-11-26T10:00:00Z",
            "storage_modes": ["by_project"], "tags": {}, "files": {}
        });
        t.put_raw(
            &format!("manifests/{run}.json"),
            manifest.to_string().as_bytes(),
        );
        let pointer =
            serde_json::json!({"run_id": run, "manifest": format!("manifests/{run}.json")});
        t.put_raw(
            &format!("runs/by_project/p/{run}/run.json"),
            pointer.to_string().as_bytes(),
        );
    }
    let f = t.file("a.bin", &bytes(9101, 1000));
    t.ok(&["run", "add-output", "r299", "a.bin", path_str(&f)]);
    assert!(!log_keys(&t, "r299").is_empty(), "the add is a log entry");

    let m = t.mount(&t.dir.path().join("cache"), &["--refresh", "600"]);
    let faults = t.server().faults.clone();
    let (gets, heads) = (
        faults.manifest_gets.load(Ordering::SeqCst),
        faults.heads.load(Ordering::SeqCst),
    );
    let listing = sh("ls -l .", &m.path("runs/by_project/p"));
    let listed = listing
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|name| name.len() == 4 && name.starts_with('r'))
        .count();
    assert_eq!(listed, runs, "every run listed: {listing}");
    let gets = faults.manifest_gets.load(Ordering::SeqCst) - gets;
    let heads = faults.heads.load(Ordering::SeqCst) - heads;
    assert!(
        gets >= runs as u64 && gets <= runs as u64 + 2,
        "{gets} manifest GETs for {runs} runs"
    );
    assert!(
        heads < runs as u64 / 2,
        "{heads} HEADs for {runs} runs: most should have been read with one GET"
    );
    let listed = std::fs::read_dir(m.path("runs/by_project/p/r299/outputs"))
        .expect("list r299's outputs")
        .map(|e| e.expect("entry").file_name())
        .collect::<Vec<_>>();
    assert_eq!(
        listed,
        ["a.bin"],
        "the run with a log is read with its entry"
    );
}

/// `run list` reads a run without a log with one GET: the listing of `manifests/` that names
/// the runs also shows which have a log (`<run>.log/`), and only those are asked about it.
/// A run with entries is listed with them applied.
#[test]
fn run_list_asks_only_runs_with_a_log_about_it() {
    use std::sync::atomic::Ordering;
    let t = TestStore::new(Kind::S3);
    let runs = 12;
    for i in 0..runs {
        t.ok(&["run", "create", &format!("r{i:02}"), "--project", "p"]);
    }
    let f = t.file("a.bin", &bytes(9100, 1000));
    t.ok(&["run", "add-output", "r00", "a.bin", path_str(&f)]);
    assert!(!log_keys(&t, "r00").is_empty(), "the add is a log entry");
    let faults = t.server().faults.clone();
    let before = faults.requests.load(Ordering::SeqCst);
    let listed = t.json(&["run", "list"]);
    let requests = faults.requests.load(Ordering::SeqCst) - before;
    let all = listed.as_array().cloned().unwrap_or_default();
    assert_eq!(all.len(), runs, "{listed}");
    let r00 = all
        .iter()
        .find(|r| r["run_id"] == "r00")
        .expect("r00 listed");
    assert_eq!(file_names(r00), vec!["outputs/a.bin"], "{r00}");
    // One LIST of manifests/, a GET per run, and for r00 its log: a HEAD, a LIST, a GET.
    assert!(
        requests <= 1 + runs as u64 + 3 + 1,
        "{requests} requests to list {runs} runs"
    );
}
