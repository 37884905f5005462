//! Runs through the CLI: create, add inputs and outputs, views, show, list, delete,
//! runs-using, and concurrent writers, on the local store and on S3.

use crate::common;

use common::{Kind, TestStore, bytes, path_str, sha256_hex};

fn run_lifecycle(kind: Kind) {
    let t = TestStore::new(kind);
    let data = bytes(10, 1024 * 1024 + 1);
    let train = t.file("train.csv", &data);
    let h = sha256_hex(&data);
    t.ok(&["put", path_str(&train), "--name", "training_data"]);

    let created = t.json(&[
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
        "--tag",
        "owner=ana",
    ]);
    assert_eq!(created["run_type"], "production");
    assert_eq!(
        created["storage_modes"],
        serde_json::json!(["by_type", "by_model"])
    );
    assert_eq!(created["tags"]["owner"], "ana");
    let err = t.fails(&["run", "create", "prod_001", "--project", "churn"]);
    assert!(err.contains("prod_001 already exists"), "{err}");

    // A reference by hash prefix: nothing uploaded, the same object.
    let added = t.json(&[
        "run",
        "add-input",
        "prod_001",
        "training_data.csv",
        "--hash",
        &h[..8],
    ]);
    assert_eq!(added["entry"]["hash"], h);
    assert_eq!(added["new"], false);
    let preds = t.file("preds.parquet", b"predictions");
    let added = t.json(&[
        "run",
        "add-output",
        "prod_001",
        "eval/preds.parquet",
        path_str(&preds),
    ]);
    assert_eq!(added["new"], true);
    assert_eq!(added["entry"]["role"], "output");

    let m = t.json(&["run", "show", "prod_001"]);
    assert_eq!(m["schema_version"], 1);
    assert_eq!(m["files"]["inputs/training_data.csv"]["hash"], h);
    assert_eq!(m["files"]["inputs/training_data.csv"]["role"], "input");
    assert_eq!(m["files"]["inputs/training_data.csv"]["size"], data.len());
    assert_eq!(
        m["files"]["outputs/eval/preds.parquet"]["format"],
        "parquet"
    );
    assert_eq!(m["files"]["outputs/eval/preds.parquet"]["mode"], 0o644);
    // The manifest in the store is plain JSON, the same document.
    let stored: serde_json::Value =
        serde_json::from_slice(&t.get("manifests/prod_001.json")).unwrap();
    assert_eq!(stored, m);

    let keys = t.keys();
    for k in [
        "runs/by_type/production/prod_001/run.json",
        "runs/by_model/xgb/prod_001/run.json",
        "manifests/prod_001.json",
    ] {
        assert!(keys.contains(&k.to_string()), "{k} missing from {keys:?}");
    }
    let pointer: serde_json::Value =
        serde_json::from_slice(&t.get("runs/by_type/production/prod_001/run.json")).unwrap();
    assert_eq!(
        pointer,
        serde_json::json!({"run_id": "prod_001", "manifest": "manifests/prod_001.json"})
    );
    assert!(keys.contains(&format!("data/{}/{h}/used_by/prod_001", &h[..2])));

    t.ok(&["run", "create", "exp_1", "--project", "churn"]);
    t.ok(&["run", "add-input", "exp_1", "train.csv", path_str(&train)]);
    let mut users: Vec<String> = t.json(&["runs-using", &h[..6]])["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    users.sort();
    assert_eq!(users, vec!["exp_1", "prod_001"]);

    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["run", "list"];
        all.extend_from_slice(args);
        t.json(&all)
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["run_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&[]), vec!["exp_1", "prod_001"]);
    assert_eq!(ids(&["--type", "production"]), vec!["prod_001"]);
    assert_eq!(
        ids(&["--project", "churn", "--type", "experiment"]),
        vec!["exp_1"]
    );
    assert_eq!(ids(&["--model", "xgb"]), vec!["prod_001"]);
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(ids(&["--date", &today]).len(), 2);
    assert!(ids(&["--date", "2001-01-01"]).is_empty());
    let table = t.ok(&["run", "list"]);
    assert!(table.lines().next().unwrap().starts_with("RUN"));

    let m = t.json(&["run", "add-view", "prod_001", "by_date"]);
    assert_eq!(
        m["storage_modes"],
        serde_json::json!(["by_date", "by_type", "by_model"])
    );
    assert!(
        t.keys()
            .contains(&format!("runs/by_date/{today}/prod_001/run.json"))
    );
    let err = t.fails(&["run", "add-view", "exp_1", "by_model"]);
    assert!(err.contains("needs a model"), "{err}");

    let s = t.json(&["stats"]);
    assert_eq!(s["objects"], 2);
    assert_eq!(s["runs"], 2);
    assert_eq!(s["stored_bytes"], data.len() + b"predictions".len());
    assert_eq!(s["referenced_bytes"], 2 * data.len() + b"predictions".len());

    t.ok(&["run", "delete", "prod_001"]);
    let keys = t.keys();
    assert!(!keys.iter().any(|k| k.contains("prod_001")), "{keys:?}");
    assert!(
        keys.contains(&format!("data/{}/{h}/data.csv", &h[..2])),
        "the data stays"
    );
    assert!(
        t.fails(&["run", "show", "prod_001"])
            .contains("run prod_001 does not exist")
    );
    assert!(
        t.fails(&["run", "delete", "prod_001"])
            .contains("does not exist")
    );
    assert!(
        t.fails(&["run", "add-output", "nope", "x", path_str(&preds)])
            .contains("run nope does not exist")
    );
}

fn defaults_come_from_the_environment(kind: Kind) {
    let t = TestStore::new(kind);
    let out = t
        .cmd()
        .args(["--json", "run", "create", "r1", "--model", "m1"])
        .env("MLTRACK_DEFAULT_RUN_TYPE", "evaluation")
        .env("MLTRACK_DEFAULT_STORAGE_MODE", "by_model,flat")
        .output()
        .unwrap();
    common::assert_succeeded(&out);
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["run_type"], "evaluation");
    assert_eq!(m["storage_modes"], serde_json::json!(["by_model", "flat"]));
    assert!(t.keys().contains(&"runs/flat/r1/run.json".to_string()));
    let out = t
        .cmd()
        .args(["run", "create", "r2"])
        .env("MLTRACK_DEFAULT_RUN_TYPE", "prod")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("MLTRACK_DEFAULT_RUN_TYPE")
            && err.contains("\"prod\""),
        "{err}"
    );
}

