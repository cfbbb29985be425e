//! Logging: slog-term to the terminal in the foreground, to `logfile` when detached (or to
//! syslog without one), in the text or the JSON format (`logformat`), with the last lines
//! of the daemon and of each worker kept in memory for `daemon.log` and `worker.log`.
//!
//! A log write that fails (a full disk, a closed stderr) never stops the daemon: the line
//! is dropped and counted ([`dropped`], `log_dropped` in `daemon.status`), and the next line
//! is tried again, so logging resumes once writing works. The log file can be reopened at
//! its path ([`LogFile::reopen`], SIGUSR1 with the standard listeners, `daemon.reopenlogs`)
//! after logrotate moved it away.
//!
//! Split into its concepts: the log file (`file`), the rings of last lines (`ring`), the
//! drains the logger is made of (`drains`) and how they are put together (`build`), syslog
//! (`syslog`).

mod build;
mod drains;
mod file;
pub(crate) mod ring;
mod syslog;

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use slog::{Drain, Level, LevelFilter, Logger, Never, OwnedKVList, Record, o};

use crate::error::Result;
pub(crate) use build::{Output, build, tee_custom};
pub use file::LogFile;
pub use ring::{MAX_LINE, Stream};

/// Log lines this process could not write, since it started.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many log lines of daimon's own loggers this process dropped because writing them
/// failed.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Drops and counts the records the inner drain fails to write, rather than panicking as
/// `Drain::fuse` does.
struct Counted<D>(D);

impl<D: Drain> Drain for Counted<D> {
    type Ok = ();
    type Err = Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> std::result::Result<(), Never> {
        if self.0.log(record, values).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

fn level(verbose: bool) -> Level {
    if verbose { Level::Debug } else { Level::Info }
}

/// The log's format, the `logformat` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// slog-term's lines: `Dec 02 19:00:00.123 INFO ready, pid: 42`.
    #[default]
    Text,
    /// One JSON object per line, for log collectors: `time` (RFC 3339, UTC), `level`,
    /// `msg`, then the record's fields (`worker`, `stream`, ...).
    Json,
}

impl Format {
    /// The name as the `logformat` key spells it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
        }
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Format, String> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            _ => Err(format!("unknown log format {s:?}: \"text\" or \"json\"")),
        }
    }
}

/// Changes the running daemon's log at run time: its format and how many lines its rings
/// keep. Cloned handles change the same log ([`DaemonHost::log_control`](crate::DaemonHost::log_control)).
#[derive(Clone)]
pub struct Control {
    inner: Arc<Shared>,
}

struct Shared {
    format: AtomicU8,
    /// The least severe level written, as `slog::Level::as_usize`.
    level: AtomicUsize,
    lines: AtomicUsize,
    daemon: Mutex<ring::Ring>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("format", &self.format())
            .field("lines", &self.lines())
            .finish()
    }
}

impl Default for Control {
    fn default() -> Self {
        Control::new(Format::Text, 1000)
    }
}

impl Control {
    /// A control starting with `format` and rings of `lines` lines.
    pub fn new(format: Format, lines: usize) -> Control {
        Control {
            inner: Arc::new(Shared {
                format: AtomicU8::new(format as u8),
                level: AtomicUsize::new(Level::Info.as_usize()),
                lines: AtomicUsize::new(lines),
                daemon: Mutex::new(ring::Ring::default()),
            }),
        }
    }

    /// The format records are written in now.
    pub fn format(&self) -> Format {
        match self.inner.format.load(Ordering::Relaxed) {
            1 => Format::Json,
            _ => Format::Text,
        }
    }

    /// Writes the next records in `format` (a logger the daemon built; a custom logger keeps
    /// its own).
    pub fn set_format(&self, format: Format) {
        self.inner.format.store(format as u8, Ordering::Relaxed);
    }

    /// The least severe level the daemon's logger writes (and keeps in its ring).
    pub fn level(&self) -> Level {
        Level::from_usize(self.inner.level.load(Ordering::Relaxed)).unwrap_or(Level::Info)
    }

    /// Writes the records at `level` or more severe from now on (a logger the daemon built;
    /// a custom logger keeps its own level).
    pub fn set_level(&self, level: Level) {
        self.inner.level.store(level.as_usize(), Ordering::Relaxed);
    }

    /// How many lines each ring keeps.
    pub fn lines(&self) -> usize {
        self.inner.lines.load(Ordering::Relaxed)
    }

    /// Keeps `lines` lines per ring from now on: the daemon's ring is cut at once, a
    /// worker's at its next line.
    pub fn set_lines(&self, lines: usize) {
        self.inner.lines.store(lines, Ordering::Relaxed);
        self.daemon_ring().trim(lines);
    }

