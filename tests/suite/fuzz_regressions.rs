//! Replays every fuzz seed and every input a fuzzer ever crashed on (`fuzz/seeds/<target>/`,
//! `fuzz/regressions/<target>/`) through the same checks the fuzz targets run
//! (`fuzz/fuzz_targets/checks.rs`), so a crash found once stays fixed without a fuzzer.
//! `scripts/fuzz` runs the fuzzers themselves and files what they find under `regressions/`.

#[path = "../../fuzz/fuzz_targets/checks.rs"]
mod checks;

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    // At run time: a binary reused from another checkout through a shared target directory
    // must read this checkout's inputs, not look for that one's.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| ".".into());
    let root = Path::new(&manifest_dir).join("fuzz");
    let mut n = 0;
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let data = std::fs::read(e.path()).expect("read a fuzz input");
            eprintln!("{target}: {}", e.path().display());
            check(&data);
            n += 1;
        }
    }
    n
}

#[test]
fn manifest_inputs() {
    assert!(replay("manifest", checks::manifest) > 0);
}

#[test]
fn metadata_inputs() {
    assert!(replay("metadata", checks::metadata) > 0);
}

#[test]
fn view_pointer_inputs() {
    assert!(replay("view_pointer", checks::view_pointer) > 0);
}

#[test]
fn identifier_inputs() {
    assert!(replay("identifiers", checks::identifiers) > 0);
}

/// Hand-made hostile inputs that must be refused, not followed.
#[test]
fn hostile_stored_data_is_refused() {
    use mltrack::cas::metadata::ObjectMetadata;
    use mltrack::runs::manifest::{Manifest, ViewPointer};
    let pointer = br#"{"run_id":"r","manifest":"../../etc/passwd"}"#;
    assert!(ViewPointer::parse("runs/flat/r/run.json", pointer).is_err());
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(Manifest::parse("r", "manifests/r.json", nested.as_bytes()).is_err());
    let h = "ab".repeat(32);
    for (block_size, size, blocks) in [
        (0u64, 10u64, 1usize),
        (1 << 63, u64::MAX, 2),
        (1 << 40, 1 << 41, 2),
    ] {
        let hashes: Vec<String> = (0..blocks).map(|_| h.clone()).collect();
        let meta = serde_json::json!({
            "hash": h, "algorithm": "sha256", "size": size, "format": "bin",
            "created_at": "2026-11-26T10:00:00Z", "block_size": block_size,
            "block_hashes": hashes,
        });
        let bytes = serde_json::to_vec(&meta).expect("json");
        let parsed = ObjectMetadata::parse(&h.parse().expect("digest"), &bytes);
        assert!(
            parsed.is_err(),
            "block size {block_size}, size {size} accepted"
        );
    }
    for path in [
        "../x",
        "inputs/../../x",
        "/etc/passwd",
        "a//b",
        "inputs/\u{7}bell",
    ] {
        let m = serde_json::json!({
            "schema_version": 1, "run_id": "r", "run_type": "experiment",
            "created_at": "2026-11-26T10:00:00Z", "updated_at": "2026-11-26T10:00:00Z",
            "storage_modes": ["flat"], "tags": {},
            "files": {path: {"hash": h, "size": 1, "format": "bin", "role": "output",
                "mtime": "2026-11-26T10:00:00Z", "mode": 420,
                "added_at": "2026-11-26T10:00:00Z"}},
        });
        let bytes = serde_json::to_vec(&m).expect("json");
        assert!(
            Manifest::parse("r", "manifests/r.json", &bytes).is_err(),
            "{path:?} accepted"
        );
    }
}
