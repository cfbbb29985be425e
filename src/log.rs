//! Logging: slog-term to the terminal in the foreground, to `logfile` when detached.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Mutex;

use slog::{Drain, Level, LevelFilter, Logger, o};

use crate::error::{Error, Result};

fn level(verbose: bool) -> Level {
    if verbose { Level::Debug } else { Level::Info }
}

/// A logger writing to standard error, coloured when it is a terminal; debug level when
/// `verbose`.
pub fn terminal(verbose: bool) -> Logger {
    let decorator = slog_term::TermDecorator::new().stderr().build();
    let drain = slog_term::FullFormat::new(decorator).build();
    let drain = LevelFilter::new(Mutex::new(drain), level(verbose)).fuse();
    Logger::root(drain, o!())
}

/// A logger appending to the file at `path` (created mode 0640 under the umask).
///
/// # Errors
///
/// [`Error::Path`] if the file cannot be opened.
pub fn file(path: &Path, verbose: bool) -> Result<Logger> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| Error::path(path, "opening log file", e))?;
    crate::sys::own(std::os::fd::AsRawFd::as_raw_fd(&file));
    let decorator = slog_term::PlainSyncDecorator::new(LogFile(file));
    let drain = slog_term::FullFormat::new(decorator).build();
    let drain = LevelFilter::new(drain, level(verbose)).fuse();
    Ok(Logger::root(drain, o!()))
}

/// The log file, recorded as daimon's for its life (a forked worker closes it).
struct LogFile(std::fs::File);

impl std::io::Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        crate::sys::disown(std::os::fd::AsRawFd::as_raw_fd(&self.0));
    }
}

/// A logger that drops everything.
pub fn discard() -> Logger {
    Logger::root(slog::Discard, o!())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
