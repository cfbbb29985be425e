//! Waiting on the poller's epoll instance directly (Linux).
//!
//! polling's `Poller::wait` arms its timerfd, re-registers it, and clears and re-registers
//! its notifier around every `epoll_wait`: four system calls per turn, about 0.6 µs, the
//! largest part of what a call costs beyond an echo server's. The reactor needs none of it:
//! its timeout is the wait's own (`epoll_pwait2`, to the nanosecond; `epoll_wait` in
//! milliseconds, rounded up, where the kernel lacks it), and only [`Handle::wake`] uses the
//! notifier, rarely; when the notifier fires, polling's own `wait` runs once to clear it.
//! Registration stays polling's.
//!
//! This leans on how polling's epoll backend registers descriptors: the poller's descriptor
//! is the epoll instance, and each registration's epoll data is its key. [`usable`] checks
//! exactly that once per process, on a socket pair made readable, and the reactor goes back
//! to polling's `wait` for good if it does not hold (another polling release, another
//! backend).
//!
//! [`Handle::wake`]: super::Handle::wake

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::libc;
use polling::{Event, Events, Poller};

use super::Readiness;

/// polling's key for its own notifier and timer.
const NOTIFY_KEY: u64 = usize::MAX as u64;
/// The key of the self-check's registration.
const CHECK_KEY: usize = usize::MAX - 1;

/// Whether waiting directly gives what polling's `wait` would (checked once per process;
/// a forked worker keeps the parent's answer, the same code on the same kernel).
pub(super) fn usable(poller: &Poller) -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| self_check(poller).unwrap_or(false))
}

/// Registers one end of a socket pair with a known key, makes it readable, waits directly,
/// and looks for that key.
fn self_check(poller: &Poller) -> io::Result<bool> {
    let (a, mut b) = UnixStream::pair()?;
    b.write_all(b"x")?;
    // SAFETY: `a` lives until the end of this function and is deleted from the poller
    // before it closes (below, on every path after the add).
    unsafe { poller.add(&a, Event::readable(CHECK_KEY))? };
    let mut found = Vec::new();
    let waited = wait(poller, &mut Vec::new(), &mut found, Some(Duration::ZERO));
    let deleted = poller.delete(&a);
    waited?;
    deleted?;
    Ok(found
        .iter()
        .any(|r| r.key == CHECK_KEY && r.readable && !r.writable))
}

