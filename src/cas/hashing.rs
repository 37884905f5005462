//! Streaming SHA-256 of whole files and of their fixed-size blocks, in one read pass.
//!
//! The whole-file digest is the object's address; the block digests let any block be verified
//! on its own when it is read back (from the store or the cache), without the rest of the
//! object. The file is read once, one block at a time, so memory does not grow with its size.
//! The whole-file hash runs on the reading thread and the block hashes on a second thread, so
//! on a machine with two cores the pass costs about one SHA-256 of the file, not two.
//!
//! A file hashed while it is written (a spool followed by its writer) gets its whole-file
//! digest first ([`digest_reader`]), which is all a file whose bytes are already stored needs;
//! its block digests ([`block_digests`]) are computed only if it turns out to be new, beside
//! its upload.
//!
//! An object of one full block or more is also hashed in 64 KiB chunks ([`CHUNK_SIZE`]): its block
//! digest is then the SHA-256 of its chunks' digests, in order (a hash tree of two levels), and
//! the chunk digests are stored beside the object (`chunks`, docs/STORE.md). A random read can
//! then fetch and verify one chunk instead of a whole block, at no extra hashing cost: each
//! byte is still hashed once for its block. An object smaller than a block keeps the plain
//! SHA-256 of its bytes as its block digest, and has no chunk list.
//!
//! SHA-256 is `ring`'s, whose assembly uses SHA-NI or AVX2 where the CPU has them (the `sha2`
//! crate's portable code ran at a third of `openssl dgst -sha256` on a CPU without SHA-NI).

use std::io::{self, Read};
use std::sync::mpsc;

use ring::digest::{Context, SHA256};

use crate::ids::Digest;

/// The block size of new objects. Stored in each object's metadata, so it can change later
/// without invalidating objects written before.
pub const BLOCK_SIZE: u64 = 1024 * 1024;

/// The chunk size of new objects of [`BLOCK_SIZE`] or more: the unit a random read fetches and
/// verifies. Stored in each object's metadata too.
pub const CHUNK_SIZE: u64 = 64 * 1024;

/// The block digests of one object, as its `metadata.json` and chunk list record them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlockDigests {
    /// One a block: the SHA-256 of the block's bytes, or, when `chunks` is there, of its
    /// chunks' digests.
    pub blocks: Vec<Digest>,
    /// The digest of every [`CHUNK_SIZE`] chunk, in order; `None` for objects smaller than a
    /// block.
    pub chunks: Option<Vec<Digest>>,
}

impl BlockDigests {
    /// The chunk size the block digests were built from, if they were.
    pub fn chunk_size(&self) -> Option<u64> {
        self.chunks.as_ref().map(|_| CHUNK_SIZE)
    }
}

/// Builds [`BlockDigests`] one block at a time. An object is hashed in chunks when its first
/// block is full (it has [`BLOCK_SIZE`] bytes or more); a shorter first block is the only one,
/// and gets its plain digest. So each byte is hashed once either way.
#[derive(Default)]
struct BlockHasher {
    roots: Vec<Digest>,
    chunks: Vec<Digest>,
    plain: bool,
}

impl BlockHasher {
    fn push(&mut self, block: &[u8]) {
        if self.roots.is_empty() && (block.len() as u64) < BLOCK_SIZE {
            self.plain = true;
            self.roots.push(sha256(block));
            return;
        }
        let root = chunk_root(block, CHUNK_SIZE, |d| self.chunks.push(d));
        self.roots.push(root);
    }

    fn finish(self) -> BlockDigests {
        let chunks = (!self.plain && !self.roots.is_empty()).then_some(self.chunks);
        BlockDigests {
            blocks: self.roots,
            chunks,
        }
    }
}

/// The digest of a block whose object was hashed in chunks of `chunk_size` (`None`: not in
/// chunks): what its `metadata.json` records for it.
pub fn block_digest(chunk_size: Option<u64>, block: &[u8]) -> Digest {
    block_digest_each(chunk_size, block, |_| {})
}

/// [`block_digest`], handing each chunk's digest to `each` on the way (none if not in chunks).
pub fn block_digest_each(
    chunk_size: Option<u64>,
    block: &[u8],
    each: impl FnMut(Digest),
) -> Digest {
    match chunk_size {
        Some(c) => chunk_root(block, c, each),
        None => sha256(block),
    }
}

