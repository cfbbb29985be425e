//! What the fuzz targets share: how an input is cut into reads, the stand-in engine, and
//! the checks that a connection's output is well-formed for its protocol.

use daimon::rpc::msgpack::{Scan, Scanner};
use daimon::rpc::{Engine, Meta, RpcError};
use serde_json::Value;

/// A limit so large that only the bytes present bound a MessagePack scan.
pub const UNLIMITED: usize = 1 << 40;

/// Splits a target's input into a chunk plan and the byte stream: the low 4 bits of the
/// first byte say how many plan bytes follow; the rest is the stream. An empty plan means
/// "everything in one read".
pub fn split_plan(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return (&[], &[]);
    };
    let n = usize::from(n & 0x0f).min(rest.len());
    rest.split_at(n)
}

/// The size of a read chosen by a plan byte: 1 to 993 bytes, finely grained at the small
/// end, where splits inside tokens and headers happen.
pub fn chunk_size(b: u8) -> usize {
    let k = usize::from(b & 0x3f);
    1 + k * k / 4
}

/// Cuts `stream` into reads whose sizes cycle through `plan` (one read for an empty plan).
/// Yields each read with its plan byte (0 for the single read).
pub fn chunks<'a>(plan: &'a [u8], stream: &'a [u8]) -> Vec<(u8, &'a [u8])> {
    if plan.is_empty() {
        return vec![(0, stream)];
    }
    let mut out = Vec::new();
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let b = plan[i % plan.len()];
        let (chunk, tail) = rest.split_at(chunk_size(b).min(rest.len()));
        out.push((b, chunk));
        rest = tail;
        i += 1;
    }
    out
}

/// JSON's own whitespace (RFC 8259): space, tab, line feed, carriage return.
/// Takes output from `conn` as a peer reading part of it would (`b`'s top two bits pick
/// none, half, all, or one byte) and appends it to `sent`.
pub fn read_some(conn: &mut daimon::socket::Connection, b: u8, sent: &mut Vec<u8>) {
    let unread = conn.output().len();
    let n = match b >> 6 {
        0 => 0,
        1 => unread / 2,
        2 => unread,
        _ => unread.min(1),
    };
    sent.extend_from_slice(&conn.output()[..n]);
    conn.consume_output(n);
    assert_eq!(
        conn.output().len(),
        unread - n,
        "consume_output took the wrong amount"
    );
}

pub fn is_json_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The stand-in engine: `echo` returns `params[0]` (null when absent), every other method
/// is not found. It never panics, and counts its calls.
#[derive(Debug, Default)]
pub struct Echo {
    /// Calls that reached the engine.
    pub calls: usize,
}

impl Engine for Echo {
    fn call(&mut self, _: &Meta<'_>, method: &str, params: Value) -> Result<Value, RpcError> {
        self.calls += 1;
        match method {
            "echo" => Ok(params.get(0).cloned().unwrap_or(Value::Null)),
            _ => Err(RpcError::method_not_found(method)),
        }
    }
}

/// Checks one JSON-RPC 2.0 reply object: `"jsonrpc": "2.0"`, an `id` (string, number or
/// null), and exactly one of `result` and `error` (`{code: int, message: string, data?}`).
pub fn check_json_reply(reply: &Value) {
    let Value::Object(o) = reply else {
        panic!("a reply that is not an object: {reply}");
    };
    assert_eq!(o.get("jsonrpc"), Some(&Value::from("2.0")), "{reply}");
    let id = o
        .get("id")
        .unwrap_or_else(|| panic!("a reply without id: {reply}"));
    assert!(
        matches!(id, Value::Null | Value::String(_) | Value::Number(_)),
        "{reply}"
    );
    match (o.get("result"), o.get("error")) {
        (Some(_), None) => assert_eq!(o.len(), 3, "{reply}"),
        (None, Some(Value::Object(e))) => {
            assert_eq!(o.len(), 3, "{reply}");
            assert!(e.get("code").is_some_and(Value::is_i64), "{reply}");
            assert!(e.get("message").is_some_and(Value::is_string), "{reply}");
            assert!(
                e.keys()
                    .all(|k| matches!(k.as_str(), "code" | "message" | "data"))
            );
        }
        _ => panic!("a reply needs exactly one of result and error: {reply}"),
    }
}

