//! The reactor: one thread, one poller, timers, and signals.
//!
//! [`Reactor`] owns the poller, the timers and the signal pipe and runs turns; a cloneable
//! [`Handle`] registers sources and wakes it. Sources are level-triggered, so a
//! consumer that does a bounded amount of work per readiness (as daimon's connections and
//! rings do) is simply asked again on the next turn: draining is fair by construction.
//!
//! The wait timeout is the time to the next timer and nothing else: a reactor with no timers
//! sleeps until a source, a signal or [`Handle::wake`] wakes it.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use daimon::reactor::{Reactor, Ready};
//!
//! let mut reactor: Reactor<&str> = Reactor::new()?;
//! reactor.timer(Duration::from_millis(1), "hello");
//! let mut ready = Vec::new();
//! while ready.is_empty() {
//!     reactor.turn(None, &mut ready)?;
//! }
//! assert!(matches!(ready[0], Ready::Timer(_, "hello")));
//! # Ok::<(), std::io::Error>(())
//! ```

#[cfg(target_os = "linux")]
mod direct;
mod signal;
mod source;
mod timer;

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use polling::{Events, Poller};

pub(crate) use signal::BlockedSignals;
use signal::SignalPipe;
pub use signal::{NEVER_CAUGHT, NOT_BY_PREFIX, Signal, reset_after_fork};
pub use source::{Interest, Source, Token, TokenHasher, TokenMap};
pub use timer::{LONGEST_DELAY, TimerId, Timers, after};

use crate::error::Result;

/// The poller, with the descriptors it opened recorded as daimon's for its life (a forked
/// worker closes them).
pub(crate) struct OwnedPoller {
    fds: Vec<std::os::fd::RawFd>,
    poller: Poller,
}

impl OwnedPoller {
    fn new() -> io::Result<OwnedPoller> {
        // The poller opens an epoll instance and a descriptor to notify it (polling does
        // not show the latter): the difference of the open descriptors names them all. The
        // daemon has one thread, so nothing else opens a descriptor meanwhile.
        if !crate::sys::recording() {
            return Ok(OwnedPoller {
                fds: Vec::new(),
                poller: Poller::new()?,
            });
        }
        let before = crate::sys::open_fds();
        let poller = Poller::new()?;
        let fds: Vec<_> = crate::sys::open_fds()
            .difference(&before)
            .copied()
            .filter(|&fd| crate::sys::is_anon_inode(fd))
            .collect();
        for &fd in &fds {
            crate::sys::own(fd);
        }
        Ok(OwnedPoller { fds, poller })
    }
}

impl std::ops::Deref for OwnedPoller {
    type Target = Poller;

    fn deref(&self) -> &Poller {
        &self.poller
    }
}

impl Drop for OwnedPoller {
    fn drop(&mut self) {
        for &fd in &self.fds {
            crate::sys::disown(fd);
        }
    }
}

/// What the poller reported for one registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Readiness {
    pub(crate) key: usize,
    pub(crate) readable: bool,
    pub(crate) writable: bool,
}

/// The key of the signal pipe; sources get keys from 1 up.
const SIGNAL_KEY: usize = 0;

struct Shared {
    next_key: AtomicUsize,
}

/// A cloneable handle to a [`Reactor`]: registers sources and wakes it, from any thread.
#[derive(Clone)]
pub struct Handle {
    poller: Arc<OwnedPoller>,
    shared: Arc<Shared>,
}

impl Handle {
    /// Registers `fd` with `interest`; it stays registered until the returned [`Source`] drops.
    ///
    /// # Errors
    ///
    /// The poller's error (for instance a descriptor that cannot be polled).
    pub fn register<T: AsFd>(&self, fd: T, interest: Interest) -> io::Result<Source<T>> {
        let key = self.shared.next_key.fetch_add(1, Ordering::Relaxed);
        Source::new(self.poller.clone(), Token(key), fd, interest)
    }

    /// Wakes the reactor if it is waiting.
    pub fn wake(&self) {
        let _ = self.poller.notify();
    }
}

/// What a turn of the reactor found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready<T> {
    /// A caught signal was delivered (once per turn however many times it arrived).
    Signal(Signal),
    /// A timer fired, with its payload.
    Timer(TimerId, T),
    /// A registered source is ready.
    Io {
        /// The source's token.
        token: Token,
        /// Reading would not block (data, or the peer hung up).
        readable: bool,
        /// Writing would not block.
        writable: bool,
    },
}

/// The single-threaded event loop: a poller, timers with payloads of type `T`, and signals.
pub struct Reactor<T = ()> {
    handle: Handle,
    events: Events,
    /// What the last wait found, kept for its allocation.
    found: Vec<Readiness>,
    /// The direct wait's scratch space (Linux).
    #[cfg(target_os = "linux")]
    direct: Vec<nix::libc::epoll_event>,
    /// The one timer queue: shared with the parts of the daemon that arm their own
    /// deadlines on it (see [`Reactor::queue`]).
    timers: Rc<RefCell<Timers<T>>>,
    signals: Option<SignalSlot>,
    expired: Vec<(TimerId, T)>,
}

