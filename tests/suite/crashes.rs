//! The daemon killed with SIGKILL at a random moment of a mixed workload (new files, a file
//! overwritten again and again, readers of earlier files and of a stored object), round after
//! round on one store and one cache. After each remount: every file whose `close()` succeeded
//! is in its manifest and reads back intact; every manifest entry is one of the versions that
//! was written, never a mix; `fsck` finds nothing beyond what a crash is allowed to leave (a
//! `used_by` marker ahead of its entry, an upload without its `metadata.json`), and after
//! `fsck --repair` and `gc` it finds nothing at all, in the store or in the cache.
//!
//! `MLTRACK_CRASH_ROUNDS` sets the rounds (default 3; `scripts/reliability` runs 20), and
//! `MLTRACK_CRASH_SEED` the seed of the kill times and sizes (printed, so a failure can be
//! replayed).

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Kind, TestStore, bytes, env_u64, path_str, sha256_hex};

/// A small deterministic generator (xorshift), so that a seed replays a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// What the workload tried to write under each name, and which versions were acknowledged.
#[derive(Default)]
struct Ledger {
    /// Name -> every version attempted, as (seed, len), in order.
    attempted: BTreeMap<String, Vec<(u64, usize)>>,
    /// Name -> index into `attempted` of the last version whose close() succeeded.
    acknowledged: BTreeMap<String, usize>,
}

fn write_version(path: &Path, seed: u64, len: usize) -> std::io::Result<()> {
    use std::io::Write;
    let data = bytes(seed, len);
    let mut f = std::fs::File::create(path)?;
    for chunk in data.chunks(128 * 1024) {
        f.write_all(chunk)?;
    }
    // File's drop ignores close() errors; fsync reports what close would.
    f.sync_all()
}

fn crash_rounds(kind: Kind) {
    let rounds = env_u64("MLTRACK_CRASH_ROUNDS", 3);
    let seed = env_u64("MLTRACK_CRASH_SEED", 0x5eed_c4a5);
    eprintln!("{rounds} crash rounds, MLTRACK_CRASH_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let t = TestStore::new(kind);
    let stored = bytes(77, 5 * 1024 * 1024 + 3);
    let f = t.file("stored.bin", &stored);
    t.ok(&["put", path_str(&f)]);
    let h = sha256_hex(&stored);
    let stored_rel = format!("data/{}/{h}/data.bin", &h[..2]);
    t.ok(&["run", "create", "crash", "--project", "p"]);
    let cache = t.dir.path().join("cache");
    let ledger = Mutex::new(Ledger::default());

    for round in 0..rounds {
        let m = t.mount(&cache, &[]);
        let outputs = m.path("runs/by_project/p/crash/outputs");
        let stop = AtomicBool::new(false);
        let kill_after = Duration::from_millis(150 + rng.next(1400));
        let sizes: Vec<usize> = (0..64)
            .map(|_| match rng.next(10) {
                0 => 3 * 1024 * 1024 + rng.next(1000) as usize,
                1..=3 => 300_000 + rng.next(700_000) as usize,
                _ => 1 + rng.next(64 * 1024) as usize,
            })
            .collect();
        let earlier: Vec<(String, (u64, usize))> = {
            let l = ledger.lock().expect("ledger");
            l.acknowledged
                .iter()
                .map(|(n, &i)| (n.clone(), l.attempted[n][i]))
                .collect()
        };
        std::thread::scope(|s| {
            for w in 0..3u64 {
                let (outputs, stop, ledger, sizes) = (&outputs, &stop, &ledger, &sizes);
                s.spawn(move || {
                    for i in 0.. {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        // Writer 0 overwrites one file again and again; the others add files.
                        let name = if w == 0 {
                            "shared.bin".to_string()
                        } else {
                            format!("r{round}_w{w}_{i}.bin")
                        };
                        let version = (round * 1_000_000 + w * 10_000 + i, sizes[i as usize % 64]);
                        let index = {
                            let mut l = ledger.lock().expect("ledger");
                            let v = l.attempted.entry(name.clone()).or_default();
                            v.push(version);
                            v.len() - 1
                        };
                        if write_version(&outputs.join(&name), version.0, version.1).is_ok() {
                            ledger
                                .lock()
                                .expect("ledger")
                                .acknowledged
                                .insert(name, index);
                        }
                    }
                });
            }
            // A reader of what earlier rounds wrote and of a stored object: whatever it reads
            // before the kill is right.
            let (m, stop, earlier, stored, stored_rel) =
                (&m, &stop, &earlier, &stored, &stored_rel);
            s.spawn(move || {
                let mut k = 0;
                while !stop.load(Ordering::SeqCst) {
                    let (rel, want) = match earlier.get(k % (earlier.len() + 1)) {
                        Some((name, (seed, len))) => (
                            format!("runs/by_project/p/crash/outputs/{name}"),
                            bytes(*seed, *len),
                        ),
                        None => (stored_rel.clone(), stored.clone()),
                    };
                    k += 1;
                    if let Ok(got) = std::fs::read(m.path(&rel)) {
                        // shared.bin may have been overwritten in this round already.
                        if !rel.ends_with("shared.bin") {
                            assert!(got == want, "round {round}: {rel} read back wrong");
                        }
                    }
                }
            });
            std::thread::sleep(kill_after);
            m.crash();
            stop.store(true, Ordering::SeqCst);
        });
        m.kill();

        let m = t.mount(&cache, &[]);
        let files = t.json(&["run", "show", "crash"])["files"].clone();
        let files = files.as_object().expect("files");
        let l = ledger.lock().expect("ledger");
        for (name, &index) in &l.acknowledged {
            let entry = files.get(&format!("outputs/{name}")).unwrap_or_else(|| {
                panic!("round {round}: acknowledged {name} is not in the manifest")
            });
            // The acknowledged version, or one attempted after it whose close() the kill cut
            // short after the manifest took it.
            let candidates = &l.attempted[name][index..];
            let (seed, len) = candidates
                .iter()
                .find(|(s, n)| entry["hash"] == sha256_hex(&bytes(*s, *n)))
                .unwrap_or_else(|| {
                    panic!("round {round}: {name} in the manifest is no version written after the acknowledged one: {entry}")
                });
            let got = std::fs::read(m.path(&format!("runs/by_project/p/crash/outputs/{name}")))
                .unwrap_or_else(|e| panic!("round {round}: read {name}: {e}"));
            assert!(
                got == bytes(*seed, *len),
                "round {round}: {name} read back wrong"
            );
        }
        // Entries never acknowledged are whole versions too.
        for (path, entry) in files {
            let name = path.strip_prefix("outputs/").expect("an output");
            let versions = l.attempted.get(name).expect("a name the workload wrote");
            assert!(
                versions
                    .iter()
                    .any(|(s, n)| entry["hash"] == sha256_hex(&bytes(*s, *n))),
                "round {round}: {path} is no version that was written: {entry}"
            );
        }
        let acknowledged: BTreeSet<&String> = l.acknowledged.keys().collect();
        eprintln!(
            "round {round}: killed after {kill_after:?}; {} files acknowledged in all, {} in the manifest",
            acknowledged.len(),
            files.len()
        );
        drop(l);
        drop(m);
        let fsck = t.assert_only_crash_leftovers_then_clean(&format!("round {round}"));
        assert!(fsck["cache_blocks_checked"].as_u64() > Some(0), "{fsck}");
    }
}

both_backends!(crash_rounds);
