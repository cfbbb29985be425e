//! The client's side of the wire: encoding requests, reading reply frames, decoding replies.

use std::fmt;
use std::io::{self, BufRead, ErrorKind, Read};

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

/// An error of the reply's framing, reported as [`Error::Protocol`].
fn malformed(message: String) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, message)
}

/// Reads the bytes of one reply: a JSON line (without its `\n`), a `Content-Length` body,
/// or one MessagePack value. Framing violations are `InvalidData` errors.
pub(super) fn read_frame(
    reader: &mut impl BufRead,
    protocol: Protocol,
    pending: &mut Vec<u8>,
) -> io::Result<Vec<u8>> {
    let too_large = || malformed(format!("reply larger than {MAX_REPLY} bytes"));
    match protocol {
        Protocol::Json => loop {
            let mut line = Vec::new();
            reader
                .take(MAX_REPLY as u64 + 1)
                .read_until(b'\n', &mut line)?;
            if line.pop() != Some(b'\n') {
                return Err(if line.len() >= MAX_REPLY {
                    too_large()
                } else {
                    ErrorKind::UnexpectedEof.into()
                });
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                return Ok(line);
            }
        },
        Protocol::ContentLength => {
            let mut length = None;
            for _ in 0..MAX_HEADERS {
                let mut line = Vec::new();
                reader.take(MAX_HEADER_LINE).read_until(b'\n', &mut line)?;
                if line.last() != Some(&b'\n') {
                    return Err(if line.len() as u64 >= MAX_HEADER_LINE {
                        malformed("reply header line too long".into())
                    } else {
                        ErrorKind::UnexpectedEof.into()
                    });
                }
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\r', '\n']);
                if line.is_empty() {
                    let length = length
                        .ok_or_else(|| malformed("reply without a Content-Length header".into()))?;
                    if length > MAX_REPLY {
                        return Err(too_large());
                    }
                    let mut body = Vec::new();
                    reader.take(length as u64).read_to_end(&mut body)?;
                    if body.len() < length {
                        return Err(ErrorKind::UnexpectedEof.into());
                    }
                    return Ok(body);
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
        Protocol::MessagePack => {
            let mut scanner = Scanner::default();
            let end = loop {
                match scanner.scan(pending, MAX_REPLY) {
                    Scan::Complete(end) => break end,
                    Scan::Incomplete => {}
                    Scan::TooLarge => return Err(too_large()),
                    Scan::Invalid(why) => return Err(malformed(format!("bad MessagePack: {why}"))),
                }
                let chunk = reader.fill_buf()?;
                if chunk.is_empty() {
                    return Err(ErrorKind::UnexpectedEof.into());
                }
                let n = chunk.len();
                pending.extend_from_slice(chunk);
                reader.consume(n);
            };
            let rest = pending.split_off(end);
            Ok(std::mem::replace(pending, rest))
        }
    }
}

/// Decodes a reply frame and checks its id: the result, or the error it carries.
pub(super) fn decode_reply(
    protocol: Protocol,
    frame: &[u8],
    id: u64,
    method: &str,
) -> Result<Value> {
    let bad = |what: String| Error::Protocol(format!("reply to {method}: {what}"));
    if protocol == Protocol::MessagePack {
        let reply = msgpack::decode_value(frame)
            .map_err(|e| bad(format!("undecodable MessagePack: {e}")))?;
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
    let reply: Value = serde_json::from_slice(frame).map_err(|e| bad(format!("bad JSON: {e}")))?;
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