/// The signal pipe and its registration. Fields drop in order: the registration is deleted
/// before the pipe closes.
struct SignalSlot {
    _source: Source<BorrowedFd<'static>>,
    pipe: SignalPipe,
}

impl SignalSlot {
    fn new(poller: &Arc<OwnedPoller>) -> io::Result<SignalSlot> {
        let pipe = SignalPipe::new()?;
        // SAFETY: the fd belongs to `pipe`, which lives in the same struct and drops after
        // `_source`, so the borrowed fd outlives its registration.
        let fd = unsafe { BorrowedFd::borrow_raw(pipe.read_end().as_raw_fd()) };
        let source = Source::new(poller.clone(), Token(SIGNAL_KEY), fd, Interest::READ)?;
        Ok(SignalSlot {
            _source: source,
            pipe,
        })
    }
}

impl<T: Clone> Reactor<T> {
    /// Creates a reactor with its own poller.
    ///
    /// # Errors
    ///
    /// The operating system's error creating the epoll (or kqueue) instance.
    pub fn new() -> io::Result<Self> {
        let poller = OwnedPoller::new()?;
        // Checked now, once per process: the daemon makes its reactor before it forks the
        // fork server, whose workers then inherit the answer instead of each checking again
        // (a socket pair, a registration and a wait) as it starts.
        #[cfg(target_os = "linux")]
        let _ = direct::usable(&poller);
        Ok(Reactor {
            handle: Handle {
                poller: Arc::new(poller),
                shared: Arc::new(Shared {
                    next_key: AtomicUsize::new(SIGNAL_KEY + 1),
                }),
            },
            events: Events::new(),
            found: Vec::new(),
            #[cfg(target_os = "linux")]
            direct: Vec::new(),
            timers: Rc::default(),
            signals: None,
            expired: Vec::new(),
        })
    }

    /// A handle to this reactor.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Registers a source; see [`Handle::register`].
    ///
    /// # Errors
    ///
    /// The poller's error.
    pub fn register<F: AsFd>(&self, fd: F, interest: Interest) -> io::Result<Source<F>> {
        self.handle.register(fd, interest)
    }

    /// Arms a one-shot timer that fires `after` from now with `payload`.
    pub fn timer(&mut self, after: Duration, payload: T) -> TimerId {
        self.timers
            .borrow_mut()
            .insert(timer::after(after), None, payload)
    }

    /// Arms a periodic timer that fires every `every` (at a fixed rate) with `payload`.
    pub fn periodic(&mut self, every: Duration, payload: T) -> TimerId {
        self.timers
            .borrow_mut()
            .insert(timer::after(every), Some(every), payload)
    }

