//! Everything at once on one store: two mounts writing into the same run, the CLI adding to it
//! and reading it, and `gc` running in a loop. No acknowledged entry is lost, `gc` never takes
//! data that a run references or that a writer is still in the middle of recording, and each
//! file reads back through the other mount as written.
//!
//! `MLTRACK_CONCURRENCY_ROUNDS` sets how many times the whole scene is played, each on a new
//! store (default 1; `scripts/reliability` plays it 50 times): what goes wrong here goes wrong
//! rarely.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};

use common::{Kind, TestStore, bytes, env_u64, path_str, sha256_hex};

fn mounts_cli_and_gc_at_once(kind: Kind) {
    let rounds = env_u64("MLTRACK_CONCURRENCY_ROUNDS", 1);
    for round in 1..=rounds {
        let gc_runs = one_round(kind);
        eprintln!("round {round}: {gc_runs} gc passes ran during the writes");
    }
}

/// Returns how many `gc` passes ran during the writes.
fn one_round(kind: Kind) -> u64 {
    let t = TestStore::new(kind);
    t.ok(&["run", "create", "shared", "--project", "p"]);
    let m1 = t.mount(&t.dir.path().join("cache1"), &["--refresh", "1"]);
    let m2 = t.mount(&t.dir.path().join("cache2"), &["--refresh", "1"]);
    let per_writer = 12u64;
    let gc_done = AtomicBool::new(false);
    let gc_runs = std::thread::scope(|s| {
        let mut writers = Vec::new();
        for (mi, m) in [&m1, &m2].into_iter().enumerate() {
            writers.push(s.spawn(move || {
                let dir = m.path("runs/by_project/p/shared/outputs");
                for i in 0..per_writer {
                    let data = bytes(2000 + mi as u64 * 100 + i, 50_000 + i as usize * 3000);
                    std::fs::write(dir.join(format!("m{mi}_{i}.bin")), &data)
                        .unwrap_or_else(|e| panic!("mount {mi} write {i}: {e}"));
                }
            }));
        }
        let t = &t;
        writers.push(s.spawn(move || {
            for i in 0..per_writer {
                let f = t.file(&format!("cli{i}.bin"), &bytes(3000 + i, 20_000));
                t.ok(&[
                    "run",
                    "add-output",
                    "shared",
                    &format!("cli_{i}.bin"),
                    path_str(&f),
                ]);
                t.ok(&["run", "show", "shared"]);
            }
        }));
        let gc_done = &gc_done;
        let gc = s.spawn(move || {
            let mut n = 0u64;
            while !gc_done.load(Ordering::SeqCst) {
                t.ok(&["gc", "--grace", "60s"]);
                n += 1;
            }
            n
        });
        for w in writers {
            w.join().expect("writer");
        }
        gc_done.store(true, Ordering::SeqCst);
        gc.join().expect("gc")
    });
    assert!(gc_runs > 0);
    let files = t.json(&["run", "show", "shared"])["files"].clone();
    assert_eq!(
        files.as_object().map(|f| f.len()),
        Some(3 * per_writer as usize),
        "{files}"
    );
    for i in 0..per_writer {
        assert_eq!(
            files[format!("outputs/cli_{i}.bin")]["hash"],
            sha256_hex(&bytes(3000 + i, 20_000))
        );
        for mi in 0..2u64 {
            let data = bytes(2000 + mi * 100 + i, 50_000 + i as usize * 3000);
            assert_eq!(
                files[format!("outputs/m{mi}_{i}.bin")]["hash"],
                sha256_hex(&data)
            );
            // Read back through the other mount, once its refresh shows the other's writes:
            // the data is still there after all that gc.
            let other = if mi == 0 { &m2 } else { &m1 };
            let path = other.path(&format!("runs/by_project/p/shared/outputs/m{mi}_{i}.bin"));
            let started = std::time::Instant::now();
            let got = loop {
                match std::fs::read(&path) {
                    Ok(b) => break b,
                    Err(e) if started.elapsed() > std::time::Duration::from_secs(10) => {
                        panic!("read m{mi}_{i}.bin through the other mount: {e}")
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
                }
            };
            if got != data {
                // What the mount says the file is, to tell a wrong entry from a wrong read.
                let shown = std::process::Command::new("getfattr")
                    .args(["-n", "user.mltrack.sha256", "--only-values"])
                    .arg(&path)
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
                panic!(
                    "m{mi}_{i}.bin: read {} bytes (sha256 {}), wrote {} (sha256 {}); the mount \
                     shows size {:?} and sha256 {shown:?}; first difference at {:?}",
                    got.len(),
                    sha256_hex(&got),
                    data.len(),
                    sha256_hex(&data),
                    std::fs::metadata(&path).map(|m| m.len()),
                    got.iter().zip(&data).position(|(a, b)| a != b)
                );
            }
        }
    }
    drop((m1, m2));
    let fsck = t.json(&["fsck"]);
    assert_eq!(fsck["findings"].as_array().map(Vec::len), Some(0), "{fsck}");
    gc_runs
}

both_backends!(mounts_cli_and_gc_at_once);
