//! POSIX signals delivered by an async-signal-safe handler to a self-pipe the reactor polls.
//!
//! The dispositions of a process are global, so this module is too: one set of statics, one
//! owner (the process's [`Reactor`](super::Reactor)) at a time.
//!
//! Signals behave as if daimon were absent unless someone listens. Before daimon first
//! touches a signal it records the signal's disposition; while a subscriber wants the signal,
//! daimon's handler is installed (async-signal-safe: it sets the signal's pending bit and
//! writes one byte to the non-blocking self-pipe, saving and restoring `errno`); when nobody
//! wants it any more, and in a forked worker, the recorded disposition is put back exactly
//! (ignored stays ignored). A signal ignored before daimon touched it is never caught (see
//! [`Signal::is_inherited_ignored`]), SIGCHLD excepted.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};

use nix::libc;

use crate::error::{Error, Result};

/// Signals daimon never catches: faults (handling them hides the crash) and job control
/// (catching them breaks the terminal), plus the two that cannot be caught at all.
pub const NEVER_CAUGHT: &[i32] = &[
    libc::SIGKILL,
    libc::SIGSTOP,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
];

/// Canonical names of the standard signals (never the aliases SIGIOT, SIGCLD, SIGPOLL).
const NAMES: &[(i32, &str)] = &[
    (libc::SIGHUP, "SIGHUP"),
    (libc::SIGINT, "SIGINT"),
    (libc::SIGQUIT, "SIGQUIT"),
    (libc::SIGILL, "SIGILL"),
    (libc::SIGTRAP, "SIGTRAP"),
    (libc::SIGABRT, "SIGABRT"),
    (libc::SIGBUS, "SIGBUS"),
    (libc::SIGFPE, "SIGFPE"),
    (libc::SIGKILL, "SIGKILL"),
    (libc::SIGUSR1, "SIGUSR1"),
    (libc::SIGSEGV, "SIGSEGV"),
    (libc::SIGUSR2, "SIGUSR2"),
    (libc::SIGPIPE, "SIGPIPE"),
    (libc::SIGALRM, "SIGALRM"),
    (libc::SIGTERM, "SIGTERM"),
    #[cfg(any(target_os = "linux", target_os = "android"))]
    (libc::SIGSTKFLT, "SIGSTKFLT"),
    (libc::SIGCHLD, "SIGCHLD"),
    (libc::SIGCONT, "SIGCONT"),
    (libc::SIGSTOP, "SIGSTOP"),
    (libc::SIGTSTP, "SIGTSTP"),
    (libc::SIGTTIN, "SIGTTIN"),
    (libc::SIGTTOU, "SIGTTOU"),
    (libc::SIGURG, "SIGURG"),
    (libc::SIGXCPU, "SIGXCPU"),
    (libc::SIGXFSZ, "SIGXFSZ"),
    (libc::SIGVTALRM, "SIGVTALRM"),
    (libc::SIGPROF, "SIGPROF"),
    (libc::SIGWINCH, "SIGWINCH"),
    (libc::SIGIO, "SIGIO"),
    #[cfg(any(target_os = "linux", target_os = "android"))]
    (libc::SIGPWR, "SIGPWR"),
    (libc::SIGSYS, "SIGSYS"),
];

/// A POSIX signal: its number and canonical name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Signal {
    number: i32,
    name: &'static str,
}

