//! Bounded rings of the last log lines: one per worker (its stdout, its stderr, its own slog
//! lines) and one for the daemon's own log, read by `worker.log` and `daemon.log`.
//!
//! Each line has a sequence number that only grows, so a client follows a ring by passing
//! the last `next` it got as `after`. The ring holds at most `loglines` lines, each at most
//! [`MAX_LINE`] bytes, so it is bounded in bytes too; lines that fell out (or were cut by
//! the flood bound) are counted in `dropped`.

use std::collections::VecDeque;
use std::time::SystemTime;

use serde_json::{Value, json};
use slog::Level;

/// The longest line kept or logged, in bytes; the rest of a longer one is cut and counted.
pub const MAX_LINE: usize = 4096;

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The worker's standard output.
    Stdout,
    /// The worker's standard error.
    Stderr,
    /// A slog record (the worker's own logger, or the daemon's).
    Log,
}

impl Stream {
    /// The name on the wire and in the log's `stream` field.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Log => "log",
        }
    }
}

#[derive(Debug, Clone)]
struct Line {
    seq: u64,
    time: SystemTime,
    stream: Stream,
    level: Option<Level>,
    text: String,
}

/// The last lines of one log.
#[derive(Debug, Default)]
pub(crate) struct Ring {
    lines: VecDeque<Line>,
    /// The sequence number of the last line pushed (0: none yet).
    last: u64,
    dropped: u64,
}

impl Ring {
    /// Appends a line (cut to [`MAX_LINE`] bytes at a character boundary), keeping at most
    /// `cap` lines.
    pub(crate) fn push(&mut self, cap: usize, stream: Stream, level: Option<Level>, text: &str) {
        self.last += 1;
        let text = cut(text, MAX_LINE).to_owned();
        self.lines.push_back(Line {
            seq: self.last,
            time: SystemTime::now(),
            stream,
            level,
            text,
        });
        self.trim(cap);
    }

    /// Keeps at most `cap` lines, counting those that fall out.
    pub(crate) fn trim(&mut self, cap: usize) {
        while self.lines.len() > cap {
            self.lines.pop_front();
            self.dropped += 1;
        }
    }

    /// Counts `n` lines (or parts of lines) lost before they reached the ring.
    pub(crate) fn lost(&mut self, n: u64) {
        self.dropped += n;
    }

    /// The lines held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lines.len()
    }

    /// The reply of `worker.log` and `daemon.log`: without `after`, the last `count` lines;
    /// with it, the first `count` lines whose seq is above it. `next` is what to pass as
    /// `after` the next time.
    pub(crate) fn query(&self, count: usize, after: Option<u64>) -> Value {
        let picked: Vec<&Line> = match after {
            None => {
                let skip = self.lines.len().saturating_sub(count);
                self.lines.iter().skip(skip).collect()
            }
            Some(after) => self
                .lines
                .iter()
                .filter(|l| l.seq > after)
                .take(count)
                .collect(),
        };
        let next = match (picked.last(), after) {
            (Some(line), _) => line.seq,
            (None, Some(after)) => after.min(self.last),
            (None, None) => self.last,
        };
        let lines: Vec<Value> = picked
            .iter()
            .map(|l| {
                json!({
                    "seq": l.seq,
                    "time": rfc3339(l.time),
                    "stream": l.stream.name(),
                    "level": l.level.map(|l| l.as_str()),
                    "text": l.text,
                })
            })
            .collect();
        json!({"lines": lines, "next": next, "dropped": self.dropped})
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
pub(crate) fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `time` as RFC 3339 in UTC with milliseconds: `2026-12-02T19:00:00.123Z`.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    // Howard Hinnant's days-to-civil, for the proleptic Gregorian calendar.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_and_counts_the_dropped() {
        let mut ring = Ring::default();
        for i in 0..10 {
            ring.push(3, Stream::Stdout, None, &format!("line {i}"));
        }
        assert_eq!(ring.len(), 3);
        let v = ring.query(100, None);
        assert_eq!(v["dropped"], 7);
        assert_eq!(v["next"], 10);
        let texts: Vec<&str> = v["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["text"].as_str().unwrap())
            .collect();
        assert_eq!(texts, ["line 7", "line 8", "line 9"]);
        assert_eq!(v["lines"][0]["seq"], 8);
        assert_eq!(v["lines"][0]["stream"], "stdout");
        assert_eq!(v["lines"][0]["level"], Value::Null);
        // The last two only.
        assert_eq!(ring.query(2, None)["lines"][0]["text"], "line 8");
    }

    #[test]
    fn after_follows_the_ring() {
        let mut ring = Ring::default();
        ring.push(100, Stream::Log, Some(Level::Warning), "a");
        ring.push(100, Stream::Log, Some(Level::Info), "b");
        let v = ring.query(1, Some(0));
        assert_eq!(v["lines"][0]["text"], "a");
        assert_eq!(v["lines"][0]["level"], "WARNING");
        assert_eq!(v["next"], 1);
        let v = ring.query(10, Some(1));
        assert_eq!(v["lines"].as_array().unwrap().len(), 1);
        assert_eq!(v["next"], 2);
        // Nothing new: the same cursor back.
        let v = ring.query(10, Some(2));
        assert!(v["lines"].as_array().unwrap().is_empty());
        assert_eq!(v["next"], 2);
        ring.push(100, Stream::Stderr, None, "c");
        assert_eq!(ring.query(10, Some(2))["lines"][0]["text"], "c");
    }

    #[test]
    fn a_long_line_is_cut_at_a_character_boundary() {
        let mut ring = Ring::default();
        let long = "é".repeat(MAX_LINE);
        ring.push(10, Stream::Stdout, None, &long);
        let v = ring.query(1, None);
        let text = v["lines"][0]["text"].as_str().unwrap();
        assert!(text.len() <= MAX_LINE && text.len() >= MAX_LINE - 1);
        assert_eq!(cut("abc", 2), "ab");
    }

    #[test]
    fn a_zero_cap_keeps_nothing() {
        let mut ring = Ring::default();
        ring.push(0, Stream::Stdout, None, "x");
        assert_eq!(ring.len(), 0);
        assert_eq!(ring.query(10, None)["dropped"], 1);
    }

    #[test]
    fn rfc3339_formats_utc() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_796_238_000_123);
        assert_eq!(rfc3339(t), "2026-12-02T19:00:00.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
