//! A file being written that is a copy of a stored object, recognised by its first blocks and
//! checked block by block against the object's block digests as the writes arrive, instead of
//! being written into its spool (docs/MOUNT.md, "Copies of stored data are not spooled").
//!
//! A [`Matcher`] keeps the bytes written since the last verified block (at most
//! [`AHEAD`] of them: a writer that gets further ahead waits) and hands them to its own
//! thread, which hashes them chunk by chunk and compares each block's digest with the
//! object's. The write is answered as soon as its bytes are handed over, so the writer's next
//! write and the hashing of this one overlap, as the spool's [`super::spool`] follower
//! overlaps with the writes into the spool.
//!
//! A block that does not match, a write anywhere but at the end, or a file longer than the
//! object ends the match; the file's owner then copies the verified prefix from the object
//! into the spool, followed by the bytes kept ([`Matcher::stop`]), and goes on as for any
//! file. A file that ends exactly where the object ends, every block verified, is that object:
//! it is committed as a reference to it, and nothing is hashed or uploaded again.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bytes::Bytes;

use crate::cas::hashing::{self, Hasher};
use crate::cas::metadata::ObjectMetadata;

/// How far the writer may get ahead of the verified bytes before it waits for the hashing.
pub const AHEAD: u64 = 8 * hashing::BLOCK_SIZE;

/// A piece written: the bytes of one write, shared with the hashing thread.
type Piece = Arc<Vec<u8>>;

pub struct Matcher {
    meta: Arc<ObjectMetadata>,
    /// Bytes `0..spooled` are in the spool as well (written there before the match began).
    spooled: u64,
    /// Bytes written so far, all in order.
    end: u64,
    /// The pieces written, in order, from the first one the hashing has not finished with.
    kept: VecDeque<(u64, Piece)>,
    /// Buffers of pieces both sides are done with, for the next writes (at most [`AHEAD`]
    /// bytes of them): fresh memory for every write cost a page fault every 4 KiB.
    free: Vec<Vec<u8>>,
    progress: Arc<(Mutex<Progress>, Condvar)>,
    to_hasher: Option<Sender<Piece>>,
    hasher: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Progress {
    /// Bytes `0..verified` are the object's (whole blocks, or the whole object).
    verified: u64,
    /// A block did not match, or the hashing stopped: nothing more will be verified.
    over: bool,
}

impl Matcher {
    /// A match of `meta`'s object whose first `verified` bytes (whole blocks) are known to be
    /// the object's and are in the spool, as are `pending`, the bytes written after them.
    /// `meta` must be hashed in chunks (see [`crate::cas::hashing`]).
    pub fn new(meta: Arc<ObjectMetadata>, verified: u64, pending: &[u8]) -> Option<Matcher> {
        if meta.chunk_size.is_none() || !verified.is_multiple_of(meta.block_size) {
            return None;
        }
        let progress = Arc::new((
            Mutex::new(Progress {
                verified,
                over: false,
            }),
            Condvar::new(),
        ));
        let (tx, rx) = channel();
        let hasher = {
            let (meta, progress) = (meta.clone(), progress.clone());
            std::thread::Builder::new()
                .name("mltrack-match".into())
                .spawn(move || verify(&meta, verified, &rx, &progress))
                .ok()?
        };
        let mut m = Matcher {
            meta,
            spooled: verified + pending.len() as u64,
            end: verified,
            kept: VecDeque::new(),
            free: Vec::new(),
            progress,
            to_hasher: Some(tx),
            hasher: Some(hasher),
        };
        m.feed(pending).then_some(m)
    }

    pub fn meta(&self) -> &Arc<ObjectMetadata> {
        &self.meta
    }

    /// Where the next write continues the file.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Bytes `0..spooled()` are in the spool already.
    pub fn spooled(&self) -> u64 {
        self.spooled
    }

    fn progress(&self) -> MutexGuard<'_, Progress> {
        self.progress.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes `0..verified()` are the object's, as far as the hashing has got.
    pub fn verified(&self) -> u64 {
        self.progress().verified
    }

