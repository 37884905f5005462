//! Streaming SHA-256 of whole files and of their fixed-size blocks, in one pass.
//!
//! The whole-file digest is the object's address; the block digests let any block be verified
//! on its own when it is read back (from the store or the cache), without the rest of the
//! object. Input is read and hashed one [`PIECE`] (64 KiB) at a time, each piece hashed right
//! after it was read, while it is still in the core's own cache, so memory does not grow with
//! the file: with 1 MiB reads the bytes left the 512 KiB L2 cache of this machine's cores
//! before SHA-256 came back for them, and hashing ran 40% slower (docs/PERFORMANCE.md,
//! "Hashing in pieces"). A whole pass ([`hash_file`]) hashes the file whole on the calling
//! thread and in blocks on a second one, each reading the file itself (the second from the
//! page cache the first filled) for the same reason, so on a machine with two cores the pass
//! costs about one SHA-256 of the file, not two.
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

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

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

/// The unit of reading and hashing: a chunk, so that a piece read whole is a chunk whole.
pub const PIECE: usize = CHUNK_SIZE as usize;

/// Builds [`BlockDigests`] from the input's pieces, in order: every piece but the last is
/// [`PIECE`] bytes, so each is one chunk. An object is hashed in chunks when its first block
/// is full (it has [`BLOCK_SIZE`] bytes or more); until that is known the first block is also
/// hashed plain, the digest a shorter (and so the only) block keeps.
struct BlockHasher {
    roots: Vec<Digest>,
    chunks: Vec<Digest>,
    /// The digest of the current block's chunk digests so far.
    root: Hasher,
    /// The bytes of the current block so far.
    in_block: u64,
    /// The plain digest of the first block, while the input is shorter than a block.
    plain: Option<Hasher>,
}

impl Default for BlockHasher {
    fn default() -> Self {
        BlockHasher {
            roots: Vec::new(),
            chunks: Vec::new(),
            root: Hasher::new(),
            in_block: 0,
            plain: Some(Hasher::new()),
        }
    }
}

impl BlockHasher {
    fn push(&mut self, piece: &[u8]) {
        debug_assert!(piece.len() <= PIECE && self.in_block.is_multiple_of(CHUNK_SIZE));
        if let Some(plain) = &mut self.plain {
            plain.update(piece);
        }
        let d = sha256(piece);
        self.root.update(d.as_bytes());
        self.chunks.push(d);
        self.in_block += piece.len() as u64;
        if self.in_block == BLOCK_SIZE {
            let root = std::mem::take(&mut self.root);
            self.roots.push(root.finish());
            self.in_block = 0;
            self.plain = None;
        }
    }