impl Signal {
    /// `SIGHUP`.
    pub const HUP: Signal = Signal {
        number: libc::SIGHUP,
        name: "SIGHUP",
    };
    /// `SIGINT`.
    pub const INT: Signal = Signal {
        number: libc::SIGINT,
        name: "SIGINT",
    };
    /// `SIGQUIT`.
    pub const QUIT: Signal = Signal {
        number: libc::SIGQUIT,
        name: "SIGQUIT",
    };
    /// `SIGKILL`.
    pub const KILL: Signal = Signal {
        number: libc::SIGKILL,
        name: "SIGKILL",
    };
    /// `SIGUSR1`.
    pub const USR1: Signal = Signal {
        number: libc::SIGUSR1,
        name: "SIGUSR1",
    };
    /// `SIGUSR2`.
    pub const USR2: Signal = Signal {
        number: libc::SIGUSR2,
        name: "SIGUSR2",
    };
    /// `SIGPIPE`.
    pub const PIPE: Signal = Signal {
        number: libc::SIGPIPE,
        name: "SIGPIPE",
    };
    /// `SIGALRM`.
    pub const ALRM: Signal = Signal {
        number: libc::SIGALRM,
        name: "SIGALRM",
    };
    /// `SIGTERM`.
    pub const TERM: Signal = Signal {
        number: libc::SIGTERM,
        name: "SIGTERM",
    };
    /// `SIGCHLD`.
    pub const CHLD: Signal = Signal {
        number: libc::SIGCHLD,
        name: "SIGCHLD",
    };
    /// `SIGCONT`.
    pub const CONT: Signal = Signal {
        number: libc::SIGCONT,
        name: "SIGCONT",
    };
    /// `SIGWINCH`.
    pub const WINCH: Signal = Signal {
        number: libc::SIGWINCH,
        name: "SIGWINCH",
    };

    /// The signal with this number, if it is a standard signal.
    pub fn from_number(number: i32) -> Option<Signal> {
        NAMES
            .iter()
            .find(|(n, _)| *n == number)
            .map(|&(number, name)| Signal { number, name })
    }

    /// The signal with this name (`SIGTERM` or `TERM`; aliases such as `SIGCLD` are accepted).
    pub fn from_name(name: &str) -> Option<Signal> {
        let bare = name.strip_prefix("SIG").unwrap_or(name);
        let canonical = match bare {
            "IOT" => "ABRT",
            "CLD" => "CHLD",
            "POLL" => "IO",
            other => other,
        };
        NAMES
            .iter()
            .find(|(_, n)| &n[3..] == canonical)
            .map(|&(number, name)| Signal { number, name })
    }

    /// Every standard signal daimon can catch.
    pub fn catchable() -> impl Iterator<Item = Signal> {
        NAMES
            .iter()
            .filter(|(n, _)| !NEVER_CAUGHT.contains(n))
            .map(|&(number, name)| Signal { number, name })
    }

    /// The signal number.
    pub fn number(self) -> i32 {
        self.number
    }

    /// The canonical name, e.g. `SIGCHLD`.
    pub fn name(self) -> &'static str {
        self.name
    }

    /// Whether daimon may catch this signal.
    pub fn is_catchable(self) -> bool {
        !NEVER_CAUGHT.contains(&self.number)
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

const SLOTS: usize = 65;

#[allow(clippy::declare_interior_mutable_const)]
const FALSE: AtomicBool = AtomicBool::new(false);
/// The write end of the self-pipe, or -1 when no reactor owns signals.
static WRITE_FD: AtomicI32 = AtomicI32::new(-1);
/// Whether a subscriber wants the signal; read by the handler.
static WANTED: [AtomicBool; SLOTS] = [FALSE; SLOTS];
/// Set by the handler, taken by the reactor.
static PENDING: [AtomicBool; SLOTS] = [FALSE; SLOTS];
/// Whether daimon's handler is the signal's disposition now.
static INSTALLED: [AtomicBool; SLOTS] = [FALSE; SLOTS];
/// The disposition each signal had before daimon first touched it (read, never changed by
/// daimon before it is recorded): what it gets back when nobody listens any more, and what
/// a forked worker gets. Set once; read with an atomic load, so the child may read it.
static ORIGINAL: [OnceLock<libc::sigaction>; SLOTS] = [const { OnceLock::new() }; SLOTS];
/// Serializes installing and restoring dispositions.
static CHANGING: Mutex<()> = Mutex::new(());
/// Whether a reactor owns the pipe.
static OWNED: AtomicBool = AtomicBool::new(false);
/// The pid of the process whose reactor owns the pipe (a forked child is not it).
static OWNER: AtomicI32 = AtomicI32::new(0);

/// Signals a prefix subscription (`daemon.posix.*`) never catches: SIGPIPE (a Rust program
/// ignores it and gets `EPIPE`), the profiling timers, SIGSYS and SIGTRAP (debuggers and
/// seccomp). A subscription naming one of them exactly still does.
pub const NOT_BY_PREFIX: &[i32] = &[
    libc::SIGPIPE,
    libc::SIGPROF,
    libc::SIGVTALRM,
    libc::SIGSYS,
    libc::SIGTRAP,
];

fn slot(signal: i32) -> Option<usize> {
    usize::try_from(signal).ok().filter(|&s| s > 0 && s < SLOTS)
}

/// The disposition `signal` had before daimon first touched it, recorded on first use.
fn original(i: usize) -> &'static libc::sigaction {
    ORIGINAL[i].get_or_init(|| {
        // SAFETY: a zeroed sigaction is a valid value (SIG_DFL, no flags, empty mask).
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: sigaction(2) with a null new action only reads the current disposition
        // into `old`, a live local. `i` is below SLOTS, a valid signal number or one the
        // call rejects (leaving `old` zeroed: SIG_DFL).
        unsafe { libc::sigaction(i as libc::c_int, std::ptr::null(), &mut old) };
        old
    })
}