    /// Disarms a timer, returning its payload, or `None` if it is not armed.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        self.timers.borrow_mut().cancel(id)
    }

    /// The timers, for callers that arm them at an absolute deadline.
    pub(crate) fn timers(&mut self) -> std::cell::RefMut<'_, Timers<T>> {
        self.timers.borrow_mut()
    }

    /// The timer queue itself, for a part of the program that arms its own deadlines on it
    /// between turns.
    pub(crate) fn queue(&self) -> Rc<RefCell<Timers<T>>> {
        self.timers.clone()
    }

    /// Starts catching a signal: it is reported as [`Ready::Signal`] instead of taking its
    /// disposition (whatever it was, even ignored: this is the low-level call; the bus's
    /// subscriptions leave a signal ignored at start alone, see
    /// [`Signal::is_inherited_ignored`]). The first call makes this reactor the owner of the
    /// process's signals.
    ///
    /// # Errors
    ///
    /// [`Error::UncatchableSignal`](crate::Error::UncatchableSignal) for the signals of
    /// [`NEVER_CAUGHT`]; an I/O error if another reactor of the process owns the signals.
    pub fn catch_signal(&mut self, signal: Signal) -> Result<()> {
        if self.signals.is_none() {
            self.signals = Some(SignalSlot::new(&self.handle.poller)?);
        }
        self.signals.as_ref().expect("set above").pipe.catch(signal)
    }

    /// Stops catching a signal: it gets back exactly the disposition it had before daimon
    /// first touched it (the default action, or ignored if it was ignored).
    pub fn release_signal(&mut self, signal: Signal) {
        if let Some(s) = &self.signals {
            s.pipe.release(signal);
        }
    }

    /// Whether a signal is currently caught by this reactor.
    pub fn is_caught(&self, signal: Signal) -> bool {
        self.signals
            .as_ref()
            .is_some_and(|s| s.pipe.is_caught(signal))
    }

    /// How long the next turn may wait: the time to the next timer, `None` if there is none.
    pub fn next_timeout(&mut self) -> Option<Duration> {
        self.timers
            .borrow_mut()
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Waits until something is ready (or `max_wait`, or the next timer), then appends what
    /// is ready to `out`: signals first, then timers, then sources.
    ///
    /// # Errors
    ///
    /// The poller's error; an interrupted wait is not an error.
    pub fn turn(&mut self, max_wait: Option<Duration>, out: &mut Vec<Ready<T>>) -> io::Result<()> {
        let timeout = match (max_wait, self.next_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut found = std::mem::take(&mut self.found);
        found.clear();
        let waited = self.wait(&mut found, timeout);
        if waited.is_ok() {
            if let Some(s) = &self.signals {
                if found.iter().any(|r| r.key == SIGNAL_KEY) {
                    s.pipe.drain(|sig| out.push(Ready::Signal(sig)));
                }
            }
            self.timers
                .borrow_mut()
                .expire(Instant::now(), &mut self.expired);
            out.extend(self.expired.drain(..).map(|(id, p)| Ready::Timer(id, p)));
            out.extend(
                found
                    .iter()
                    .filter(|r| r.key != SIGNAL_KEY)
                    .map(|r| Ready::Io {
                        token: Token(r.key),
                        readable: r.readable,
                        writable: r.writable,
                    }),
            );
        }
        self.found = found;
        waited
    }

    /// Waits at most `timeout` and appends what is ready to `found`: directly on the
    /// epoll instance where that works (Linux, see `direct`), else through polling.
    fn wait(&mut self, found: &mut Vec<Readiness>, timeout: Option<Duration>) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if direct::usable(&self.handle.poller) {
            return direct::wait(&self.handle.poller, &mut self.direct, found, timeout);
        }
        self.events.clear();
        match self.handle.poller.wait(&mut self.events, timeout) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        found.extend(self.events.iter().map(|e| Readiness {
            key: e.key,
            readable: e.readable,
            writable: e.writable,
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn the_pollers_epoll_instance_is_recorded_as_daimons() {
        // Whatever descriptor numbers are free: the listing before the poller is made holds
        // one open (its directory) that the epoll instance may take once it is closed.
        let owned = OwnedPoller::new().unwrap();
        let epoll = owned.poller.as_raw_fd();
        assert!(owned.fds.contains(&epoll), "{epoll} not in {:?}", owned.fds);
        assert!(crate::sys::is_owned(epoll));
    }

    #[test]
    fn no_timers_means_no_timeout() {
        let mut r: Reactor = Reactor::new().unwrap();
        assert_eq!(r.next_timeout(), None);
        let id = r.timer(Duration::from_secs(60), ());
        assert!(r.next_timeout().unwrap() <= Duration::from_secs(60));
        r.cancel(id);
        assert_eq!(r.next_timeout(), None);
    }

    #[test]
    fn timers_are_reported_with_their_payload() {
        let mut r = Reactor::new().unwrap();
        let a = r.timer(Duration::from_millis(1), "a");
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while out.is_empty() && Instant::now() < deadline {
            r.turn(Some(Duration::from_secs(1)), &mut out).unwrap();
        }
        assert_eq!(out, vec![Ready::Timer(a, "a")]);
        assert_eq!(r.next_timeout(), None);
    }

    #[test]
    fn wake_from_another_thread_ends_an_unbounded_wait() {
        let mut r: Reactor = Reactor::new().unwrap();
        let h = r.handle();
        let t = std::thread::spawn(move || h.wake());
        let mut out = Vec::new();
        // No timers and no max wait: only the handle can end this turn.
        r.turn(None, &mut out).unwrap();
        t.join().unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn sources_report_readiness_until_dropped() {
        let mut r: Reactor = Reactor::new().unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut src = r.register(&a, Interest::READ).unwrap();
        let token = src.token();
        b.write_all(b"x").unwrap();
        let mut out = Vec::new();
        r.turn(Some(Duration::from_secs(5)), &mut out).unwrap();
        assert_eq!(
            out,
            vec![Ready::Io {
                token,
                readable: true,
                writable: false
            }]
        );
        // Level-triggered: still ready while the byte is unread.
        out.clear();
        r.turn(Some(Duration::from_secs(5)), &mut out).unwrap();
        assert_eq!(out.len(), 1);
        let mut buf = [0u8; 1];
        (&a).read_exact(&mut buf).unwrap();
        // Writable interest reports at once on an empty socket buffer.
        src.set_interest(Interest::WRITE).unwrap();
        out.clear();
        r.turn(Some(Duration::from_secs(5)), &mut out).unwrap();
        assert!(matches!(out[..], [Ready::Io { writable: true, .. }]));
        drop(src);
        b.write_all(b"y").unwrap();
        out.clear();
        r.turn(Some(Duration::from_millis(20)), &mut out).unwrap();
        assert!(out.is_empty(), "a dropped source reports nothing: {out:?}");
    }

    #[test]
    fn tokens_are_never_reused() {
        let r: Reactor = Reactor::new().unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        let t1 = r.register(&a, Interest::READ).unwrap().token();
        let t2 = r.register(&a, Interest::READ).unwrap().token();
        assert_ne!(t1, t2);
    }
}
