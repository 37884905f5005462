//! `metadata.json`: what mltrack knows about one stored object, and the proof that it is
//! complete (it is written after the data, so its presence means "stored").
//!
//! It carries the block hashes that let every block be verified on its own, and the format
//! facts of [`super::format::Facts`]. Parsing checks everything a reader will rely on (the hash
//! matches the key, the block list covers the size exactly, the format is key-safe) so that a
//! corrupt or hostile file is refused here rather than followed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::format::{Facts, Format};
use crate::error::{Error, Result};
use crate::ids::{Digest, Name};
use crate::layout;

/// Bounds a reader relies on (block offsets never overflow): mltrack writes 1 MiB blocks, and
/// no S3 object is larger than 5 TiB.
const MAX_BLOCK_SIZE: u64 = 1 << 30;
const MAX_SIZE: u64 = 1 << 50;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMetadata {
    pub hash: Digest,
    pub algorithm: String,
    pub size: u64,
    pub format: Format,
    #[serde(with = "crate::time::rfc3339")]
    pub created_at: DateTime<Utc>,
    /// The name the data first arrived under.
    pub name: Option<Name>,
    pub block_size: u64,
    pub block_hashes: Vec<Digest>,
    #[serde(flatten)]
    pub facts: Facts,
}

impl ObjectMetadata {
    /// Parses the `metadata.json` of object `expected`, checking it can be trusted.
    pub fn parse(expected: &Digest, bytes: &[u8]) -> Result<Self> {
        let key = layout::metadata_key(expected);
        let corrupt = |reason: String| Error::Corrupt {
            key: key.clone(),
            reason,
        };
        let m: ObjectMetadata =
            serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if &m.hash != expected {
            return Err(corrupt(format!("it describes {} instead", m.hash)));
        }
        if m.algorithm != "sha256" {
            return Err(corrupt(format!("unknown algorithm {:?}", m.algorithm)));
        }
        if !(1..=MAX_BLOCK_SIZE).contains(&m.block_size) || m.size > MAX_SIZE {
            return Err(corrupt(format!(
                "its block size {} or size {} is out of range",
                m.block_size, m.size
            )));
        }
        if m.block_hashes.len() as u64 != m.size.div_ceil(m.block_size) {
            return Err(corrupt(
                "its block hashes do not cover its size".to_string(),
            ));
        }
        Ok(m)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    pub fn data_key(&self) -> String {
        layout::data_key(&self.hash, &self.format)
    }

    /// The byte range of block `i`.
    pub fn block_range(&self, i: u64) -> std::ops::Range<u64> {
        let start = i * self.block_size;
        start..(start + self.block_size).min(self.size)
    }
}
