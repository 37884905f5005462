//! `mltrack fsck`: re-hashes every object and checks that manifests, markers and view pointers
//! agree, then verifies every block in this machine's cache against the stored block hashes.
//! `--repair` fixes what can be derived again (markers, view pointers, the chunk list of an
//! object whose data is sound) and drops cached blocks
//! that fail, which a mount fetches again; it never deletes or rewrites stored data: a hash
//! mismatch or missing data is reported, not "fixed".

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use crate::cache::CacheDir;
use crate::cas::Progress;
use crate::cas::metadata::ObjectMetadata;
use crate::error::{Error, Result};
use crate::ids::{Digest, Name};
use crate::layout;
use crate::runs::Runs;
use crate::runs::manifest::{Manifest, ViewPointer};
use crate::storage::{Body, PutMode, StorageError, list_all};
use crate::trusted::Open;

use super::{Inventory, ObjectKeys};

/// Bytes fetched per GET while re-hashing.
const CHUNK: u64 = 8 * 1024 * 1024;

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// A short stable name for the kind of problem (`hash_mismatch`, `stale_marker`, ...).
    pub kind: &'static str,
    pub key: String,
    pub message: String,
    pub repaired: bool,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct FsckReport {
    pub objects_checked: u64,
    pub bytes_checked: u64,
    pub runs_checked: u64,
    pub cache_blocks_checked: u64,
    pub findings: Vec<Finding>,
}

impl FsckReport {
    fn add(
        &mut self,
        kind: &'static str,
        key: impl Into<String>,
        message: impl Into<String>,
        repaired: bool,
    ) {
        self.findings.push(Finding {
            kind,
            key: key.into(),
            message: message.into(),
            repaired,
        });
    }

    /// Problems still standing after the run.
    pub fn unrepaired(&self) -> usize {
        self.findings.iter().filter(|f| !f.repaired).count()
    }
}

/// Checks the store, and the cache directory `cache` if there is one.
pub async fn fsck(
    runs: &Runs,
    repair: bool,
    cache: Option<&Path>,
    progress: Progress,
) -> Result<FsckReport> {
    let store = runs.data().backend().clone();
    let inv = Inventory::scan(store.as_ref()).await?;
    let listing = runs.list_thoroughly().await?;
    let mut report = FsckReport {
        runs_checked: listing.runs.len() as u64,
        ..Default::default()
    };
    for p in &listing.problems {
        report.add("corrupt_manifest", p.key.clone(), p.message.clone(), false);
    }
    for key in &inv.stray {
        report.add(
            "stray_key",
            key.clone(),
            format!("{key} is not part of any object"),
            false,
        );
    }

    let manifests: BTreeMap<&str, &Manifest> = listing
        .runs
        .iter()
        .map(|m| (m.run_id.as_str(), m))
        .collect();
    let mut complete = BTreeSet::new();
    for (h, keys) in &inv.objects {
        if check_object(runs, h, keys, repair, &mut report, &progress).await? {
            complete.insert(*h);
        }
        for (run, _) in &keys.used_by {
            let referenced = manifests
                .get(run.as_str())
                .is_some_and(|m| m.files.values().any(|f| &f.hash == h));
            if referenced {
                continue;
            }
            let key = format!("{}{run}", layout::used_by_prefix(h));
            // A run whose manifest is unreadable may still reference the data: leave its marker.
            if listing.unreadable.contains(run) {
                continue;
            }
            let repaired = repair && store.delete(&key).await.is_ok();
            report.add(
                "stale_marker",
                key,
                format!("run {run} does not reference {h}"),
                repaired,
            );
        }
    }

    for m in &listing.runs {
        check_run(runs, m, &inv, &complete, repair, &mut report).await?;
    }
    check_pointers(runs, &manifests, &listing.unreadable, repair, &mut report).await?;
    if let Some(dir) = cache.filter(|d| d.join("objects").is_dir()) {
        check_cache(runs, dir, repair, &mut report).await?;
    }
    Ok(report)
}

