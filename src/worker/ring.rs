//! A single-producer, single-consumer ring of length-prefixed frames in shared memory.
//!
//! The producer owns `head` (where it writes next), the consumer owns `tail` (where it reads
//! next); both only grow, and a frame is a little-endian `u32` length then that many bytes.
//! The producer publishes a frame with a release store of `head`; the consumer takes it with
//! an acquire load, and frees the space with a release store of `tail`.
//!
//! The other side of the ring is another process, which may be buggy or hostile: every byte
//! is read through an atomic, so garbage in the ring is never undefined behaviour here, and
//! every value read from it (the positions, a frame's length) is checked before use. A
//! violation is [`Corrupt`], and the daemon then treats the worker as crashed.

use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// The bytes of a frame's length prefix.
const PREFIX: usize = 4;

/// The ring is full: the frame was not sent (never dropped silently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    /// The bytes the frame needed, prefix included.
    pub needed: usize,
    /// The bytes free.
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

/// A view of one ring: its two positions and its data.
#[derive(Clone, Copy)]
pub struct Ring<'a> {
    head: &'a AtomicU64,
    tail: &'a AtomicU64,
    data: &'a [AtomicU8],
}

impl<'a> Ring<'a> {
    /// A ring over these positions and data. The data's length is the capacity.
    pub fn new(head: &'a AtomicU64, tail: &'a AtomicU64, data: &'a [AtomicU8]) -> Ring<'a> {
        Ring { head, tail, data }
    }

    /// The capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.data.len()
    }

    /// The largest frame payload that can ever fit.
    pub fn max_frame(&self) -> usize {
        self.capacity() - PREFIX
    }

    fn copy_in(&self, at: u64, bytes: &[u8]) {
        let cap = self.data.len();
        let start = (at % cap as u64) as usize;
        for (i, &b) in bytes.iter().enumerate() {
            self.data[(start + i) % cap].store(b, Ordering::Relaxed);
        }
    }

    fn copy_out(&self, at: u64, out: &mut [u8]) {
        let cap = self.data.len();
        let start = (at % cap as u64) as usize;
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.data[(start + i) % cap].load(Ordering::Relaxed);
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
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Acquire);
        let used = head.wrapping_sub(tail);
        let free = (self.capacity() as u64).saturating_sub(used) as usize;
        let needed = PREFIX + payload.len();
        if used > self.capacity() as u64 || needed > free {
            return Err(Full { needed, free });
        }
        let len = u32::try_from(payload.len()).map_err(|_| Full { needed, free })?;
        // Positions live in shared memory the other process can overwrite: wrapping
        // arithmetic, so garbage is detected downstream instead of overflowing here.
        self.copy_in(head, &len.to_le_bytes());
        self.copy_in(head.wrapping_add(PREFIX as u64), payload);
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
        let head = self.head.load(Ordering::Acquire);
        if head == tail {
            return Ok(false);
        }
        let available = head.wrapping_sub(tail);
        if available > self.capacity() as u64 {
            return Err(Corrupt(format!(
                "head {head} is {available} bytes past tail {tail}, capacity {}",
                self.capacity()
            )));
        }
        if available < PREFIX as u64 {
            return Err(Corrupt(format!(
                "{available} bytes published, less than a frame header"
            )));
        }
        let mut prefix = [0u8; PREFIX];
        self.copy_out(tail, &mut prefix);
        let len = u32::from_le_bytes(prefix) as u64;
        if PREFIX as u64 + len > available {
            return Err(Corrupt(format!(
                "a frame of {len} bytes, but only {available} bytes published"
            )));
        }
        out.clear();
        out.resize(len as usize, 0);
        self.copy_out(tail.wrapping_add(PREFIX as u64), out);
        self.tail
            .store(tail.wrapping_add(PREFIX as u64 + len), Ordering::Release);
        Ok(true)
    }

    /// Whether a frame waits.
    #[cfg(any(test, fuzzing, feature = "internals"))]
    pub fn is_empty(&self) -> bool {
        self.head.load(Ordering::Acquire) == self.tail.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Mem {
        head: AtomicU64,
        tail: AtomicU64,
        data: Vec<AtomicU8>,
    }

    fn mem(cap: usize) -> Mem {
        Mem {
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            data: (0..cap).map(|_| AtomicU8::new(0)).collect(),
        }
    }

    impl Mem {
        fn ring(&self) -> Ring<'_> {
            Ring::new(&self.head, &self.tail, &self.data)
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
        for (i, b) in [0xff, 0xff, 0xff, 0xff].iter().enumerate() {
            m.data[i].store(*b, Ordering::Relaxed);
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
