//! The client's side of the wire: encoding requests, cutting what the daemon sends into
//! messages, telling replies from notifications, decoding replies.

use std::fmt;
use std::io::{self, ErrorKind, Read};

use serde::Serialize;
use serde_json::Value;

use super::{MAX_HEADER_LINE, MAX_HEADERS, MAX_REPLY, Protocol};
use crate::error::{Error, Result};
use crate::rpc::msgpack::{self, Scan, Scanner};

/// A JSON-RPC request or notification, its keys in the specification's order.
#[derive(Serialize)]
struct JsonRequest<'a> {
    jsonrpc: &'static str,
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
}

/// The bytes of a request (with an id) or a notification (without), framed for `protocol`.
pub(super) fn encode(
    protocol: Protocol,
    method: &str,
    params: Value,
    id: Option<u64>,
) -> Result<Vec<u8>> {
    let params = match params {
        Value::Null => None,
        p @ (Value::Array(_) | Value::Object(_)) => Some(p),
        p => Some(Value::Array(vec![p])),
    };
    let bad = |e: &dyn fmt::Display| Error::Protocol(format!("encoding a request: {e}"));
    let json = |params, id| {
        let request = JsonRequest {
            jsonrpc: "2.0",
            method,
            params,
            id,
        };
        serde_json::to_vec(&request).map_err(|e| bad(&e))
    };
    match protocol {
        Protocol::Json => {
            let mut bytes = json(params, id)?;
            bytes.push(b'\n');
            Ok(bytes)
        }
        Protocol::ContentLength => {
            let body = json(params, id)?;
            let mut bytes = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
            bytes.extend_from_slice(&body);
            Ok(bytes)
        }
        Protocol::MessagePack => {
            let params = params.unwrap_or_else(|| Value::Array(Vec::new()));
            match id {
                Some(id) => rmp_serde::to_vec(&(0u8, id, method, params)),
                None => rmp_serde::to_vec(&(2u8, method, params)),
            }
            .map_err(|e| bad(&e))
        }
    }
}

/// An error of the framing, reported as [`Error::Protocol`].
fn malformed(message: String) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, message)
}

/// How many bytes one read asks for.
const CHUNK: usize = 64 << 10;

/// Cuts the bytes read from the daemon into messages (replies and notifications): a JSON
/// line (without its `\n`), a `Content-Length` body, or one MessagePack value.
///
/// Every byte read stays here until a message is complete, so a read that times out
/// between two messages, or in the middle of one, loses nothing: the next read goes on
/// where it stopped. That is what lets [`super::Client::next_event`] wait for a while and
/// then give up without putting the connection out of step.
#[derive(Debug)]
pub(super) struct Framer {
    protocol: Protocol,
    /// Bytes read and not yet handed out.
    buf: Vec<u8>,
    /// JSON: how far `buf` is known to hold no `\n`.
    scanned: usize,
    /// MessagePack: where the value being read ends, found incrementally.
    scanner: Scanner,
}

impl Framer {
    pub(super) fn new(protocol: Protocol) -> Framer {
        Framer {
            protocol,
            buf: Vec::new(),
            scanned: 0,
            scanner: Scanner::default(),
        }
    }

    /// Reads until a whole message is there and returns it. Framing violations (a message
    /// over 64 MiB, bad headers, bytes that are not MessagePack) are `InvalidData` errors,
    /// the daemon closing the connection `UnexpectedEof`.
    pub(super) fn read(&mut self, reader: &mut impl Read) -> io::Result<Vec<u8>> {
        loop {
            if let Some(frame) = self.next()? {
                return Ok(frame);
            }
            self.fill(reader)?;
        }
    }

