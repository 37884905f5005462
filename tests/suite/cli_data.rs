//! `mltrack put`, `get` and the object layout, through the binary as a user runs it, on the
//! local store and on S3.

use crate::common;

use common::{Kind, TestStore, bytes, path_str, sha256_hex};

fn same_bytes_under_two_names_is_one_object(kind: Kind) {
    let t = TestStore::new(kind);
    let data = bytes(1, 3 * 1024 * 1024 + 11);
    let a = t.file("train.parquet.bak", &data);
    let b = t.file("copy.bin", &data);
    let first = t.json(&["put", path_str(&a), "--name", "training_data"]);
    let second = t.json(&["put", path_str(&b), "--name", "experiment_42_data"]);
    let h = sha256_hex(&data);
    assert_eq!(first["hash"], h);
    assert_eq!(second["hash"], h);
    assert_eq!(first["new"], true);
    assert_eq!(second["new"], false);
    let text = t.ok(&["put", path_str(&b)]);
    assert!(
        text.starts_with(&h) && text.trim_end().ends_with("already stored"),
        "{text}"
    );

    let object_keys: Vec<String> = t
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("data/"))
        .collect();
    let base = format!("data/{}/{h}", &h[..2]);
    assert_eq!(
        object_keys,
        vec![
            format!("{base}/chunks"),
            format!("{base}/data.bak"),
            format!("{base}/metadata.json"),
            format!("{base}/names/copy.bin"),
            format!("{base}/names/experiment_42_data"),
            format!("{base}/names/training_data"),
        ]
    );
    assert_eq!(
        t.get(&format!("{base}/data.bak")),
        data,
        "the stored object is the file, byte for byte"
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&t.get(&format!("{base}/metadata.json"))).unwrap();
    assert_eq!(meta["hash"], h);
    assert_eq!(meta["algorithm"], "sha256");
    assert_eq!(meta["size"], data.len());
    assert_eq!(meta["name"], "training_data");
    assert_eq!(meta["block_size"], 1024 * 1024);
    assert_eq!(meta["block_hashes"].as_array().unwrap().len(), 4);
    // Hashed in 64 KiB chunks (docs/STORE.md, "Chunks"): a block's hash is the SHA-256 of its
    // chunks' SHA-256s, and the `chunks` list holds those.
    assert_eq!(meta["chunk_size"], 64 * 1024);
    let chunks: Vec<u8> = data[..1024 * 1024]
        .chunks(64 * 1024)
        .flat_map(|c| hex_bytes(&sha256_hex(c)))
        .collect();
    assert_eq!(meta["block_hashes"][0], sha256_hex(&chunks));
    assert!(t.get(&format!("{base}/chunks")).starts_with(&chunks));
    assert!(meta["created_at"].as_str().unwrap().ends_with('Z'));
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

fn get_returns_verified_bytes(kind: Kind) {
    let t = TestStore::new(kind);
    let data = bytes(2, 9 * 1024 * 1024 + 5);
    let f = t.file("x.npy.raw", &data);
    let h = t.json(&["put", path_str(&f)])["hash"]
        .as_str()
        .unwrap()
        .to_string();
    let out = t.scratch().join("out.bin");
    t.ok(&["get", &h[..10], "-o", path_str(&out)]);
    assert!(std::fs::read(&out).unwrap() == data);
    let stdout = t.cmd().args(["get", &h]).output().unwrap();
    assert!(stdout.status.success());
    assert!(stdout.stdout == data, "get to stdout");

    // A flipped byte in the stored object: get refuses, and writes no partial output file.
    let key = format!("data/{}/{h}/data.raw", &h[..2]);
    let mut bad = data.clone();
    bad[5 * 1024 * 1024 + 3] ^= 1;
    t.put_raw(&key, &bad);
    let out2 = t.scratch().join("out2.bin");
    let err = t.fails(&["get", &h, "-o", path_str(&out2)]);
    assert!(err.contains("block 5") && err.contains(&h), "{err}");
    assert!(!out2.exists());
    assert!(
        std::fs::read_dir(t.scratch()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("partial"))
    );

    assert!(t.fails(&["get", "0000"]).contains("no stored data"));
    assert!(t.fails(&["get", "xyz"]).contains("not a hash"));
}

