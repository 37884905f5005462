//! Stored once: a second copy of stored bytes uploads nothing, a whole-file copy from stored
//! data moves no bytes, and a file just written reads back without a GET (counted at the S3
//! server).

mod common;

use std::sync::atomic::Ordering;

use common::write::*;
use common::{Kind, TestStore, bytes, path_str, sha256_hex};

fn second_copy_uploads_nothing(kind: Kind) {
    let t = TestStore::new(kind);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    // The 256 MiB on the local store; S3 in debug builds is slower, so less there.
    let size = if kind == Kind::Local { 256 } else { 32 };
    let data = bytes(7, size * 1024 * 1024);
    let f = t.file("dataset.parquet", &data);
    for run in ["r1", "r2", "r3", "r4", "r5"] {
        std::fs::create_dir(m.path(&format!("runs/by_project/p/{run}"))).expect("mkdir run");
    }
    sh(
        &format!(
            "cp {} {}",
            path_str(&f),
            path_str(&m.path("runs/by_project/p/r1/inputs/"))
        ),
        t.dir.path(),
    );
    let before = t
        .server
        .as_ref()
        .map(|s| s.faults.data_puts.load(Ordering::SeqCst));
    for run in ["r2", "r3", "r4", "r5"] {
        let dest = m.path(&format!("runs/by_project/p/{run}/inputs/"));
        sh(
            &format!("cp {} {}", path_str(&f), path_str(&dest)),
            t.dir.path(),
        );
    }
    if let (Some(s), Some(before)) = (&t.server, before) {
        assert_eq!(
            s.faults.data_puts.load(Ordering::SeqCst),
            before,
            "copies of stored data upload nothing"
        );
    }
    let objects: Vec<String> = t
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("data/") && k.contains("/data."))
        .collect();
    assert_eq!(objects.len(), 1, "one object in the store: {objects:?}");
    let users = t.ok(&["runs-using", &sha256_hex(&data)]);
    assert_eq!(users.lines().count(), 5, "{users}");
    // The first copy was hashed while written and its block digests computed beside its
    // upload: fsck re-hashes every block and the whole against its metadata.
    drop(m);
    let fsck = t.json(&["fsck"]);
    assert_eq!(fsck["findings"].as_array().map(Vec::len), Some(0), "{fsck}");
}

fn whole_file_copy_of_stored_data_moves_no_bytes(kind: Kind) {
    let t = TestStore::new(kind);
    let data = bytes(21, 12 * 1024 * 1024 + 9);
    let f = t.file("big.bin", &data);
    let h = t.ok(&["put", path_str(&f), "--json"]);
    let h = serde_json::from_str::<serde_json::Value>(&h).expect("json")["hash"]
        .as_str()
        .expect("hash")
        .to_string();
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    std::fs::create_dir(m.path("runs/by_project/p/c")).expect("mkdir run");
    let counts = || {
        t.server.as_ref().map(|s| {
            (
                s.faults.data_gets.load(Ordering::SeqCst),
                s.faults.data_puts.load(Ordering::SeqCst),
            )
        })
    };
    let before = counts();
    let src = m.path(&format!("data/{}/{h}/data.bin", &h[..2]));
    sh(
        &format!(
            "cp {} {}",
            path_str(&src),
            path_str(&m.path("runs/by_project/p/c/inputs/copy.bin"))
        ),
        t.dir.path(),
    );
    assert_eq!(counts(), before, "cp of stored data read or uploaded bytes");
    assert_eq!(
        manifest_files(&t, "c")["inputs/copy.bin"]["hash"],
        h.as_str()
    );
    assert_eq!(
        std::fs::read(m.path("runs/by_project/p/c/inputs/copy.bin")).expect("read copy"),
        data
    );
}

#[test]
fn a_written_file_reads_back_without_a_get() {
    let t = TestStore::new(Kind::S3);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    std::fs::create_dir(m.path("runs/by_project/p/back")).expect("mkdir run");
    // Big enough that the follower hashes it behind the writer.
    let data = bytes(31, 12 * 1024 * 1024 + 17);
    let path = m.path("runs/by_project/p/back/outputs/model.bin");
    std::fs::write(&path, &data).expect("write");
    assert_eq!(
        manifest_files(&t, "back")["outputs/model.bin"]["hash"],
        sha256_hex(&data)
    );
    let gets = t.server().faults.data_gets.load(Ordering::SeqCst);
    // The spool became the object's cache file: reading it back costs no GET.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(std::fs::read(&path).expect("read back"), data);
    assert_eq!(t.server().faults.data_gets.load(Ordering::SeqCst), gets);
}

both_backends!(
    second_copy_uploads_nothing,
    whole_file_copy_of_stored_data_moves_no_bytes,
);
