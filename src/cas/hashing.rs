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
//! SHA-256 is `ring`'s, whose assembly uses SHA-NI or AVX2 where the CPU has them (the `sha2`
//! crate's portable code ran at a third of `openssl dgst -sha256` on a CPU without SHA-NI).

use std::io::{self, Read};
use std::sync::mpsc;

use ring::digest::{Context, SHA256};

use crate::ids::Digest;

/// The block size of new objects. Stored in each object's metadata, so it can change later
/// without invalidating objects written before.
pub const BLOCK_SIZE: u64 = 1024 * 1024;

/// The digests of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentHash {
    pub digest: Digest,
    pub size: u64,
    pub block_size: u64,
    pub blocks: Vec<Digest>,
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
        let block_hasher = scope.spawn(move || rx.iter().map(|b| sha256(&b)).collect::<Vec<_>>());
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

/// The digest of each [`BLOCK_SIZE`] block of everything `reader` yields, and its size.
pub fn block_digests(reader: impl Read) -> io::Result<(Vec<Digest>, u64)> {
    let mut blocks = Vec::new();
    let size = for_each_block(reader, |block| blocks.push(sha256(block)))?;
    Ok((blocks, size))
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
        assert_eq!(h.blocks.len(), 3);
        assert_eq!(h.blocks[0], sha256(&data[..BLOCK_SIZE as usize]));
        assert_eq!(h.blocks[2], sha256(&data[2 * BLOCK_SIZE as usize..]));
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
        assert_eq!(block_digests(&[][..]).unwrap(), (Vec::new(), 0));
    }

    #[test]
    fn empty_input_has_no_blocks() {
        let h = hash_reader(&[][..], |_| {}).unwrap();
        assert_eq!(h.size, 0);
        assert!(h.blocks.is_empty());
        assert_eq!(
            h.digest.to_string(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn exact_multiple_of_the_block_size_has_no_empty_tail_block() {
        let data = vec![1u8; BLOCK_SIZE as usize * 2];
        assert_eq!(hash_reader(&data[..], |_| {}).unwrap().blocks.len(), 2);
    }
}