/// Verifies every block present in the cache directory against its object's block hash.
async fn check_cache(runs: &Runs, dir: &Path, repair: bool, report: &mut FsckReport) -> Result<()> {
    let cannot = |e| Error::in_dir(dir)(e);
    let cache = CacheDir::open(dir, false).map_err(cannot)?;
    let files = cache.scan().map_err(cannot)?;
    for f in files {
        report.cache_blocks_checked += f.blocks.len() as u64;
        // An object no longer in the store (collected by gc) cannot be checked; its blocks are
        // never served, since a mount finds no metadata for it.
        let meta = match runs.data().metadata(&f.hash).await {
            Ok(Some(m)) => m,
            Ok(None) | Err(Error::Corrupt { .. }) => continue,
            Err(e) => return Err(e),
        };
        // Opened once per file; a file that cannot be read has no sound block.
        let file = cache.object(&f.hash, Open::Read).ok();
        for (block, size) in f.blocks {
            let range = (block < meta.block_hashes.len() as u64).then(|| meta.block_range(block));
            let sound = range.is_some_and(|r| r.end - r.start == size)
                && file.as_ref().is_some_and(|file| {
                    crate::cache::read_block_verified(file, &meta, block).is_some()
                });
            if sound {
                continue;
            }
            let repaired =
                repair && crate::cache::drop_block_file(&cache, &f.hash, block, size).is_ok();
            report.add(
                "corrupt_cache_block",
                f.path.display().to_string(),
                format!(
                    "cached block {block} of {} does not match its hash (a mount drops it and fetches it again)",
                    f.hash
                ),
                repaired,
            );
        }
    }
    Ok(())
}

