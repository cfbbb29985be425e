//! POSIX signals delivered through signal-hook to a self-pipe the reactor polls.
//!
//! The dispositions of a process are global, so this module is too: one set of statics, one
//! owner (the process's [`Reactor`](super::Reactor)) at a time.
//!
//! Each signal daimon may catch gets one signal-hook action, installed the first time the
//! signal is wanted and kept for the life of the process. The action is async-signal-safe:
//! when the signal is *wanted* it sets the signal's pending bit and writes one byte to the
//! non-blocking self-pipe (signal-hook's registry saves and restores `errno` around it); when
//! it is not (the last subscriber left, or a forked child reset it), it emulates the
//! operating-system default, so a signal nobody listens to behaves as if daimon were absent.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

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
/// Whether a subscriber wants the signal; read by the action in the handler.
static WANTED: [AtomicBool; SLOTS] = [FALSE; SLOTS];
/// Set by the handler, taken by the reactor.
static PENDING: [AtomicBool; SLOTS] = [FALSE; SLOTS];
/// Whether the signal-hook action is installed (it stays for the life of the process).
static HOOKED: Mutex<[bool; SLOTS]> = Mutex::new([false; SLOTS]);
/// Whether a reactor owns the pipe.
static OWNED: AtomicBool = AtomicBool::new(false);

fn slot(signal: i32) -> Option<usize> {
    usize::try_from(signal).ok().filter(|&s| s > 0 && s < SLOTS)
}

fn action(signal: i32) {
    let Some(i) = slot(signal) else { return };
    if WANTED[i].load(Ordering::SeqCst) {
        PENDING[i].store(true, Ordering::SeqCst);
        let fd = WRITE_FD.load(Ordering::SeqCst);
        if fd >= 0 {
            // SAFETY: write(2) is async-signal-safe; the buffer is a live one-byte static. A full
            // pipe (EAGAIN) is fine: a wake-up is already pending and the bit above is set.
            unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
        }
    } else {
        let _ = signal_hook::low_level::emulate_default_handler(signal);
    }
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
        WRITE_FD.store(write.as_raw_fd(), Ordering::SeqCst);
        Ok(SignalPipe {
            read,
            _write: write,
        })
    }

    pub(crate) fn read_end(&self) -> &UnixStream {
        &self.read
    }

    /// Starts catching `signal` (installing its action the first time).
    pub(crate) fn catch(&self, signal: Signal) -> Result<()> {
        if !signal.is_catchable() {
            return Err(Error::UncatchableSignal(signal.number));
        }
        let i = slot(signal.number).expect("standard signals fit");
        let mut hooked = HOOKED.lock().unwrap_or_else(|p| p.into_inner());
        WANTED[i].store(true, Ordering::SeqCst);
        if !hooked[i] {
            let number = signal.number;
            // SAFETY: the action only touches atomics, calls write(2) and signal-hook's
            // async-signal-safe `emulate_default_handler`; it allocates nothing and takes no lock.
            unsafe { signal_hook::low_level::register(number, move || action(number)) }?;
            hooked[i] = true;
        }
        Ok(())
    }

    /// Stops catching `signal`: it gets its operating-system default behaviour back.
    pub(crate) fn release(&self, signal: Signal) {
        if let Some(i) = slot(signal.number) {
            WANTED[i].store(false, Ordering::SeqCst);
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
        crate::sys::disown(self.read.as_raw_fd());
        crate::sys::disown(self._write.as_raw_fd());
        WRITE_FD.store(-1, Ordering::SeqCst);
        for wanted in &WANTED {
            wanted.store(false, Ordering::SeqCst);
        }
        OWNED.store(false, Ordering::SeqCst);
    }
}

/// Forgets the parent's signal wiring in a freshly forked child: every signal gets its default
/// behaviour back and the parent's pipe is no longer written to.
///
/// Async-signal-safe (atomic stores only), so it may run right after `fork()`. The inherited
/// pipe descriptors are closed when the child drops or forgets its copy of the reactor.
pub fn reset_after_fork() {
    WRITE_FD.store(-1, Ordering::SeqCst);
    for wanted in &WANTED {
        wanted.store(false, Ordering::SeqCst);
    }
    for pending in &PENDING {
        pending.store(false, Ordering::SeqCst);
    }
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
}
