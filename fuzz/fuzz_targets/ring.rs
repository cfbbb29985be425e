//! The worker channel's ring reader and frame decoder against corrupted memory.
//!
//! Input: byte 0 picks the capacity (2..=34 words of 8 bytes, or with its top bit 128..=255
//! words: a ring large enough that the producer keeps off the consumer's cache line,
//! `ring::LINED`); bytes 1..17 are the head and
//! tail the other process claims; the rest fills the ring's data, then feeds a model check
//! and a run of the doorbell.
//!
//! Properties:
//! - `pop` on arbitrary positions and data never panics and never allocates past the
//!   capacity; on success the frame fits the capacity and `tail` advanced by exactly its
//!   size, never past `head` (as this end last loaded it); on error `tail` did not move;
//! - decoding any frame (either direction) never panics, and a decoded frame re-encodes to
//!   a frame that decodes to the same value; no frame is both a `Down` and an `Up`;
//! - a decoded payload never nests deeper than the one limit (`rpc::MAX_DEPTH`), and a
//!   payload nested as deep as the input's first byte says decodes after encoding exactly
//!   when the sender's check (`too_deep`) lets it go;
//! - pushing frames (sizes from the input) and popping them gives them back in order, and a
//!   push that does not fit is refused and changes nothing;
//! - the doorbell, driven by the input (sends, receives, wake-ups, and a hostile peer's
//!   garbage written to the flag or to the remembered positions), never changes which
//!   frames come out or their order; a consumer sleeps exactly when its ring is empty; and,
//!   while no garbage was written, a sleeping consumer with frames waiting always has a
//!   wake-up pending (no lost wake-up).
#![no_main]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use daimon::worker::doorbell;
use daimon::worker::ring::{LINE, LINED, Ring, Seen};
use daimon::worker::{Down, Up, too_deep};
use libfuzzer_sys::fuzz_target;

fn payload_of_up(up: &Up) -> Option<&serde_json::Value> {
    match up {
        Up::Message(_, p) => p.as_ref(),
        Up::Reply(_, Ok(v)) => Some(v),
        _ => None,
    }
}

/// What the sender checks is what the receiver decodes: a payload nested `depth` deep.
fn check_depth(depth: usize) {
    let mut v = serde_json::json!(0);
    for _ in 0..depth {
        v = serde_json::json!([v]);
    }
    let refused = too_deep(&v);
    assert_eq!(refused, depth > daimon::rpc::MAX_DEPTH);
    let frame = Up::Message("m".into(), Some(v)).encode();
    assert_eq!(Up::decode(&frame).is_ok(), !refused, "depth {depth}");
}