fn formats_and_facts_are_recorded(kind: Kind) {
    use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
    use std::sync::Arc;
    let t = TestStore::new(kind);
    let ids: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
    let score: ArrayRef = Arc::new(Float64Array::from(vec![Some(0.5), None, Some(1.5)]));
    let label: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "c"]));
    let batch =
        RecordBatch::try_from_iter(vec![("id", ids), ("score", score), ("label", label)]).unwrap();
    let pq = t.scratch().join("train.parquet");
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&pq).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    // Named .dat: the content signature wins over the extension.
    let renamed = t.scratch().join("train.dat");
    std::fs::rename(&pq, &renamed).unwrap();
    let out = t.json(&["put", path_str(&renamed)]);
    assert_eq!(out["format"], "parquet");
    let h = out["hash"].as_str().unwrap();
    let meta: serde_json::Value =
        serde_json::from_slice(&t.get(&format!("data/{}/{h}/metadata.json", &h[..2]))).unwrap();
    assert_eq!(meta["num_rows"], 6);
    assert_eq!(meta["num_row_groups"], 1);
    let fields = meta["schema"].as_array().unwrap();
    assert_eq!(fields.len(), 3);
    assert_eq!(fields[0]["name"], "id");
    assert_eq!(fields[0]["type"], "Int64");
    assert_eq!(fields[1]["type"], "Float64");
    assert_eq!(fields[2]["name"], "label");

    // Any Parquet reader can open the stored object directly.
    let stored = t.get(&format!("data/{}/{h}/data.parquet", &h[..2]));
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::from(stored),
    )
    .unwrap()
    .build()
    .unwrap();
    assert_eq!(reader.map(|b| b.unwrap().num_rows()).sum::<usize>(), 6);

    let mut ipc = Vec::new();
    let mut fw = arrow_ipc::writer::FileWriter::try_new(&mut ipc, &batch.schema()).unwrap();
    fw.write(&batch).unwrap();
    fw.write(&batch).unwrap();
    fw.write(&batch).unwrap();
    fw.finish().unwrap();
    drop(fw);
    let arrow_file = t.file("batches.feather", &ipc);
    let out = t.json(&["put", path_str(&arrow_file)]);
    assert_eq!(out["format"], "feather");
    let h = out["hash"].as_str().unwrap();
    let meta: serde_json::Value =
        serde_json::from_slice(&t.get(&format!("data/{}/{h}/metadata.json", &h[..2]))).unwrap();
    assert_eq!(meta["num_rows"], 9);
    assert_eq!(meta["num_row_groups"], 3);
    assert_eq!(meta["schema"][2]["type"], "Utf8");

    let csv = t.file("labels.csv", b"user_id,\"churned, maybe\",score\n1,0,0.5\n");
    let out = t.json(&["put", path_str(&csv)]);
    assert_eq!(out["format"], "csv");
    let h = out["hash"].as_str().unwrap();
    let meta: serde_json::Value =
        serde_json::from_slice(&t.get(&format!("data/{}/{h}/metadata.json", &h[..2]))).unwrap();
    assert_eq!(
        meta["columns"],
        serde_json::json!(["user_id", "churned, maybe", "score"])
    );

    let npy = t.file("weights", b"\x93NUMPY\x01\x00v\x00{'descr': '<f8'}");
    assert_eq!(t.json(&["put", path_str(&npy)])["format"], "npy");
    let bin = t.file("README", b"just text");
    assert_eq!(t.json(&["put", path_str(&bin)])["format"], "bin");
}

fn concurrent_puts_store_one_object(kind: Kind) {
    let t = TestStore::new(kind);
    let data = bytes(3, 2 * 1024 * 1024);
    let f = t.file("shared.bin", &data);
    let children: Vec<_> = (0..16)
        .map(|i| {
            t.cmd()
                .args(["--json", "put", path_str(&f), "--name", &format!("n{i}")])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut new = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        common::assert_succeeded(&out);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["hash"], sha256_hex(&data));
        new += (v["new"] == true) as u32;
    }
    assert!(new >= 1);
    let keys = t.keys();
    assert_eq!(
        keys.iter()
            .filter(|k| k.ends_with("/metadata.json"))
            .count(),
        1
    );
    assert_eq!(keys.iter().filter(|k| k.contains("/data.")).count(), 1);
    assert_eq!(keys.iter().filter(|k| k.contains("/names/")).count(), 16);
}

fn bad_names_are_refused_and_nothing_is_written(kind: Kind) {
    let t = TestStore::new(kind);
    let f = t.file("ok.bin", b"payload");
    for (name, why) in [
        ("a/b", "`/`"),
        ("..", "`.` and `..`"),
        ("bad\u{1}", "control"),
        (&"n".repeat(256)[..], "255 bytes"),
    ] {
        let err = t.fails(&["put", path_str(&f), "--name", name]);
        assert!(err.contains("name") && err.contains(why), "{name:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
    }
    assert!(t.keys().is_empty(), "nothing was written: {:?}", t.keys());
    let err = t.fails(&["put", "/no/such/file"]);
    assert!(err.contains("/no/such/file"), "{err}");
}

both_backends!(
    same_bytes_under_two_names_is_one_object,
    get_returns_verified_bytes,
    formats_and_facts_are_recorded,
    concurrent_puts_store_one_object,
    bad_names_are_refused_and_nothing_is_written,
);
