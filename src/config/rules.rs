//! The rules for the configuration's values: the allowed ranges, each described for its
//! error message, and the parsers from JSON that [`Config::set`](super::Config::set) and
//! [`Config::validate`](super::Config::validate) share.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};

/// An allowed range and how to describe it in an error message: the one place each range
/// rule lives, used by both [`Config::set`] and [`Config::validate`].
pub(super) struct Rule<T> {
    pub(super) range: RangeInclusive<T>,
    pub(super) expected: &'static str,
}

impl<T: PartialOrd> Rule<T> {
    /// `value` if it is there and in range; otherwise an error on `key` showing `got`.
    pub(super) fn check(&self, key: &str, value: Option<T>, got: &dyn Display) -> Result<T> {
        value
            .filter(|v| self.range.contains(v))
            .ok_or_else(|| refuse(key, self.expected, got))
    }
}

pub(super) const SOCKETBUFFER: Rule<usize> = Rule {
    range: 64..=16 * 1024 * 1024,
    expected: "an integer number of bytes in 64..=16777216",
};

pub(super) const SOCKETMAXCONNECTIONS: Rule<usize> = Rule {
    range: 1..=65536,
    expected: "an integer in 1..=65536",
};

pub(super) const NICENESS: Rule<i32> = Rule {
    range: -20..=19,
    expected: "null or an integer in -20..=19",
};

pub(super) const UMASK: Rule<u32> = Rule {
    range: 0..=0o777,
    expected: "an integer in 0..=511 or a string of octal digits like \"027\" or \"0o027\"",
};

pub(super) const SECONDS: Rule<Duration> = Rule {
    range: Duration::from_nanos(1)..=Duration::from_secs(3600),
    expected: "a number of seconds greater than 0 and at most 3600",
};

pub(super) const MAXREQUESTSIZE: Rule<usize> = Rule {
    range: 64..=256 * 1024 * 1024,
    expected: "an integer number of bytes in 64..=268435456",
};

pub(super) const SOCKETMAXOUTPUT: Rule<usize> = Rule {
    range: 1024..=1024 * 1024 * 1024,
    expected: "an integer number of bytes in 1024..=1073741824",
};

pub(super) const SOCKETMAXBATCH: Rule<usize> = Rule {
    range: 1..=65536,
    expected: "an integer number of requests in 1..=65536",
};

pub(super) const MAXREQUESTVALUES: Rule<usize> = Rule {
    range: 16..=16 * 1024 * 1024,
    expected: "an integer number of values in 16..=16777216",
};

pub(super) const IDLE_SECONDS: Rule<Duration> = Rule {
    range: Duration::ZERO..=Duration::from_secs(86400),
    expected: "a number of seconds from 0 (never) to 86400",
};

pub(super) const MODE: Rule<u32> = Rule {
    range: 0..=0o777,
    expected: "an integer in 0..=511 or a string of octal digits like \"0600\"",
};

pub(super) const LOGLINES: Rule<usize> = Rule {
    range: 0..=100_000,
    expected: "an integer number of lines in 0..=100000",
};

/// Values shown in error messages are cut to this many characters.
const MAX_SHOWN: usize = 60;

/// The "expected ..., got ..." error on `key`.
pub(super) fn refuse(key: &str, expected: &str, got: &dyn Display) -> Error {
    let mut got = got.to_string();
    if let Some((cut, _)) = got.char_indices().nth(MAX_SHOWN) {
        got.truncate(cut);
        got.push_str("...");
    }
    Error::config(key, format!("expected {expected}, got {got}"))
}

/// A JSON integer as a `usize`, if it is one.
pub(super) fn as_usize(value: &Value) -> Option<usize> {
    value.as_u64().and_then(|n| usize::try_from(n).ok())
}

/// A JSON number of seconds as a `Duration`, if it is a non-negative number that fits.
pub(super) fn as_duration(value: &Value) -> Option<Duration> {
    value
        .as_f64()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
}

/// A umask given as a JSON integer or as a string of octal digits with an optional `0o`.
pub(super) fn as_umask(value: &Value) -> Option<u32> {
    match value {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => {
            let digits = s.strip_prefix("0o").unwrap_or(s);
            let octal = !digits.is_empty() && digits.bytes().all(|b| matches!(b, b'0'..=b'7'));
            octal.then(|| u32::from_str_radix(digits, 8).ok()).flatten()
        }
        _ => None,
    }
}

/// What a path key expects.
pub(super) const PATH_EXPECTED: &str = "a non-empty path string";

/// Whether a path can name a file: not empty and without NUL bytes.
pub(super) fn path_ok(path: &Path) -> bool {
    let bytes = path.as_os_str().as_encoded_bytes();
    !bytes.is_empty() && !bytes.contains(&0)
}

/// A JSON string as a path, if it is a usable one.
pub(super) fn path(key: &str, value: &Value, expected: &str) -> Result<PathBuf> {
    value
        .as_str()
        .map(PathBuf::from)
        .filter(|p| path_ok(p))
        .ok_or_else(|| refuse(key, expected, value))
}

/// Float seconds, for messages and JSON.
pub(super) fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The `loglevel` value for `name`.
pub(super) fn level_named(name: &str) -> Option<slog::Level> {
    use slog::Level;
    Some(match name {
        "critical" => Level::Critical,
        "error" => Level::Error,
        "warning" => Level::Warning,
        "info" => Level::Info,
        "debug" => Level::Debug,
        "trace" => Level::Trace,
        _ => return None,
    })
}

/// The `loglevel` name of `level`.
pub(super) fn level_name(level: slog::Level) -> &'static str {
    use slog::Level;
    match level {
        Level::Critical => "critical",
        Level::Error => "error",
        Level::Warning => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}