fn invalid_input_is_refused_and_nothing_is_written(kind: Kind) {
    let t = TestStore::new(kind);
    let f = t.file("ok.bin", b"payload");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["run", "create", "a/b", "--project", "p"],
            "run id \"a/b\"",
        ),
        (
            vec!["run", "create", "..", "--project", "p"],
            "run id \"..\"",
        ),
        (
            vec!["run", "create", "tab\there", "--project", "p"],
            "control character",
        ),
        (
            vec!["run", "create", "r", "--project", "x/y"],
            "project \"x/y\"",
        ),
        (
            vec!["run", "create", "r", "--model", ".", "--view", "by_model"],
            "model \".\"",
        ),
        (
            vec!["run", "create", "r", "--type", "prod", "--project", "p"],
            "unknown run type \"prod\"",
        ),
        (
            vec!["run", "create", "r", "--project", "p", "--view", "by_week"],
            "unknown storage mode \"by_week\"",
        ),
        (
            vec!["run", "create", "r", "--project", "p", "--tag", "noequals"],
            "KEY=VALUE",
        ),
        (
            vec!["run", "create", "r", "--project", "p", "--tag", "a/b=1"],
            "tag key \"a/b\"",
        ),
        (
            vec!["run", "create", "r", "--view", "by_model"],
            "needs a model",
        ),
        (vec!["run", "list", "--date", "26-11-2026"], "YYYY-MM-DD"),
        (vec!["gc", "--grace", "forever"], "not a duration"),
    ];
    let long = "r".repeat(256);
    let mut cases = cases;
    cases.push((vec!["run", "create", &long, "--project", "p"], "255 bytes"));
    for (args, expected) in &cases {
        let err = t.fails(args);
        assert!(
            err.contains(expected),
            "{args:?}: expected {expected:?} in {err:?}"
        );
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{args:?}: one sentence, got {err:?}"
        );
    }
    assert!(t.keys().is_empty(), "nothing written: {:?}", t.keys());
    t.ok(&["run", "create", "r", "--project", "p"]);
    for (args, expected) in [
        (
            vec!["run", "add-input", "r", "../escape", path_str(&f)],
            "path \"../escape\"",
        ),
        (
            vec!["run", "add-input", "r", "/abs", path_str(&f)],
            "absolute",
        ),
        (
            vec!["run", "add-input", "r", "x", "--hash", "00"],
            "not a hash",
        ),
    ] {
        let err = t.fails(&args);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    let m = t.json(&["run", "show", "r"]);
    assert!(m["files"].as_object().unwrap().is_empty());
}

fn concurrent_writers_lose_nothing(kind: Kind) {
    let t = TestStore::new(kind);
    t.ok(&["run", "create", "shared", "--project", "p"]);
    let files: Vec<_> = (0..8)
        .map(|i| t.file(&format!("out{i}.bin"), &bytes(100 + i, 4096)))
        .collect();
    let children: Vec<_> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            t.cmd()
                .args([
                    "run",
                    "add-output",
                    "shared",
                    &format!("part{i}.bin"),
                    path_str(f),
                ])
                .stderr(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        common::assert_succeeded(&out);
    }
    let m = t.json(&["run", "show", "shared"]);
    let files = m["files"].as_object().unwrap();
    assert_eq!(files.len(), 8, "{files:?}");
    for i in 0..8u64 {
        assert_eq!(
            files[&format!("outputs/part{i}.bin")]["hash"],
            sha256_hex(&bytes(100 + i, 4096))
        );
    }
}

both_backends!(
    run_lifecycle,
    defaults_come_from_the_environment,
    invalid_input_is_refused_and_nothing_is_written,
    concurrent_writers_lose_nothing
);
