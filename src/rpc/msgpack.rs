//! MessagePack-RPC: finding message boundaries without allocating, decoding requests,
//! encoding responses.
//!
//! MessagePack-RPC messages arrive back to back with no length prefix, so a [`Scanner`] walks
//! the headers to find where a message ends. It checks every length a header announces
//! against the request size limit before anything is allocated (five bytes can announce a
//! 4 GiB string), bounds the nesting depth, and resumes where it stopped when more bytes
//! arrive, so a large message costs one pass however it is split.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::{RpcError, base64};

/// How deeply arrays and maps may nest: the crate's one limit, [`super::MAX_DEPTH`].
pub const MAX_DEPTH: usize = super::MAX_DEPTH;

/// What [`Scanner::scan`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// A whole message: the first `n` bytes.
    Complete(usize),
    /// More bytes are needed.
    Incomplete,
    /// The message is (or announces itself) larger than the limit.
    TooLarge,
    /// The bytes are not MessagePack.
    Invalid(&'static str),
}

/// Finds the end of one MessagePack value in a growing buffer.
#[derive(Debug, Default)]
pub struct Scanner {
    /// Where the next item's header starts.
    pos: usize,
    /// Items still to read in each open array or map, outermost first.
    stack: Vec<u64>,
    /// Values seen so far in the message being scanned.
    counted: usize,
    /// Values in the last whole message found.
    last_items: usize,
}

impl Scanner {
    /// Scans `buf`, which starts with the message and holds every byte received since (the
    /// same bytes as the previous call, plus more). At most `max` bytes are accepted.
    pub fn scan(&mut self, buf: &[u8], max: usize) -> Scan {
        if self.pos == 0 && self.stack.is_empty() {
            self.stack.push(1);
        }
        loop {
            if self.stack.is_empty() {
                let n = self.pos;
                self.pos = 0;
                self.last_items = std::mem::take(&mut self.counted);
                return Scan::Complete(n);
            }
            let Some(&marker) = buf.get(self.pos) else {
                return Scan::Incomplete;
            };
            let (head, size) = match header(marker) {
                Header::Fixed(head) => (head, Size::None),
                Header::Sized(head, size) => (head, size),
                Header::Invalid => {
                    self.reset();
                    return Scan::Invalid("0xc1 is never used in MessagePack");
                }
            };
            let Some(header) = buf.get(self.pos..self.pos + head) else {
                return Scan::Incomplete;
            };
            let (payload, children) = match size {
                Size::None => (0, 0),
                Size::Fix(n) => (n, 0),
                Size::Bytes(w) => (be(&header[1..=w]), 0),
                Size::Ext(w) => (be(&header[1..=w]), 0),
                Size::Items(w, per) => (0, be(&header[1..=w]) * per),
                Size::FixItems(n) => (0, n),
            };
            // Every child takes at least one byte: a count above the limit cannot fit.
            let end = self.pos as u64 + head as u64 + payload;
            if end > max as u64 || children > max as u64 {
                self.reset();
                return Scan::TooLarge;
            }
            if end > buf.len() as u64 {
                return Scan::Incomplete;
            }
            self.pos = end as usize;
            self.counted += super::bounded::weight(match marker {
                0x80..=0x8f | 0xde | 0xdf => super::bounded::Kind::Object,
                0x90..=0x9f | 0xdc | 0xdd => super::bounded::Kind::Array,
                _ => super::bounded::Kind::Scalar,
            });
            *self.stack.last_mut().expect("not empty") -= 1;
            if children > 0 {
                // The stack holds the top level's entry too: this is container number
                // `stack.len()`, and `MAX_DEPTH` of them may nest.
                if self.stack.len() > MAX_DEPTH {
                    self.reset();
                    return Scan::Invalid("nested too deeply");
                }
                self.stack.push(children);
            }
            while self.stack.last() == Some(&0) {
                self.stack.pop();
            }
        }
    }

    /// How many values (scalars, arrays, maps, map keys) the last whole message holds: what
    /// decoding it would build.
    pub fn items(&self) -> usize {
        self.last_items
    }

    /// Forgets a partial scan.
    pub fn reset(&mut self) {
        self.pos = 0;
        self.counted = 0;
        self.stack.clear();
    }
}