    fn daemon_ring(&self) -> std::sync::MutexGuard<'_, ring::Ring> {
        self.inner.daemon.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn push_daemon_line(&self, stream: Stream, level: Option<Level>, text: &str) {
        let cap = self.lines();
        self.daemon_ring().push(cap, stream, level, text);
    }

    /// The reply of `daemon.log`.
    pub(crate) fn daemon_log(&self, count: usize, after: Option<u64>) -> serde_json::Value {
        self.daemon_ring().query(count, after)
    }
}

/// A logger writing to standard error, coloured when it is a terminal; debug level when
/// `verbose`. A line that cannot be written is dropped and counted.
pub fn terminal(verbose: bool) -> Logger {
    let decorator = slog_term::TermDecorator::new().stderr().build();
    let drain = slog_term::FullFormat::new(decorator).build();
    let drain = Counted(LevelFilter::new(Mutex::new(drain), level(verbose)));
    Logger::root(drain, o!())
}

/// A logger appending to the file at `path` (created mode 0640 under the umask).
///
/// # Errors
///
/// [`Error::Path`](crate::Error::Path) if the file cannot be opened.
pub fn file(path: &Path, verbose: bool) -> Result<Logger> {
    reopenable(path, verbose).map(|(logger, _)| logger)
}

/// Like [`file()`], with the handle that reopens the file at its path.
///
/// # Errors
///
/// [`Error::Path`](crate::Error::Path) if the file cannot be opened.
pub fn reopenable(path: &Path, verbose: bool) -> Result<(Logger, LogFile)> {
    let log = LogFile::open(path)?;
    let decorator = slog_term::PlainSyncDecorator::new(log.clone());
    let drain = slog_term::FullFormat::new(decorator).build();
    let drain = Counted(LevelFilter::new(drain, level(verbose)));
    Ok((Logger::root(drain, o!()), log))
}

/// A logger that drops everything.
pub fn discard() -> Logger {
    Logger::root(slog::Discard, o!())
}

#[cfg(test)]
mod tests {
    use super::build::switch;
    use super::*;
    use std::io;

    /// A logger like [`build`]'s over an in-memory writer: the switch, the tee.
    fn switched(control: &Control) -> (Logger, Arc<Mutex<Vec<u8>>>) {
        let out = Arc::new(Mutex::new(Vec::new()));
        let writer = drains::SharedWriter(out.clone());
        let decorator = slog_term::PlainSyncDecorator::new(writer.clone());
        let text = slog_term::FullFormat::new(decorator).build();
        let json = drains::json(writer);
        let drain = slog::Duplicate(
            drains::RingTee(control.clone()),
            switch(control, text, json),
        );
        (Logger::root(Counted(drain), o!()), out)
    }

    fn take(out: &Arc<Mutex<Vec<u8>>>) -> String {
        String::from_utf8(std::mem::take(&mut *out.lock().unwrap())).unwrap()
    }

