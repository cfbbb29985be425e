//! A single-producer, single-consumer ring of length-prefixed frames in shared memory.
//!
//! The producer owns `head` (where it writes next), the consumer owns `tail` (where it reads
//! next); both only grow, and a frame is a little-endian `u32` length then that many bytes.
//! The producer publishes a frame with a release store of `head`; the consumer takes it with
//! an acquire load, and frees the space with a release store of `tail`.
//!
//! The data is a slice of `AtomicU64` words, copied a word at a time: a frame starts and
//! ends anywhere, so its first and last words are merged with the bytes around it (which
//! only the producer writes: it loads the word and stores it back with its own bytes in).
//! Each end also keeps, in its own memory, the other end's position as it last read it
//! (`seen`): the consumer loads `head` only once the frames it knows of are taken, the
//! producer loads `tail` only when the space it knows of is too small, so the two processes
//! do not pass the positions' cache lines back and forth on every frame.
//!
//! The other side of the ring is another process, which may be buggy or hostile: every word
//! is read through an atomic, so garbage in the ring is never undefined behaviour here, and
//! every value read from it (the positions, a frame's length) is checked before use. A
//! violation is [`Corrupt`], and the daemon then treats the worker as crashed.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// The bytes of a frame's length prefix.
const PREFIX: usize = 4;

/// The bytes of a word of the ring's data.
pub const WORD: usize = 8;

/// The bytes of a cache line. In a ring of [`LINED`] bytes or more, the producer never
/// writes into the line that holds the consumer's position (the free space ends where that
/// line starts): a full ring would otherwise have the producer write each freed slot into
/// the very line the consumer reads next, and the line would cross CPUs on every frame.
pub const LINE: u64 = 64;

/// The smallest ring whose producer keeps off the consumer's cache line (smaller ones, in
/// tests, use every byte).
pub const LINED: usize = 1024;

/// A frame this small is gathered (prefix and payload) on the stack and written in one pass.
const GATHERED: usize = 64 - PREFIX;

/// The ring is full: the frame was not sent (never dropped silently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    /// The bytes the frame needed, prefix included.
    pub needed: usize,
    /// The bytes free (in a ring of [`LINED`] bytes or more, up to the start of the
    /// consumer's cache line).
    pub free: usize,
}

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ring full: {} bytes needed, {} free",
            self.needed, self.free
        )
    }
}

/// The ring's contents break its invariants: the other process wrote garbage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt(pub String);

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "corrupt ring: {}", self.0)
    }
}

/// The other end's position as this end last loaded it, kept in this end's own memory: for
/// the consumer `head`, for the producer `tail`. Only a hint: it is trusted while it is
/// consistent with this end's own position, and loaded again otherwise, so any value is
/// safe (an atomic only so that a channel stays `Sync`).
#[derive(Debug, Default)]
pub struct Seen {
    head: AtomicU64,
    tail: AtomicU64,
}

impl Seen {
    /// Hints of these positions (any values: they are checked before use).
    #[cfg(any(test, fuzzing, feature = "internals"))]
    pub fn new(head: u64, tail: u64) -> Seen {
        Seen {
            head: AtomicU64::new(head),
            tail: AtomicU64::new(tail),
        }
    }
}

/// A view of one ring: its two positions, its data, and what this end has seen of it.
#[derive(Clone, Copy)]
pub struct Ring<'a> {
    head: &'a AtomicU64,
    tail: &'a AtomicU64,
    words: &'a [AtomicU64],
    seen: &'a Seen,
}