impl Signal {
    /// Whether the signal was ignored (`SIG_IGN`) before daimon first touched it: inherited
    /// so (`nohup` ignores SIGHUP, a shell's `&` SIGINT and SIGQUIT), or set so by the
    /// program. Such a signal stays ignored, whoever subscribes to it, as a shell's `trap`
    /// leaves it; SIGCHLD excepted, which a daemon needs to reap its workers. SIGPIPE is
    /// always ignored in a Rust program (the runtime ignores it before `main`).
    ///
    /// The first call records the signal's disposition, if daimon had not already.
    pub fn is_inherited_ignored(self) -> bool {
        slot(self.number).is_some_and(|i| original(i).sa_sigaction == libc::SIG_IGN)
    }

    /// Whether a subscription to a prefix such as `daemon.posix.*` catches this signal: one
    /// daimon may catch, not in [`NOT_BY_PREFIX`], and not ignored at start.
    pub fn is_caught_by_prefix(self) -> bool {
        self.is_catchable() && !NOT_BY_PREFIX.contains(&self.number) && self.may_be_caught()
    }

    /// Whether a subscription naming this signal exactly catches it: one daimon may catch
    /// and not ignored at start (SIGCHLD always).
    pub fn is_caught_by_name(self) -> bool {
        self.is_catchable() && self.may_be_caught()
    }

    fn may_be_caught(self) -> bool {
        self.number == libc::SIGCHLD || !self.is_inherited_ignored()
    }
}

extern "C" fn handler(signal: libc::c_int) {
    let errno = nix::errno::Errno::last_raw();
    if let Some(i) = slot(signal) {
        // SAFETY: getpid(2) is async-signal-safe.
        if OWNER.load(Ordering::SeqCst) != unsafe { libc::getpid() } {
            // A forked child that has not reset the parent's wiring yet: the signal is its
            // own, not the parent's. Put back the disposition from before daimon and raise it
            // again: it is delivered with that disposition once this handler returns (the
            // signal is blocked while its handler runs).
            restore(i);
            // SAFETY: raise(3) is async-signal-safe.
            unsafe { libc::raise(signal) };
        } else if WANTED[i].load(Ordering::SeqCst) {
            PENDING[i].store(true, Ordering::SeqCst);
            let fd = WRITE_FD.load(Ordering::SeqCst);
            if fd >= 0 {
                // SAFETY: write(2) is async-signal-safe; the buffer is a live one-byte
                // static. A full pipe (EAGAIN) is fine: a wake-up is already pending and the
                // bit above is set.
                unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
            }
        }
        // Not wanted: only in the instant between a release and the restore that follows
        // it; the signal is dropped.
    }
    nix::errno::Errno::set_raw(errno);
}