    #[test]
    fn control_switches_the_format_at_run_time() {
        let control = Control::new(Format::Text, 10);
        let (log, out) = switched(&control);
        slog::info!(log, "as text"; "worker" => "w0");
        let text = take(&out);
        assert!(text.contains("INFO as text, worker: w0"), "{text}");
        control.set_format(Format::Json);
        assert_eq!(control.format(), Format::Json);
        slog::warn!(log, "as json"; "worker" => "w0", "stream" => "stdout");
        let line = take(&out);
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["msg"], "as json");
        assert_eq!(v["level"], "WARNING");
        assert_eq!(v["worker"], "w0");
        assert_eq!(v["stream"], "stdout");
        assert!(v["time"].as_str().unwrap().ends_with('Z'), "{v}");
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
    }

    #[test]
    fn the_daemon_ring_tees_its_own_lines_and_set_lines_cuts_it() {
        let control = Control::new(Format::Text, 10);
        let (log, _out) = switched(&control);
        for i in 0..5 {
            slog::info!(log, "line {}", i; "k" => i);
        }
        // A worker's output line stays out of the daemon's ring.
        slog::info!(log, "printed"; "worker" => "w0", "stream" => "stdout");
        let v = control.daemon_log(100, None);
        assert_eq!(v["lines"].as_array().unwrap().len(), 5, "{v}");
        assert_eq!(v["lines"][4]["text"], "line 4 k=4");
        assert_eq!(v["lines"][4]["level"], "INFO");
        control.set_lines(2);
        let v = control.daemon_log(100, None);
        assert_eq!(v["lines"].as_array().unwrap().len(), 2, "{v}");
        assert_eq!(v["dropped"], 3);
        assert_eq!(control.lines(), 2);
    }

    #[test]
    fn journal_lines_carry_the_priority_and_no_time() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let journal = drains::Journal(Mutex::new(drains::SharedWriter(out.clone())));
        let log = Logger::root(Counted(journal), o!());
        slog::error!(log, "broke"; "code" => 2);
        slog::warn!(log, "odd");
        slog::info!(log, "fine");
        slog::debug!(log, "detail");
        assert_eq!(take(&out), "<3>broke code=2\n<4>odd\n<6>fine\n<7>detail\n");
    }

    #[test]
    fn a_custom_logger_keeps_its_own_and_the_ring_still_gets_the_lines() {
        let control = Control::default();
        let out = Arc::new(Mutex::new(Vec::new()));
        let decorator = slog_term::PlainSyncDecorator::new(drains::SharedWriter(out.clone()));
        let user = Logger::root(slog_term::FullFormat::new(decorator).build().fuse(), o!());
        let log = tee_custom(user, &control);
        slog::info!(log, "mine");
        assert!(take(&out).contains("mine"));
        assert_eq!(control.daemon_log(1, None)["lines"][0]["text"], "mine");
    }

    #[test]
    fn formats_parse_and_name_themselves() {
        assert_eq!("json".parse::<Format>(), Ok(Format::Json));
        assert_eq!("text".parse::<Format>(), Ok(Format::Text));
        assert!("xml".parse::<Format>().unwrap_err().contains("xml"));
        assert_eq!(Format::Json.name(), "json");
    }

    #[test]
    fn the_output_is_chosen_and_described() {
        let file = Output::choose(true, Some(Path::new("/var/log/d.log")), "D");
        assert_eq!(file, Output::File("/var/log/d.log".into()));
        assert_eq!(file.describe(), "logging to /var/log/d.log");
        let none = Output::choose(true, None, "D");
        if Path::new(syslog::DEV_LOG).exists() {
            assert_eq!(none.describe(), "logging to syslog (ident D)");
        } else {
            assert_eq!(none, Output::Discard);
            assert!(none.describe().contains("set logfile"));
        }
        assert!(matches!(
            Output::choose(false, None, "D"),
            Output::Terminal { .. }
        ));
    }

    #[test]
    fn file_logger_appends_at_the_chosen_level() {
        let path = std::env::temp_dir().join(format!("daimon-log-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        {
            let log = file(&path, false).unwrap();
            slog::info!(log, "hello"; "k" => 1);
            slog::debug!(log, "hidden");
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("hello") && text.contains("k: 1"), "{text}");
        assert!(!text.contains("hidden"), "{text}");
        let _ = std::fs::remove_file(&path);
        assert!(file(Path::new("/nonexistent-dir/x.log"), false).is_err());
    }

    #[test]
    fn reopen_writes_to_a_new_file_at_the_path() {
        let dir = std::env::temp_dir().join(format!("daimon-log-reopen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.log");
        let (log, handle) = reopenable(&path, false).unwrap();
        slog::info!(log, "before");
        std::fs::rename(&path, dir.join("d.log.1")).unwrap();
        slog::info!(log, "still old");
        handle.reopen().unwrap();
        slog::info!(log, "after");
        let old = std::fs::read_to_string(dir.join("d.log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(old.contains("before") && old.contains("still old") && !old.contains("after"));
        assert!(new.contains("after") && !new.contains("before"), "{new}");
        // A path that cannot be opened any more: the error names it, the old file stays.
        std::fs::remove_dir_all(&dir).unwrap();
        let err = handle.reopen().unwrap_err();
        assert!(err.to_string().contains("d.log"), "{err}");
        slog::info!(log, "into the unlinked file");
    }

    /// Fails while `failing` is set.
    struct Flaky(Arc<std::sync::atomic::AtomicBool>, Arc<Mutex<Vec<u8>>>);

    impl io::Write for Flaky {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.0.load(Ordering::SeqCst) {
                return Err(io::Error::from_raw_os_error(nix::libc::ENOSPC));
            }
            self.1.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_is_counted_and_logging_resumes() {
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let out = Arc::new(Mutex::new(Vec::new()));
        let decorator = slog_term::PlainSyncDecorator::new(Flaky(failing.clone(), out.clone()));
        let drain = Counted(slog_term::FullFormat::new(decorator).build());
        let log = Logger::root(drain, o!());
        let before = dropped();
        slog::info!(log, "lost");
        slog::info!(log, "lost too");
        assert!(dropped() >= before + 2, "counted");
        failing.store(false, Ordering::SeqCst);
        slog::info!(log, "written");
        let text = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
        assert!(text.contains("written") && !text.contains("lost"), "{text}");
    }
}
