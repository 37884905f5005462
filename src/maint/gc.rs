//! `mltrack gc`: removes stored data that nothing references.
//!
//! An object is kept if any of these holds: a manifest references it; it has a name marker
//! (`mltrack put`); it has a `used_by` marker of a run whose manifest cannot be read (it may
//! reference the data; gc does not guess); it has a `used_by` marker younger than the grace
//! period (a writer is between marking and recording); its data or metadata was written within
//! the grace period. Stale markers older than the grace do not protect data: `used_by` is
//! checked against the manifests before it is trusted.
//!
//! An object is removed `metadata.json` first (it stops counting as stored, so a concurrent
//! writer uploads it again), then its data and markers. Just before removal its markers are
//! listed again, so a writer that marked it while gc ran keeps it.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;

use crate::cas::Progress;
use crate::error::Result;
use crate::ids::Digest;
use crate::layout;
use crate::runs::Runs;

use super::{Inventory, ObjectKeys};

#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    pub hash: Digest,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct GcReport {
    pub dry_run: bool,
    /// Objects removed (or, with `--dry-run`, that would be).
    pub removed: Vec<Removed>,
    pub removed_bytes: u64,
    pub kept: u64,
    /// Manifests that could not be read; data their markers name was kept.
    pub problems: Vec<String>,
}

/// `progress` is told the data bytes of each object as gc finishes looking at it.
pub async fn gc(
    runs: &Runs,
    grace: Duration,
    dry_run: bool,
    progress: Progress,
) -> Result<GcReport> {
    let store = runs.data().backend();
    let inv = Inventory::scan(store.as_ref()).await?;
    let listing = runs.list_thoroughly().await?;
    let referenced: BTreeSet<Digest> = listing
        .runs
        .iter()
        .flat_map(|m| m.files.values().map(|f| f.hash))
        .collect();
    let cutoff = Utc::now() - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    let mut report = GcReport {
        dry_run,
        problems: listing.problems.iter().map(ToString::to_string).collect(),
        ..Default::default()
    };

    let protected = |h: &Digest, keys: &ObjectKeys| {
        referenced.contains(h)
            || !keys.names.is_empty()
            || keys
                .used_by
                .iter()
                .any(|(run, at)| listing.unreadable.contains(run) || at.is_none_or(|t| t > cutoff))
            || keys.last_written().is_none_or(|t| t > cutoff)
    };

    for (h, keys) in &inv.objects {
        let bytes: u64 = keys.data.iter().map(|d| d.size).sum();
        progress(bytes);
        if protected(h, keys) {
            report.kept += 1;
            continue;
        }
        if !dry_run {
            // A writer may have marked the object since the scan: look once more.
            let fresh = runs.data().used_by(h).await?;
            if !fresh.is_empty()
                && fresh
                    .iter()
                    .any(|r| !keys.used_by.iter().any(|(old, _)| old == r))
            {
                report.kept += 1;
                continue;
            }
            for key in keys.all_keys() {
                store.delete(&key).await?;
            }
            for (run, _) in &keys.used_by {
                store
                    .delete(&format!("{}{run}", layout::used_by_prefix(h)))
                    .await?;
            }
            for key in &keys.other {
                store.delete(key).await?;
            }
        }
        report.removed_bytes += bytes;
        report.removed.push(Removed { hash: *h, bytes });
    }
    Ok(report)
}