enum Size {
    None,
    /// A payload of this many bytes.
    Fix(u64),
    /// A payload whose length is the big-endian integer of this width after the marker.
    Bytes(usize),
    /// An ext: a length of this width, then the type byte, then the payload.
    Ext(usize),
    /// A count of this width; each counted entry is this many items.
    Items(usize, u64),
    /// This many items.
    FixItems(u64),
}

enum Header {
    Fixed(usize),
    Sized(usize, Size),
    Invalid,
}

fn header(m: u8) -> Header {
    use Header::{Fixed, Sized};
    match m {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Fixed(1),
        0x80..=0x8f => Sized(1, Size::FixItems(u64::from(m & 0x0f) * 2)),
        0x90..=0x9f => Sized(1, Size::FixItems(u64::from(m & 0x0f))),
        0xa0..=0xbf => Sized(1, Size::Fix(u64::from(m & 0x1f))),
        0xc1 => Header::Invalid,
        0xc4 | 0xd9 => Sized(2, Size::Bytes(1)),
        0xc5 | 0xda => Sized(3, Size::Bytes(2)),
        0xc6 | 0xdb => Sized(5, Size::Bytes(4)),
        0xc7 => Sized(3, Size::Ext(1)),
        0xc8 => Sized(4, Size::Ext(2)),
        0xc9 => Sized(6, Size::Ext(4)),
        0xca => Fixed(5),
        0xcb => Fixed(9),
        0xcc | 0xd0 => Fixed(2),
        0xcd | 0xd1 => Fixed(3),
        0xce | 0xd2 => Fixed(5),
        0xcf | 0xd3 => Fixed(9),
        0xd4 => Fixed(3),
        0xd5 => Fixed(4),
        0xd6 => Fixed(6),
        0xd7 => Fixed(10),
        0xd8 => Fixed(18),
        0xdc => Sized(3, Size::Items(2, 1)),
        0xdd => Sized(5, Size::Items(4, 1)),
        0xde => Sized(3, Size::Items(2, 2)),
        0xdf => Sized(5, Size::Items(4, 2)),
    }
}

fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |n, &b| (n << 8) | u64::from(b))
}

/// A decoded MessagePack value, keeping what JSON cannot tell apart (str from bin).
#[derive(Debug, Clone, PartialEq)]
enum Msg {
    Nil,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Bin(Vec<u8>),
    Array(Vec<Msg>),
    Map(Vec<(Msg, Msg)>),
}

impl<'de> Deserialize<'de> for Msg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Msg, D::Error> {
        d.deserialize_any(MsgVisitor)
    }
}

struct MsgVisitor;

