//! The connection state machine, fed arbitrary bytes in arbitrary reads.
//!
//! Input: `[flags] [n] [n plan bytes] stream`. `flags`: bit 0 a secret (`pw`), bit 1 a
//! refused admission, bits 2-4 `max_request` (32 B to 64 KiB), bits 5-7 `max_output`. Each
//! plan byte is a read size and (top two bits) how much output the client reads before it:
//! nothing, half, all, one byte. The stand-in engine echoes `params[0]` for `echo`.
//!
//! Properties:
//! - once closing, a connection stays closing and produces no more output;
//! - the server's loop is followed: bytes are fed only while the connection wants input (not
//!   while `max_output` waits unsent), requests held meanwhile are resumed once the client
//!   reads; unsent output never passes twice `max_output` (plus one error), and no read makes
//!   it produce more than ~64x its bytes;
//! - everything sent is well-formed for the connection's protocol: newline-terminated JSON-RPC
//!   replies (or batches of them); `Content-Length: N\r\n\r\n` then exactly N bytes of such
//!   JSON; or whole MessagePack frames `[1, msgid, error, result]`; nothing before a protocol
//!   is chosen;
//! - a refused connection never reaches the engine, sends at most one message, and closes
//!   after its first request;
//! - with a secret, the engine is reached only if `system.auth` was called;
//! - the messages sent are the same however the stream is split into reads (all but a last
//!   error before closing, whose wording may depend on where the limit was noticed).
#![no_main]

use std::sync::Arc;

use daimon::rpc::RpcError;
use daimon::socket::framing::Protocol;
use daimon::socket::{Admission, Connection, Limits};
use daimon_fuzz::{
    Echo, Sent, chunks, content_length_messages, json_lines, msgpack_messages, read_some,
    split_plan,
};
use libfuzzer_sys::fuzz_target;

const MAX_REQUEST: [usize; 8] = [32, 64, 128, 256, 512, 1024, 4096, 65536];
const MAX_OUTPUT: [usize; 8] = [64, 256, 1024, 4096, 16384, 65536, 1 << 20, 1 << 24];

/// How much one byte of input may grow into output (`{}` is 2 bytes, its error reply ~110),
/// plus one last long error.
const AMPLIFICATION: usize = 64;
const SLACK: usize = 1024;

struct Run {
    sent: Vec<u8>,
    closing: bool,
    calls: usize,
    protocol: Option<Protocol>,
}

fn connection(flags: u8) -> Connection {
    let limits = Limits {
        max_request: MAX_REQUEST[usize::from(flags >> 2) & 7],
        max_output: MAX_OUTPUT[usize::from(flags >> 5) & 7],
        max_batch: 16,
        max_values: 512,
    };
    let admission = if flags & 2 != 0 {
        Admission::Refused(RpcError::server_error("too many connections"))
    } else {
        Admission::Open
    };
    let secret = (flags & 1 != 0).then(|| Arc::from("pw"));
    Connection::new("fuzz".into(), limits, admission, secret)
}

