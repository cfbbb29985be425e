//! What crosses a worker's channel: one typed frame per message, encoded as MessagePack.
//!
//! Down, from the daemon: the supervisor's own commands (`Stop`, `Pause`, `Resume`) and the
//! user's commands, sent (`Command`) or called (`Call`, answered). Up, from the worker: log
//! lines, acknowledgements, the user's messages, and the replies to calls. Each kind has its own tag, so a user's command or message can never be taken
//! for one of the supervisor's, whatever its name.
//!
//! The daemon trusts nothing it reads: a frame is measured by the MessagePack scanner
//! (bounded depth and sizes) before it is decoded, and anything but one well-formed frame is
//! an error that gets the worker killed.

use serde::Serialize;
use serde_json::Value;

use super::CommandError;
use crate::rpc::MAX_DEPTH;
use crate::rpc::msgpack::{self, Scan};

/// Why a payload was refused before it was sent.
pub const TOO_DEEP: &str =
    "the payload nests arrays or objects deeper than 128, which the other end cannot decode";

/// The longest log line's text that crosses a channel; a longer one is cut there.
pub const MAX_LOG_TEXT: usize = 16 * 1024;

/// From the daemon to a worker.
#[derive(Debug, Clone, PartialEq)]
pub enum Down {
    /// Spin down and exit.
    Stop,
    /// Stop ticking; acknowledge with `seq` (0: no acknowledgement wanted).
    Pause(u64),
    /// Tick again; acknowledge with `seq` (0: no acknowledgement wanted).
    Resume(u64),
    /// A user command, its reply discarded: [`Worker::command`](super::Worker::command).
    Command(String, Option<Value>),
    /// A user command whose reply is awaited, under the supervisor's id for it:
    /// [`Worker::command`](super::Worker::command), answered with [`Up::Reply`].
    Call(u64, String, Option<Value>),
}

/// From a worker to the daemon.
#[derive(Debug, Clone, PartialEq)]
pub enum Up {
    /// A log line: its slog level as a number, and its text.
    Log(u8, String),
    /// A `Pause` or `Resume` was applied: its `seq` and the state it left.
    Ack(u64, u32),
    /// A user message: `daemon.worker.message.<worker>.<command>` on the daemon's bus.
    Message(String, Option<Value>),
    /// The answer to the [`Down::Call`] of this id: the handler's value or its error.
    Reply(u64, Result<Value, CommandError>),
}

const STOP: u8 = 0;
const PAUSE: u8 = 1;
const RESUME: u8 = 2;
const COMMAND: u8 = 3;
const CALL: u8 = 4;
const LOG: u8 = 16;
const ACK: u8 = 17;
const MESSAGE: u8 = 18;
const REPLY: u8 = 19;
const FAILED: u8 = 20;

/// The longest error message of a reply that crosses a channel; a longer one is cut there.
pub const MAX_ERROR_TEXT: usize = 16 * 1024;

const _: () = assert!(MAX_DEPTH == 128, "TOO_DEEP names the limit");

/// A frame's parts, written back to back: the tag, then each field, every one a MessagePack
/// value of its own (no enclosing array), so a payload may nest exactly as deep as
/// [`MAX_DEPTH`] allows anywhere else.
struct Writer(Vec<u8>);

impl Writer {
    fn new(tag: u8) -> Writer {
        Writer(Vec::new()).part(&tag)
    }

    fn part(mut self, value: &impl Serialize) -> Writer {
        rmp_serde::encode::write(&mut self.0, value)
            .expect("numbers, strings and JSON values encode");
        self
    }
}

/// [`Down::Stop`]'s frame, as [`Down::encode`] writes it (a tag below 128 is one byte in
/// MessagePack): the supervisor sends it without encoding, and a worker warms its decoder on
/// it after its first tick.
pub const STOP_FRAME: [u8; 1] = [STOP];