impl<'de> Visitor<'de> for MsgVisitor {
    type Value = Msg;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a MessagePack value")
    }

    fn visit_unit<E>(self) -> Result<Msg, E> {
        Ok(Msg::Nil)
    }
    fn visit_none<E>(self) -> Result<Msg, E> {
        Ok(Msg::Nil)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Msg, D::Error> {
        Msg::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Msg, E> {
        Ok(Msg::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Msg, E> {
        Ok(Msg::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Msg, E> {
        Ok(Msg::UInt(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Msg, E> {
        Ok(Msg::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Msg, E> {
        Ok(Msg::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Msg, E> {
        Ok(Msg::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Msg, E> {
        Ok(Msg::Bin(v.to_vec()))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Msg, E> {
        Ok(Msg::Bin(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Msg, A::Error> {
        // The scanner bounded the count by the bytes present; still, do not trust the hint.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(256));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Msg::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Msg, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(256));
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Msg::Map(entries))
    }
}

impl Msg {
    fn into_json(self) -> Result<Value, &'static str> {
        Ok(match self {
            Msg::Nil => Value::Null,
            Msg::Bool(b) => Value::Bool(b),
            Msg::Int(n) => Value::from(n),
            Msg::UInt(n) => Value::from(n),
            Msg::Float(f) => Number::from_f64(f)
                .map(Value::Number)
                .ok_or("a float that is not finite")?,
            Msg::Str(s) => Value::String(s),
            Msg::Bin(b) => Value::String(base64::encode(&b)),
            Msg::Array(items) => Value::Array(
                items
                    .into_iter()
                    .map(Msg::into_json)
                    .collect::<Result<_, _>>()?,
            ),
            Msg::Map(entries) => {
                let mut map = Map::with_capacity(entries.len());
                for (k, v) in entries {
                    let key = match k {
                        Msg::Str(s) => s,
                        Msg::Bin(b) => {
                            String::from_utf8(b).map_err(|_| "a map key that is not UTF-8")?
                        }
                        _ => return Err("a map key that is not a string"),
                    };
                    map.insert(key, v.into_json()?);
                }
                Value::Object(map)
            }
        })
    }

    fn as_u32(&self) -> Option<u32> {
        match *self {
            Msg::UInt(n) => u32::try_from(n).ok(),
            Msg::Int(n) => u32::try_from(n).ok(),
            _ => None,
        }
    }

    fn into_method(self) -> Option<String> {
        match self {
            Msg::Str(s) => Some(s),
            Msg::Bin(b) => String::from_utf8(b).ok(),
            _ => None,
        }
    }
}

/// Decodes one whole MessagePack value (as delimited by a [`Scanner`]) into JSON: a `bin`
/// becomes a base64 string, as handlers see it.
///
/// # Errors
///
/// What is wrong: not MessagePack, a map key that is not a string, a float that is not finite.
pub fn decode_value(frame: &[u8]) -> Result<Value, String> {
    let msg: Msg = rmp_serde::from_slice(frame).map_err(|e| e.to_string())?;
    msg.into_json().map_err(str::to_owned)
}

/// A decoded MessagePack-RPC message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// `[0, msgid, method, params]`.
    Request {
        /// The message id.
        msgid: u32,
        /// The method name.
        method: String,
        /// The params: an array, or an object for a map.
        params: Value,
    },
    /// `[2, method, params]`.
    Notification {
        /// The method name.
        method: String,
        /// The params.
        params: Value,
    },
    /// `[1, ...]`: a response, which a server does not expect; ignored.
    Response,
}

/// Why a message could not be used.
#[derive(Debug, Clone, PartialEq)]
pub enum Refused {
    /// Not MessagePack, or not an RPC message at all: answer with msgid nil and close.
    Parse(String),
    /// A request with a usable msgid but a bad shape: answer `-32600` for that msgid.
    Invalid(u32, String),
}

/// Decodes one whole message (as delimited by a [`Scanner`]).
///
/// # Errors
///
/// [`Refused`] saying how to answer.
pub fn decode(frame: &[u8]) -> Result<Message, Refused> {
    let msg: Msg = rmp_serde::from_slice(frame).map_err(|e| Refused::Parse(e.to_string()))?;
    let Msg::Array(mut items) = msg else {
        return Err(Refused::Parse("a message is an array".into()));
    };
    let kind = items.first().and_then(Msg::as_u32);
    match (kind, items.len()) {
        (Some(0), n) => {
            let Some(msgid) = items.get(1).and_then(Msg::as_u32) else {
                return Err(Refused::Parse(
                    "a request's msgid is an unsigned 32-bit integer".into(),
                ));
            };
            let invalid = |m: &str| Err(Refused::Invalid(msgid, m.to_owned()));
            if n != 4 {
                return invalid("a request is [0, msgid, method, params]");
            }
            let params = items.pop().expect("4 items");
            let Some(method) = items.pop().expect("4 items").into_method() else {
                return invalid("the method is a string");
            };
            match params_to_json(params) {
                Ok(params) => Ok(Message::Request {
                    msgid,
                    method,
                    params,
                }),
                Err(m) => invalid(m),
            }
        }
        (Some(2), 3) => {
            let params = items.pop().expect("3 items");
            let method = items.pop().expect("3 items").into_method();
            match (method, params_to_json(params)) {
                (Some(method), Ok(params)) => Ok(Message::Notification { method, params }),
                _ => Err(Refused::Parse(
                    "a notification is [2, method, params]".into(),
                )),
            }
        }
        (Some(1), 4) => Ok(Message::Response),
        _ => Err(Refused::Parse("not a MessagePack-RPC message".into())),
    }
}

fn params_to_json(params: Msg) -> Result<Value, &'static str> {
    match params {
        Msg::Array(_) | Msg::Map(_) => params.into_json(),
        Msg::Nil => Ok(Value::Null),
        _ => Err("params are an array (or a map)"),
    }
}

/// What a whole message is, read from its first bytes only (to answer one that is refused
/// before it is decoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// `[0, msgid, …]`.
    Request(u32),
    /// `[2, …]`.
    Notification,
    /// Anything else.
    Other,
}

/// Reads what `frame` is from its header.
pub fn peek(frame: &[u8]) -> Peek {
    match frame {
        [0x94, 0x00, rest @ ..] => {
            let msgid = match rest {
                [n, ..] if *n < 0x80 => Some(u32::from(*n)),
                [0xcc, n, ..] => Some(u32::from(*n)),
                [0xcd, a, b, ..] => Some(u32::from(u16::from_be_bytes([*a, *b]))),
                [0xce, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
                _ => None,
            };
            msgid.map_or(Peek::Other, Peek::Request)
        }
        [0x93, 0x02, ..] => Peek::Notification,
        _ => Peek::Other,
    }
}

/// Appends the response `[1, msgid, error, result]` to `out`.
pub fn encode_response(
    out: &mut impl std::io::Write,
    msgid: Option<u32>,
    outcome: &Result<Value, RpcError>,
) {
    let written = match outcome {
        Ok(result) => rmp_serde::encode::write(out, &(1u8, msgid, (), result)),
        Err(e) => {
            // `[code, message]` has no room for data: the detail follows the message.
            let message = match &e.data {
                Some(Value::String(detail)) => format!("{}: {detail}", e.message),
                Some(Value::Null) | None => e.message.clone(),
                Some(other) => format!("{}: {other}", e.message),
            };
            rmp_serde::encode::write(out, &(1u8, msgid, (e.code, message), ()))
        }
    };
    // Writing a JSON value into a Vec (or a connection's capped output) cannot fail.
    debug_assert!(written.is_ok());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scan_all(buf: &[u8], max: usize) -> Scan {
        Scanner::default().scan(buf, max)
    }

    #[test]
    fn scanner_finds_boundaries_of_back_to_back_messages() {
        let a = rmp_serde::to_vec(&(0, 1, "examples.echo", ("hello",))).unwrap();
        let b = rmp_serde::to_vec(&(2, "notify", [1, 2, 3])).unwrap();
        let mut both = a.clone();
        both.extend_from_slice(&b);
        assert_eq!(scan_all(&both, 1 << 20), Scan::Complete(a.len()));
        assert_eq!(scan_all(&both[a.len()..], 1 << 20), Scan::Complete(b.len()));
    }

    #[test]
    fn scanner_resumes_byte_by_byte() {
        let msg = rmp_serde::to_vec(&(0, 7, "m", (vec![1u8; 300], "x".repeat(70000)))).unwrap();
        let mut scanner = Scanner::default();
        for i in 1..msg.len() {
            assert_eq!(scanner.scan(&msg[..i], 1 << 20), Scan::Incomplete, "at {i}");
        }
        assert_eq!(scanner.scan(&msg, 1 << 20), Scan::Complete(msg.len()));
    }

    #[test]
    fn ext_values_are_measured_exactly() {
        // Found by fuzzing: ext8 of length 0 is 3 bytes (marker, length, type), not 4.
        assert_eq!(scan_all(&[0xc7, 0x00, 0x00, 0x01], 100), Scan::Complete(3));
        assert_eq!(scan_all(&[0xd4, 0x01, 0x02, 0x01], 100), Scan::Complete(3));
        assert_eq!(
            scan_all(&[0xc8, 0x00, 0x02, 0x05, 0xaa, 0xbb], 100),
            Scan::Complete(6)
        );
    }

    #[test]
    fn announced_sizes_are_checked_before_the_bytes_arrive() {
        // str32 announcing 4 GiB, array32 announcing 4 G items, map32 likewise, bin32.
        for head in [
            &[0x94, 0x00, 0x01, 0xdb, 0xff, 0xff, 0xff, 0xff][..],
            &[0xdd, 0xff, 0xff, 0xff, 0xff],
            &[0xdf, 0x10, 0x00, 0x00, 0x00],
            &[0x94, 0x00, 0x01, 0xc6, 0x00, 0x10, 0x00, 0x01],
        ] {
            assert_eq!(scan_all(head, 1 << 20), Scan::TooLarge, "{head:x?}");
        }
        assert_eq!(
            scan_all(&[0xc1], 100),
            Scan::Invalid("0xc1 is never used in MessagePack")
        );
        let deep = vec![0x91u8; MAX_DEPTH + 1];
        assert_eq!(scan_all(&deep, 1 << 20), Scan::Invalid("nested too deeply"));
        // Exactly the limit is fine (as for JSON).
        let mut ok = vec![0x91u8; MAX_DEPTH];
        ok.push(0xc0);
        assert_eq!(scan_all(&ok, 1 << 20), Scan::Complete(ok.len()));
    }

    #[test]
    fn decodes_requests_with_str_bin_and_str16_method_names() {
        // 94 00 01 ad "examples.echo" 91 a5 "hello": the bytes a real client sends.
        let mut bytes = vec![0x94, 0x00, 0x01, 0xad];
        bytes.extend_from_slice(b"examples.echo");
        bytes.extend_from_slice(&[0x91, 0xa5]);
        bytes.extend_from_slice(b"hello");
        let expected = Message::Request {
            msgid: 1,
            method: "examples.echo".into(),
            params: json!(["hello"]),
        };
        assert_eq!(decode(&bytes).unwrap(), expected);
        // The method as bin8, then as str16.
        let mut bin = vec![0x94, 0x00, 0x01, 0xc4, 13];
        bin.extend_from_slice(&bytes[4..]);
        assert_eq!(decode(&bin).unwrap(), expected);
        let mut str16 = vec![0x94, 0x00, 0x01, 0xda, 0x00, 13];
        str16.extend_from_slice(&bytes[4..]);
        assert_eq!(decode(&str16).unwrap(), expected);
    }

    #[test]
    fn bin_params_become_base64_and_maps_become_named_params() {
        let bytes = rmp_serde::to_vec(&(0u8, 0u32, "m", (serde_bytes_like(b"foo"),))).unwrap();
        assert_eq!(
            decode(&bytes).unwrap(),
            Message::Request {
                msgid: 0,
                method: "m".into(),
                params: json!(["Zm9v"])
            }
        );
        let mut named = vec![0x94, 0x00, 0x05, 0xa1, b'm', 0x81, 0xa1, b'a', 0x01];
        assert!(
            matches!(decode(&named).unwrap(), Message::Request { params, .. } if params == json!({"a": 1}))
        );
        named[6] = 0x01; // an int key
        assert!(matches!(decode(&named), Err(Refused::Invalid(5, _))));
    }

    /// A bin value: rmp_serde writes `&[u8]` wrapped in serde's bytes type as bin.
    fn serde_bytes_like(b: &[u8]) -> Bin<'_> {
        Bin(b)
    }

    struct Bin<'a>(&'a [u8]);

    impl serde::Serialize for Bin<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    #[test]
    fn shapes_that_are_not_requests() {
        let bad_method = rmp_serde::to_vec(&(0, 5, 123, ())).unwrap();
        assert!(matches!(decode(&bad_method), Err(Refused::Invalid(5, _))));
        let three = rmp_serde::to_vec(&(0, 5, "m")).unwrap();
        assert!(matches!(decode(&three), Err(Refused::Invalid(5, _))));
        for parse in [
            rmp_serde::to_vec(&"just a string").unwrap(),
            rmp_serde::to_vec(&(0, -1, "m", ())).unwrap(),
            rmp_serde::to_vec(&(7, 1, "m", ())).unwrap(),
        ] {
            assert!(
                matches!(decode(&parse), Err(Refused::Parse(_))),
                "{parse:x?}"
            );
        }
        let response = rmp_serde::to_vec(&(1, 5, (), 3)).unwrap();
        assert_eq!(decode(&response).unwrap(), Message::Response);
    }

    #[test]
    fn responses_are_encoded_as_the_spec_says() {
        let mut out = Vec::new();
        encode_response(&mut out, Some(0), &Ok(json!("hello")));
        assert_eq!(
            out,
            [0x94, 0x01, 0x00, 0xc0, 0xa5, b'h', b'e', b'l', b'l', b'o']
        );
        out.clear();
        encode_response(&mut out, None, &Err(RpcError::parse_error("x")));
        let back: (u8, Option<u32>, (i64, String), ()) = rmp_serde::from_slice(&out).unwrap();
        assert_eq!(back, (1, None, (-32700, "Parse error: x".to_owned()), ()));
    }
}
