//! The drains the daemon's logger is built of: the tee into the daemon's ring, the switch
//! between the text and JSON formats (changed at run time through
//! [`Control`](super::Control)), the journal's `<N>` lines, and a writer that stages one
//! record so it reaches its destination in one write.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::sync::Mutex;

use slog::{Drain, KV, Key, Level, OwnedKVList, Record, Serializer};

use super::{Control, Format};
use crate::log::ring::Stream;

/// Collects a record's key-values as ` key=value` text (the logger's first, then the
/// record's), noting whether one of them is `stream`.
#[derive(Default)]
pub(crate) struct KvText {
    pub(crate) text: String,
    pub(crate) has_stream: bool,
}

impl Serializer for KvText {
    fn emit_arguments(&mut self, key: Key, value: &std::fmt::Arguments<'_>) -> slog::Result {
        if key == "stream" {
            self.has_stream = true;
        }
        let _ = write!(self.text, " {key}={value}");
        Ok(())
    }
}

/// The text of a record: its message and its key-values.
pub(crate) fn record_text(record: &Record<'_>, values: &OwnedKVList) -> KvText {
    let mut kv = KvText::default();
    let _ = write!(kv.text, "{}", record.msg());
    let _ = record.kv().serialize(record, &mut kv);
    let _ = values.serialize(record, &mut kv);
    kv
}

/// Keeps each record of the daemon's own log in its ring (`daemon.log`). A worker's output
/// line (a record with a `stream` field) is left out: it is in that worker's ring, and a
/// chatty worker must not push the daemon's own lines out.
pub(crate) struct RingTee(pub(crate) Control);

impl Drain for RingTee {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        // The keys only, without formatting anything: the hot path of a worker's output.
        let mut keys = HasStream(false);
        let _ = record.kv().serialize(record, &mut keys);
        if keys.0 {
            return Ok(());
        }
        let kv = record_text(record, values);
        if !kv.has_stream {
            self.0
                .push_daemon_line(Stream::Log, Some(record.level()), &kv.text);
        }
        Ok(())
    }
}

/// Whether a record's own key-values name `stream`.
struct HasStream(bool);

impl Serializer for HasStream {
    fn emit_arguments(&mut self, key: Key, _: &std::fmt::Arguments<'_>) -> slog::Result {
        self.0 |= key == "stream";
        Ok(())
    }
}

/// The text format or the JSON one, as the [`Control`] says at each record.
pub(crate) struct Switch<T, J> {
    pub(crate) control: Control,
    pub(crate) text: T,
    pub(crate) json: J,
}

impl<T: Drain, J: Drain> Drain for Switch<T, J> {
    type Ok = ();
    type Err = ();

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), ()> {
        let ok = match self.control.format() {
            Format::Text => self.text.log(record, values).is_ok(),
            Format::Json => self.json.log(record, values).is_ok(),
        };
        if ok { Ok(()) } else { Err(()) }
    }
}

/// A JSON drain writing one object per line to `out`: `time` (RFC 3339, UTC), `level`,
/// `msg`, then the record's key-values (slog-json's own serializer).
pub(crate) fn json<W: Write + Send + 'static>(out: W) -> Mutex<slog_json::Json<Staged<W>>> {
    let drain = slog_json::Json::new(Staged::new(out))
        .set_newlines(true)
        .set_flush(true)
        .add_key_value(slog::o!(
            "time" => slog::FnValue(|_: &Record<'_>| {
                super::ring::rfc3339(std::time::SystemTime::now())
            }),
            "level" => slog::FnValue(|r: &Record<'_>| r.level().as_str()),
            "msg" => slog::PushFnValue(|r: &Record<'_>, s| s.emit(r.msg())),
        ))
        .build();
    Mutex::new(drain)
}

/// The syslog severity of a level, as the journal's `<N>` prefix and the syslog priority
/// use it.
pub(crate) fn severity(level: Level) -> u8 {
    match level {
        Level::Critical => 2,
        Level::Error => 3,
        Level::Warning => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// Text lines for systemd's journal (the daemon in the foreground with `JOURNAL_STREAM`
/// set): `<N>` priority prefixes, which the journal parses, and no timestamps, which it
/// adds itself.
pub(crate) struct Journal<W>(pub(crate) Mutex<W>);

impl<W: Write> Drain for Journal<W> {
    type Ok = ();
    type Err = io::Error;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> io::Result<()> {
        let kv = record_text(record, values);
        let line = format!("<{}>{}\n", severity(record.level()), kv.text);
        let mut out = self.0.lock().unwrap_or_else(|p| p.into_inner());
        out.write_all(line.as_bytes())
    }
}

/// Gathers what is written between two flushes and writes it at the flush in one call: a
/// record reaches a log file whole (an `O_APPEND` write), never in pieces that another
/// writer could come between.
pub(crate) struct Staged<W> {
    buffer: Vec<u8>,
    out: W,
}

impl<W> Staged<W> {
    pub(crate) fn new(out: W) -> Staged<W> {
        Staged {
            buffer: Vec::with_capacity(256),
            out,
        }
    }
}

impl<W: Write> Write for Staged<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let outcome = self.out.write_all(&self.buffer);
        self.buffer.clear();
        if self.buffer.capacity() > 64 * 1024 {
            self.buffer.shrink_to(256);
        }
        outcome.and_then(|()| self.out.flush())
    }
}

/// Standard error, unbuffered, as a writer the drains can own.
pub(crate) struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::stderr().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// A writer shared by several drains (tests read what was written).
#[cfg(test)]
#[derive(Clone)]
pub(crate) struct SharedWriter(pub(crate) std::sync::Arc<Mutex<Vec<u8>>>);

#[cfg(test)]
impl Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
