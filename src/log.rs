//! Logging: slog-term to the terminal in the foreground, to `logfile` when detached.
//!
//! A log write that fails (a full disk, a closed stderr) never stops the daemon: the line
//! is dropped and counted ([`dropped`], `log_dropped` in `daemon.status`), and the next line
//! is tried again, so logging resumes once writing works. The log file can be reopened at
//! its path ([`LogFile::reopen`], SIGUSR1 with the standard listeners) after logrotate moved
//! it away.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use slog::{Drain, Level, LevelFilter, Logger, Never, OwnedKVList, Record, o};

use crate::error::{Error, Result};

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
/// [`Error::Path`] if the file cannot be opened.
pub fn file(path: &Path, verbose: bool) -> Result<Logger> {
    reopenable(path, verbose).map(|(logger, _)| logger)
}

/// Like [`file()`], with the handle that reopens the file at its path.
///
/// # Errors
///
/// [`Error::Path`] if the file cannot be opened.
pub fn reopenable(path: &Path, verbose: bool) -> Result<(Logger, LogFile)> {
    let log = LogFile {
        path: path.to_owned(),
        current: Arc::new(Mutex::new(Owned::open(path)?)),
    };
    let decorator = slog_term::PlainSyncDecorator::new(log.clone());
    let drain = slog_term::FullFormat::new(decorator).build();
    let drain = Counted(LevelFilter::new(drain, level(verbose)));
    Ok((Logger::root(drain, o!()), log))
}

/// A log file that can be reopened at its path: what a logger made by [`reopenable`]
/// writes to.
#[derive(Clone)]
pub struct LogFile {
    path: PathBuf,
    current: Arc<Mutex<Owned>>,
}

impl std::fmt::Debug for LogFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFile").field("path", &self.path).finish()
    }
}

impl LogFile {
    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the file at its path again (creating it) and writes there from now on: after
    /// logrotate renamed the old one.
    ///
    /// # Errors
    ///
    /// [`Error::Path`] if it cannot be opened; the logger goes on writing to the old file.
    pub fn reopen(&self) -> Result<()> {
        let fresh = Owned::open(&self.path)?;
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        *current = fresh;
        Ok(())
    }
}

impl io::Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.0.flush()
    }
}

/// The open log file, recorded as daimon's for its life (a forked worker closes it).
struct Owned(File);

impl Owned {
    fn open(path: &Path) -> Result<Owned> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            // Non-blocking for the open only: a FIFO without a reader fails at once (ENXIO)
            // instead of hanging the daemon in open(2).
            .custom_flags(nix::libc::O_CLOEXEC | nix::libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| Error::path(path, "opening log file", e))?;
        let kind = file
            .metadata()
            .map_err(|e| Error::path(path, "opening log file", e))?
            .file_type();
        {
            use std::os::unix::fs::FileTypeExt;
            if kind.is_fifo() || kind.is_socket() {
                let e = std::io::Error::other("a FIFO or socket, not a file");
                return Err(Error::path(path, "opening log file", e));
            }
        }
        let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL)
            .map_err(|e| Error::path(path, "opening log file", e.into()))?;
        let blocking = nix::fcntl::OFlag::from_bits_truncate(flags) - nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(blocking))
            .map_err(|e| Error::path(path, "opening log file", e.into()))?;
        crate::sys::own(std::os::fd::AsRawFd::as_raw_fd(&file));
        Ok(Owned(file))
    }
}

impl Drop for Owned {
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