/// Checks a JSON-RPC message sent to the client (one reply, or a non-empty batch of them)
/// and returns its replies.
pub fn check_json_message(bytes: &[u8]) -> Vec<Value> {
    let value: Value = serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "a reply that is not JSON ({e}): {:?}",
            String::from_utf8_lossy(bytes)
        )
    });
    match value {
        Value::Array(batch) => {
            assert!(!batch.is_empty(), "an empty batch reply");
            batch.iter().for_each(check_json_reply);
            batch
        }
        one => {
            check_json_reply(&one);
            vec![one]
        }
    }
}

/// One message the connection sent, as its protocol frames it.
#[derive(Debug, Clone, PartialEq)]
pub enum Sent {
    /// A JSON-RPC reply or batch of replies (both JSON framings).
    Json(Vec<Value>),
    /// A MessagePack-RPC response `[1, msgid, error, result]`, as a JSON value.
    MessagePack(Value),
}

/// Splits newline-delimited JSON output into messages, checking each.
pub fn json_lines(out: &[u8]) -> Vec<Sent> {
    assert!(
        out.is_empty() || out.ends_with(b"\n"),
        "JSON output that does not end with a newline: {:?}",
        String::from_utf8_lossy(out)
    );
    out.split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| Sent::Json(check_json_message(line)))
        .collect()
}

/// Splits `Content-Length` framed output into messages, checking the headers and that each
/// body is exactly the announced length.
pub fn content_length_messages(mut out: &[u8]) -> Vec<Sent> {
    const PREFIX: &[u8] = b"Content-Length: ";
    let mut sent = Vec::new();
    while !out.is_empty() {
        assert!(
            out.starts_with(PREFIX),
            "a reply without its header: {:?}",
            String::from_utf8_lossy(out)
        );
        let rest = &out[PREFIX.len()..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        assert!(digits > 0, "{:?}", String::from_utf8_lossy(out));
        let len: usize = std::str::from_utf8(&rest[..digits])
            .unwrap()
            .parse()
            .unwrap();
        let rest = &rest[digits..];
        assert!(
            rest.starts_with(b"\r\n\r\n"),
            "{:?}",
            String::from_utf8_lossy(out)
        );
        let rest = &rest[4..];
        assert!(rest.len() >= len, "a body shorter than its Content-Length");
        sent.push(Sent::Json(check_json_message(&rest[..len])));
        out = &rest[len..];
    }
    sent
}

/// Checks one MessagePack-RPC response frame: `[1, msgid, error, result]` with msgid nil or
/// a u32, error nil or `[code, message]`, and result nil when error is not.
pub fn check_msgpack_response(frame: &[u8]) -> Value {
    let value: Value = rmp_serde::from_slice(frame)
        .unwrap_or_else(|e| panic!("a response that does not decode ({e}): {frame:x?}"));
    let Value::Array(items) = &value else {
        panic!("a response that is not an array: {value}");
    };
    assert_eq!(items.len(), 4, "{value}");
    assert_eq!(items[0], Value::from(1), "{value}");
    assert!(
        items[1].is_null() || items[1].as_u64().is_some_and(|n| n <= u64::from(u32::MAX)),
        "{value}"
    );
    match &items[2] {
        Value::Null => {}
        Value::Array(e) => {
            assert_eq!(e.len(), 2, "{value}");
            assert!(e[0].is_i64() && e[1].is_string(), "{value}");
            assert!(items[3].is_null(), "an error with a result: {value}");
        }
        _ => panic!("an error that is neither nil nor [code, message]: {value}"),
    }
    value
}

/// Splits MessagePack output into response frames (the scanner must cover it exactly),
/// checking each.
pub fn msgpack_messages(mut out: &[u8]) -> Vec<Sent> {
    let mut sent = Vec::new();
    while !out.is_empty() {
        match Scanner::default().scan(out, UNLIMITED) {
            Scan::Complete(n) => {
                sent.push(Sent::MessagePack(check_msgpack_response(&out[..n])));
                out = &out[n..];
            }
            other => panic!("output that is not whole MessagePack frames ({other:?}): {out:x?}"),
        }
    }
    sent
}
