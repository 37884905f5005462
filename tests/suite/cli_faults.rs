//! Bad things in the store and in the network: corrupt manifests and metadata, flipped bytes,
//! missing data, stale markers, an S3 server that dies mid-upload or is down. Each must give a
//! clear error or report, and lose nothing.

use crate::common;

use std::time::{Duration, Instant};

use common::{Kind, TestStore, bytes, path_str, sha256_hex};

fn corrupt_manifests_and_metadata_are_reported_and_skipped(kind: Kind) {
    let t = TestStore::new(kind);
    let data = bytes(20, 200_000);
    let f = t.file("a.bin", &data);
    let h = sha256_hex(&data);
    t.ok(&["run", "create", "good", "--project", "p"]);
    t.ok(&["run", "add-input", "good", "a.bin", path_str(&f)]);
    let other = t.file("b.bin", b"other data");
    let hb = sha256_hex(b"other data");
    t.ok(&["put", path_str(&other)]);

    t.put_raw("manifests/broken.json", b"{ not json");
    let hostile = String::from_utf8(t.get("manifests/good.json"))
        .unwrap()
        .replace("\"inputs/a.bin\"", "\"../../etc/passwd\"")
        .replace("\"run_id\": \"good\"", "\"run_id\": \"evil\"");
    t.put_raw("manifests/evil.json", hostile.as_bytes());
    t.put_raw(
        &format!("data/{}/{hb}/metadata.json", &hb[..2]),
        b"{\"hash\": 42}",
    );

    let out = t.run(&["--json", "run", "list"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("manifests/broken.json is corrupt"),
        "{stderr}"
    );
    assert!(
        stderr.contains("manifests/evil.json is corrupt") && stderr.contains("../../etc/passwd"),
        "{stderr}"
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["run_id"], "good");

    let out = t.run(&["--json", "stats"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken.json"));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["runs"], 1);

    let out = t.run(&["--json", "fsck"]);
    assert!(!out.status.success(), "fsck must fail while problems stand");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "corrupt_manifest").count(),
        2,
        "{r}"
    );
    assert!(kinds.contains(&"corrupt_metadata"), "{r}");
    assert_eq!(
        r["objects_checked"], 1,
        "the sound object was still checked: {r}"
    );

    let err = t.fails(&["run", "show", "broken"]);
    assert!(err.contains("manifests/broken.json is corrupt"), "{err}");
    // The good run and its data are untouched by all of this.
    assert_eq!(
        t.json(&["run", "show", "good"])["files"]["inputs/a.bin"]["hash"],
        h
    );
    // A corrupt metadata.json is replaced by storing the same bytes again.
    assert_eq!(t.json(&["put", path_str(&other)])["new"], true);
    let r: serde_json::Value = serde_json::from_slice(&t.run(&["--json", "fsck"]).stdout).unwrap();
    let kinds: Vec<&str> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["corrupt_manifest", "corrupt_manifest"], "{r}");
    assert_eq!(r["findings"][0]["key"], "manifests/broken.json");
}

