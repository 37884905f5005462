//! `mltrack stats`: how much is stored, how much runs reference, and what deduplication saves.

use serde::Serialize;

use crate::error::Result;
use crate::runs::Runs;

use super::Inventory;

#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Complete objects (with `metadata.json`).
    pub objects: u64,
    /// Bytes of the complete objects' data, each counted once.
    pub stored_bytes: u64,
    pub runs: u64,
    /// Bytes the runs' files add up to, counting every reference.
    pub referenced_bytes: u64,
    /// `referenced_bytes / stored_bytes`: how many times over the stored bytes are used.
    pub dedup_ratio: f64,
    /// Data uploads that never got their `metadata.json` (gc removes them after the grace).
    pub incomplete_objects: u64,
    /// Manifests that could not be read, each named.
    pub problems: Vec<String>,
}

pub async fn stats(runs: &Runs) -> Result<Stats> {
    let inv = Inventory::scan(runs.data().backend().as_ref()).await?;
    let listing = runs.list().await?;
    let mut s = Stats {
        objects: 0,
        stored_bytes: 0,
        runs: listing.runs.len() as u64,
        referenced_bytes: listing.runs.iter().map(|m| m.referenced_bytes()).sum(),
        dedup_ratio: 0.0,
        incomplete_objects: 0,
        problems: listing.problems.iter().map(ToString::to_string).collect(),
    };
    for keys in inv.objects.values() {
        if keys.metadata.is_some() {
            s.objects += 1;
            s.stored_bytes += keys.data.iter().map(|d| d.size).sum::<u64>();
        } else if !keys.data.is_empty() {
            s.incomplete_objects += 1;
        }
    }
    if s.stored_bytes > 0 {
        s.dedup_ratio = s.referenced_bytes as f64 / s.stored_bytes as f64;
    }
    Ok(s)
}
