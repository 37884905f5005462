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
/// Bounds on chunks (mltrack writes 16 of 64 KiB a block), so that a reader's piece of a chunk
/// list stays small whatever a hostile `metadata.json` says.
const MIN_CHUNK_SIZE: u64 = 4096;
const MAX_CHUNKS_PER_BLOCK: u64 = 1024;

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
    /// One a block: the SHA-256 of the block, or, when `chunk_size` is set, of the SHA-256s of
    /// its `chunk_size` chunks (listed in the object's `chunks` file).
    pub block_hashes: Vec<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<u64>,
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
        if let Some(c) = m.chunk_size
            && (c < MIN_CHUNK_SIZE
                || !m.block_size.is_multiple_of(c)
                || m.block_size / c > MAX_CHUNKS_PER_BLOCK)
        {
            return Err(corrupt(format!(
                "its chunk size {c} does not divide its block size {} into at most \
                 {MAX_CHUNKS_PER_BLOCK} chunks of {MIN_CHUNK_SIZE} bytes or more",
                m.block_size
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

    /// The chunks of the object, if its block hashes are built from them.
    pub fn chunk_count(&self) -> Option<u64> {
        self.chunk_size.map(|c| self.size.div_ceil(c))
    }

    /// The byte range of chunk `i` (counted from the object's start), for a chunked object.
    pub fn chunk_range(&self, i: u64) -> std::ops::Range<u64> {
        let c = self.chunk_size.unwrap_or(self.block_size);
        let start = i * c;
        start..(start + c).min(self.size)
    }

    /// The byte range of block `i`.
    pub fn block_range(&self, i: u64) -> std::ops::Range<u64> {
        let start = i * self.block_size;
        start..(start + self.block_size).min(self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_chunks(chunk_size: Option<u64>) -> Result<ObjectMetadata> {
        let hash = crate::cas::hashing::sha256(b"x");
        let m = ObjectMetadata {
            hash,
            algorithm: "sha256".into(),
            size: 3 << 20,
            format: Format::parse("bin").expect("format"),
            created_at: crate::time::now(),
            name: None,
            block_size: 1 << 20,
            block_hashes: vec![hash; 3],
            chunk_size,
            facts: Facts::default(),
        };
        ObjectMetadata::parse(&hash, &m.to_json())
    }

    #[test]
    fn a_chunk_size_must_split_a_block_into_a_bounded_number_of_chunks() {
        assert_eq!(with_chunks(None).expect("plain").chunk_size, None);
        assert_eq!(
            with_chunks(Some(64 << 10)).expect("chunked").chunk_count(),
            Some(48)
        );
        for bad in [0, 1, 1000, 3 << 20, 1 << 21] {
            let err = with_chunks(Some(bad)).expect_err("refused");
            assert!(err.to_string().contains("chunk size"), "{bad}: {err}");
        }
    }
}
