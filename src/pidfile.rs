//! The pid file, held under an exclusive `flock` for the daemon's whole life.
//!
//! The lock is what says a daemon is alive, not the file's presence: a file left by a killed
//! daemon is unlocked, so the next start takes it over. The lock belongs to the open file
//! description, so it survives the daemonizing forks (the launcher locks, the daemon keeps
//! the descriptor) and is released only when the last descriptor closes. Dropping a
//! [`PidFile`] therefore never unlocks explicitly: that would release the lock for every
//! process sharing the descriptor.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::libc;

use crate::error::{Error, Result};

/// A locked pid file.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    file: File,
}

impl Drop for PidFile {
    fn drop(&mut self) {
        crate::sys::disown(std::os::fd::AsRawFd::as_raw_fd(&self.file));
    }
}

/// What [`PidFile::lock`] found in the file it took over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Previous {
    /// The file did not exist or was empty.
    Fresh,
    /// The file held the pid of a daemon that is gone (a stale file).
    Stale(Option<i32>),
}

impl PidFile {
    /// Creates (or opens) the pid file and takes its exclusive lock without waiting.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyRunning`], naming the pid written in the file, when a live process
    /// holds the lock; [`Error::Path`] when the file cannot be opened or locked.
    pub fn lock(path: &Path) -> Result<(PidFile, Previous)> {
        // A concurrent daemon may unlink the file between our open and our lock; then we
        // hold a lock on an orphaned inode. Check the path still names what we locked.
        for _ in 0..16 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                // Never through a symlink: a daemon must not truncate whatever it points at.
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(path)
                .map_err(|e| open_error(path, e))?;
            // A fifo, a device or a directory is never truncated, written or removed.
            if !file.metadata().is_ok_and(|m| m.is_file()) {
                return Err(Error::path(
                    path,
                    "opening pid file",
                    io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
                ));
            }
            if let Err(e) = try_lock(&file) {
                if e.kind() == io::ErrorKind::WouldBlock {
                    return Err(Error::AlreadyRunning {
                        path: path.to_owned(),
                        pid: read_pid(&mut file),
                    });
                }
                return Err(Error::path(path, "locking pid file", e));
            }
            let same = match (file.metadata(), fs::symlink_metadata(path)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            };
            if same {
                let previous = match read_pid(&mut file) {
                    None if file.metadata().map(|m| m.len()).unwrap_or(0) == 0 => Previous::Fresh,
                    pid => Previous::Stale(pid),
                };
                crate::sys::own(std::os::fd::AsRawFd::as_raw_fd(&file));
                return Ok((
                    PidFile {
                        path: path.to_owned(),
                        file,
                    },
                    previous,
                ));
            }
        }
        Err(Error::path(
            path,
            "locking pid file",
            io::Error::other("the file kept being replaced while locking it"),
        ))
    }

    /// Tells whether a live process holds the lock on `path`, without taking it for long.
    ///
    /// Returns the pid written in the file when it is locked.
    pub fn holder(path: &Path) -> Option<Option<i32>> {
        match PidFile::lock(path) {
            Err(Error::AlreadyRunning { pid, .. }) => Some(pid),
            _ => None,
        }
    }

    /// Writes `pid` (and a newline) as the whole content of the file.
    ///
    /// # Errors
    ///
    /// [`Error::Path`] on a write error.
    pub fn write_pid(&mut self, pid: i32) -> Result<()> {
        let text = format!("{pid}\n");
        let write = |f: &mut File| -> io::Result<()> {
            f.set_len(0)?;
            f.seek(SeekFrom::Start(0))?;
            f.write_all(text.as_bytes())?;
            f.sync_data()
        };
        write(&mut self.file).map_err(|e| Error::path(&self.path, "writing pid file", e))
    }

    /// The path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file, then releases the lock by closing it.
    ///
    /// # Errors
    ///
    /// [`Error::Path`] if the file cannot be removed (the lock is released all the same).
    pub fn remove(self) -> Result<()> {
        // The lock goes with the file when `self` drops, after the path is removed.
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::path(&self.path, "removing pid file", e)),
        }
    }
}

fn open_error(path: &Path, e: io::Error) -> Error {
    let symlink = e.raw_os_error() == Some(libc::ELOOP)
        && fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if symlink {
        return Error::path(
            path,
            "opening pid file",
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the path is a symlink, refused: give the real path",
            ),
        );
    }
    Error::path(path, "opening pid file", e)
}

fn try_lock(file: &File) -> io::Result<()> {
    loop {
        // SAFETY: flock(2) on a descriptor `file` owns for the duration of the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn read_pid(file: &mut File) -> Option<i32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory for one test, removed with what is in it when dropped (when the
    /// test fails too).
    struct Dir(PathBuf);

    impl Dir {
        fn pid(&self) -> PathBuf {
            self.0.join("d.pid")
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn temp(name: &str) -> Dir {
        let dir =
            std::env::temp_dir().join(format!("daimon-pidfile-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    #[test]
    fn lock_write_and_remove() {
        let dir = temp("basic");
        let path = dir.pid();
        let (mut pf, previous) = PidFile::lock(&path).unwrap();
        assert_eq!(previous, Previous::Fresh);
        pf.write_pid(1234).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "1234\n");
        // flock locks belong to the open file description: a second open in this same
        // process conflicts just as another process would.
        match PidFile::lock(&path) {
            Err(Error::AlreadyRunning { pid, .. }) => assert_eq!(pid, Some(1234)),
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }
        assert_eq!(PidFile::holder(&path), Some(Some(1234)));
        assert_eq!(fs::read_to_string(&path).unwrap(), "1234\n", "untouched");
        pf.remove().unwrap();
        assert!(!path.exists());
        assert_eq!(PidFile::holder(&path), None);
    }

    #[test]
    fn stale_file_is_taken_over() {
        let dir = temp("stale");
        let path = dir.pid();
        fs::write(&path, "99999\n").unwrap();
        let (mut pf, previous) = PidFile::lock(&path).unwrap();
        assert_eq!(previous, Previous::Stale(Some(99999)));
        pf.write_pid(7).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "7\n");
    }

    #[test]
    fn a_symlink_is_refused_and_its_target_untouched() {
        let dir = temp("symlink");
        let path = dir.pid();
        let target = path.with_file_name("target");
        fs::write(&target, "precious\n").unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let err = PidFile::lock(&path).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "precious\n");
        assert!(PidFile::holder(&path).is_none());
    }

    #[test]
    fn a_device_is_refused_and_kept() {
        let err = PidFile::lock(Path::new("/dev/null")).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(Path::new("/dev/null").exists());
    }

    #[test]
    fn unopenable_path_names_the_file() {
        let err = PidFile::lock(Path::new("/nonexistent-dir/x.pid")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/x.pid"), "{err}");
    }
}
