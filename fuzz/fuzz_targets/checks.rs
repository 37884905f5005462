//! What each fuzz target asserts about one input, shared with `tests/suite/fuzz_regressions.rs`,
//! which replays every seed and every input a fuzzer ever crashed on through the same code.
//! Each parser of stored data (manifest, `metadata.json`, view pointer) and of identifiers must
//! return `Ok` or `Err` for any bytes, never panic, and what it accepts must be safe to use as
//! a key or path and round-trip through its own serialization.

#![allow(dead_code)]

use mltrack::cas::metadata::ObjectMetadata;
use mltrack::ids::{Digest, Name, RelPath};
use mltrack::runs::manifest::{Manifest, RunType, StorageMode, ViewPointer};

/// A component that parsed is a single, safe path component.
fn assert_component(s: &str) {
    assert!(
        !s.is_empty() && s != "." && s != ".." && !s.contains('/'),
        "{s:?}"
    );
    assert!(s.len() <= 255, "{} bytes", s.len());
    assert!(!s.chars().any(|c| c.is_control()), "{s:?}");
}

pub fn manifest(data: &[u8]) {
    let Ok(m) = Manifest::parse("prod_001", "manifests/prod_001.json", data) else {
        return;
    };
    assert_component(m.run_id.as_str());
    for path in m.files.keys() {
        assert!(!path.as_str().starts_with('/'), "{}", path.as_str());
        path.as_str().split('/').for_each(assert_component);
    }
    for mode in StorageMode::ALL {
        if let Ok(Some(key)) = m.view_key(mode) {
            assert!(!key.split('/').any(|c| c == ".." || c == "."), "{key}");
        }
    }
    let again =
        Manifest::parse("prod_001", "manifests/prod_001.json", &m.to_json()).expect("round trip");
    assert_eq!(again, m);
}

pub fn metadata(data: &[u8]) {
    // The hash inside must match the key it was read from: take it from the input itself.
    let Ok(claimed) = serde_json::from_slice::<ObjectMetadata>(data) else {
        return;
    };
    let Ok(m) = ObjectMetadata::parse(&claimed.hash, data) else {
        return;
    };
    let key = m.data_key();
    assert!(!key.split('/').any(|c| c == ".." || c == "."), "{key}");
    let mut covered = 0u64;
    for b in 0..m.block_hashes.len() as u64 {
        let r = m.block_range(b);
        assert_eq!(r.start, covered, "blocks are contiguous");
        assert!(r.end > r.start && r.end <= m.size, "{r:?} of {}", m.size);
        covered = r.end;
    }
    assert_eq!(covered, m.size);
    let again = ObjectMetadata::parse(&m.hash, &m.to_json()).expect("round trip");
    assert_eq!(again, m);
}

pub fn view_pointer(data: &[u8]) {
    let Ok(p) = ViewPointer::parse("runs/flat/prod_001/run.json", data) else {
        return;
    };
    assert_component(p.run_id.as_str());
    assert_eq!(p.manifest, format!("manifests/{}.json", p.run_id.as_str()));
}

pub fn identifiers(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(n) = Name::parse("run id", s) {
        assert_component(n.as_str());
    }
    if let Ok(p) = RelPath::parse(s) {
        assert!(!p.as_str().starts_with('/'));
        p.as_str().split('/').for_each(assert_component);
    }
    if let Ok(d) = s.parse::<Digest>() {
        assert_eq!(d.to_hex(), s.to_ascii_lowercase());
    }
    let _ = s.parse::<RunType>();
    let _ = s.parse::<StorageMode>();
    let _ = StorageMode::parse_list(s);
    let _ = mltrack::units::parse_size(s);
    let _ = mltrack::units::parse_duration(s);
}
