//! MessagePack-RPC: `msgpack::Scanner`, `decode`, `encode_response`.
//!
//! Input: `[limit] [n] [n plan bytes] stream`. The request size limit is `16 << (limit % 9)`
//! (16 B to 4 KiB), small enough that fuzz inputs cross it.
//!
//! Properties:
//! - the frames found and how the stream ends (`TooLarge`, `Invalid`) are the same however
//!   the stream is split;
//! - no frame over the limit is ever `Complete`: a frame of `n` bytes is `Complete(n)` at limit
//!   `n` and `TooLarge` at `n - 1`, and at the fuzzed limit the scan is `TooLarge` exactly
//!   when the unlimited scan finds a frame longer than it;
//! - an `Incomplete` scan never holds more than the limit plus one item header;
//! - where rmp_serde decodes a frame, it stops exactly at the scanner's boundary;
//! - a decoded request or notification re-encoded with rmp_serde decodes to the same message;
//! - `encode_response` writes exactly one frame, `[1, msgid, error, result]`.
#![no_main]

use daimon::rpc::RpcError;
use daimon::rpc::msgpack::{self, Message, Scan, Scanner};
use daimon_fuzz::{UNLIMITED, check_msgpack_response, chunks, split_plan};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

/// The longest item header (with its fixed payload): fixext 16, 18 bytes.
const MAX_HEAD: usize = 18;

#[derive(Debug, PartialEq)]
enum End {
    /// The stream ran out (inside a frame, or between frames).
    Incomplete,
    TooLarge,
    Invalid(&'static str),
}

/// Scans the reads the way a connection does; returns the frames and how the stream ended.
fn scan(reads: &[(u8, &[u8])], max: usize) -> (Vec<Vec<u8>>, End) {
    let mut scanner = Scanner::default();
    let mut input = Vec::new();
    let mut frames = Vec::new();
    for (_, read) in reads {
        input.extend_from_slice(read);
        let mut start = 0;
        while start < input.len() {
            let buf = &input[start..];
            match scanner.scan(buf, max) {
                Scan::Complete(n) => {
                    assert!(
                        n > 0 && n <= buf.len(),
                        "Complete({n}) of {} bytes",
                        buf.len()
                    );
                    assert!(n <= max, "a frame of {n} bytes over the limit {max}");
                    frames.push(buf[..n].to_vec());
                    start += n;
                }
                Scan::Incomplete => {
                    assert!(
                        buf.len() < max + MAX_HEAD,
                        "{} bytes buffered for an incomplete frame, limit {max}",
                        buf.len()
                    );
                    break;
                }
                Scan::TooLarge => return (frames, End::TooLarge),
                Scan::Invalid(why) => return (frames, End::Invalid(why)),
            }
        }
        input.drain(..start);
    }
    (frames, End::Incomplete)
}

/// A frame's limit is exact.
fn check_limit_is_exact(frame: &[u8]) {
    let n = frame.len();
    assert_eq!(Scanner::default().scan(frame, n), Scan::Complete(n));
    assert_eq!(
        Scanner::default().scan(frame, n - 1),
        Scan::TooLarge,
        "{frame:x?}"
    );
}

/// rmp_serde reads a frame to exactly its end, when it reads it at all.
fn check_boundary_agrees_with_rmp(frame: &[u8]) {
    let mut de = rmp_serde::Deserializer::new(frame);
    if IgnoredAny::deserialize(&mut de).is_ok() {
        let left = de.get_ref().len();
        assert_eq!(
            left, 0,
            "rmp_serde stops {left} bytes before the scanner: {frame:x?}"
        );
    }
}

fn check_decode(frame: &[u8]) {
    let Ok(message) = msgpack::decode(frame) else {
        return;
    };
    let (again, response_id) = match &message {
        Message::Request {
            msgid,
            method,
            params,
        } => (
            rmp_serde::to_vec(&(0u8, msgid, method, params)).expect("encodes"),
            Some(*msgid),
        ),
        Message::Notification { method, params } => (
            rmp_serde::to_vec(&(2u8, method, params)).expect("encodes"),
            None,
        ),
        Message::Response => return,
    };
    assert_eq!(
        Scanner::default().scan(&again, UNLIMITED),
        Scan::Complete(again.len()),
        "a re-encoded message does not scan as one frame"
    );
    assert_eq!(
        msgpack::decode(&again).as_ref(),
        Ok(&message),
        "a re-encoded message decodes differently"
    );

    let (method, params) = match message {
        Message::Request { method, params, .. } | Message::Notification { method, params } => {
            (method, params)
        }
        Message::Response => unreachable!(),
    };
    let code = i64::from(response_id.unwrap_or(7)) - 40_000;
    for msgid in [response_id, None] {
        let mut out = Vec::new();
        msgpack::encode_response(&mut out, msgid, &Ok(params.clone()));
        let at = out.len();
        msgpack::encode_response(&mut out, msgid, &Err(RpcError::new(code, method.clone())));
        let first = Scanner::default().scan(&out, UNLIMITED);
        assert_eq!(first, Scan::Complete(at), "a response is not one frame");
        let second = Scanner::default().scan(&out[at..], UNLIMITED);
        assert_eq!(
            second,
            Scan::Complete(out.len() - at),
            "an error response is not one frame"
        );
        let id = msgid.map_or(Value::Null, Value::from);
        assert_eq!(
            check_msgpack_response(&out[..at]),
            json!([1, id, null, params]),
        );
        assert_eq!(
            check_msgpack_response(&out[at..]),
            json!([1, id, [code, method], null]),
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&limit, data)) = data.split_first() else {
        return;
    };
    let max = 16usize << (limit % 9);
    let (plan, stream) = split_plan(data);

    let whole = scan(&[(0, stream)], max);
    let split = scan(&chunks(plan, stream), max);
    assert_eq!(
        whole, split,
        "the frames found depend on how the stream is split"
    );

    // The limit: the same walk without a limit finds a frame over it exactly when the limited
    // walk says TooLarge.
    let (frames, end) = &whole;
    let rest: usize = frames.iter().map(Vec::len).sum();
    let unlimited = Scanner::default().scan(&stream[rest..], UNLIMITED);
    match (end, unlimited) {
        (End::TooLarge, Scan::Complete(n)) => assert!(n > max, "TooLarge for {n} <= {max}"),
        (End::TooLarge, Scan::Incomplete | Scan::Invalid(_)) => {}
        (_, Scan::Complete(n)) => panic!("a frame of {n} bytes missed at limit {max}: {end:?}"),
        (End::Incomplete, Scan::Incomplete) => {}
        (End::Invalid(a), Scan::Invalid(b)) => assert_eq!(*a, b),
        (end, unlimited) => panic!("limit {max}: {end:?}, unlimited: {unlimited:?}"),
    }

    for frame in frames {
        check_limit_is_exact(frame);
        check_boundary_agrees_with_rmp(frame);
        check_decode(frame);
    }
});