/// Feeds the reads as the server does: a read waits in the socket while the connection's
/// output is full; after the client reads, held requests are resumed. At the end the client
/// reads everything, so every request is answered.
fn run(flags: u8, reads: &[(u8, &[u8])]) -> Run {
    let max_request = MAX_REQUEST[usize::from(flags >> 2) & 7];
    let max_output = MAX_OUTPUT[usize::from(flags >> 5) & 7];
    let mut conn = connection(flags);
    let mut engine = Echo::default();
    let mut sent = Vec::new();
    let mut waiting: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut was_closing = false;
    let mut feed = |conn: &mut Connection, engine: &mut Echo, waiting: &mut Vec<u8>| {
        if conn.wants_input() && !waiting.is_empty() {
            conn.receive(waiting, engine, 1);
            fed += waiting.len();
            waiting.clear();
        }
        fed
    };
    for &(b, read) in reads {
        read_some(&mut conn, b, &mut sent);
        assert_eq!(
            conn.is_closing(),
            was_closing,
            "consume_output changed closing"
        );
        conn.resume(&mut engine, 1);
        let before = conn.output().len();
        waiting.extend_from_slice(read);
        let chunk = waiting.len();
        let fed = feed(&mut conn, &mut engine, &mut waiting);
        if was_closing {
            assert!(conn.is_closing(), "a closing connection reopened");
            assert_eq!(conn.output().len(), before, "output after closing");
        }
        was_closing = conn.is_closing();
        assert!(
            conn.pending_input() <= max_request + daimon::socket::framing::MAX_HEADERS + chunk,
            "{} bytes of input buffered, over the request limit",
            conn.pending_input()
        );
        assert!(
            conn.output().len() <= 2 * max_output + SLACK,
            "{} bytes unsent, over twice max_output",
            conn.output().len()
        );
        let produced = sent.len() + conn.output().len();
        assert!(
            produced <= AMPLIFICATION * fed + SLACK,
            "{produced} bytes of output for {fed} bytes of input"
        );
    }
    // The client reads to the end.
    loop {
        sent.extend_from_slice(conn.output());
        conn.consume_output(conn.output().len());
        if conn.wants_input() && !waiting.is_empty() {
            feed(&mut conn, &mut engine, &mut waiting);
            continue;
        }
        if !conn.resume(&mut engine, 1) {
            break;
        }
    }
    sent.extend_from_slice(conn.output());
    Run {
        sent,
        closing: conn.is_closing(),
        calls: engine.calls,
        protocol: conn.protocol(),
    }
}

fn messages(run: &Run) -> Vec<Sent> {
    match run.protocol {
        None => {
            assert!(run.sent.is_empty(), "output before a protocol was chosen");
            Vec::new()
        }
        Some(Protocol::Json) => json_lines(&run.sent),
        Some(Protocol::ContentLength) => content_length_messages(&run.sent),
        Some(Protocol::MessagePack) => msgpack_messages(&run.sent),
    }
}

/// Whether a message is a lone error reply with this code.
fn is_error(message: &Sent, code: i64) -> bool {
    let error = match message {
        Sent::Json(replies) if replies.len() == 1 => &replies[0]["error"],
        Sent::Json(_) => return false,
        Sent::MessagePack(v) => &v[2],
    };
    error["code"] == code || error[0] == code
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let (plan, stream) = split_plan(data);
    let reads = chunks(plan, stream);

    let served = run(flags, &reads);
    let sent = messages(&served);
    if flags & 2 != 0 {
        assert_eq!(served.calls, 0, "a refused connection reached the engine");
        assert!(
            sent.len() <= 1,
            "a refused connection answered {} messages",
            sent.len()
        );
    }
    if flags & 1 != 0 && served.calls > 0 && !stream.contains(&b'\\') {
        // (A JSON escape could spell the method otherwise: only checked without one.)
        assert!(
            stream.windows(11).any(|w| w == b"system.auth"),
            "the engine was reached without system.auth"
        );
    }

    // The same stream in one read, and in the planned reads with the client reading nothing
    // until the end: the same messages (what waits unsent only changes when they are sent).
    let whole = run(flags, &[(0, stream)]);
    let split = run(flags, &reads.iter().map(|&(_, r)| (0, r)).collect::<Vec<_>>());
    assert_eq!(whole.protocol, split.protocol);
    assert_eq!(
        whole.closing, split.closing,
        "closing depends on how the stream is split"
    );
    assert_eq!(
        whole.calls, split.calls,
        "engine calls depend on how the stream is split"
    );
    let mut a = messages(&whole);
    let mut b = messages(&split);
    if whole.closing {
        // The last error before closing may say "too large" or "not JSON", depending on
        // whether the limit or the bad byte was seen first.
        let last_error = |m: &[Sent]| {
            m.last().is_some_and(|m| {
                [RpcError::PARSE_ERROR, RpcError::INVALID_REQUEST]
                    .iter()
                    .any(|&c| is_error(m, c))
            })
        };
        if last_error(&a) && last_error(&b) {
            a.pop();
            b.pop();
        }
    }
    assert_eq!(a, b, "the replies depend on how the stream is split");
});
