//! Damage of every kind at once, on both backends: a byte flipped in a stored object, in a
//! cached block, in a block hash of `metadata.json` and in a manifest's reference, and an object
//! cut short. `mltrack fsck` names each one, and reads through a mount return the right bytes
//! or fail with `EIO`, never wrong bytes.

use crate::common;

use common::{Kind, TestStore, bytes, path_str, sha256_hex};

const MIB: usize = 1024 * 1024;

fn damage_of_every_kind_is_named_and_never_served(kind: Kind) {
    let t = TestStore::new(kind);
    let names = ["flipped", "cached", "meta", "short", "intact"];
    let data: Vec<Vec<u8>> = (0..names.len())
        .map(|i| bytes(300 + i as u64, 3 * MIB + 17))
        .collect();
    let hashes: Vec<String> = data.iter().map(|d| sha256_hex(d)).collect();
    t.ok(&["run", "create", "r", "--project", "p"]);
    t.ok(&["run", "create", "m", "--project", "p"]);
    for (name, d) in names.iter().zip(&data) {
        let f = t.file(&format!("{name}.bin"), d);
        t.ok(&[
            "run",
            "add-input",
            "r",
            &format!("{name}.bin"),
            path_str(&f),
        ]);
    }
    let extra = bytes(399, 5000);
    let f = t.file("extra.bin", &extra);
    t.ok(&["run", "add-output", "m", "extra.bin", path_str(&f)]);
    let cache = t.dir.path().join("cache");
    let m = t.mount(&cache, &[]);
    let run = "runs/by_project/p/r/inputs";
    assert!(
        std::fs::read(m.path(&format!("{run}/cached.bin"))).expect("warm the cache") == data[1]
    );
    drop(m);
    assert_eq!(
        t.json(&["fsck"])["findings"].as_array().map(Vec::len),
        Some(0),
        "a sound store and cache"
    );

    let data_key = |i: usize| format!("data/{}/{}/data.bin", &hashes[i][..2], hashes[i]);
    // A byte flipped in a stored object.
    let mut flipped = data[0].clone();
    flipped[2 * MIB + 3] ^= 0x10;
    t.put_raw(&data_key(0), &flipped);
    // A byte flipped in a cached block.
    let cached = cache.join(format!("objects/{}/{}", &hashes[1][..2], hashes[1]));
    let mut c = std::fs::read(&cached).expect("cache file");
    c[MIB + 99] ^= 0x01;
    std::fs::write(&cached, &c).expect("damage the cache");
    // One hex digit of a block hash in metadata.json: still valid JSON, now wrong.
    let meta_key = format!("data/{}/{}/metadata.json", &hashes[2][..2], hashes[2]);
    let meta: serde_json::Value = serde_json::from_slice(&t.get(&meta_key)).expect("metadata");
    let block1 = meta["block_hashes"][1]
        .as_str()
        .expect("block hash")
        .to_string();
    let bad_block1 = flip_hex(&block1);
    let text = String::from_utf8(t.get(&meta_key)).expect("utf-8");
    t.put_raw(&meta_key, text.replace(&block1, &bad_block1).as_bytes());
    // An object cut short.
    t.put_raw(&data_key(3), &data[3][..2 * MIB + 100]);
    // One hex digit of a manifest's reference.
    let extra_hash = sha256_hex(&extra);
    let manifest = String::from_utf8(t.get("manifests/m.json")).expect("utf-8");
    t.put_raw(
        "manifests/m.json",
        manifest
            .replace(&extra_hash, &flip_hex(&extra_hash))
            .as_bytes(),
    );

    let out = t.run(&["--json", "fsck"]);
    assert!(!out.status.success(), "damage makes fsck fail");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("fsck JSON");
    eprintln!("{report:#}");
    let findings = report["findings"].as_array().expect("findings");
    let named = |kind: &str, needle: &str| {
        findings.iter().any(|f| {
            f["kind"] == kind
                && (f["key"].as_str().unwrap_or("").contains(needle)
                    || f["message"].as_str().unwrap_or("").contains(needle))
        })
    };
    assert!(named("hash_mismatch", &data_key(0)), "the flipped object");
    assert!(
        named("corrupt_cache_block", &hashes[1]),
        "the flipped cached block"
    );
    assert!(named("hash_mismatch", &hashes[2]), "the wrong block hash");
    assert!(named("size_mismatch", &data_key(3)), "the short object");
    assert!(
        named("missing_data", "run m: outputs/extra.bin"),
        "the manifest's wrong reference"
    );

    // Reads: right bytes or EIO, never anything else.
    let m = t.mount(&cache, &[]);
    for (i, name) in names.iter().enumerate() {
        let got = std::fs::read(m.path(&format!("{run}/{name}.bin")));
        match (name, got) {
            (&"cached" | &"intact", Ok(b)) => assert!(b == data[i], "{name}: wrong bytes"),
            (_, Ok(b)) => panic!("{name}: read {} bytes of a damaged object", b.len()),
            (_, Err(e)) => {
                assert_eq!(e.raw_os_error(), Some(libc::EIO), "{name}: {e}");
                assert!(*name != "cached" && *name != "intact", "{name}: {e}");
            }
        }
    }
    match std::fs::read(m.path("runs/by_project/p/m/outputs/extra.bin")) {
        Ok(b) => panic!("read {} bytes through a damaged reference", b.len()),
        Err(e) => assert!(
            matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::ENOENT)),
            "{e}"
        ),
    }
    drop(m);
    // The mount dropped the bad cached block and fetched it again; --repair has nothing left
    // to do there, and what it cannot repair (stored data) it leaves alone.
    let out = t.run(&["--json", "fsck", "--repair"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("fsck JSON");
    assert!(
        !report["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .any(|f| f["kind"] == "corrupt_cache_block"),
        "{report}"
    );
    assert_eq!(t.get(&data_key(0)), flipped, "fsck never rewrites data");
}

/// The same hex string with its first digit changed.
fn flip_hex(h: &str) -> String {
    let first = if h.starts_with('0') { "1" } else { "0" };
    format!("{first}{}", &h[1..])
}

#[test]
fn fsck_repair_drops_a_bad_cached_block() {
    let t = TestStore::new(Kind::Local);
    let d = bytes(500, 2 * MIB + 5);
    let f = t.file("d.bin", &d);
    t.ok(&["put", path_str(&f)]);
    let h = sha256_hex(&d);
    let cache = t.dir.path().join("cache");
    let m = t.mount(&cache, &[]);
    let rel = format!("data/{}/{h}/data.bin", &h[..2]);
    assert!(std::fs::read(m.path(&rel)).expect("read") == d);
    drop(m);
    let cached = cache.join(format!("objects/{}/{h}", &h[..2]));
    let mut c = std::fs::read(&cached).expect("cache file");
    c[10] ^= 0x80;
    std::fs::write(&cached, &c).expect("damage the cache");
    let out = t.run(&["--json", "fsck", "--repair"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("fsck JSON");
    let f = &report["findings"][0];
    assert_eq!(f["kind"], "corrupt_cache_block", "{report}");
    assert_eq!(f["repaired"], true, "{report}");
    assert!(out.status.success(), "everything repaired: {report}");
    assert_eq!(
        t.json(&["fsck"])["findings"].as_array().map(Vec::len),
        Some(0)
    );
    let m = t.mount(&cache, &[]);
    assert!(std::fs::read(m.path(&rel)).expect("read again") == d);
}

both_backends!(damage_of_every_kind_is_named_and_never_served);