/// Makes daimon's handler the disposition of signal slot `i`.
fn install(i: usize) -> io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid value, filled in below.
    let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
    new.sa_sigaction = handler as extern "C" fn(libc::c_int) as libc::sighandler_t;
    new.sa_flags = libc::SA_RESTART;
    // SAFETY: sigemptyset(3) initializes the live mask it is given.
    unsafe { libc::sigemptyset(&mut new.sa_mask) };
    // SAFETY: `new` is a valid sigaction whose handler is async-signal-safe (atomics,
    // write(2), errno saved and restored); no old action is asked for.
    if unsafe { libc::sigaction(i as libc::c_int, &new, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    INSTALLED[i].store(true, Ordering::SeqCst);
    Ok(())
}

/// Puts back the disposition of signal slot `i` from before daimon touched it, if daimon's
/// handler is installed. Async-signal-safe: an atomic load of a recorded value and
/// sigaction(2).
fn restore(i: usize) {
    if !INSTALLED[i].load(Ordering::SeqCst) {
        return;
    }
    if let Some(old) = ORIGINAL[i].get() {
        // SAFETY: `old` is the disposition sigaction(2) itself reported for this signal.
        unsafe { libc::sigaction(i as libc::c_int, old, std::ptr::null_mut()) };
    }
    INSTALLED[i].store(false, Ordering::SeqCst);
}

/// The process's signal self-pipe, owned by one reactor.
pub(crate) struct SignalPipe {
    read: UnixStream,
    /// Kept open for the handler, which reaches it through `WRITE_FD`.
    _write: OwnedFd,
}

impl SignalPipe {
    pub(crate) fn new() -> io::Result<SignalPipe> {
        if OWNED.swap(true, Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "another reactor of this process already owns the signals",
            ));
        }
        let (read, write) = match UnixStream::pair() {
            Ok(pair) => pair,
            Err(e) => {
                OWNED.store(false, Ordering::SeqCst);
                return Err(e);
            }
        };
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let write = OwnedFd::from(write);
        crate::sys::own(read.as_raw_fd());
        crate::sys::own(write.as_raw_fd());
        OWNER.store(crate::process::pid(), Ordering::SeqCst);
        WRITE_FD.store(write.as_raw_fd(), Ordering::SeqCst);
        Ok(SignalPipe {
            read,
            _write: write,
        })
    }

    pub(crate) fn read_end(&self) -> &UnixStream {
        &self.read
    }

    /// Starts catching `signal`: records its disposition the first time, then installs
    /// daimon's handler.
    pub(crate) fn catch(&self, signal: Signal) -> Result<()> {
        if !signal.is_catchable() {
            return Err(Error::UncatchableSignal(signal.number));
        }
        let i = slot(signal.number).expect("standard signals fit");
        let _changing = CHANGING.lock().unwrap_or_else(|p| p.into_inner());
        original(i);
        WANTED[i].store(true, Ordering::SeqCst);
        if !INSTALLED[i].load(Ordering::SeqCst) {
            if let Err(e) = install(i) {
                WANTED[i].store(false, Ordering::SeqCst);
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Stops catching `signal`: it gets back the disposition it had before daimon touched
    /// it (the default action, or ignored if it was ignored).
    pub(crate) fn release(&self, signal: Signal) {
        if let Some(i) = slot(signal.number) {
            let _changing = CHANGING.lock().unwrap_or_else(|p| p.into_inner());
            restore(i);
            WANTED[i].store(false, Ordering::SeqCst);
            PENDING[i].store(false, Ordering::SeqCst);
        }
    }

    /// Whether `signal` is currently caught.
    pub(crate) fn is_caught(&self, signal: Signal) -> bool {
        slot(signal.number).is_some_and(|i| WANTED[i].load(Ordering::SeqCst))
    }

    /// Drains the pipe, then hands out each pending signal once (several deliveries of the
    /// same signal between two turns coalesce, as POSIX signals do).
    pub(crate) fn drain(&self, mut f: impl FnMut(Signal)) {
        let mut buf = [0u8; 64];
        while let Ok(n) = (&self.read).read_nonblocking(&mut buf) {
            if n < buf.len() {
                break;
            }
        }
        for &(number, name) in NAMES {
            let i = slot(number).expect("standard signals fit");
            if PENDING[i].swap(false, Ordering::SeqCst) && WANTED[i].load(Ordering::SeqCst) {
                f(Signal { number, name });
            }
        }
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        {
            let _changing = CHANGING.lock().unwrap_or_else(|p| p.into_inner());
            for (i, wanted) in WANTED.iter().enumerate().skip(1) {
                restore(i);
                wanted.store(false, Ordering::SeqCst);
            }
        }
        crate::sys::disown(self.read.as_raw_fd());
        crate::sys::disown(self._write.as_raw_fd());
        WRITE_FD.store(-1, Ordering::SeqCst);
        OWNED.store(false, Ordering::SeqCst);
    }
}

/// Forgets the parent's signal wiring in a freshly forked child: every signal daimon caught
/// gets back the disposition the parent had before daimon touched it (default, or ignored
/// as inherited), and the parent's pipe is no longer written to.
///
/// Async-signal-safe (atomic loads and stores, sigaction(2); no lock, no allocation), so it
/// may run right after `fork()`. The inherited pipe descriptors are closed when the child
/// drops or forgets its copy of the reactor.
pub fn reset_after_fork() {
    for i in 1..SLOTS {
        // Restore first: from here on the parent's handler cannot run in this process.
        restore(i);
        WANTED[i].store(false, Ordering::SeqCst);
        PENDING[i].store(false, Ordering::SeqCst);
    }
    WRITE_FD.store(-1, Ordering::SeqCst);
    OWNED.store(false, Ordering::SeqCst);
}

trait ReadNonblocking {
    fn read_nonblocking(self, buf: &mut [u8]) -> io::Result<usize>;
}

impl ReadNonblocking for &UnixStream {
    fn read_nonblocking(self, buf: &mut [u8]) -> io::Result<usize> {
        use std::io::Read;
        let mut s = self;
        match s.read(buf) {
            Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names_not_aliases() {
        assert_eq!(
            Signal::from_number(libc::SIGCHLD).unwrap().name(),
            "SIGCHLD"
        );
        assert_eq!(
            Signal::from_number(libc::SIGABRT).unwrap().name(),
            "SIGABRT"
        );
        assert_eq!(Signal::from_number(libc::SIGSYS).unwrap().name(), "SIGSYS");
        assert_eq!(Signal::from_name("SIGCLD").unwrap().name(), "SIGCHLD");
        assert_eq!(Signal::from_name("TERM").unwrap().number(), libc::SIGTERM);
        assert_eq!(Signal::from_name("SIGNOPE"), None);
        assert_eq!(Signal::from_number(0), None);
    }

    #[test]
    fn never_caught_signals_are_not_catchable() {
        let catchable: Vec<_> = Signal::catchable().map(Signal::name).collect();
        for name in [
            "SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGTSTP", "SIGTTIN", "SIGTTOU",
        ] {
            assert!(!catchable.contains(&name), "{name} must never be caught");
        }
        assert!(catchable.contains(&"SIGTERM"));
        assert!(catchable.contains(&"SIGCHLD"));
    }

    /// Reads dispositions only (never changes one), so it may run beside other tests.
    #[test]
    fn prefixes_skip_the_noisy_signals_and_pipe_is_ignored_in_rust() {
        for &n in NOT_BY_PREFIX {
            let signal = Signal::from_number(n).unwrap();
            assert!(!signal.is_caught_by_prefix(), "{signal}");
        }
        assert!(
            Signal::PIPE.is_inherited_ignored(),
            "the Rust runtime ignores SIGPIPE"
        );
        assert!(!Signal::PIPE.is_caught_by_name());
        assert!(!Signal::KILL.is_caught_by_name() && !Signal::KILL.is_caught_by_prefix());
        assert!(
            Signal::CHLD.is_caught_by_name(),
            "SIGCHLD whatever its disposition"
        );
    }
}
