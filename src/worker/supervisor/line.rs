//! The stop line: one pipe whose read end every worker holds and watches. The daemon's
//! shutdown closes the write end, and every worker reads the end of file at once: a stop
//! of any number of workers is one call, where a `Stop` frame for each was a send each,
//! each waking its worker while the daemon went on down the list (and each woken worker
//! took the processor from it).
//!
//! Only the daemon holds the write end: the fork server and every worker close it (it is
//! recorded as daimon's, so a forked worker closes it with the daemon's other
//! descriptors), and both ends are close-on-exec, so nothing the daemon or a worker runs
//! inherits them. One byte is written before the close, so that the line reads as pulled
//! even while some process that forked without exec still holds a copy of the write end.
//! A worker never reads from the line (it would take that byte from all).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::fcntl::OFlag;

/// The daemon's ends of the stop line.
#[derive(Debug)]
pub(super) struct Line {
    read: OwnedFd,
    /// Until the line is pulled.
    write: Option<OwnedFd>,
}

impl Line {
    pub(super) fn new() -> io::Result<Line> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        crate::sys::own(read.as_raw_fd());
        crate::sys::own(write.as_raw_fd());
        Ok(Line {
            read,
            write: Some(write),
        })
    }

    /// The read end, which a worker forked now inherits at this number (and holds from then
    /// on, whatever the daemon does with its own).
    pub(super) fn reader(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Whether the line was pulled.
    pub(super) fn is_pulled(&self) -> bool {
        self.write.is_none()
    }

    /// Pulls the line: every worker holding it stops. True the first time.
    pub(super) fn pull(&mut self) -> bool {
        let Some(write) = self.write.take() else {
            return false;
        };
        // An empty pipe takes one byte without blocking; a failure leaves the close.
        let _ = nix::unistd::write(&write, b"!");
        crate::sys::disown(write.as_raw_fd());
        drop(write);
        true
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        crate::sys::disown(self.read.as_raw_fd());
        if let Some(write) = &self.write {
            crate::sys::disown(write.as_raw_fd());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a worker's poller sees of its read end.
    fn readable(fd: RawFd) -> bool {
        readable_within(fd, nix::poll::PollTimeout::ZERO)
    }

    /// Whether the read end becomes readable within `timeout`.
    fn readable_within(fd: RawFd, timeout: nix::poll::PollTimeout) -> bool {
        // SAFETY: `fd` is open for the duration of the call (the test holds the line).
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
        nix::poll::poll(&mut fds, timeout).unwrap() == 1
    }

    #[test]
    fn a_line_reads_only_once_pulled_and_is_pulled_once() {
        let mut line = Line::new().unwrap();
        assert!(
            crate::sys::is_owned(line.reader()),
            "closed by forked workers"
        );
        assert!(!readable(line.reader()));
        assert!(!line.is_pulled());
        assert!(line.pull());
        assert!(line.is_pulled());
        assert!(readable(line.reader()));
        assert!(!line.pull(), "pulled once");
        assert!(readable(line.reader()));
    }

    /// The byte is there for a holder of a copy of the write end, which would keep the end
    /// of file away; and once every write end is closed, the end of file stays whatever
    /// reads the byte.
    #[test]
    fn a_pulled_line_reads_with_a_copy_of_its_write_end_left_and_after_its_byte_is_taken() {
        let mut line = Line::new().unwrap();
        let copy = line.write.as_ref().unwrap().try_clone().unwrap();
        line.pull();
        assert!(readable(line.reader()), "the byte, with a write end left");
        let mut byte = [0u8; 1];
        // SAFETY: the line's read end, open while `line` lives.
        let read = unsafe { std::os::fd::BorrowedFd::borrow_raw(line.reader()) };
        assert_eq!(nix::unistd::read(read, &mut byte), Ok(1));
        assert!(!readable(line.reader()), "taken, and a write end left");
        drop(copy);
        // (A child that another test forks meanwhile holds a copy of the write end until
        // its exec: the end of file may take that long.)
        let soon = nix::poll::PollTimeout::from(5_000u16);
        assert!(readable_within(line.reader(), soon), "the end of file");
    }
}