    fn finish(mut self) -> BlockDigests {
        match self.plain {
            // Shorter than a block: one plain block, or none for empty input.
            Some(plain) if self.in_block > 0 => BlockDigests {
                blocks: vec![plain.finish()],
                chunks: None,
            },
            Some(_) => BlockDigests::default(),
            None => {
                if self.in_block > 0 {
                    self.roots.push(self.root.finish());
                }
                BlockDigests {
                    blocks: self.roots,
                    chunks: Some(self.chunks),
                }
            }
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

/// Reads `len` bytes of `file` from `start` (one block of an object hashed in chunks of
/// `chunk_size`, or plain) and gives them with their block digest, each piece hashed as soon
/// as it is read.
pub fn read_block(
    file: &File,
    start: u64,
    len: usize,
    chunk_size: Option<u64>,
) -> io::Result<(Vec<u8>, Digest)> {
    let mut buf = vec![0u8; len];
    let step = chunk_size.map_or(PIECE, |c| c.max(1) as usize);
    let mut root = Hasher::new();
    for (i, piece) in buf.chunks_mut(step).enumerate() {
        file.read_exact_at(piece, start + (i * step) as u64)?;
        match chunk_size {
            Some(_) => root.update(sha256(piece).as_bytes()),
            None => root.update(piece),
        }
    }
    Ok((buf, root.finish()))
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

/// The whole-file digest and the block digests of `file`, in one pass: the whole-file digest
/// on the calling thread, the block digests on a second one, each reading the file itself
/// (from the page cache once the first has read it). `progress` is told the bytes of each
/// piece as the whole-file digest takes it.
pub fn hash_file(file: &File, mut progress: impl FnMut(u64)) -> io::Result<ContentHash> {
    std::thread::scope(|scope| {
        let blocks = scope.spawn(|| block_digests(At::new(file)));
        let mut whole = Hasher::new();
        let size = for_each_piece(At::new(file), |piece| {
            whole.update(piece);
            progress(piece.len() as u64);
        });
        let blocks = blocks
            .join()
            .map_err(|_| io::Error::other("the block hashing thread panicked"))?;
        let (size, (blocks, block_size)) = (size?, blocks?);
        if size != block_size {
            return Err(io::Error::other("the file changed while it was hashed"));
        }
        Ok(ContentHash {
            digest: whole.finish(),
            size,
            block_size: BLOCK_SIZE,
            blocks,
        })
    })
}

/// Reads a file from its start by offset, so that several readers can share one descriptor.
struct At<'a> {
    file: &'a File,
    pos: u64,
}

impl<'a> At<'a> {
    fn new(file: &'a File) -> Self {
        At { file, pos: 0 }
    }
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// The whole-file digest and size of everything `reader` yields, on the calling thread.
pub fn digest_reader(reader: impl Read) -> io::Result<(Digest, u64)> {
    let mut whole = Hasher::new();
    let size = for_each_piece(reader, |piece| whole.update(piece))?;
    Ok((whole.finish(), size))
}

/// The block digests of everything `reader` yields, and its size.
pub fn block_digests(reader: impl Read) -> io::Result<(BlockDigests, u64)> {
    let mut blocks = BlockHasher::default();
    let size = for_each_piece(reader, |piece| blocks.push(piece))?;
    Ok((blocks.finish(), size))
}

/// Hands `each` the input one [`PIECE`] at a time (the last may be shorter), from one buffer
/// small enough to stay in the core's cache between the read and the hash; returns the size.
fn for_each_piece(mut reader: impl Read, mut each: impl FnMut(&[u8])) -> io::Result<u64> {
    let mut size = 0u64;
    let mut buf = vec![0u8; PIECE];
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

    /// [`hash_file`] of a file holding `data`.
    fn hash_bytes(data: &[u8], progress: impl FnMut(u64)) -> ContentHash {
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, data).unwrap();
        hash_file(&file, progress).unwrap()
    }

    #[test]
    fn digests_match_a_one_shot_sha256() {
        let size = BLOCK_SIZE as usize * 2 + 17;
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let mut seen = 0;
        let h = hash_bytes(&data, |n| seen += n);
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
        let h = hash_bytes(&short, |_| {});
        assert_eq!(h.blocks.blocks, vec![sha256(&short)]);
        assert_eq!(h.blocks.chunks, None);
        assert_eq!(block_digest(None, &short), sha256(&short));
        let full = vec![7u8; BLOCK_SIZE as usize];
        let h = hash_bytes(&full, |_| {});
        assert_eq!(h.blocks.chunk_size(), Some(CHUNK_SIZE));
        assert_eq!(h.blocks.blocks, vec![block_digest(Some(CHUNK_SIZE), &full)]);
        assert_eq!(h.blocks.chunks.map(|c| c.len()), Some(16));
    }

    #[test]
    fn the_two_halves_of_a_pass_agree_with_the_pass() {
        let data: Vec<u8> = (0..BLOCK_SIZE as usize * 3 + 5)
            .map(|i| (i % 253) as u8)
            .collect();
        let whole = hash_bytes(&data, |_| {});
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

    /// Yields its bytes a few at a time, as a follower that catches up with its writer does.
    struct Dribble<'a>(&'a [u8]);

    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(1000);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn short_reads_give_the_digests_of_whole_pieces() {
        let data: Vec<u8> = (0..BLOCK_SIZE as usize + PIECE + 3)
            .map(|i| (i % 241) as u8)
            .collect();
        let whole = hash_bytes(&data, |_| {});
        assert_eq!(
            block_digests(Dribble(&data)).unwrap(),
            (whole.blocks, whole.size)
        );
        assert_eq!(
            digest_reader(Dribble(&data)).unwrap(),
            (sha256(&data), whole.size)
        );
    }

    #[test]
    fn a_block_read_from_a_file_has_the_digest_of_the_block() {
        let data: Vec<u8> = (0..BLOCK_SIZE as usize * 2 + 100)
            .map(|i| (i % 239) as u8)
            .collect();
        let h = hash_bytes(&data, |_| {});
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, &data).unwrap();
        let (second, d) =
            read_block(&file, BLOCK_SIZE, BLOCK_SIZE as usize, Some(CHUNK_SIZE)).unwrap();
        assert_eq!(second, &data[BLOCK_SIZE as usize..2 * BLOCK_SIZE as usize]);
        assert_eq!(d, h.blocks.blocks[1]);
        let (tail, d) = read_block(&file, 2 * BLOCK_SIZE, 100, Some(CHUNK_SIZE)).unwrap();
        assert_eq!((tail.len(), d), (100, h.blocks.blocks[2]));
        let (all, d) = read_block(&file, 0, data.len(), None).unwrap();
        assert_eq!((all, d), (data.clone(), sha256(&data)));
        assert!(read_block(&file, 2 * BLOCK_SIZE, 101, None).is_err());
    }

    #[test]
    fn empty_input_has_no_blocks() {
        let h = hash_bytes(&[], |_| {});
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
        let h = hash_bytes(&data, |_| {});
        assert_eq!(h.blocks.blocks.len(), 2);
        assert_eq!(
            h.blocks.chunks.unwrap().len(),
            2 * (BLOCK_SIZE / CHUNK_SIZE) as usize
        );
    }
}
