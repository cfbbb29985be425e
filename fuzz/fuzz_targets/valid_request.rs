//! A valid request first on a fresh connection always gets exactly its reply.
//!
//! The input (through `arbitrary`) chooses the request: its id, its string param, its
//! protocol (newline-delimited JSON, Content-Length, MessagePack with a str or bin method
//! name), its layout (compact or pretty, a batch of one, leading whitespace, extra headers);
//! then whatever bytes follow it, how the whole is split into reads, and how much the client
//! reads between them. Whatever follows, the first message sent back is the reply to the
//! request: `echo` returns its param, with the request's id.
#![no_main]

use arbitrary::Arbitrary;
use daimon::socket::{Admission, Connection, Limits};
use daimon_fuzz::{
    Echo, Sent, chunk_size, content_length_messages, json_lines, msgpack_messages, read_some,
};
use libfuzzer_sys::fuzz_target;
use serde::{Serialize, Serializer};
use serde_json::{Number, Value, json};

#[derive(Arbitrary, Debug)]
enum Id {
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Null,
}

#[derive(Arbitrary, Debug)]
enum Framing {
    /// Newline-delimited (or plain concatenated) JSON.
    Json {
        pretty: bool,
        batch: bool,
        /// Leading whitespace: this many of space, tab, CR, LF (cycled).
        lead: u8,
        newline: bool,
    },
    /// `Content-Length` headers.
    ContentLength {
        batch: bool,
        lowercase: bool,
        content_type: bool,
    },
    /// MessagePack-RPC.
    MessagePack { msgid: u32, bin_method: bool },
}

#[derive(Arbitrary, Debug)]
struct Input {
    id: Id,
    param: String,
    framing: Framing,
    /// Bytes after the request: anything at all.
    after: Vec<u8>,
    /// Read sizes and client reads, as in the `connection` target.
    plan: Vec<u8>,
}

/// A MessagePack bin value.
struct Bin<'a>(&'a [u8]);

impl Serialize for Bin<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

fn id_value(id: &Id) -> Value {
    match id {
        Id::Int(n) => Value::from(*n),
        Id::UInt(n) => Value::from(*n),
        Id::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Id::Str(s) => Value::from(s.as_str()),
        Id::Null => Value::Null,
    }
}

fuzz_target!(|input: Input| {
    let id = id_value(&input.id);
    let param = Value::from(input.param.as_str());
    let request = json!({"jsonrpc": "2.0", "method": "echo", "params": [param], "id": id});
    let reply = json!({"jsonrpc": "2.0", "result": param, "id": id});

    let (mut stream, expected) = match input.framing {
        Framing::Json {
            pretty,
            batch,
            lead,
            newline,
        } => {
            let request = if batch { json!([request]) } else { request };
            let mut stream: Vec<u8> = b" \t\r\n"
                .iter()
                .cycle()
                .take(usize::from(lead % 8))
                .copied()
                .collect();
            let body = if pretty {
                serde_json::to_vec_pretty(&request)
            } else {
                serde_json::to_vec(&request)
            };
            stream.extend_from_slice(&body.unwrap());
            if newline {
                stream.push(b'\n');
            }
            (stream, Sent::Json(vec![reply]))
        }
        Framing::ContentLength {
            batch,
            lowercase,
            content_type,
        } => {
            let request = if batch { json!([request]) } else { request };
            let body = serde_json::to_vec(&request).unwrap();
            let name = if lowercase {
                "content-length"
            } else {
                "Content-Length"
            };
            let mut head = format!("{name}: {}\r\n", body.len());
            if content_type {
                head.push_str("Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n");
            }
            head.push_str("\r\n");
            let mut stream = head.into_bytes();
            stream.extend_from_slice(&body);
            (stream, Sent::Json(vec![reply]))
        }
        Framing::MessagePack { msgid, bin_method } => {
            let stream = if bin_method {
                rmp_serde::to_vec(&(0u8, msgid, Bin(b"echo"), (&input.param,)))
            } else {
                rmp_serde::to_vec(&(0u8, msgid, "echo", (&input.param,)))
            };
            (
                stream.unwrap(),
                Sent::MessagePack(json!([1, msgid, null, param])),
            )
        }
    };
    let request_len = stream.len();
    stream.extend_from_slice(&input.after);

    let limits = Limits {
        max_request: 1 << 20,
        max_output: 1 << 20,
        max_batch: 1 << 16,
        max_values: 1 << 20,
    };
    let mut conn = Connection::new("fuzz".into(), limits, Admission::Open, None);
    let mut engine = Echo::default();
    let mut sent = Vec::new();
    let mut rest = &stream[..];
    let mut i = 0;
    while !rest.is_empty() {
        let b = if input.plan.is_empty() {
            0
        } else {
            input.plan[i % input.plan.len()]
        };
        let size = if input.plan.is_empty() {
            rest.len()
        } else {
            chunk_size(b)
        };
        let (read, tail) = rest.split_at(size.min(rest.len()));
        read_some(&mut conn, b, &mut sent);
        conn.receive(read, &mut engine, 1);
        rest = tail;
        i += 1;
        if stream.len() - rest.len() >= request_len {
            // The whole request is in: its reply is out, whatever comes next.
            assert!(
                sent.len() + conn.output().len() > 0,
                "no reply once the whole request arrived"
            );
        }
        if conn.is_closing() {
            break;
        }
    }
    sent.extend_from_slice(conn.output());
    let messages = match conn.protocol() {
        Some(daimon::socket::framing::Protocol::Json) => json_lines(&sent),
        Some(daimon::socket::framing::Protocol::ContentLength) => content_length_messages(&sent),
        Some(daimon::socket::framing::Protocol::MessagePack) => msgpack_messages(&sent),
        None => panic!("no protocol chosen for a valid request"),
    };
    assert!(engine.calls >= 1, "the request never reached the engine");
    assert_eq!(
        messages.first(),
        Some(&expected),
        "the first reply is not the request's"
    );
});