impl Down {
    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Down::Stop => Writer::new(STOP),
            Down::Pause(seq) => Writer::new(PAUSE).part(seq),
            Down::Resume(seq) => Writer::new(RESUME).part(seq),
            Down::Command(c, p) => Writer::new(COMMAND).part(c).part(p),
            Down::Call(id, c, p) => Writer::new(CALL).part(id).part(c).part(p),
        }
        .0
    }

    /// Decodes a frame the daemon wrote.
    ///
    /// # Errors
    ///
    /// What is wrong with the frame.
    pub fn decode(frame: &[u8]) -> Result<Down, String> {
        let mut parts = parts(frame)?;
        let tag = parts.first().and_then(Value::as_u64);
        match (tag.and_then(|t| u8::try_from(t).ok()), parts.as_slice()) {
            (Some(STOP), [_]) => Ok(Down::Stop),
            (Some(PAUSE), [_, Value::Number(seq)]) => {
                Ok(Down::Pause(seq.as_u64().ok_or("a seq is a number")?))
            }
            (Some(RESUME), [_, Value::Number(seq)]) => {
                Ok(Down::Resume(seq.as_u64().ok_or("a seq is a number")?))
            }
            (Some(COMMAND), [_, Value::String(_), _]) => {
                let p = parts.pop().expect("three parts");
                let Some(Value::String(c)) = parts.pop() else {
                    unreachable!("matched above")
                };
                Ok(Down::Command(c, payload(p)))
            }
            (Some(CALL), [_, Value::Number(id), Value::String(_), _]) => {
                let id = id.as_u64().ok_or("an id is a number")?;
                let p = parts.pop().expect("four parts");
                let Some(Value::String(c)) = parts.pop() else {
                    unreachable!("matched above")
                };
                Ok(Down::Call(id, c, payload(p)))
            }
            _ => Err("not a frame the daemon sends".into()),
        }
    }
}

impl Up {
    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Up::Log(level, text) => Writer::new(LOG).part(level).part(text),
            Up::Ack(seq, state) => Writer::new(ACK).part(seq).part(state),
            Up::Message(c, p) => Writer::new(MESSAGE).part(c).part(p),
            Up::Reply(id, Ok(v)) => Writer::new(REPLY).part(id).part(v),
            Up::Reply(id, Err(e)) => Writer::new(FAILED)
                .part(id)
                .part(&e.code())
                .part(&e.message()),
        }
        .0
    }

    /// Decodes a frame a worker wrote.
    ///
    /// # Errors
    ///
    /// What is wrong with the frame.
    pub fn decode(frame: &[u8]) -> Result<Up, String> {
        let mut parts = parts(frame)?;
        let number =
            |v: &Value, what: &str| v.as_u64().ok_or_else(|| format!("{what} is a number"));
        let tag = parts.first().and_then(Value::as_u64);
        match (tag.and_then(|t| u8::try_from(t).ok()), parts.as_slice()) {
            (Some(LOG), [_, level, Value::String(_)]) => {
                let level = u8::try_from(number(level, "a level")?).map_err(|e| e.to_string())?;
                let Some(Value::String(mut text)) = parts.pop() else {
                    unreachable!("matched above")
                };
                truncate(&mut text, MAX_LOG_TEXT);
                Ok(Up::Log(level, text))
            }
            (Some(ACK), [_, seq, state]) => {
                let state = u32::try_from(number(state, "a state")?).map_err(|e| e.to_string())?;
                Ok(Up::Ack(number(seq, "a seq")?, state))
            }
            (Some(MESSAGE), [_, Value::String(_), _]) => {
                let p = parts.pop().expect("three parts");
                let Some(Value::String(c)) = parts.pop() else {
                    unreachable!("matched above")
                };
                Ok(Up::Message(c, payload(p)))
            }
            (Some(REPLY), [_, id, _]) => {
                let id = number(id, "an id")?;
                let value = parts.pop().expect("three parts");
                Ok(Up::Reply(id, Ok(value)))
            }
            (Some(FAILED), [_, id, code, Value::String(_)]) => {
                let id = number(id, "an id")?;
                let code = code.as_i64().ok_or("a code is an integer")?;
                let Some(Value::String(mut message)) = parts.pop() else {
                    unreachable!("matched above")
                };
                truncate(&mut message, MAX_ERROR_TEXT);
                Ok(Up::Reply(id, Err(CommandError::new(code, message))))
            }
            _ => Err("not a frame a worker sends".into()),
        }
    }
}

/// Cuts `text` to at most `max` bytes, on a character boundary.
pub(crate) fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

fn payload(p: Value) -> Option<Value> {
    (!p.is_null()).then_some(p)
}

