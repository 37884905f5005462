//! A reference-model test of the write path (after mountpoint-s3's reftests): random sequences
//! of create, write at offset, append, truncate, rename, unlink, mkdir and rmdir, applied to a
//! run directory through the mount and to a plain local directory. Every operation must
//! succeed or fail the same way on both, and the trees must hold the same files and bytes,
//! on the mount after each sequence and on a fresh mount at the end.

use crate::common;

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use common::{Kind, TestStore, bytes};

/// xorshift: deterministic, so a failure names the seed that reproduces it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len() as u64) as usize]
    }
}

const DIRS: &[&str] = &["", "x", "x/y", "z"];
const NAMES: &[&str] = &["a", "b", "c.parquet"];

#[derive(Debug)]
enum Op {
    Create(String, usize, u64),
    WriteAt(String, u64, usize, u64),
    Append(String, usize, u64),
    Truncate(String, u64),
    Rename(String, String),
    Unlink(String),
    Mkdir(String),
    Rmdir(String),
}

fn path(rng: &mut Rng) -> String {
    let d = rng.pick(DIRS);
    let n = rng.pick(NAMES);
    if d.is_empty() {
        n.to_string()
    } else {
        format!("{d}/{n}")
    }
}

fn op(rng: &mut Rng) -> Op {
    let seed = rng.next();
    match rng.below(12) {
        0..=2 => Op::Create(path(rng), rng.below(300_000) as usize, seed),
        3 | 4 => Op::WriteAt(
            path(rng),
            rng.below(400_000),
            rng.below(70_000) as usize,
            seed,
        ),
        5 => Op::Append(path(rng), rng.below(50_000) as usize, seed),
        6 => Op::Truncate(path(rng), rng.below(350_000)),
        7 | 8 => {
            if rng.below(3) == 0 {
                let (a, b) = (rng.pick(DIRS), rng.pick(DIRS));
                Op::Rename(
                    a.to_string(),
                    format!("{b}/w").trim_start_matches('/').to_string(),
                )
            } else {
                Op::Rename(path(rng), path(rng))
            }
        }
        9 => Op::Unlink(path(rng)),
        10 => Op::Mkdir(rng.pick(DIRS).to_string()),
        _ => Op::Rmdir(rng.pick(DIRS).to_string()),
    }
}

/// Applies `op` under `root`; the error number if it failed.
fn apply(root: &Path, op: &Op) -> Result<(), i32> {
    let p = |rel: &str| root.join(rel);
    let r: std::io::Result<()> = (|| match op {
        Op::Create(rel, len, seed) => std::fs::write(p(rel), bytes(*seed, *len)),
        Op::WriteAt(rel, off, len, seed) => {
            let mut f = std::fs::OpenOptions::new().write(true).open(p(rel))?;
            f.seek(SeekFrom::Start(*off))?;
            f.write_all(&bytes(*seed, *len))?;
            f.sync_all()
        }
        Op::Append(rel, len, seed) => {
            let mut f = std::fs::OpenOptions::new().append(true).open(p(rel))?;
            f.write_all(&bytes(*seed, *len))?;
            f.sync_all()
        }
        Op::Truncate(rel, len) => {
            let f = std::fs::OpenOptions::new().write(true).open(p(rel))?;
            f.set_len(*len)?;
            f.sync_all()
        }
        Op::Rename(a, b) => std::fs::rename(p(a), p(b)),
        Op::Unlink(rel) => std::fs::remove_file(p(rel)),
        Op::Mkdir(rel) if rel.is_empty() => Ok(()),
        Op::Mkdir(rel) => std::fs::create_dir(p(rel)),
        Op::Rmdir(rel) if rel.is_empty() => Ok(()),
        Op::Rmdir(rel) => std::fs::remove_dir(p(rel)),
    })();
    r.map_err(|e| e.raw_os_error().unwrap_or(-1))
}

/// Directories (with a trailing `/`) and files with their bytes.
fn tree(root: &Path, dirs: bool) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, dirs: bool, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry"))
        {
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string();
            if p.is_dir() {
                if dirs {
                    out.insert(format!("{rel}/"), vec![]);
                }
                walk(root, &p, dirs, out);
            } else {
                out.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, dirs, &mut out);
    out
}

fn short(t: &BTreeMap<String, Vec<u8>>) -> Vec<(String, usize)> {
    t.iter().map(|(k, v)| (k.clone(), v.len())).collect()
}

fn sequences_match_a_local_directory(kind: Kind, sequences: u64, ops: usize) {
    let t = TestStore::new(kind);
    let m = t.mount(&t.dir.path().join("cache"), &[]);
    let models = t.dir.path().join("models");
    let mut succeeded = 0;
    for s in 0..sequences {
        let run = format!("ref{s}");
        std::fs::create_dir_all(m.path(&format!("runs/by_project/p/{run}"))).expect("mkdir run");
        let mounted = m.path(&format!("runs/by_project/p/{run}/outputs"));
        let model = models.join(&run);
        std::fs::create_dir_all(&model).expect("model dir");
        let mut rng = Rng(0x5eed_0000 + s * 7919);
        // Most sequences start with the directories there, so that most operations succeed.
        if s % 4 != 0 {
            for d in ["x", "x/y", "z"] {
                let op = Op::Mkdir(d.to_string());
                assert_eq!(apply(&mounted, &op), apply(&model, &op), "{op:?}");
            }
        }
        for i in 0..ops {
            let op = op(&mut rng);
            let want = apply(&model, &op);
            let got = apply(&mounted, &op);
            assert_eq!(got, want, "sequence {s}, op {i}: {op:?}");
            succeeded += usize::from(want.is_ok());
        }
        let (want, got) = (tree(&model, true), tree(&mounted, true));
        assert!(
            want == got,
            "sequence {s}: {:?} != {:?}",
            short(&got),
            short(&want)
        );
    }
    // The random operations must mostly do something, or the comparison proves little.
    let total = sequences as usize * ops;
    assert!(
        succeeded * 3 > total,
        "only {succeeded} of {total} operations succeeded"
    );
    eprintln!("{succeeded} of {total} operations succeeded");
    drop(m);
    // What was committed is what a fresh mount reads, empty directories included.
    let m = t.mount(&t.dir.path().join("cache2"), &[]);
    for s in 0..sequences {
        let mounted = m.path(&format!("runs/by_project/p/ref{s}/outputs"));
        let (want, got) = (
            tree(&models.join(format!("ref{s}")), true),
            tree(&mounted, true),
        );
        assert!(
            want == got,
            "after remount, sequence {s}: {:?} != {:?}",
            short(&got),
            short(&want)
        );
    }
}

#[test]
fn local_store_sequences_match_a_local_directory() {
    sequences_match_a_local_directory(Kind::Local, 24, 40);
}

#[test]
fn s3_store_sequences_match_a_local_directory() {
    sequences_match_a_local_directory(Kind::S3, 6, 40);
}