/// The epoll events polling counts as readable, and as writable.
const READ: u32 = (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLPRI) as u32;
const WRITE: u32 = (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32;

/// The most events one wait returns.
const CAPACITY: usize = 1024;

/// Waits on `poller`'s epoll instance at most `timeout` (`None`: until something is ready)
/// and appends what is ready to `out`. `buf` is scratch space kept between turns.
///
/// # Errors
///
/// The kernel's error; an interrupted wait is not one (it returns nothing).
pub(super) fn wait(
    poller: &Poller,
    buf: &mut Vec<libc::epoll_event>,
    out: &mut Vec<Readiness>,
    timeout: Option<Duration>,
) -> io::Result<()> {
    buf.clear();
    buf.reserve(CAPACITY);
    let n = epoll_wait(poller.as_raw_fd(), buf, timeout)?;
    // SAFETY: the kernel initialized the first `n` entries (at most the capacity it was
    // given), and `epoll_event` is plain data.
    unsafe { buf.set_len(n) };
    let mut notified = false;
    for ev in buf.iter() {
        // (Copies: the struct is packed on x86_64, so no reference to its fields.)
        let (events, data) = (ev.events, ev.u64);
        if data == NOTIFY_KEY {
            notified = true;
            continue;
        }
        out.push(Readiness {
            key: data as usize,
            readable: events & READ != 0,
            writable: events & WRITE != 0,
        });
    }
    if notified {
        // `Handle::wake` was called: polling's own wait clears and re-arms its notifier.
        // What else it reports was already taken from the direct wait (sources are level
        // triggered: anything still ready is reported again next turn).
        let mut scratch = Events::new();
        poller.wait(&mut scratch, Some(Duration::ZERO))?;
    }
    Ok(())
}

/// `epoll_pwait2` where the kernel has it, else `epoll_wait` with the timeout rounded up to
/// a millisecond; the number of events.
fn epoll_wait(
    epfd: libc::c_int,
    buf: &mut Vec<libc::epoll_event>,
    timeout: Option<Duration>,
) -> io::Result<usize> {
    static NO_PWAIT2: AtomicBool = AtomicBool::new(false);
    let max = buf.capacity().min(libc::c_int::MAX as usize) as libc::c_int;
    if !NO_PWAIT2.load(Ordering::Relaxed) {
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
            tv_nsec: t.subsec_nanos() as _,
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `buf` has room for `max` events; `ts_ptr` is null or points to `ts`,
        // alive for the call; no signal mask is passed (null), as epoll_wait does.
        let n = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                epfd,
                buf.as_mut_ptr(),
                max,
                ts_ptr,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => return Ok(0),
            Some(libc::ENOSYS) => NO_PWAIT2.store(true, Ordering::Relaxed),
            _ => return Err(e),
        }
    }
    let ms = match timeout {
        None => -1,
        Some(t) => t
            .as_nanos()
            .div_ceil(1_000_000)
            .min(libc::c_int::MAX as u128) as libc::c_int,
    };
    // SAFETY: `buf` has room for `max` events.
    let n = unsafe { libc::epoll_wait(epfd, buf.as_mut_ptr(), max, ms) };
    if n >= 0 {
        return Ok(n as usize);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EINTR) {
        return Ok(0);
    }
    Err(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_direct_wait_is_usable_here() {
        let poller = Poller::new().unwrap();
        assert!(
            usable(&poller),
            "the self-check failed on this kernel and polling"
        );
    }

    #[test]
    fn readiness_and_timeouts() {
        let poller = Poller::new().unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        // SAFETY: `a` is deleted from the poller before it drops, below.
        unsafe {
            poller
                .add_with_mode(&a, Event::all(7), polling::PollMode::Level)
                .unwrap()
        };
        let (mut buf, mut out) = (Vec::new(), Vec::new());
        wait(&poller, &mut buf, &mut out, Some(Duration::ZERO)).unwrap();
        assert_eq!(
            out,
            [Readiness {
                key: 7,
                readable: false,
                writable: true
            }]
        );
        poller
            .modify_with_mode(&a, Event::readable(7), polling::PollMode::Level)
            .unwrap();
        out.clear();
        let t = std::time::Instant::now();
        wait(&poller, &mut buf, &mut out, Some(Duration::from_millis(20))).unwrap();
        assert!(out.is_empty() && t.elapsed() >= Duration::from_millis(20));
        b.write_all(b"x").unwrap();
        wait(&poller, &mut buf, &mut out, None).unwrap();
        assert_eq!(out[0].key, 7);
        assert!(out[0].readable);
        poller.delete(&a).unwrap();
    }

    #[test]
    fn a_wake_ends_a_direct_wait_and_the_next_one_too() {
        let poller = std::sync::Arc::new(Poller::new().unwrap());
        let (mut buf, mut out) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let p = poller.clone();
            let t = std::thread::spawn(move || p.notify().unwrap());
            // Only the notification can end it before its 30 s (before or during the wait:
            // a notification waits in the notifier). A notifier left set would end every
            // later wait at once; one never re-armed would make the next wait last 30 s.
            let started = std::time::Instant::now();
            wait(&poller, &mut buf, &mut out, Some(Duration::from_secs(30))).unwrap();
            assert!(started.elapsed() < Duration::from_secs(10));
            t.join().unwrap();
        }
        assert!(out.is_empty(), "the notifier is not a source: {out:?}");
    }
}
