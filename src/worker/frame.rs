//! What crosses a worker's channel: one typed frame per message, encoded as MessagePack.
//!
//! Down, from the daemon: the supervisor's own commands (`Stop`, `Pause`, `Resume`) and the
//! user's commands. Up, from the worker: log lines, acknowledgements, and the user's
//! messages. Each kind has its own tag, so a user's command or message can never be taken
//! for one of the supervisor's, whatever its name.
//!
//! The daemon trusts nothing it reads: a frame is measured by the MessagePack scanner
//! (bounded depth and sizes) before it is decoded, and anything but one well-formed frame is
//! an error that gets the worker killed.

use serde_json::Value;

use crate::rpc::msgpack::{self, Scan};

/// From the daemon to a worker.
#[derive(Debug, Clone, PartialEq)]
pub enum Down {
    /// Spin down and exit.
    Stop,
    /// Stop ticking; acknowledge with `seq` (0: no acknowledgement wanted).
    Pause(u64),
    /// Tick again; acknowledge with `seq` (0: no acknowledgement wanted).
    Resume(u64),
    /// A user command: `daemon.worker.<command>` on the worker's bus.
    Command(String, Option<Value>),
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
}

const STOP: u8 = 0;
const PAUSE: u8 = 1;
const RESUME: u8 = 2;
const COMMAND: u8 = 3;
const LOG: u8 = 16;
const ACK: u8 = 17;
const MESSAGE: u8 = 18;

impl Down {
    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let encoded = match self {
            Down::Stop => rmp_serde::to_vec(&(STOP,)),
            Down::Pause(seq) => rmp_serde::to_vec(&(PAUSE, seq)),
            Down::Resume(seq) => rmp_serde::to_vec(&(RESUME, seq)),
            Down::Command(c, p) => rmp_serde::to_vec(&(COMMAND, c, p)),
        };
        encoded.expect("numbers, strings and JSON values encode")
    }

    /// Decodes a frame the daemon wrote.
    ///
    /// # Errors
    ///
    /// What is wrong with the frame.
    pub fn decode(frame: &[u8]) -> Result<Down, String> {
        let parts = parts(frame)?;
        match parts.as_slice() {
            [Value::Number(t)] if t.as_u64() == Some(STOP.into()) => Ok(Down::Stop),
            [Value::Number(t), Value::Number(seq)] if t.as_u64() == Some(PAUSE.into()) => {
                Ok(Down::Pause(seq.as_u64().ok_or("a seq is a number")?))
            }
            [Value::Number(t), Value::Number(seq)] if t.as_u64() == Some(RESUME.into()) => {
                Ok(Down::Resume(seq.as_u64().ok_or("a seq is a number")?))
            }
            [Value::Number(t), Value::String(c), p] if t.as_u64() == Some(COMMAND.into()) => {
                Ok(Down::Command(c.clone(), payload(p)))
            }
            _ => Err("not a frame the daemon sends".into()),
        }
    }
}

impl Up {
    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let encoded = match self {
            Up::Log(level, text) => rmp_serde::to_vec(&(LOG, level, text)),
            Up::Ack(seq, state) => rmp_serde::to_vec(&(ACK, seq, state)),
            Up::Message(c, p) => rmp_serde::to_vec(&(MESSAGE, c, p)),
        };
        encoded.expect("numbers, strings and JSON values encode")
    }

    /// Decodes a frame a worker wrote.
    ///
    /// # Errors
    ///
    /// What is wrong with the frame.
    pub fn decode(frame: &[u8]) -> Result<Up, String> {
        let parts = parts(frame)?;
        let number =
            |v: &Value, what: &str| v.as_u64().ok_or_else(|| format!("{what} is a number"));
        match parts.as_slice() {
            [t, level, Value::String(text)] if t.as_u64() == Some(LOG.into()) => {
                let level = u8::try_from(number(level, "a level")?).map_err(|e| e.to_string())?;
                Ok(Up::Log(level, text.clone()))
            }
            [t, seq, state] if t.as_u64() == Some(ACK.into()) => {
                let state = u32::try_from(number(state, "a state")?).map_err(|e| e.to_string())?;
                Ok(Up::Ack(number(seq, "a seq")?, state))
            }
            [t, Value::String(c), p] if t.as_u64() == Some(MESSAGE.into()) => {
                Ok(Up::Message(c.clone(), payload(p)))
            }
            _ => Err("not a frame a worker sends".into()),
        }
    }
}

fn payload(p: &Value) -> Option<Value> {
    (!p.is_null()).then(|| p.clone())
}

/// The frame as an array, measured with the scanner first.
fn parts(frame: &[u8]) -> Result<Vec<Value>, String> {
    match msgpack::Scanner::default().scan(frame, frame.len()) {
        Scan::Complete(n) if n == frame.len() => {}
        other => {
            return Err(format!(
                "a frame that is not one MessagePack value: {other:?}"
            ));
        }
    }
    match msgpack::decode_value(frame)? {
        Value::Array(parts) => Ok(parts),
        _ => Err("a frame is an array".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_round_trip() {
        for down in [
            Down::Stop,
            Down::Pause(7),
            Down::Resume(u64::MAX),
            Down::Command("changename".into(), None),
            Down::Command("stop".into(), Some(json!({"a": [1, 2]}))),
        ] {
            assert_eq!(Down::decode(&down.encode()).unwrap(), down);
            assert!(Up::decode(&down.encode()).is_err(), "{down:?} is not an Up");
        }
        for up in [
            Up::Log(3, "hello".into()),
            Up::Ack(1, 2),
            Up::Message("exited".into(), Some(json!({"crashed": true}))),
            Up::Message("ack".into(), None),
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
            Up::decode(b"\x93\x12\xa1x\xc0").unwrap(),
            Up::Message("x".into(), None)
        );
    }
}