/// Checks one object's keys and re-hashes its data; true if it is complete and sound.
async fn check_object(
    runs: &Runs,
    h: &Digest,
    keys: &ObjectKeys,
    repair: bool,
    report: &mut FsckReport,
    progress: &Progress,
) -> Result<bool> {
    let meta_key = layout::metadata_key(h);
    if keys.metadata.is_none() {
        if !keys.data.is_empty() {
            report.add(
                "incomplete_object",
                layout::object_prefix(h),
                format!("{h} has data but no metadata.json (an interrupted upload; gc removes it)"),
                false,
            );
        }
        return Ok(false);
    }
    let meta = match runs.data().metadata(h).await {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(false),
        Err(Error::Corrupt { reason, .. }) => {
            report.add("corrupt_metadata", meta_key, reason, false);
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    report.objects_checked += 1;
    let data_key = meta.data_key();
    let Some(data) = keys.data.iter().find(|d| d.key == data_key) else {
        report.add(
            "missing_data",
            data_key,
            format!("{h} has metadata but its data is missing"),
            false,
        );
        return Ok(false);
    };
    if data.size != meta.size {
        report.add(
            "size_mismatch",
            data_key,
            format!("{h} should have {} bytes and has {}", meta.size, data.size),
            false,
        );
        return Ok(false);
    }
    match rehash(runs, &meta, progress).await? {
        Ok(chunks) => {
            report.bytes_checked += meta.size;
            check_chunk_list(runs, &meta, &chunks, repair, report).await?;
            Ok(true)
        }
        Err(message) => {
            report.add("hash_mismatch", data_key, message, false);
            Ok(false)
        }
    }
}

/// Compares a chunked object's `chunks` list with `computed`, the digests of its data (sound);
/// a list missing or wrong is written again from them with `--repair`. Without it, random
/// reads of the object fall back to whole blocks.
async fn check_chunk_list(
    runs: &Runs,
    meta: &ObjectMetadata,
    computed: &[Digest],
    repair: bool,
    report: &mut FsckReport,
) -> Result<()> {
    if meta.chunk_size.is_none() {
        return Ok(());
    }
    let store = runs.data().backend();
    let key = layout::chunks_key(&meta.hash);
    let want = crate::cas::hashing::chunk_list_bytes(computed);
    let problem = match store.get(&key, None).await {
        Ok(got) if got.data == want => return Ok(()),
        Ok(_) => "does not list the digests of its chunks",
        Err(StorageError::NotFound { .. }) => "is missing",
        Err(e) => return Err(e.into()),
    };
    let repaired = repair
        && store
            .put(&key, Body::Bytes(want.into()), PutMode::Overwrite)
            .await
            .is_ok();
    report.add(
        "bad_chunk_list",
        key,
        format!(
            "the chunk list of {} {problem} (random reads of it fetch whole blocks)",
            meta.hash
        ),
        repaired,
    );
    Ok(())
}

/// Streams the object and compares it with its hashes: `Err(reason)` if it does not match,
/// else the digests of its chunks (none if it is not hashed in chunks).
async fn rehash(
    runs: &Runs,
    meta: &ObjectMetadata,
    progress: &Progress,
) -> Result<std::result::Result<Vec<Digest>, String>> {
    let store = runs.data().backend();
    let mut whole = crate::cas::hashing::Hasher::new();
    let mut chunks = Vec::new();
    let blocks_per_chunk = (CHUNK / meta.block_size).max(1);
    let total = meta.block_hashes.len() as u64;
    let mut first = 0;
    while first < total {
        let last = (first + blocks_per_chunk).min(total);
        let range = meta.block_range(first).start..meta.block_range(last - 1).end;
        let got = store.get(&meta.data_key(), Some(range.clone())).await?;
        if got.data.len() as u64 != range.end - range.start {
            return Ok(Err(format!(
                "{} does not have its recorded size: bytes {}..{} came back as {} bytes",
                meta.hash,
                range.start,
                range.end,
                got.data.len()
            )));
        }
        // The chunk digests come from the verification's own hashing, not a second pass.
        if let Err(bad) = crate::cas::verify_each(meta, first..last, &got.data, |d| chunks.push(d))
        {
            return Ok(Err(format!(
                "block {bad} of {} does not match its recorded hash",
                meta.hash
            )));
        }
        whole.update(&got.data);
        progress(got.data.len() as u64);
        first = last;
    }
    let digest = whole.finish();
    if digest != meta.hash {
        return Ok(Err(format!("the data of {} hashes to {digest}", meta.hash)));
    }
    Ok(Ok(chunks))
}

async fn check_run(
    runs: &Runs,
    m: &Manifest,
    inv: &Inventory,
    complete: &BTreeSet<Digest>,
    repair: bool,
    report: &mut FsckReport,
) -> Result<()> {
    let store = runs.data().backend();
    let run = &m.run_id;
    let mut seen = BTreeSet::new();
    for (path, f) in &m.files {
        if !complete.contains(&f.hash) {
            let key = layout::manifest_key(run);
            report.add(
                "missing_data",
                key,
                format!(
                    "run {run}: {path} points at {} which is missing or damaged",
                    f.hash
                ),
                false,
            );
        }
        if !seen.insert(f.hash) {
            continue;
        }
        let has_marker = inv
            .objects
            .get(&f.hash)
            .is_some_and(|k| k.used_by.iter().any(|(r, _)| r == run.as_str()));
        if !has_marker {
            let key = layout::used_by_key(&f.hash, run);
            let repaired = repair && runs.data().mark_used(&f.hash, run).await.is_ok();
            report.add(
                "missing_marker",
                key,
                format!("run {run} references {} without a used_by marker", f.hash),
                repaired,
            );
        }
    }
    for mode in &m.storage_modes {
        let key = m.view_pointer_key(*mode)?;
        let ok = match store.get(&key, None).await {
            Ok(got) => ViewPointer::parse(&key, &got.data).is_ok_and(|p| &p.run_id == run),
            Err(StorageError::NotFound { .. }) => false,
            Err(e) => return Err(e.into()),
        };
        if !ok {
            let body = Body::Bytes(ViewPointer::of(run).to_json().into());
            let repaired = repair && store.put(&key, body, PutMode::Overwrite).await.is_ok();
            report.add(
                "missing_view",
                key,
                format!("run {run} is missing from its {mode} view"),
                repaired,
            );
        }
    }
    Ok(())
}

/// View pointers whose run does not exist or does not have that view.
async fn check_pointers(
    runs: &Runs,
    manifests: &BTreeMap<&str, &Manifest>,
    unreadable: &BTreeSet<String>,
    repair: bool,
    report: &mut FsckReport,
) -> Result<()> {
    let store = runs.data().backend();
    let page = list_all(store.as_ref(), layout::RUNS, false).await?;
    for o in &page.objects {
        let run = o
            .key
            .strip_suffix("/run.json")
            .and_then(|k| k.rsplit('/').next());
        if run.is_some_and(|r| unreadable.contains(r)) {
            continue;
        }
        let valid = run
            .and_then(|r| Name::parse("run id", r).ok())
            .and_then(|r| manifests.get(r.as_str()).copied())
            .is_some_and(|m| {
                m.storage_modes
                    .iter()
                    .any(|mode| m.view_pointer_key(*mode).is_ok_and(|k| k == o.key))
            });
        if !valid {
            let repaired = repair && store.delete(&o.key).await.is_ok();
            report.add(
                "stale_view",
                o.key.clone(),
                format!("{} points at no run with that view", o.key),
                repaired,
            );
        }
    }
    Ok(())
}
