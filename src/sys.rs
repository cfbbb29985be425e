//! The descriptors daimon owns, recorded process-wide, so that a forked worker closes exactly
//! those (the daemon's poller, signal pipe, sockets, connections, pid file, log file, the
//! other workers' channels) and nothing else: a descriptor the user's worker value owns
//! stays open and valid in the worker, never closed behind its back and reused.
//!
//! A descriptor is recorded right after it is opened and forgotten right before it is
//! closed, on the one thread of the daemon, so the record never names a descriptor number
//! that was closed and reused for something else.

use std::collections::BTreeSet;
use std::os::fd::RawFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::libc;

static OWNED: Mutex<BTreeSet<RawFd>> = Mutex::new(BTreeSet::new());

/// Whether descriptors are recorded: not in a worker, which never forks a worker of its own.
static RECORDING: AtomicBool = AtomicBool::new(true);

/// Whether this process records its descriptors (false in a worker).
pub(crate) fn recording() -> bool {
    RECORDING.load(Ordering::Relaxed)
}

fn owned() -> std::sync::MutexGuard<'static, BTreeSet<RawFd>> {
    OWNED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records `fd` as daimon's.
pub(crate) fn own(fd: RawFd) {
    if recording() {
        owned().insert(fd);
    }
}

/// Forgets `fd`, about to be closed.
pub(crate) fn disown(fd: RawFd) {
    owned().remove(&fd);
}

/// The descriptors open in this process, by `/proc/self/fd` (empty where it is missing).
pub(crate) fn open_fds() -> BTreeSet<RawFd> {
    let listed: BTreeSet<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // The listing names its own directory's descriptor, closed by now: the next descriptor
    // opened takes its number (the poller's epoll did, and went unrecorded, so every worker
    // kept the daemon's epoll instance open).
    listed.into_iter().filter(|&fd| is_open(fd)).collect()
}

/// Whether `fd` is open in this process.
fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD reads the descriptor's flags; it changes nothing, whatever `fd` is.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// Whether `fd` is an anonymous inode (an epoll instance, an eventfd, a timerfd).
pub(crate) fn is_anon_inode(fd: RawFd) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .is_ok_and(|target| target.to_string_lossy().starts_with("anon_inode:"))
}

/// In a forked worker: closes every descriptor daimon recorded but `keep`, and records none
/// from now on.
pub(crate) fn close_owned_except(keep: &[RawFd]) {
    RECORDING.store(false, Ordering::Relaxed);
    // Never freed: freeing would write to (and so copy) pages shared with the daemon.
    let fds = std::mem::ManuallyDrop::new(std::mem::take(&mut *owned()));
    // Runs of consecutive descriptors (most of them: channels come in pairs, connections in
    // order) are closed with one call each.
    let mut run: Option<(RawFd, RawFd)> = None;
    for &fd in fds.iter().filter(|fd| !keep.contains(fd)) {
        run = match run {
            Some((low, high)) if fd == high + 1 => Some((low, fd)),
            Some((low, high)) => {
                close_range(low, high);
                Some((fd, fd))
            }
            None => Some((fd, fd)),
        };
    }
    if let Some((low, high)) = run {
        close_range(low, high);
    }
}

/// Closes the descriptors `low..=high`.
fn close_range(low: RawFd, high: RawFd) {
    // SAFETY: the child closes its copies of the daemon's descriptors, which nothing in it
    // uses again (it never returns into the daemon's code that owns them).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, low as u32, high as u32, 0) };
    if rc != 0 {
        // Kernels before 5.9: one by one.
        for fd in low..=high {
            // SAFETY: as above, one descriptor at a time.
            unsafe { libc::close(fd) };
        }
    }
}

#[cfg(test)]
pub(crate) fn is_owned(fd: RawFd) -> bool {
    owned().contains(&fd)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;
    use crate::reactor::{Interest, Reactor};

    #[test]
    fn daimons_descriptors_are_recorded_for_their_life_only() {
        let reactor: Reactor = Reactor::new().unwrap();
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let raw = a.as_raw_fd();
        assert!(!is_owned(raw), "a user's socket is not daimon's");
        let source = reactor.register(a, Interest::READ).unwrap();
        assert!(is_owned(raw), "registered: daimon's");
        drop(source);
        assert!(!is_owned(raw), "forgotten before it closes");
        let channel = crate::worker::Channel::new().unwrap();
        let fds: Vec<RawFd> = channel.fds().map(|f| f.as_raw_fd()).collect();
        assert_eq!(fds.len(), 2, "a new channel holds both sockets");
        assert!(fds.iter().all(|&fd| is_owned(fd)));
        let worker_end = channel.worker_end();
        drop(channel);
        // The daemon's socket went with its end; the worker's is still open in its own.
        let (daemon, worker) = (fds[0], fds[1]);
        assert!(!is_owned(daemon), "closed with the daemon's end");
        assert!(is_owned(worker), "still open in the worker's end");
        drop(worker_end);
        assert!(fds.iter().all(|&fd| !is_owned(fd)));
    }
}