/// A chunk list as the object's `chunks` key holds it: the digests' 32 bytes, in order.
pub fn chunk_list_bytes(chunks: &[Digest]) -> Vec<u8> {
    chunks.iter().flat_map(|d| *d.as_bytes()).collect()
}

/// The digests in (part of) a `chunks` key's bytes; a trailing partial digest is ignored.
pub fn chunk_list_digests(bytes: &[u8]) -> Vec<Digest> {
    bytes
        .chunks_exact(32)
        .map(|d| {
            let mut digest = [0u8; 32];
            digest.copy_from_slice(d);
            Digest::from_bytes(digest)
        })
        .collect()
}

/// The SHA-256 of the digests of `block`'s chunks, each handed to `each` as it is computed.
fn chunk_root(block: &[u8], chunk_size: u64, mut each: impl FnMut(Digest)) -> Digest {
    let mut root = Hasher::new();
    for chunk in block.chunks(chunk_size.max(1) as usize) {
        let d = sha256(chunk);
        root.update(d.as_bytes());
        each(d);
    }
    root.finish()
}

/// The block digest that a block's chunk digests, in order, make.
pub fn root_of_chunks(chunks: &[Digest]) -> Digest {
    let mut root = Hasher::new();
    for d in chunks {
        root.update(d.as_bytes());
    }
    root.finish()
}

/// The digests of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentHash {
    pub digest: Digest,
    pub size: u64,
    pub block_size: u64,
    pub blocks: BlockDigests,
}

pub fn sha256(data: &[u8]) -> Digest {
    finish(ring::digest::digest(&SHA256, data))
}

/// A streaming SHA-256.
pub struct Hasher(Context);

impl Hasher {
    pub fn new() -> Self {
        Hasher(Context::new(&SHA256))
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish(self) -> Digest {
        finish(self.0.finish())
    }
}

impl Default for Hasher {
    fn default() -> Self {
        Self::new()
    }
}

fn finish(d: ring::digest::Digest) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    Digest::from_bytes(out)
}

/// Hashes everything `reader` yields; `progress` is told the bytes of each block as it goes.
pub fn hash_reader(reader: impl Read, progress: impl FnMut(u64)) -> io::Result<ContentHash> {
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(4);
    std::thread::scope(|scope| {
        let block_hasher = scope.spawn(move || {
            let mut blocks = BlockHasher::default();
            rx.iter().for_each(|b| blocks.push(&b));
            blocks.finish()
        });
        let read = feed_blocks(reader, tx, progress);
        let blocks = block_hasher
            .join()
            .map_err(|_| io::Error::other("the block hashing thread panicked"))?;
        let (whole, size) = read?;
        Ok(ContentHash {
            digest: whole.finish(),
            size,
            block_size: BLOCK_SIZE,
            blocks,
        })
    })
}

/// The whole-file digest and size of everything `reader` yields, on the calling thread.
pub fn digest_reader(reader: impl Read) -> io::Result<(Digest, u64)> {
    let mut whole = Hasher::new();
    let size = for_each_block(reader, |block| whole.update(block))?;
    Ok((whole.finish(), size))
}

/// The block digests of everything `reader` yields, and its size.
pub fn block_digests(reader: impl Read) -> io::Result<(BlockDigests, u64)> {
    let mut blocks = BlockHasher::default();
    let size = for_each_block(reader, |block| blocks.push(block))?;
    Ok((blocks.finish(), size))
}

/// Hands `each` the input one [`BLOCK_SIZE`] block at a time (the last may be shorter), from
/// one buffer; returns the size.
fn for_each_block(mut reader: impl Read, mut each: impl FnMut(&[u8])) -> io::Result<u64> {
    let mut size = 0u64;
    let mut buf = vec![0u8; BLOCK_SIZE as usize];
    loop {
        let n = read_full(&mut reader, &mut buf)?;
        if n == 0 {
            return Ok(size);
        }
        each(&buf[..n]);
        size += n as u64;
        if n < buf.len() {
            return Ok(size);
        }
    }
}