fn check_decode(frame: &[u8]) {
    if let Ok(up) = Up::decode(frame) {
        if let Some(p) = payload_of_up(&up) {
            assert!(!too_deep(p), "decoded a payload deeper than the limit");
        }
        assert_eq!(
            Up::decode(&up.encode()).unwrap(),
            up,
            "re-encoded frame decodes differently"
        );
        assert!(
            Down::decode(frame).is_err(),
            "a frame is one direction's only"
        );
    }
    if let Ok(down) = Down::decode(frame) {
        if let Down::Command(_, Some(p)) | Down::Call(_, _, Some(p)) = &down {
            assert!(!too_deep(p), "decoded a payload deeper than the limit");
        }
        assert_eq!(Down::decode(&down.encode()).unwrap(), down);
    }
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 17 {
        return;
    }
    // Deep values are slow to build: one input in eight checks a depth (60..=200).
    if input[1] % 8 == 0 {
        check_depth(usize::from(input[0]) % 141 + 60);
    }
    let words = match input[0] {
        small @ 0..0x80 => 2 + usize::from(small) % 33,
        large => usize::from(large),
    };
    let capacity = 8 * words;
    let head = AtomicU64::new(u64::from_le_bytes(input[1..9].try_into().unwrap()));
    let tail = AtomicU64::new(u64::from_le_bytes(input[9..17].try_into().unwrap()));
    let rest = &input[17..];
    let data: Vec<AtomicU64> = (0..words)
        .map(|i| {
            let mut word = [0u8; 8];
            for (j, b) in word.iter_mut().enumerate() {
                *b = rest.get(8 * i + j).copied().unwrap_or(0);
            }
            AtomicU64::new(u64::from_ne_bytes(word))
        })
        .collect();
    // This end's hints as if it had loaded the positions just now (a stale hint is checked
    // below, in the doorbell's run).
    let seen = Seen::new(head.load(Ordering::Relaxed), tail.load(Ordering::Relaxed));
    let ring = Ring::new(&head, &tail, &data, &seen);
    let mut frame = Vec::new();
    // With a hint of 0 against garbage positions, frames may be garbage too, but never
    // larger than the ring, and the tail moves by exactly what was taken.
    let zero = Seen::default();
    let (zero_head, zero_tail) = (
        AtomicU64::new(head.load(Ordering::Relaxed)),
        AtomicU64::new(tail.load(Ordering::Relaxed)),
    );
    let zero_ring = Ring::new(&zero_head, &zero_tail, &data, &zero);
    for _ in 0..64 {
        let before = zero_tail.load(Ordering::Relaxed);
        match zero_ring.pop(&mut frame) {
            Ok(true) => {
                assert!(frame.len() <= capacity - 4, "a frame larger than the ring");
                let after = zero_tail.load(Ordering::Relaxed);
                assert_eq!(after.wrapping_sub(before), 4 + frame.len() as u64);
            }
            Ok(false) => break,
            Err(_) => {
                assert_eq!(zero_tail.load(Ordering::Relaxed), before);
                break;
            }
        }
    }
    for _ in 0..64 {
        let before = tail.load(Ordering::Relaxed);
        match ring.pop(&mut frame) {
            Ok(false) => break,
            Ok(true) => {
                assert!(frame.len() <= capacity - 4, "a frame larger than the ring");
                let after = tail.load(Ordering::Relaxed);
                assert_eq!(after.wrapping_sub(before), 4 + frame.len() as u64);
                assert!(head.load(Ordering::Relaxed).wrapping_sub(after) <= capacity as u64);
                check_decode(&frame);
            }
            Err(_) => {
                assert_eq!(
                    tail.load(Ordering::Relaxed),
                    before,
                    "an error moved the tail"
                );
                assert!(
                    frame.capacity() <= capacity,
                    "allocated for an announced size"
                );
                break;
            }
        }
    }
    check_decode(rest);

    // Model check on a clean ring: frames cut from the input come back in order.
    let (head, tail) = (AtomicU64::new(0), AtomicU64::new(0));
    let seen = Seen::default();
    let ring = Ring::new(&head, &tail, &data, &seen);
    let mut queue = VecDeque::new();
    let guard = if capacity >= LINED { LINE } else { 1 };
    for chunk in rest.chunks(7) {
        let size = chunk[0] as usize % (capacity + 8);
        let payload: Vec<u8> = (0..size).map(|i| chunk[i % chunk.len()]).collect();
        let used = head.load(Ordering::Relaxed) - tail.load(Ordering::Relaxed);
        // The free space ends where the consumer's cache line starts, in a large ring.
        let t = tail.load(Ordering::Relaxed);
        let guarded = head.load(Ordering::Relaxed) - (t - t % guard);
        match ring.push(&payload) {
            Ok(()) => {
                assert!(
                    guarded + 4 + payload.len() as u64 <= capacity as u64,
                    "written over the consumer's line"
                );
                queue.push_back(payload);
            }
            Err(full) => {
                assert!(
                    guarded + 4 + payload.len() as u64 > capacity as u64,
                    "refused though it fits"
                );
                assert_eq!(full.needed, 4 + payload.len());
                assert_eq!(
                    head.load(Ordering::Relaxed) - tail.load(Ordering::Relaxed),
                    used
                );
                // Make room: pop one and compare.
                if let Some(expected) = queue.pop_front() {
                    assert!(ring.pop(&mut frame).unwrap());
                    assert_eq!(frame, expected);
                }
            }
        }
    }
    while let Some(expected) = queue.pop_front() {
        assert!(ring.pop(&mut frame).unwrap());
        assert_eq!(frame, expected);
    }
    assert!(!ring.pop(&mut frame).unwrap());
    doorbell_run(&data, rest);
});