impl<'a> Ring<'a> {
    /// A ring over these positions and data (the capacity is the data's bytes), with what
    /// this end has seen of it.
    pub fn new(
        head: &'a AtomicU64,
        tail: &'a AtomicU64,
        words: &'a [AtomicU64],
        seen: &'a Seen,
    ) -> Ring<'a> {
        Ring {
            head,
            tail,
            words,
            seen,
        }
    }

    /// The capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.words.len() * WORD
    }

    /// The largest frame payload that can ever fit (in an empty ring, wherever its
    /// position).
    pub fn max_frame(&self) -> usize {
        self.capacity() - PREFIX - (self.guard() - 1) as usize
    }

    /// The positions the free space ends on: the start of a cache line, or any byte.
    fn guard(&self) -> u64 {
        if self.capacity() >= LINED { LINE } else { 1 }
    }

    /// Where position `at` falls: the index of its word, and its byte in the word.
    fn locate(&self, at: u64) -> (usize, usize) {
        let byte = (at % self.capacity() as u64) as usize;
        (byte / WORD, byte % WORD)
    }

    /// Writes `bytes` at position `at` on, the bytes around them in their first and last
    /// words kept.
    fn copy_in(&self, at: u64, mut bytes: &[u8]) {
        let (mut w, offset) = self.locate(at);
        if offset != 0 && !bytes.is_empty() {
            let n = bytes.len().min(WORD - offset);
            self.merge(w, offset, &bytes[..n]);
            bytes = &bytes[n..];
            w = (w + 1) % self.words.len();
        }
        let mut chunks = bytes.chunks_exact(WORD);
        // The whole words, up to the end of the data and then from its start.
        let first = chunks.len().min(self.words.len() - w);
        for (word, chunk) in self.words[w..w + first].iter().zip(&mut chunks) {
            word.store(
                u64::from_ne_bytes(chunk.try_into().expect("a word")),
                Ordering::Relaxed,
            );
        }
        w = (w + first) % self.words.len();
        let second = chunks.len();
        for (word, chunk) in self.words[..second].iter().zip(&mut chunks) {
            word.store(
                u64::from_ne_bytes(chunk.try_into().expect("a word")),
                Ordering::Relaxed,
            );
        }
        w += second;
        let rest = chunks.remainder();
        if !rest.is_empty() {
            self.merge(w % self.words.len(), 0, rest);
        }
    }

    /// Writes `bytes` into word `w` from byte `offset` on, keeping its other bytes.
    fn merge(&self, w: usize, offset: usize, bytes: &[u8]) {
        let mut word = self.words[w].load(Ordering::Relaxed).to_ne_bytes();
        word[offset..offset + bytes.len()].copy_from_slice(bytes);
        self.words[w].store(u64::from_ne_bytes(word), Ordering::Relaxed);
    }

    /// Reads the bytes at position `at` on into `out`.
    fn copy_out(&self, at: u64, mut out: &mut [u8]) {
        let (mut w, offset) = self.locate(at);
        if offset != 0 && !out.is_empty() {
            let n = out.len().min(WORD - offset);
            let word = self.words[w].load(Ordering::Relaxed).to_ne_bytes();
            out[..n].copy_from_slice(&word[offset..offset + n]);
            out = &mut out[n..];
            w = (w + 1) % self.words.len();
        }
        let mut chunks = out.chunks_exact_mut(WORD);
        let first = chunks.len().min(self.words.len() - w);
        for (word, chunk) in self.words[w..w + first].iter().zip(&mut chunks) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
        }
        w = (w + first) % self.words.len();
        let second = chunks.len();
        for (word, chunk) in self.words[..second].iter().zip(&mut chunks) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
        }
        w += second;
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let word = self.words[w % self.words.len()].load(Ordering::Relaxed);
            rest.copy_from_slice(&word.to_ne_bytes()[..rest.len()]);
        }
    }

    /// Producer: appends one frame.
    ///
    /// # Errors
    ///
    /// [`Full`] when the frame does not fit now (or ever, if it is larger than
    /// [`Ring::max_frame`]); nothing is written then. [`Corrupt`] is folded into `Full`
    /// with no free space, since a producer cannot repair a consumer's garbage.
    pub fn push(&self, payload: &[u8]) -> Result<(), Full> {
        let capacity = self.capacity() as u64;
        let head = self.head.load(Ordering::Relaxed);
        let needed = PREFIX + payload.len();
        // Positions live in shared memory the other process can overwrite: wrapping
        // arithmetic, so garbage is detected downstream instead of overflowing here.
        let guard = self.guard();
        let fits = |tail: u64| {
            // The space up to the start of the consumer's line (see `LINE`).
            let used = head.wrapping_sub(tail - tail % guard);
            let free = capacity.saturating_sub(used) as usize;
            (used <= capacity && needed <= free, free)
        };
        if !fits(self.seen.tail.load(Ordering::Relaxed)).0 {
            let tail = self.tail.load(Ordering::Acquire);
            self.seen.tail.store(tail, Ordering::Relaxed);
            let (fits, free) = fits(tail);
            if !fits {
                return Err(Full { needed, free });
            }
        }
        let len = u32::try_from(payload.len()).map_err(|_| Full { needed, free: 0 })?;
        if payload.len() <= GATHERED {
            let mut frame = [0u8; PREFIX + GATHERED];
            frame[..PREFIX].copy_from_slice(&len.to_le_bytes());
            frame[PREFIX..needed].copy_from_slice(payload);
            self.copy_in(head, &frame[..needed]);
        } else {
            self.copy_in(head, &len.to_le_bytes());
            self.copy_in(head.wrapping_add(PREFIX as u64), payload);
        }
        self.head
            .store(head.wrapping_add(needed as u64), Ordering::Release);
        Ok(())
    }

    /// Consumer: takes the next frame into `out` (replacing its contents); `Ok(false)` when
    /// the ring is empty.
    ///
    /// # Errors
    ///
    /// [`Corrupt`] when the positions or the frame's length cannot be right; the ring is
    /// then left as it was.
    pub fn pop(&self, out: &mut Vec<u8>) -> Result<bool, Corrupt> {
        let tail = self.tail.load(Ordering::Relaxed);
        let hint = self.seen.head.load(Ordering::Relaxed);
        // The hint is used while it announces frames; once they are taken (or if it does
        // not check out: the positions were moved under it), the producer's position is
        // loaded again, and only that one can make the ring corrupt.
        let len = match (hint != tail).then(|| self.frame_at(tail, hint)) {
            Some(Ok(len)) => len,
            _ => {
                let head = self.head.load(Ordering::Acquire);
                self.seen.head.store(head, Ordering::Relaxed);
                if head == tail {
                    return Ok(false);
                }
                self.frame_at(tail, head)?
            }
        };
        // Replaced, not zeroed first: every byte of it is written below.
        out.truncate(len as usize);
        out.resize(len as usize, 0);
        self.copy_out(tail.wrapping_add(PREFIX as u64), out);
        self.tail
            .store(tail.wrapping_add(PREFIX as u64 + len), Ordering::Release);
        Ok(true)
    }

    /// The length of the frame at `tail`, checked against what `head` publishes.
    fn frame_at(&self, tail: u64, head: u64) -> Result<u64, Corrupt> {
        let capacity = self.capacity() as u64;
        let available = head.wrapping_sub(tail);
        if available > capacity {
            return Err(Corrupt(format!(
                "head {head} is {available} bytes past tail {tail}, capacity {capacity}"
            )));
        }
        if available < PREFIX as u64 {
            return Err(Corrupt(format!(
                "{available} bytes published, less than a frame header"
            )));
        }
        let mut prefix = [0u8; PREFIX];
        self.copy_out(tail, &mut prefix);
        let len = u64::from(u32::from_le_bytes(prefix));
        if PREFIX as u64 + len > available {
            return Err(Corrupt(format!(
                "a frame of {len} bytes, but only {available} bytes published"
            )));
        }
        Ok(len)
    }

    /// Consumer: whether no frame waits, by the producer's position as it is now (never
    /// the remembered one): what the consumer checks once more before it sleeps.
    pub fn is_empty(&self) -> bool {
        let head = self.head.load(Ordering::Acquire);
        self.seen.head.store(head, Ordering::Relaxed);
        head == self.tail.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Mem {
        head: AtomicU64,
        tail: AtomicU64,
        data: Vec<AtomicU64>,
        seen: Seen,
    }

    fn mem(cap: usize) -> Mem {
        Mem {
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            data: (0..cap / WORD).map(|_| AtomicU64::new(0)).collect(),
            seen: Seen::default(),
        }
    }

    impl Mem {
        fn ring(&self) -> Ring<'_> {
            Ring::new(&self.head, &self.tail, &self.data, &self.seen)
        }

        fn set_byte(&self, at: usize, byte: u8) {
            let mut word = self.data[at / WORD].load(Ordering::Relaxed).to_ne_bytes();
            word[at % WORD] = byte;
            self.data[at / WORD].store(u64::from_ne_bytes(word), Ordering::Relaxed);
        }
    }

    #[test]
    fn frames_come_out_in_order_across_wrap_around() {
        let m = mem(64);
        let ring = m.ring();
        let mut out = Vec::new();
        for round in 0..100u32 {
            let a = round.to_le_bytes();
            let b = vec![round as u8; (round % 20) as usize];
            ring.push(&a).unwrap();
            ring.push(&b).unwrap();
            assert!(ring.pop(&mut out).unwrap());
            assert_eq!(out, a);
            assert!(ring.pop(&mut out).unwrap());
            assert_eq!(out, b);
            assert!(!ring.pop(&mut out).unwrap());
        }
        assert!(
            m.head.load(Ordering::Relaxed) > 64 * 10,
            "wrapped many times"
        );
    }

    #[test]
    fn every_alignment_and_wrap_point_copies_exactly_the_frame() {
        // Frames at every byte of the words and across the end of the data: what comes out
        // is what went in, and the bytes around a frame (in its first and last words) keep
        // their values.
        const CAP: usize = 48;
        let m = mem(CAP);
        let mut out = Vec::new();
        for start in 0..CAP as u64 {
            for len in 0..=CAP - PREFIX {
                for (i, word) in m.data.iter().enumerate() {
                    word.store(0x0101_0101_0101_0101 * (i as u64 + 0x10), Ordering::Relaxed);
                }
                let before: Vec<u64> = m.data.iter().map(|w| w.load(Ordering::Relaxed)).collect();
                m.head.store(start, Ordering::Relaxed);
                m.tail.store(start, Ordering::Relaxed);
                let payload: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7) ^ 0xa5).collect();
                m.ring().push(&payload).unwrap();
                for at in 0..CAP {
                    let offset = (at + CAP - start as usize) % CAP;
                    if offset >= PREFIX + len {
                        let old = before[at / WORD].to_ne_bytes()[at % WORD];
                        let now =
                            m.data[at / WORD].load(Ordering::Relaxed).to_ne_bytes()[at % WORD];
                        assert_eq!(
                            now, old,
                            "byte {at} outside the frame at {start}, len {len}"
                        );
                    }
                }
                assert!(m.ring().pop(&mut out).unwrap());
                assert_eq!(out, payload, "start {start}, len {len}");
                assert_eq!(
                    m.tail.load(Ordering::Relaxed),
                    start + (PREFIX + len) as u64
                );
                assert!(!m.ring().pop(&mut out).unwrap());
            }
        }
    }

    #[test]
    fn a_large_ring_keeps_the_producer_off_the_consumers_cache_line() {
        let m = mem(LINED);
        let mut out = Vec::new();
        assert_eq!(m.ring().max_frame(), LINED - PREFIX - 63);
        // The consumer at byte 100: its line starts at 64, and the free space ends there.
        m.head.store(100, Ordering::Relaxed);
        m.tail.store(100, Ordering::Relaxed);
        let room = LINED - 36;
        assert_eq!(
            m.ring().push(&vec![1; room - PREFIX + 1]),
            Err(Full {
                needed: room + 1,
                free: room
            })
        );
        m.ring().push(&vec![2; room - PREFIX]).unwrap();
        assert!(m.ring().pop(&mut out).unwrap());
        assert_eq!(out, vec![2; room - PREFIX]);
        // On a line's first byte, every byte up to it is free; the largest frame always fits.
        m.ring().push(&vec![3; m.ring().max_frame()]).unwrap();
        assert!(m.ring().pop(&mut out).unwrap() && out.len() == m.ring().max_frame());
    }

    #[test]
    fn a_full_ring_refuses_and_keeps_what_it_has() {
        let m = mem(32);
        let ring = m.ring();
        ring.push(&[1; 10]).unwrap();
        ring.push(&[2; 10]).unwrap();
        assert_eq!(
            ring.push(&[3; 10]),
            Err(Full {
                needed: 14,
                free: 4
            })
        );
        assert_eq!(
            ring.push(&[0; 29]),
            Err(Full {
                needed: 33,
                free: 4
            })
        );
        let mut out = Vec::new();
        assert!(ring.pop(&mut out).unwrap());
        assert_eq!(out, [1; 10]);
        ring.push(&[3; 10]).unwrap();
        assert!(ring.pop(&mut out).unwrap() && out == [2; 10]);
        assert!(ring.pop(&mut out).unwrap() && out == [3; 10]);
        assert!(ring.is_empty());
    }

    #[test]
    fn garbage_positions_and_lengths_are_detected_not_trusted() {
        let m = mem(64);
        let ring = m.ring();
        let mut out = Vec::new();
        // head far past tail.
        m.head.store(1000, Ordering::Relaxed);
        assert!(ring.pop(&mut out).is_err());
        // head behind tail.
        m.head.store(5, Ordering::Relaxed);
        m.tail.store(9, Ordering::Relaxed);
        assert!(ring.pop(&mut out).is_err());
        // A frame announcing 4 GiB.
        m.head.store(8, Ordering::Relaxed);
        m.tail.store(0, Ordering::Relaxed);
        for i in 0..4 {
            m.set_byte(i, 0xff);
        }
        let e = ring.pop(&mut out).unwrap_err();
        assert!(e.0.contains("4294967295"), "{e}");
        assert_eq!(m.tail.load(Ordering::Relaxed), 0, "left as it was");
        assert!(
            out.capacity() < 1024,
            "nothing allocated for the announced size"
        );
        // Fewer bytes than a prefix.
        m.head.store(2, Ordering::Relaxed);
        assert!(ring.pop(&mut out).is_err());
    }

    #[test]
    fn a_hint_that_does_not_check_out_is_loaded_again() {
        let m = mem(64);
        let mut out = Vec::new();
        m.ring().push(&[1; 4]).unwrap();
        // The consumer remembers a head that announces 3 bytes: not a frame, so the real
        // head is loaded, and the frame it publishes is taken.
        m.seen.head.store(3, Ordering::Relaxed);
        assert!(m.ring().pop(&mut out).unwrap());
        assert_eq!(out, [1; 4]);
        // The producer remembers a tail far behind: the real one is loaded before refusing.
        m.seen.tail.store(u64::MAX / 2, Ordering::Relaxed);
        m.ring().push(&[2; 50]).unwrap();
        assert!(m.ring().pop(&mut out).unwrap() && out == [2; 50]);
    }

    #[test]
    fn positions_near_the_top_of_u64_wrap_instead_of_overflowing() {
        // Found by fuzzing: the other process can write any position.
        let m = mem(64);
        let ring = m.ring();
        m.tail.store(u64::MAX - 2, Ordering::Relaxed);
        m.head.store(u64::MAX - 2, Ordering::Relaxed);
        ring.push(&[7; 5]).unwrap();
        let mut out = Vec::new();
        assert!(ring.pop(&mut out).unwrap());
        assert_eq!(out, [7; 5]);
        assert_eq!(m.tail.load(Ordering::Relaxed), 6);
    }

    #[test]
    fn producer_and_consumer_on_two_threads() {
        let m = std::sync::Arc::new(mem(256));
        let producer = {
            let m = m.clone();
            std::thread::spawn(move || {
                for i in 0..20_000u32 {
                    while m.ring().push(&i.to_le_bytes()).is_err() {
                        std::hint::spin_loop();
                    }
                }
            })
        };
        let mut out = Vec::new();
        let mut next = 0u32;
        while next < 20_000 {
            if m.ring().pop(&mut out).unwrap() {
                assert_eq!(out, next.to_le_bytes());
                next += 1;
            }
        }
        producer.join().unwrap();
    }
}