/// The most parts a frame has.
const MAX_PARTS: usize = 4;

/// The frame's parts, each measured with the scanner (bounded depth and sizes) first.
fn parts(frame: &[u8]) -> Result<Vec<Value>, String> {
    let mut parts = Vec::new();
    let mut rest = frame;
    while !rest.is_empty() {
        if parts.len() == MAX_PARTS {
            return Err("a frame with more parts than any frame has".into());
        }
        let n = match msgpack::Scanner::default().scan(rest, rest.len()) {
            Scan::Complete(n) => n,
            other => {
                return Err(format!("a frame that is not MessagePack values: {other:?}"));
            }
        };
        parts.push(msgpack::decode_value(&rest[..n])?);
        rest = &rest[n..];
    }
    Ok(parts)
}

/// Whether `value` nests arrays and objects deeper than [`MAX_DEPTH`], which the other end
/// of a channel (and the control socket) would refuse. Walks without recursing, so a value
/// of any depth is measured safely.
pub fn too_deep(value: &Value) -> bool {
    // Each array or object with its depth: the outermost one is at depth 1. An empty one
    // nests nothing, as the MessagePack scanner counts.
    let mut stack = vec![(value, 1usize)];
    while let Some((v, depth)) = stack.pop() {
        match v {
            Value::Array(a) if !a.is_empty() => {
                if depth > MAX_DEPTH {
                    return true;
                }
                stack.extend(a.iter().map(|c| (c, depth + 1)));
            }
            Value::Object(o) if !o.is_empty() => {
                if depth > MAX_DEPTH {
                    return true;
                }
                stack.extend(o.values().map(|c| (c, depth + 1)));
            }
            _ => {}
        }
    }
    false
}