fn fsck_finds_damage_and_repairs_what_it_can(kind: Kind) {
    let t = TestStore::new(kind);
    let d1 = bytes(30, 3 * 1024 * 1024);
    let d2 = bytes(31, 5000);
    let (f1, f2) = (t.file("one.bin", &d1), t.file("two.bin", &d2));
    let (h1, h2) = (sha256_hex(&d1), sha256_hex(&d2));
    t.ok(&[
        "run",
        "create",
        "r",
        "--project",
        "p",
        "--view",
        "by_project",
        "--view",
        "flat",
    ]);
    t.ok(&["run", "add-input", "r", "one.bin", path_str(&f1)]);
    t.ok(&["run", "add-input", "r", "two.bin", path_str(&f2)]);
    assert_eq!(t.json(&["fsck"])["findings"].as_array().unwrap().len(), 0);

    let mut flipped = d1.clone();
    flipped[2 * 1024 * 1024 + 7] ^= 0x40;
    t.put_raw(&format!("data/{}/{h1}/data.bin", &h1[..2]), &flipped);
    t.delete(&format!("data/{}/{h2}/data.bin", &h2[..2]));
    t.put_raw(&format!("data/{}/{h1}/used_by/ghost", &h1[..2]), b"");
    t.delete(&format!("data/{}/{h1}/used_by/r", &h1[..2]));
    t.delete("runs/flat/r/run.json");
    t.put_raw(
        "runs/by_project/p/ghost/run.json",
        br#"{"run_id":"ghost","manifest":"manifests/ghost.json"}"#,
    );

    let out = t.run(&["--json", "fsck", "--repair"]);
    assert!(!out.status.success(), "data damage cannot be repaired");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let find = |kind: &str| -> Vec<serde_json::Value> {
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["kind"] == kind)
            .cloned()
            .collect()
    };
    let bad = find("hash_mismatch");
    assert_eq!(bad.len(), 1, "{r}");
    assert!(
        bad[0]["message"].as_str().unwrap().contains("block 2"),
        "{r}"
    );
    assert_eq!(bad[0]["repaired"], false);
    assert_eq!(
        find("missing_data")
            .iter()
            .filter(|f| f["message"].as_str().unwrap().contains(&h2))
            .count(),
        2,
        "{r}"
    );
    for kind in [
        "stale_marker",
        "missing_marker",
        "missing_view",
        "stale_view",
    ] {
        let f = find(kind);
        assert_eq!(f.len(), 1, "{kind}: {r}");
        assert_eq!(f[0]["repaired"], true, "{kind}: {r}");
    }
    let keys = t.keys();
    assert!(keys.contains(&"runs/flat/r/run.json".to_string()));
    assert!(keys.contains(&format!("data/{}/{h1}/used_by/r", &h1[..2])));
    assert!(!keys.iter().any(|k| k.contains("ghost")), "{keys:?}");
    assert_eq!(
        t.get(&format!("data/{}/{h1}/data.bin", &h1[..2])),
        flipped,
        "fsck never rewrites data"
    );
    // A second pass finds only what cannot be repaired.
    let r = t.run(&["--json", "fsck"]);
    let r: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert!(
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["kind"] == "hash_mismatch" || f["kind"] == "missing_data"),
        "{r}"
    );
}