/// The two ends of a ring and its doorbell driven one call at a time by `ops`, as
/// `Channel` calls them: send is push then `must_ring`; receive is pop, and on an empty ring
/// `sleep`, then pop again if a frame came in; a wake-up is `wake` then taking the bytes.
fn doorbell_run(data: &[AtomicU64], ops: &[u8]) {
    let (head, tail, flag) = (
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU32::new(doorbell::SLEEPING),
    );
    let (mut producer, mut consumer) = (Seen::default(), Seen::default());
    let mut queue = VecDeque::new();
    let (mut bell, mut asleep, mut garbage, mut sent) = (0u32, true, false, 0u32);
    let mut frame = Vec::new();
    let mut bytes = ops.iter().copied();
    while let Some(op) = bytes.next() {
        let arg = bytes.next().unwrap_or(0);
        let sender = Ring::new(&head, &tail, data, &producer);
        let receiver = Ring::new(&head, &tail, data, &consumer);
        match op % 6 {
            0 => {
                let payload: Vec<u8> = (0..arg % 24).map(|_| sent as u8).collect();
                if sender.push(&payload).is_ok() {
                    sent += 1;
                    queue.push_back(payload);
                    let before = flag.load(Ordering::Relaxed);
                    let rang = doorbell::must_ring(&flag);
                    assert_eq!(rang, before != doorbell::AWAKE, "rings iff not awake");
                    bell += u32::from(rang);
                }
            }
            1 => {
                asleep = false;
                let mut got = receiver.pop(&mut frame).unwrap();
                if !got {
                    assert!(queue.is_empty(), "empty with frames sent");
                    asleep = doorbell::sleep(&flag, &receiver);
                    assert_eq!(asleep, queue.is_empty(), "sleeps iff empty");
                    if !asleep {
                        got = receiver.pop(&mut frame).unwrap();
                    }
                }
                if got {
                    assert_eq!(Some(&frame), queue.pop_front().as_ref(), "in order");
                }
            }
            // Woken by the descriptor (or by anything else, with arg odd).
            2 if bell > 0 || arg % 2 == 1 => {
                doorbell::wake(&flag);
                bell = 0;
                asleep = false;
            }
            2 => {}
            3 => {
                garbage = true;
                let value = u32::from_le_bytes([arg, arg, bytes.next().unwrap_or(0), 0]);
                flag.store(value % 4 + (value >> 8), Ordering::Relaxed);
            }
            // A hostile peer's own wake-up.
            4 => bell += 1,
            // Stale hints, as a handle of either end may hold: the consumer's anywhere from
            // behind its tail (another handle read further) to the head, the producer's
            // anywhere behind the tail.
            _ => {
                let (h, t) = (head.load(Ordering::Relaxed), tail.load(Ordering::Relaxed));
                let back = u64::from(arg) * 3;
                if arg % 2 == 0 {
                    producer = Seen::new(0, t.saturating_sub(back));
                } else if arg % 4 == 1 {
                    consumer = Seen::new(t + back % (h - t + 1), 0);
                } else {
                    consumer = Seen::new(t.wrapping_sub(back + 1), 0);
                }
            }
        }
        if !garbage && asleep && !queue.is_empty() {
            assert!(
                bell > 0,
                "a sleeping consumer with frames waiting and no wake-up"
            );
        }
    }
    // Whatever happened, the frames still come out, in order.
    let receiver = Ring::new(&head, &tail, data, &consumer);
    while let Some(expected) = queue.pop_front() {
        assert!(receiver.pop(&mut frame).unwrap());
        assert_eq!(frame, expected);
    }
    assert!(!receiver.pop(&mut frame).unwrap());
}
