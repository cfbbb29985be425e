//! The doorbell of one direction of a channel: the producer wakes the consumer only when
//! the consumer sleeps.
//!
//! Each ring has a flag in the shared header, written by its consumer: [`SLEEPING`] when it
//! is about to wait for its wake-up descriptor, [`AWAKE`] once woken. The producer, after
//! publishing a frame, sends a wake-up byte only if the flag says the consumer sleeps, and
//! takes the flag back to `AWAKE` as it does (one wake-up per sleep, however many frames
//! follow until the consumer is up). The protocol, in the order each end runs it:
//!
//! ```text
//! producer                              consumer
//! publish the frame (release head)      ring empty: flag = SLEEPING
//! fence(SeqCst)                         fence(SeqCst)
//! flag != AWAKE and swap(AWAKE) != AWAKE: ring still empty? wait on the descriptor
//!     send a wake-up byte               (else: flag = AWAKE, take the frame)
//!                                       woken: flag = AWAKE, take the wake-up bytes,
//!                                       drain until empty (or wake itself)
//! ```
//!
//! No wake-up is lost: the two fences are ordered one way or the other in the single total
//! order of `SeqCst` operations. If the producer's fence comes first, the consumer's
//! re-check, after its own fence, sees the frame published before the producer's; if the
//! consumer's comes first, the producer's load of the flag, after its fence, sees
//! `SLEEPING` or a later value: `AWAKE` stored by the consumer since it woke (it drains again
//! before it sleeps again, and will see the frame then). The model in `doorbell/model.rs`
//! runs every interleaving of these steps, store buffers included, and finds the lost
//! wake-up when either fence, or the re-check, is taken out.
//!
//! "Sleeping" means "will not look at the ring again before its descriptor is readable":
//! a reactor that sets the flag and then runs timers or a worker's long `tick` before it
//! waits is covered, since the wake-up byte makes the descriptor readable meanwhile, and
//! the next wait returns at once. A consumer that stops draining with frames left (its
//! budget for the turn is spent) stays `AWAKE` and wakes itself instead.
//!
//! The other process can write any value to any flag. The daemon never reads its own flag
//! (the one of the ring it consumes) to decide anything (only to skip a store that would
//! change nothing): it stores it, and sleeps exactly when the ring it reads is empty, as
//! before; a worker that clears it only withholds its
//! own wake-ups, which it could always do by not writing. The daemon reads the worker's
//! flag as a producer, and any value but `AWAKE` rings: garbage costs a wake-up byte sent
//! without blocking (the sockets take `MSG_DONTWAIT`), never a stall.

use std::sync::atomic::{AtomicU32, Ordering, fence};

use super::ring::Ring;

/// The consumer is up, and will look at the ring again without being woken.
pub const AWAKE: u32 = 0;

/// The consumer is about to wait (or waits) for its wake-up descriptor. Any value but
/// [`AWAKE`] counts as this one.
pub const SLEEPING: u32 = 1;

/// Producer, after publishing a frame: whether to send the consumer a wake-up byte (taking
/// the flag back to [`AWAKE`] if so).
pub fn must_ring(flag: &AtomicU32) -> bool {
    // Orders the release of the frame before the load of the flag (see the module docs).
    fence(Ordering::SeqCst);
    flag.load(Ordering::Relaxed) != AWAKE && flag.swap(AWAKE, Ordering::Relaxed) != AWAKE
}

/// Consumer, having found `ring` empty: marks itself [`SLEEPING`] and looks at the ring once
/// more. True: still empty, wait for the wake-up descriptor. False: a frame came in
/// between; the flag is [`AWAKE`] again and the frame is to be taken.
pub fn sleep(flag: &AtomicU32, ring: &Ring<'_>) -> bool {
    flag.store(SLEEPING, Ordering::Relaxed);
    // Orders the store of the flag before the load of the producer's position.
    fence(Ordering::SeqCst);
    if ring.is_empty() {
        return true;
    }
    flag.store(AWAKE, Ordering::Relaxed);
    false
}

/// Consumer, woken (before it takes its wake-up bytes and drains): marks itself [`AWAKE`],
/// so frames sent while it drains ring nothing.
pub fn wake(flag: &AtomicU32) {
    if flag.load(Ordering::Relaxed) != AWAKE {
        flag.store(AWAKE, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod model;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::ring::Seen;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn a_sleeping_consumer_is_rung_once_and_garbage_counts_as_sleeping() {
        let flag = AtomicU32::new(SLEEPING);
        assert!(must_ring(&flag));
        assert!(!must_ring(&flag), "once per sleep");
        for garbage in [2, 0xdead_beef, u32::MAX] {
            flag.store(garbage, Ordering::Relaxed);
            assert!(must_ring(&flag), "{garbage:#x} rings");
            assert_eq!(flag.load(Ordering::Relaxed), AWAKE);
        }
        flag.store(7, Ordering::Relaxed);
        wake(&flag);
        assert!(!must_ring(&flag));
    }

    #[test]
    fn a_consumer_sleeps_only_on_an_empty_ring() {
        let (head, tail, seen) = (AtomicU64::new(0), AtomicU64::new(0), Seen::default());
        let words: Vec<AtomicU64> = (0..8).map(|_| AtomicU64::new(0)).collect();
        let ring = Ring::new(&head, &tail, &words, &seen);
        let flag = AtomicU32::new(AWAKE);
        assert!(sleep(&flag, &ring));
        assert_eq!(flag.load(Ordering::Relaxed), SLEEPING);
        ring.push(b"x").unwrap();
        assert!(!sleep(&flag, &ring), "a frame came in: stay up");
        assert_eq!(flag.load(Ordering::Relaxed), AWAKE);
    }
}