/// Reads `reader` block by block, hashing it whole and sending each block on `tx`. Returns
/// when the input ends or fails; dropping `tx` then ends the block hasher.
fn feed_blocks(
    mut reader: impl Read,
    tx: mpsc::SyncSender<Vec<u8>>,
    mut progress: impl FnMut(u64),
) -> io::Result<(Hasher, u64)> {
    let mut whole = Hasher::new();
    let mut size = 0u64;
    loop {
        let mut buf = vec![0u8; BLOCK_SIZE as usize];
        let n = read_full(&mut reader, &mut buf)?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        whole.update(&buf);
        size += n as u64;
        progress(n as u64);
        tx.send(buf)
            .map_err(|_| io::Error::other("the block hashing thread stopped"))?;
        if n < BLOCK_SIZE as usize {
            break;
        }
    }
    Ok((whole, size))
}

/// Fills `buf` unless the input ends first; returns the bytes read.
pub fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_match_a_one_shot_sha256() {
        let size = BLOCK_SIZE as usize * 2 + 17;
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let mut seen = 0;
        let h = hash_reader(&data[..], |n| seen += n).unwrap();
        assert_eq!(h.digest, sha256(&data));
        assert_eq!(h.size, size as u64);
        assert_eq!(seen, size as u64);
        // Three blocks: each block's digest is that of its chunks' digests.
        let chunks = h.blocks.chunks.as_ref().unwrap();
        let per_block = (BLOCK_SIZE / CHUNK_SIZE) as usize;
        assert_eq!(chunks.len(), 2 * per_block + 1);
        assert_eq!(
            chunks[1],
            sha256(&data[CHUNK_SIZE as usize..2 * CHUNK_SIZE as usize])
        );
        assert_eq!(h.blocks.blocks.len(), 3);
        let mut root = Vec::new();
        for d in &chunks[..per_block] {
            root.extend_from_slice(d.as_bytes());
        }
        assert_eq!(h.blocks.blocks[0], sha256(&root));
        assert_eq!(h.blocks.blocks[2], sha256(chunks[2 * per_block].as_bytes()));
        assert_eq!(
            h.blocks.blocks[1],
            root_of_chunks(&chunks[per_block..2 * per_block])
        );
        let second = &data[BLOCK_SIZE as usize..2 * BLOCK_SIZE as usize];
        assert_eq!(block_digest(Some(CHUNK_SIZE), second), h.blocks.blocks[1]);
    }

    #[test]
    fn only_an_object_smaller_than_a_block_keeps_its_plain_block_digest() {
        let short = vec![7u8; BLOCK_SIZE as usize - 1];
        let h = hash_reader(&short[..], |_| {}).unwrap();
        assert_eq!(h.blocks.blocks, vec![sha256(&short)]);
        assert_eq!(h.blocks.chunks, None);
        assert_eq!(block_digest(None, &short), sha256(&short));
        let full = vec![7u8; BLOCK_SIZE as usize];
        let h = hash_reader(&full[..], |_| {}).unwrap();
        assert_eq!(h.blocks.chunk_size(), Some(CHUNK_SIZE));
        assert_eq!(h.blocks.blocks, vec![block_digest(Some(CHUNK_SIZE), &full)]);
        assert_eq!(h.blocks.chunks.map(|c| c.len()), Some(16));
    }

    #[test]
    fn the_two_halves_of_a_pass_agree_with_the_pass() {
        let data: Vec<u8> = (0..BLOCK_SIZE as usize * 3 + 5)
            .map(|i| (i % 253) as u8)
            .collect();
        let whole = hash_reader(&data[..], |_| {}).unwrap();
        assert_eq!(
            digest_reader(&data[..]).unwrap(),
            (whole.digest, whole.size)
        );
        assert_eq!(
            block_digests(&data[..]).unwrap(),
            (whole.blocks.clone(), whole.size)
        );
        assert_eq!(
            block_digests(&[][..]).unwrap(),
            (BlockDigests::default(), 0)
        );
    }

    #[test]
    fn empty_input_has_no_blocks() {
        let h = hash_reader(&[][..], |_| {}).unwrap();
        assert_eq!(h.size, 0);
        assert_eq!(h.blocks, BlockDigests::default());
        assert_eq!(
            h.digest.to_string(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn exact_multiple_of_the_block_size_has_no_empty_tail_block() {
        let data = vec![1u8; BLOCK_SIZE as usize * 2];
        let h = hash_reader(&data[..], |_| {}).unwrap();
        assert_eq!(h.blocks.blocks.len(), 2);
        assert_eq!(
            h.blocks.chunks.unwrap().len(),
            2 * (BLOCK_SIZE / CHUNK_SIZE) as usize
        );
    }
}