/// About how many bytes of memory a decoded payload holds (its nodes, strings and keys): what
/// a message costs while it waits on the daemon's bus.
pub fn footprint(value: &Value) -> usize {
    const NODE: usize = std::mem::size_of::<Value>();
    const ENTRY: usize = std::mem::size_of::<String>() + NODE + 16;
    let mut total = NODE;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) => total += s.capacity(),
            Value::Array(a) => {
                total += a.capacity() * NODE;
                stack.extend(a.iter());
            }
            Value::Object(o) => {
                for (k, v) in o {
                    total += ENTRY + k.capacity();
                    stack.push(v);
                }
            }
            _ => {}
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_stop_frame_is_what_encode_writes() {
        assert_eq!(Down::Stop.encode(), STOP_FRAME);
        assert_eq!(Down::decode(&STOP_FRAME), Ok(Down::Stop));
    }

    #[test]
    fn frames_round_trip() {
        for down in [
            Down::Stop,
            Down::Pause(7),
            Down::Resume(u64::MAX),
            Down::Command("changename".into(), None),
            Down::Command("stop".into(), Some(json!({"a": [1, 2]}))),
            Down::Call(9, "echo".into(), Some(json!([1]))),
            Down::Call(u64::MAX, "echo".into(), None),
        ] {
            assert_eq!(Down::decode(&down.encode()).unwrap(), down);
            assert!(Up::decode(&down.encode()).is_err(), "{down:?} is not an Up");
        }
        for up in [
            Up::Log(3, "hello".into()),
            Up::Ack(1, 2),
            Up::Message("exited".into(), Some(json!({"crashed": true}))),
            Up::Message("ack".into(), None),
            Up::Reply(3, Ok(json!({"done": true}))),
            Up::Reply(4, Ok(Value::Null)),
            Up::Reply(5, Err(CommandError::new(-7, "no"))),
        ] {
            assert_eq!(Up::decode(&up.encode()).unwrap(), up);
            assert!(Down::decode(&up.encode()).is_err(), "{up:?} is not a Down");
        }
    }

    #[test]
    fn garbage_frames_are_errors() {
        for frame in [
            &b"\xc1"[..],
            b"\x92\xa1x",
            b"\x93\x12\xa1x\xc0trailing",
            b"\x93\x11\xa1x\x01",
            b"\x93\x10\xcd\x01\x00\xa1x",
            b"\x91\x63",
            b"\x01",
        ] {
            assert!(Up::decode(frame).is_err(), "{frame:x?}");
        }
        assert_eq!(
            Up::decode(b"\x12\xa1x\xc0").unwrap(),
            Up::Message("x".into(), None)
        );
        assert!(Up::decode(b"\x12\xa1x\xc0\xc0").is_err(), "a part too many");
        assert!(Up::decode(b"\x13\x01\xc0\xc0\xc0").is_err(), "five parts");
        // A failed reply's code is an integer, its message a string.
        assert!(Up::decode(b"\x14\x01\xa1x\xa1x").is_err());
        assert!(Up::decode(b"\x14\x01\x01\x01").is_err());
        // A reply's id is a non-negative integer.
        assert!(Up::decode(b"\x13\xff\xc0").is_err());
        assert!(Down::decode(b"\x04\xa1x\xa1x\xc0").is_err());
    }

    #[test]
    fn a_reply_as_deep_as_the_limit_crosses_and_a_long_error_is_cut() {
        let up = Up::Reply(1, Ok(nested(MAX_DEPTH)));
        assert_eq!(Up::decode(&up.encode()).unwrap(), up);
        assert!(Up::decode(&Up::Reply(1, Ok(nested(MAX_DEPTH + 1))).encode()).is_err());
        let long = CommandError::new(1, "x".repeat(MAX_ERROR_TEXT + 10));
        let Up::Reply(1, Err(e)) = Up::decode(&Up::Reply(1, Err(long)).encode()).unwrap() else {
            panic!("a failed reply")
        };
        assert_eq!(e.message().len(), MAX_ERROR_TEXT);
        // The code daimon keeps for itself never comes out of a frame.
        let raw = Writer::new(FAILED).part(&1u64).part(&i64::MIN).part(&"m").0;
        let Ok(Up::Reply(1, Err(e))) = Up::decode(&raw) else {
            panic!("a failed reply")
        };
        assert_eq!(e.code(), -32000);
    }

    fn nested(depth: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..depth {
            v = json!([v]);
        }
        v
    }

    #[test]
    fn a_payload_as_deep_as_the_limit_crosses_and_a_deeper_one_is_measured_too_deep() {
        let ok = nested(MAX_DEPTH);
        assert!(!too_deep(&ok));
        assert!(too_deep(&nested(MAX_DEPTH + 1)));
        assert!(too_deep(&json!({"a": nested(MAX_DEPTH)})));
        assert!(!too_deep(&json!({"a": nested(MAX_DEPTH - 1)})));
        // An empty array or object nests nothing (as the scanner counts).
        let mut empty_inside = json!([]);
        for _ in 0..MAX_DEPTH {
            empty_inside = json!([empty_inside]);
        }
        assert!(!too_deep(&empty_inside));
        let up = Up::Message("c".into(), Some(empty_inside));
        assert_eq!(Up::decode(&up.encode()).unwrap(), up);
        // Measured without recursion, whatever the depth.
        assert!(too_deep(&nested(500)));
        let down = Down::Command("c".into(), Some(ok.clone()));
        assert_eq!(Down::decode(&down.encode()).unwrap(), down);
        let up = Up::Message("c".into(), Some(ok));
        assert_eq!(Up::decode(&up.encode()).unwrap(), up);
        // What is too deep for the sender's check is too deep for the receiver's scanner.
        let deep = Up::Message("c".into(), Some(nested(MAX_DEPTH + 1)));
        assert!(Up::decode(&deep.encode()).is_err());
    }

    #[test]
    fn long_log_lines_are_cut_on_a_character_boundary() {
        let text = "é".repeat(MAX_LOG_TEXT);
        let Up::Log(_, got) = Up::decode(&Up::Log(3, text).encode()).unwrap() else {
            panic!("a log line")
        };
        assert!(got.len() <= MAX_LOG_TEXT && got.len() >= MAX_LOG_TEXT - 1);
        assert!(got.chars().all(|c| c == 'é'));
    }

    #[test]
    fn footprints_grow_with_the_decoded_value_not_the_frame() {
        let zeros = json!(vec![0; 1000]);
        let frame = Up::Message("c".into(), Some(zeros.clone())).encode();
        assert!(frame.len() < 1100);
        assert!(footprint(&zeros) >= 1000 * std::mem::size_of::<Value>());
        assert!(footprint(&json!({"key": "x".repeat(500)})) > 500);
    }
}
