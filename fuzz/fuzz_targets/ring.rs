//! The worker channel's ring reader and frame decoder against corrupted memory.
//!
//! Input: byte 0 picks the capacity (16..=271 bytes); bytes 1..17 are the head and tail the
//! other process claims; the rest fills the ring's data, then feeds a model check.
//!
//! Properties:
//! - `pop` on arbitrary positions and data never panics and never allocates past the
//!   capacity; on success the frame fits the capacity and `tail` advanced by exactly its
//!   size, never past `head`; on error `tail` did not move;
//! - decoding any frame (either direction) never panics, and a decoded frame re-encodes to
//!   a frame that decodes to the same value; no frame is both a `Down` and an `Up`;
//! - a decoded payload never nests deeper than the one limit (`rpc::MAX_DEPTH`), and a
//!   payload nested as deep as the input's first byte says decodes after encoding exactly
//!   when the sender's check (`too_deep`) lets it go;
//! - pushing frames (sizes from the input) and popping them gives them back in order, and a
//!   push that does not fit is refused and changes nothing.
#![no_main]

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use daimon::worker::ring::Ring;
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
        assert!(Down::decode(frame).is_err(), "a frame is one direction's only");
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
    let capacity = 16 + input[0] as usize;
    let head = AtomicU64::new(u64::from_le_bytes(input[1..9].try_into().unwrap()));
    let tail = AtomicU64::new(u64::from_le_bytes(input[9..17].try_into().unwrap()));
    let rest = &input[17..];
    let data: Vec<AtomicU8> = (0..capacity)
        .map(|i| AtomicU8::new(rest.get(i).copied().unwrap_or(0)))
        .collect();
    let ring = Ring::new(&head, &tail, &data);
    let mut frame = Vec::new();
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
    let ring = Ring::new(&head, &tail, &data);
    let mut queue = std::collections::VecDeque::new();
    for chunk in rest.chunks(7) {
        let size = chunk[0] as usize % (capacity + 8);
        let payload: Vec<u8> = (0..size).map(|i| chunk[i % chunk.len()]).collect();
        let used = head.load(Ordering::Relaxed) - tail.load(Ordering::Relaxed);
        match ring.push(&payload) {
            Ok(()) => queue.push_back(payload),
            Err(full) => {
                assert!(
                    used + 4 + payload.len() as u64 > capacity as u64,
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
});