fn gc_keeps_everything_referenced(kind: Kind) {
    let t = TestStore::new(kind);
    let named = t.file("named.bin", &bytes(40, 1000));
    let used = t.file("used.bin", &bytes(41, 1000));
    let orphan = t.file("orphan.bin", &bytes(42, 1000));
    let hidden = t.file("hidden.bin", &bytes(43, 1000));
    t.ok(&["put", path_str(&named)]);
    t.ok(&["run", "create", "keep", "--project", "p"]);
    t.ok(&["run", "add-output", "keep", "used.bin", path_str(&used)]);
    t.ok(&["run", "create", "gone", "--project", "p"]);
    t.ok(&["run", "add-output", "gone", "orphan.bin", path_str(&orphan)]);
    t.ok(&["run", "delete", "gone"]);
    // A run whose manifest became unreadable still protects what its markers name.
    t.ok(&["run", "create", "unreadable", "--project", "p"]);
    t.ok(&[
        "run",
        "add-output",
        "unreadable",
        "hidden.bin",
        path_str(&hidden),
    ]);
    t.put_raw("manifests/unreadable.json", b"garbage");

    let young = t.json(&["gc", "--grace", "1h"]);
    assert!(
        young["removed"].as_array().unwrap().is_empty(),
        "nothing younger than the grace goes: {young}"
    );

    let dry = t.json(&["gc", "--grace", "0s", "--dry-run"]);
    let would: Vec<&str> = dry["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["hash"].as_str().unwrap())
        .collect();
    let orphan_hash = sha256_hex(&bytes(42, 1000));
    assert_eq!(would, vec![orphan_hash.as_str()], "{dry}");
    assert!(
        t.keys().iter().any(|k| k.contains(&orphan_hash)),
        "a dry run deletes nothing"
    );

    let done = t.json(&["gc", "--grace", "0s"]);
    assert_eq!(done["removed"].as_array().unwrap().len(), 1);
    assert_eq!(done["removed_bytes"], 1000);
    let keys = t.keys();
    assert!(!keys.iter().any(|k| k.contains(&orphan_hash)), "{keys:?}");
    for (f, seed) in [(&named, 40), (&used, 41), (&hidden, 43)] {
        let h = sha256_hex(&bytes(seed, 1000));
        assert!(
            keys.contains(&format!("data/{}/{h}/metadata.json", &h[..2])),
            "{} was collected",
            f.display()
        );
        let out = t.scratch().join("check");
        t.ok(&["get", &h, "-o", path_str(&out)]);
        assert_eq!(std::fs::read(&out).unwrap(), bytes(seed, 1000));
    }
}

fn s3_dying_mid_upload_leaves_no_object_and_recovers() {
    let t = TestStore::new(Kind::S3);
    let data = bytes(50, 40 * 1024 * 1024 + 99);
    let f = t.file("big.bin", &data);
    let h = sha256_hex(&data);
    // The first two part uploads go through; then the server is gone.
    t.server().faults.down_after_puts(2);
    let started = Instant::now();
    let err = t.fails(&["put", path_str(&f)]);
    eprintln!("put against a dying server: {err}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "a dead server must not hang the command"
    );
    assert!(
        err.starts_with("error: ") && err.contains("big.bin")
            || err.contains(&format!("data/{}/{h}", &h[..2])),
        "{err}"
    );
    assert!(!err.contains(common::s3::SECRET_KEY));
    t.server().faults.heal();
    assert!(
        !t.keys().iter().any(|k| k.ends_with("metadata.json")),
        "no metadata.json for a failed upload: {:?}",
        t.keys()
    );
    assert!(t.fails(&["get", &h]).contains("no stored data"));

    let out = t.json(&["put", path_str(&f)]);
    assert_eq!(out["hash"], h);
    assert_eq!(out["new"], true);
    let back = t.scratch().join("back.bin");
    t.ok(&["get", &h, "-o", path_str(&back)]);
    assert!(std::fs::read(&back).unwrap() == data);
}

fn s3_down_fails_fast_with_a_clear_error() {
    let t = TestStore::new(Kind::S3);
    t.ok(&["run", "create", "r", "--project", "p"]);
    t.server().faults.go_down();
    let started = Instant::now();
    let err = t.fails(&["run", "list"]);
    eprintln!("list against a dead server: {err}");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(
        err.contains("list manifests/ in s3://mltrack-test/team/ml failed"),
        "{err}"
    );
    assert_eq!(
        err.trim()
            .lines()
            .filter(|l| l.starts_with("error:"))
            .count(),
        1,
        "{err}"
    );
    let doctor = t.run(&["doctor"]);
    assert!(!doctor.status.success());
    assert!(String::from_utf8_lossy(&doctor.stdout).contains("fail  store"));
    t.server().faults.heal();
    assert_eq!(t.json(&["run", "list"]).as_array().unwrap().len(), 1);
}

fn credentials_never_appear_in_output() {
    let t = TestStore::new(Kind::S3);
    let f = t.file("x.bin", b"data");
    let mut all = String::new();
    for args in [
        vec!["put", path_str(&f)],
        vec!["run", "create", "r", "--project", "p"],
        vec!["doctor"],
        vec!["run", "show", "missing"],
    ] {
        let out = t
            .cmd()
            .args(&args)
            .env("RUST_LOG", "trace")
            .output()
            .unwrap();
        all.push_str(&String::from_utf8_lossy(&out.stdout));
        all.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    t.server().faults.go_down();
    let out = t
        .cmd()
        .args(["run", "list"])
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    all.push_str(&String::from_utf8_lossy(&out.stderr));
    assert!(all.len() > 1000, "trace logging produced output");
    assert!(
        !all.contains(common::s3::SECRET_KEY),
        "the secret key leaked into logs"
    );
}

fn doctor_reports_conditional_writes(kind: Kind) {
    let t = TestStore::new(kind);
    let checks = t.json(&["doctor"]);
    let names: Vec<&str> = checks
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["store", "conditional writes", "fuse", "cache", "run locks"]
    );
    assert_eq!(checks[0]["status"], "ok");
    assert_eq!(checks[1]["status"], "ok", "{checks}");
    assert_eq!(checks[4]["status"], "ok", "{checks}");
    assert!(
        t.keys().is_empty(),
        "doctor leaves nothing behind: {:?}",
        t.keys()
    );
}

both_backends!(
    corrupt_manifests_and_metadata_are_reported_and_skipped,
    fsck_finds_damage_and_repairs_what_it_can,
    gc_keeps_everything_referenced,
    doctor_reports_conditional_writes,
);

#[test]
fn s3_dying_mid_upload() {
    s3_dying_mid_upload_leaves_no_object_and_recovers();
}

#[test]
fn s3_down() {
    s3_down_fails_fast_with_a_clear_error();
}

#[test]
fn credentials_stay_secret() {
    credentials_never_appear_in_output();
}
