//! The log file: opened append-only, reopened at its path after logrotate moved it.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// A log file that can be reopened at its path: what a logger made by [`reopenable`](super::reopenable)
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
    /// Opens (creating, mode 0640 under the umask) the file at `path` for appending.
    ///
    /// # Errors
    ///
    /// [`Error::Path`] if it cannot be opened, or is a FIFO or a socket.
    pub fn open(path: &Path) -> Result<LogFile> {
        Ok(LogFile {
            path: path.to_owned(),
            current: Arc::new(Mutex::new(Owned::open(path)?)),
        })
    }

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
pub(super) struct Owned(File);

impl Owned {
    pub(super) fn open(path: &Path) -> Result<Owned> {
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