    /// Takes `data`, written at [`Self::end`], waiting while the writer is more than
    /// [`AHEAD`] bytes ahead of the hashing. False if the match is over: an earlier block did
    /// not match, or `data` runs past the object's end (then it is not taken).
    pub fn feed(&mut self, data: &[u8]) -> bool {
        if data.is_empty() {
            return !self.progress().over;
        }
        let Some(tx) = &self.to_hasher else {
            return false;
        };
        if self.end + data.len() as u64 > self.meta.size {
            return false;
        }
        let mut buf = self.free.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(data);
        let piece = Arc::new(buf);
        if tx.send(piece.clone()).is_err() {
            return false;
        }
        self.kept.push_back((self.end, piece));
        self.end += data.len() as u64;
        let (lock, cv) = &*self.progress;
        let mut p = lock.lock().unwrap_or_else(|p| p.into_inner());
        while !p.over && self.end - p.verified > AHEAD {
            p = cv.wait(p).unwrap_or_else(|p| p.into_inner());
        }
        let (verified, over) = (p.verified, p.over);
        drop(p);
        while self
            .kept
            .front()
            .is_some_and(|(at, b)| at + b.len() as u64 <= verified)
        {
            if let Some((_, piece)) = self.kept.pop_front()
                && let Ok(buf) = Arc::try_unwrap(piece)
                && self.free.iter().map(Vec::capacity).sum::<usize>() + buf.capacity()
                    <= AHEAD as usize
            {
                self.free.push(buf);
            }
        }
        !over
    }

    /// The bytes written in `from..to`, both at or after [`Self::verified`] as it was when the
    /// caller asked (the pieces kept cover everything from there).
    pub fn kept(&self, from: u64, to: u64) -> Bytes {
        let mut out = Vec::with_capacity(to.saturating_sub(from) as usize);
        for (at, piece) in &self.kept {
            let end = at + piece.len() as u64;
            if end <= from || *at >= to {
                continue;
            }
            let (a, b) = (from.max(*at) - at, to.min(end) - at);
            out.extend_from_slice(&piece[a as usize..b as usize]);
        }
        Bytes::from(out)
    }

    /// Waits for the hashing of everything written; true if the file is the object: every
    /// block verified and nothing written past its end (blocking, for up to [`AHEAD`] bytes
    /// of hashing).
    pub fn finish(&mut self) -> bool {
        self.to_hasher = None;
        if let Some(t) = self.hasher.take() {
            let _ = t.join();
        }
        let p = self.progress();
        !p.over && p.verified == self.meta.size && self.end == self.meta.size
    }

    /// Ends the match: the hashing stops where it is. Returns the verified length; the
    /// [`Self::pieces`] kept cover everything written from there on, and the caller writes
    /// them into the spool with the object's bytes before them. Stopping again returns the
    /// same.
    pub fn stop(&mut self) -> u64 {
        self.progress().over = true;
        self.to_hasher = None;
        if let Some(t) = self.hasher.take() {
            let _ = t.join();
        }
        self.verified()
    }

