//! Whole-store maintenance: `stats`, `fsck` and `gc`. Each starts from one [`Inventory`], a
//! single recursive listing of `data/` grouped by object, and the list of runs, so that the
//! cost is one pass over the keys however the work is split.

pub mod fsck;
pub mod gc;
pub mod stats;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::ids::Digest;
use crate::layout::{self, DataKey};
use crate::runs::Runs;
use crate::storage::{ObjectMeta, ObjectStore, list_all};

/// Everything stored under one `data/<hh>/<h>/` directory.
#[derive(Debug, Clone, Default)]
pub struct ObjectKeys {
    /// `data.<fmt>` keys (normally exactly one).
    pub data: Vec<ObjectMeta>,
    pub metadata: Option<ObjectMeta>,
    /// Run ids with markers, and when each marker was written.
    pub used_by: Vec<(String, Option<DateTime<Utc>>)>,
    pub names: Vec<String>,
    /// The `chunks` list of an object of 1 MiB or more.
    pub chunks: Option<ObjectMeta>,
    /// Keys of the object directory that mltrack does not write.
    pub other: Vec<String>,
}

impl ObjectKeys {
    /// The newest write of the object's data or metadata.
    pub fn last_written(&self) -> Option<DateTime<Utc>> {
        self.data
            .iter()
            .chain(self.metadata.iter())
            .filter_map(|o| o.last_modified)
            .max()
    }

    pub fn all_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.metadata.iter().map(|m| m.key.clone()).collect();
        keys.extend(self.data.iter().map(|d| d.key.clone()));
        keys.extend(self.chunks.iter().map(|c| c.key.clone()));
        keys
    }
}

/// The objects of the store, by hash, and keys under `data/` that fit no object.
#[derive(Debug, Default)]
pub struct Inventory {
    pub objects: BTreeMap<Digest, ObjectKeys>,
    pub stray: Vec<String>,
}

impl Inventory {
    pub async fn scan(store: &dyn ObjectStore) -> Result<Inventory> {
        let page = list_all(store, layout::DATA, false).await?;
        let mut inv = Inventory::default();
        for o in page.objects {
            let Some(parsed) = layout::parse_data_key(&o.key) else {
                inv.stray.push(o.key);
                continue;
            };
            match parsed {
                DataKey::Data(h, _) => inv.objects.entry(h).or_default().data.push(o),
                DataKey::Metadata(h) => inv.objects.entry(h).or_default().metadata = Some(o),
                DataKey::UsedBy(h, run) => inv
                    .objects
                    .entry(h)
                    .or_default()
                    .used_by
                    .push((run, o.last_modified)),
                DataKey::Name(h, name) => inv.objects.entry(h).or_default().names.push(name),
                DataKey::Chunks(h) => inv.objects.entry(h).or_default().chunks = Some(o),
                DataKey::Other(h) => inv.objects.entry(h).or_default().other.push(o.key),
            }
        }
        Ok(inv)
    }
}

/// The bytes of all data under `data/`: the total of a progress bar for `fsck` and `gc`.
pub async fn data_bytes(runs: &Runs) -> Result<u64> {
    let inv = Inventory::scan(runs.data().backend().as_ref()).await?;
    Ok(inv
        .objects
        .values()
        .flat_map(|k| k.data.iter())
        .map(|d| d.size)
        .sum())
}