    /// Appends what one read brings.
    fn fill(&mut self, reader: &mut impl Read) -> io::Result<()> {
        let mut chunk = [0; CHUNK];
        let n = loop {
            match reader.read(&mut chunk) {
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// The first whole message in the buffer, taken out of it; `None` until more is read.
    fn next(&mut self) -> io::Result<Option<Vec<u8>>> {
        let too_large = || malformed(format!("reply larger than {MAX_REPLY} bytes"));
        match self.protocol {
            Protocol::Json => loop {
                let Some(at) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') else {
                    self.scanned = self.buf.len();
                    if self.buf.len() > MAX_REPLY {
                        return Err(too_large());
                    }
                    return Ok(None);
                };
                let end = self.scanned + at;
                if end > MAX_REPLY {
                    return Err(too_large());
                }
                let mut line = self.take(end + 1);
                line.pop();
                if !line.iter().all(u8::is_ascii_whitespace) {
                    return Ok(Some(line));
                }
            },
            Protocol::ContentLength => {
                let Some((body_at, length)) = self.headers()? else {
                    return Ok(None);
                };
                if length > MAX_REPLY {
                    return Err(too_large());
                }
                if self.buf.len() < body_at + length {
                    return Ok(None);
                }
                let mut frame = self.take(body_at + length);
                frame.drain(..body_at);
                Ok(Some(frame))
            }
            Protocol::MessagePack => match self.scanner.scan(&self.buf, MAX_REPLY) {
                Scan::Complete(end) => Ok(Some(self.take(end))),
                Scan::Incomplete => Ok(None),
                Scan::TooLarge => Err(too_large()),
                Scan::Invalid(why) => Err(malformed(format!("bad MessagePack: {why}"))),
            },
        }
    }

    /// The first `n` bytes of the buffer, taken out of it.
    fn take(&mut self, n: usize) -> Vec<u8> {
        let rest = self.buf.split_off(n);
        self.scanned = 0;
        std::mem::replace(&mut self.buf, rest)
    }

    /// Reads the `Content-Length` headers at the start of the buffer: where the body starts
    /// and how long it is, or `None` until the blank line that ends them has arrived.
    fn headers(&self) -> io::Result<Option<(usize, usize)>> {
        let mut length = None;
        let mut at = 0;
        for _ in 0..MAX_HEADERS {
            let rest = &self.buf[at..];
            let window = &rest[..rest.len().min(MAX_HEADER_LINE as usize)];
            let Some(end) = window.iter().position(|&b| b == b'\n') else {
                return if window.len() >= MAX_HEADER_LINE as usize {
                    Err(malformed("reply header line too long".into()))
                } else {
                    Ok(None)
                };
            };
            let line = String::from_utf8_lossy(&rest[..end]);
            let line = line.trim_end_matches('\r');
            at += end + 1;
            if line.is_empty() {
                let length = length
                    .ok_or_else(|| malformed("reply without a Content-Length header".into()))?;
                return Ok(Some((at, length)));
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| malformed(format!("malformed reply header '{line}'")))?;
            if name.trim().eq_ignore_ascii_case("content-length") {
                let value = value.trim();
                length = Some(value.parse::<usize>().map_err(|_| {
                    malformed(format!("malformed Content-Length '{value}' in a reply"))
                })?);
            }
        }
        Err(malformed(format!(
            "more than {MAX_HEADERS} header lines in a reply"
        )))
    }
}

/// A message from the daemon, decoded.
#[derive(Debug)]
pub(super) enum Incoming {
    /// A reply: its whole decoded form, still to be checked by [`reply_result`].
    Reply(Value),
    /// A notification (JSON-RPC without an id, MessagePack-RPC type 2).
    Notification { method: String, params: Value },
}

/// Decodes a message and tells a notification from a reply. `what` names what was being
/// waited for, for the error.
pub(super) fn decode(protocol: Protocol, frame: &[u8], what: &str) -> Result<Incoming> {
    let bad = |why: String| Error::Protocol(format!("{what}: {why}"));
    if protocol == Protocol::MessagePack {
        let message = msgpack::decode_value(frame)
            .map_err(|e| bad(format!("undecodable MessagePack: {e}")))?;
        if let Value::Array(parts) = &message
            && parts.len() == 3
            && parts[0] == 2
            && let Value::String(method) = &parts[1]
        {
            let method = method.clone();
            let Value::Array(mut parts) = message else {
                unreachable!("matched above")
            };
            return Ok(Incoming::Notification {
                method,
                params: parts.pop().unwrap_or_default(),
            });
        }
        return Ok(Incoming::Reply(message));
    }
    let mut message: Value =
        serde_json::from_slice(frame).map_err(|e| bad(format!("bad JSON: {e}")))?;
    if let Value::Object(m) = &mut message
        && !m.contains_key("id")
        && let Some(Value::String(method)) = m.remove("method")
    {
        return Ok(Incoming::Notification {
            method,
            params: m.remove("params").unwrap_or_default(),
        });
    }
    Ok(Incoming::Reply(message))
}

/// Checks a decoded reply's id and returns its result, or the error it carries.
pub(super) fn reply_result(
    protocol: Protocol,
    reply: Value,
    id: u64,
    method: &str,
) -> Result<Value> {
    let bad = |what: String| Error::Protocol(format!("reply to {method}: {what}"));
    if protocol == Protocol::MessagePack {
        let Value::Array(mut parts) = reply else {
            return Err(bad(format!(
                "expected [1, msgid, error, result], got {reply}"
            )));
        };
        if parts.len() != 4 || parts[0] != 1 {
            return Err(bad(format!(
                "expected [1, msgid, error, result], got {}",
                Value::Array(parts)
            )));
        }
        let (result, error) = (
            parts.pop().unwrap_or_default(),
            parts.pop().unwrap_or_default(),
        );
        check_id(&parts[1], id, !error.is_null()).map_err(bad)?;
        return match error {
            Value::Null => Ok(result),
            Value::Array(mut e) if e.len() >= 2 => {
                let data = (e.len() > 2).then(|| e.swap_remove(2));
                let message = e.swap_remove(1);
                Err(rpc_error(&e[0], message, data).unwrap_or_else(bad))
            }
            Value::Object(mut e) => Err(rpc_error(
                &e.remove("code").unwrap_or_default(),
                e.remove("message").unwrap_or_default(),
                e.remove("data"),
            )
            .unwrap_or_else(bad)),
            other => Err(bad(format!("malformed error {other}"))),
        };
    }
    let Value::Object(mut reply) = reply else {
        return Err(bad(format!("expected an object, got {reply}")));
    };
    let error = reply.remove("error").filter(|e| !e.is_null());
    check_id(reply.get("id").unwrap_or(&Value::Null), id, error.is_some()).map_err(bad)?;
    match error {
        Some(Value::Object(mut e)) => Err(rpc_error(
            &e.remove("code").unwrap_or_default(),
            e.remove("message").unwrap_or_default(),
            e.remove("data"),
        )
        .unwrap_or_else(bad)),
        Some(other) => Err(bad(format!("malformed error {other}"))),
        None => reply
            .remove("result")
            .ok_or_else(|| bad("neither result nor error".into())),
    }
}

/// Checks a reply's id; a null id is accepted on an error the daemon could not tie to a
/// request (a parse error, a request over `maxrequestsize`).
fn check_id(got: &Value, want: u64, is_error: bool) -> Result<(), String> {
    if got.as_u64() == Some(want) || (got.is_null() && is_error) {
        Ok(())
    } else {
        Err(format!("id {got} does not match the request's id {want}"))
    }
}

/// The [`Error::Rpc`] of an error reply, or a description of what is malformed in it.
fn rpc_error(code: &Value, message: Value, data: Option<Value>) -> Result<Error, String> {
    match (code.as_i64(), message) {
        (Some(code), Value::String(message)) => Ok(Error::Rpc {
            code,
            message,
            data: data.filter(|d| !d.is_null()),
        }),
        (_, message) => Err(format!("malformed error: code {code}, message {message}")),
    }
}