    /// The pieces written and kept, at their offsets, in order.
    pub fn pieces(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.kept.iter().map(|(at, p)| (*at, p.as_slice()))
    }
}

impl Drop for Matcher {
    fn drop(&mut self) {
        self.progress().over = true;
        self.to_hasher = None;
    }
}

/// The hashing thread: takes the pieces written from `start` (a block boundary) and verifies
/// each block as it completes, until the pieces end, a block does not match, or the match
/// is over.
fn verify(
    meta: &ObjectMetadata,
    start: u64,
    pieces: &Receiver<Piece>,
    progress: &(Mutex<Progress>, Condvar),
) {
    /// Ends the match if the thread panics, so that a writer waiting for it is let go.
    struct OverIfPanicking<'a>(&'a (Mutex<Progress>, Condvar));
    impl Drop for OverIfPanicking<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                self.0.0.lock().unwrap_or_else(|p| p.into_inner()).over = true;
                self.0.1.notify_all();
            }
        }
    }
    let _guard = OverIfPanicking(progress);
    let chunk = meta.chunk_size.unwrap_or(hashing::CHUNK_SIZE);
    let mut at = start;
    let mut partial: Vec<u8> = Vec::new();
    let mut root = Hasher::new();
    let report = |verified: Option<u64>| {
        let mut p = progress.0.lock().unwrap_or_else(|p| p.into_inner());
        match verified {
            Some(v) => p.verified = v,
            None => p.over = true,
        }
        let over = p.over;
        drop(p);
        progress.1.notify_all();
        !over
    };
    while let Ok(piece) = pieces.recv() {
        let mut data = piece.as_slice();
        while !data.is_empty() {
            if at >= meta.size {
                report(None);
                return;
            }
            // The chunk `at` is in (chunks never straddle blocks).
            let chunk_start = at / chunk * chunk;
            let chunk_end = (chunk_start + chunk).min(meta.size);
            let take = ((chunk_end - at) as usize).min(data.len());
            let (now, rest) = data.split_at(take);
            data = rest;
            let whole = at == chunk_start && at + take as u64 == chunk_end;
            at += take as u64;
            let digest = if whole {
                Some(hashing::sha256(now))
            } else {
                partial.extend_from_slice(now);
                (at == chunk_end).then(|| hashing::sha256(&std::mem::take(&mut partial)))
            };
            let Some(digest) = digest else { continue };
            root.update(digest.as_bytes());
            let block = (at - 1) / meta.block_size;
            if at == meta.block_range(block).end {
                let expected = meta.block_hashes.get(block as usize);
                if expected != Some(&std::mem::take(&mut root).finish()) || !report(Some(at)) {
                    report(None);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cas::hashing::{BLOCK_SIZE, CHUNK_SIZE};

    /// The metadata of `bytes` as mltrack stores it (blocks hashed in chunks).
    fn described(bytes: &[u8]) -> Arc<ObjectMetadata> {
        let blocks: Vec<_> = bytes
            .chunks(BLOCK_SIZE as usize)
            .map(|b| hashing::block_digest(Some(CHUNK_SIZE), b))
            .collect();
        let json = serde_json::json!({
            "hash": hashing::sha256(bytes).to_string(), "algorithm": "sha256",
            "size": bytes.len(), "format": "bin", "created_at": "2026-12-02T00:00:00Z",
            "name": null, "block_size": BLOCK_SIZE, "chunk_size": CHUNK_SIZE,
            "block_hashes": blocks.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec(&json).unwrap();
        let h = serde_json::from_value(json["hash"].clone()).unwrap();
        Arc::new(ObjectMetadata::parse(&h, &bytes).unwrap())
    }

    const MIB: usize = BLOCK_SIZE as usize;

    fn object() -> Vec<u8> {
        (0..(12 * MIB + 12_345))
            .map(|i| (i * 7 % 251) as u8)
            .collect()
    }

    /// Feeds `bytes[from..to]` in uneven pieces; false once the matcher says the match is over.
    fn feed(m: &mut Matcher, bytes: &[u8], from: usize, to: usize) -> bool {
        let mut at = from;
        for size in [1usize, 65_535, 131_072, 4096, 3, 1_000_000, 65_536]
            .iter()
            .cycle()
        {
            if at == to {
                return true;
            }
            let end = (at + size).min(to);
            if !m.feed(&bytes[at..end]) {
                return false;
            }
            assert_eq!(m.end(), end as u64);
            at = end;
        }
        unreachable!()
    }

    #[test]
    fn a_copy_written_in_uneven_pieces_is_the_object() {
        let bytes = object();
        let meta = described(&bytes);
        let mut m =
            Matcher::new(meta.clone(), 2 * BLOCK_SIZE, &bytes[2 * MIB..2 * MIB + 5]).unwrap();
        assert!(feed(&mut m, &bytes, 2 * MIB + 5, bytes.len()));
        assert!(m.finish());
        let mut m = Matcher::new(meta, BLOCK_SIZE, &[]).unwrap();
        assert!(feed(&mut m, &bytes, MIB, bytes.len()));
        assert!(
            !m.feed(b"x"),
            "a byte past the object's end is not the object's"
        );
    }

    #[test]
    fn a_changed_byte_ends_the_match_at_its_block() {
        let bytes = object();
        let mut copy = bytes.clone();
        copy[5 * MIB + 77] ^= 1;
        let mut m = Matcher::new(described(&bytes), BLOCK_SIZE, &[]).unwrap();
        // The writer learns of it within AHEAD bytes of the block.
        let fed = feed(&mut m, &copy, MIB, copy.len());
        assert!(!m.finish());
        assert_eq!(
            m.stop(),
            5 * BLOCK_SIZE,
            "blocks before the changed one are verified"
        );
        // What was kept is what was written, from the verified length on.
        let kept: Vec<u8> = m
            .pieces()
            .flat_map(|(at, p)| {
                let skip = (5 * BLOCK_SIZE).saturating_sub(at).min(p.len() as u64) as usize;
                p[skip..].to_vec()
            })
            .collect();
        let end = m.end() as usize;
        assert_eq!(kept, &copy[5 * MIB..end]);
        assert!(!fed || end == copy.len());
        assert_eq!(m.kept(5 * BLOCK_SIZE, m.end()), &copy[5 * MIB..end]);
    }

    #[test]
    fn a_shorter_file_is_not_the_object() {
        let bytes = object();
        let mut m = Matcher::new(described(&bytes), BLOCK_SIZE, &[]).unwrap();
        assert!(feed(&mut m, &bytes, MIB, bytes.len() - 1));
        assert!(!m.finish());
    }
}
