//! POSIX signals delivered through signal-hook to a self-pipe the reactor polls.
//!
//! The dispositions of a process are global, so this module is too: one set of statics, one
//! owner (the process's [`Reactor`](super::Reactor)) at a time.
//!
//! Signals behave as if daimon were absent unless someone listens. Before daimon first
//! touches a signal it records the signal's disposition. While a subscriber wants the
//! signal, a signal-hook action is registered for it and signal-hook's handler is the
//! signal's disposition; the action is async-signal-safe (it sets the signal's pending bit
//! and writes one byte to the non-blocking self-pipe; signal-hook's handler saves and
//! restores `errno` around it). When nobody wants it any more, when the reactor drops, and
//! in a forked worker, the recorded disposition is put back exactly (ignored stays
//! ignored). A signal ignored before daimon touched it is never caught (see
//! [`Signal::is_inherited_ignored`]), SIGCHLD excepted.
//!
//! signal-hook's registry installs its process-wide handler for a signal the first time an
//! action is registered for it, and never takes it away (after the last `unregister` the
//! handler stays, doing nothing). So daimon keeps the disposition itself, with
//! sigaction(2): it records the disposition signal-hook installed right after the first
//! registration, puts back the original one when nobody listens (and unregisters its
//! action), and puts signal-hook's back (after registering again) when someone listens
//! again. The invariant: a signal's disposition is signal-hook's handler exactly while
//! daimon's action for it is registered and wanted in the process that owns the reactor
//! (`INSTALLED`), and the one recorded before daimon otherwise.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
#[cfg(not(target_os = "linux"))]
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};

use nix::libc;
use signal_hook::SigId;

use crate::error::{Error, Result};

mod name;

use name::NAMES;
pub use name::{NEVER_CAUGHT, Signal};

const SLOTS: usize = 65;

#[allow(clippy::declare_interior_mutable_const)]
const FALSE: AtomicBool = AtomicBool::new(false);
/// The write end of the self-pipe, or -1 when no reactor owns signals.
static WRITE_FD: AtomicI32 = AtomicI32::new(-1);
/// Whether a subscriber wants the signal; read by the action in the handler.
static WANTED: [AtomicBool; SLOTS] = [FALSE; SLOTS];
/// Set by the action, taken by the reactor.
static PENDING: [AtomicBool; SLOTS] = [FALSE; SLOTS];
/// Whether signal-hook's handler is the signal's disposition now (daimon put it there).
static INSTALLED: [AtomicBool; SLOTS] = [FALSE; SLOTS];
/// The disposition each signal had before daimon first touched it (read, never changed by
/// daimon before it is recorded): what it gets back when nobody listens any more, and what
/// a forked worker gets. Set once; read with an atomic load, so a signal handler and the
/// child after fork may read it.
static ORIGINAL: [OnceLock<libc::sigaction>; SLOTS] = [const { OnceLock::new() }; SLOTS];
/// The disposition signal-hook installed for each signal (its handler), recorded right after
/// daimon's first registration: what daimon puts back when someone listens again, since
/// signal-hook installs it only once.
static HOOK: [OnceLock<libc::sigaction>; SLOTS] = [const { OnceLock::new() }; SLOTS];
/// daimon's signal-hook action for each signal, while it is registered in this process's
/// registry (a forked child inherits the registry and this record with it). The lock also
/// serializes installing and restoring dispositions.
static ACTIONS: Mutex<[Option<SigId>; SLOTS]> = Mutex::new([None; SLOTS]);
/// Whether a reactor owns the pipe.
static OWNED: AtomicBool = AtomicBool::new(false);
/// The pid of the process whose reactor owns the pipe (a forked child is not it).
static OWNER: AtomicI32 = AtomicI32::new(0);

/// Signals a prefix subscription (`daemon.posix.*`) never catches: SIGCONT (job control),
/// SIGPIPE (a Rust program
/// ignores it and gets `EPIPE`), the profiling timers, SIGSYS and SIGTRAP (debuggers and
/// seccomp). A subscription naming one of them exactly still does.
pub const NOT_BY_PREFIX: &[i32] = &[
    libc::SIGCONT,
    libc::SIGPIPE,
    libc::SIGPROF,
    libc::SIGVTALRM,
    libc::SIGSYS,
    libc::SIGTRAP,
];

fn slot(signal: i32) -> Option<usize> {
    usize::try_from(signal).ok().filter(|&s| s > 0 && s < SLOTS)
}

/// The disposition of signal slot `i` now, read with sigaction(2).
fn current(i: usize) -> libc::sigaction {
    // SAFETY: a zeroed sigaction is a valid value (SIG_DFL, no flags, empty mask).
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: sigaction(2) with a null new action only reads the current disposition into
    // `old`, a live local. `i` is below SLOTS, a valid signal number or one the call
    // rejects (leaving `old` zeroed: SIG_DFL).
    unsafe { libc::sigaction(i as libc::c_int, std::ptr::null(), &mut old) };
    old
}

/// The disposition `signal` had before daimon first touched it, recorded on first use.
fn original(i: usize) -> &'static libc::sigaction {
    ORIGINAL[i].get_or_init(|| current(i))
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
        slot(self.number()).is_some_and(|i| original(i).sa_sigaction == libc::SIG_IGN)
    }

    /// Whether a subscription to a prefix such as `daemon.posix.*` catches this signal: one
    /// daimon may catch, not in [`NOT_BY_PREFIX`], and not ignored at start.
    pub fn is_caught_by_prefix(self) -> bool {
        self.is_catchable() && !NOT_BY_PREFIX.contains(&self.number()) && self.may_be_caught()
    }

    /// Whether a subscription naming this signal exactly catches it: one daimon may catch
    /// and not ignored at start (SIGCHLD always).
    pub fn is_caught_by_name(self) -> bool {
        self.is_catchable() && self.may_be_caught()
    }

    fn may_be_caught(self) -> bool {
        self.number() == libc::SIGCHLD || !self.is_inherited_ignored()
    }
}

/// daimon's signal-hook action: runs inside signal-hook's handler, so it only does
/// async-signal-safe work (atomics, getpid(2), write(2), sigaction(2), raise(3)); it
/// allocates nothing and takes no lock.
fn action(signal: i32) {
    let Some(i) = slot(signal) else { return };
    // SAFETY: getpid(2) is async-signal-safe.
    if OWNER.load(Ordering::SeqCst) != unsafe { libc::getpid() } {
        // A child forked without blocking signals around the fork (a worker's fork blocks
        // them, see `BlockedSignals`) that has not reset the parent's wiring yet: the signal
        // is its own, not the parent's. Put back the disposition from before daimon; if that
        // is the default action, raise the signal again: it is delivered with it once this
        // handler returns (the signal is blocked while its handler runs). A handler of the
        // program's own was already run by signal-hook, which chains to it; an ignored
        // signal stays ignored.
        restore(i);
        if ORIGINAL[i]
            .get()
            .is_some_and(|old| old.sa_sigaction == libc::SIG_DFL)
        {
            // SAFETY: raise(3) is async-signal-safe.
            unsafe { libc::raise(signal) };
        }
    } else if WANTED[i].load(Ordering::SeqCst) {
        PENDING[i].store(true, Ordering::SeqCst);
        let fd = WRITE_FD.load(Ordering::SeqCst);
        if fd >= 0 {
            // SAFETY: write(2) is async-signal-safe; the buffer is a live constant of
            // WAKE.len() bytes. A full pipe or counter (EAGAIN) is fine: a wake-up is already
            // pending and the bit above is set.
            unsafe { libc::write(fd, WAKE.as_ptr().cast(), WAKE.len()) };
        }
    }
    // Not wanted: only in the instant before a release puts the original disposition back;
    // the signal is dropped.
}

/// Makes signal-hook's handler the disposition of signal slot `i` again, as recorded after
/// daimon's first registration. Called with `ACTIONS` held, once daimon's action is
/// registered again.
fn reinstall(i: usize) -> io::Result<()> {
    if let Some(hook) = HOOK[i].get() {
        // SAFETY: `hook` is the disposition sigaction(2) reported right after signal-hook
        // installed its handler for this signal: that handler, whose actions are
        // async-signal-safe (daimon's is, see `action`). The daemon changes dispositions
        // from its one thread, under `ACTIONS`.
        if unsafe { libc::sigaction(i as libc::c_int, hook, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        INSTALLED[i].store(true, Ordering::SeqCst);
    }
    Ok(())
}

/// Puts back the disposition of signal slot `i` from before daimon touched it, if
/// signal-hook's handler is installed. Async-signal-safe: atomic loads and stores of
/// recorded values and sigaction(2), so the action and a freshly forked child may call it.
fn restore(i: usize) {
    if !INSTALLED[i].load(Ordering::SeqCst) {
        return;
    }
    if let Some(old) = ORIGINAL[i].get() {
        // SAFETY: `old` is the disposition sigaction(2) itself reported for this signal
        // before daimon touched it; sigaction(2) is async-signal-safe.
        unsafe { libc::sigaction(i as libc::c_int, old, std::ptr::null_mut()) };
    }
    INSTALLED[i].store(false, Ordering::SeqCst);
}

/// What the action writes to wake the reactor: an eventfd takes a count of eight bytes
/// (Linux); a socket, any one byte.
#[cfg(target_os = "linux")]
const WAKE: [u8; 8] = 1u64.to_ne_bytes();
#[cfg(not(target_os = "linux"))]
const WAKE: [u8; 1] = [1];

/// The process's signal self-pipe, owned by one reactor: on Linux an eventfd, one
/// descriptor the action writes to and the reactor polls (a socket pair costs two, each
/// several times dearer to make and to close: a worker makes one as it starts and closes
/// it as it exits); elsewhere a socket pair.
pub(crate) struct SignalPipe {
    read: OwnedFd,
    /// Kept open for the action, which reaches it through `WRITE_FD` (none where the read
    /// end is written to as well: an eventfd).
    write: Option<OwnedFd>,
}

impl SignalPipe {
    pub(crate) fn new() -> io::Result<SignalPipe> {
        if OWNED.swap(true, Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "another reactor of this process already owns the signals",
            ));
        }
        let pipe = match SignalPipe::open() {
            Ok(pipe) => pipe,
            Err(e) => {
                OWNED.store(false, Ordering::SeqCst);
                return Err(e);
            }
        };
        for fd in pipe.fds() {
            crate::sys::own(fd);
        }
        OWNER.store(crate::process::pid(), Ordering::SeqCst);
        let write = pipe.write.as_ref().unwrap_or(&pipe.read);
        WRITE_FD.store(write.as_raw_fd(), Ordering::SeqCst);
        Ok(pipe)
    }

    /// A non-blocking, close-on-exec eventfd.
    #[cfg(target_os = "linux")]
    fn open() -> io::Result<SignalPipe> {
        use std::os::fd::FromRawFd;
        // SAFETY: eventfd(2) takes no pointer; a descriptor it returns is new and ours.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened above and nothing else owns it.
        let read = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(SignalPipe { read, write: None })
    }

    /// A non-blocking socket pair (close-on-exec, as std makes every socket).
    #[cfg(not(target_os = "linux"))]
    fn open() -> io::Result<SignalPipe> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        Ok(SignalPipe {
            read: read.into(),
            write: Some(write.into()),
        })
    }

    fn fds(&self) -> impl Iterator<Item = std::os::fd::RawFd> + '_ {
        std::iter::once(self.read.as_raw_fd()).chain(self.write.as_ref().map(|w| w.as_raw_fd()))
    }

    /// The descriptor the reactor polls: readable once a caught signal arrived.
    pub(crate) fn read_end(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.read.as_fd()
    }

    /// Starts catching `signal`: records its disposition the first time, registers daimon's
    /// signal-hook action and makes signal-hook's handler the disposition.
    pub(crate) fn catch(&self, signal: Signal) -> Result<()> {
        if !signal.is_catchable() {
            return Err(Error::UncatchableSignal(signal.number()));
        }
        let i = slot(signal.number()).expect("standard signals fit");
        let mut actions = ACTIONS.lock().unwrap_or_else(|p| p.into_inner());
        // Recorded before signal-hook touches it.
        original(i);
        WANTED[i].store(true, Ordering::SeqCst);
        if actions[i].is_none() {
            let number = signal.number();
            // SAFETY: the action only does async-signal-safe work (atomics, getpid, write,
            // sigaction, raise); it allocates nothing, takes no lock and cannot panic.
            match unsafe { signal_hook::low_level::register(number, move || action(number)) } {
                Ok(id) => actions[i] = Some(id),
                Err(e) => {
                    WANTED[i].store(false, Ordering::SeqCst);
                    return Err(e.into());
                }
            }
            // The first registration installed signal-hook's handler (it never does again):
            // recorded, to put back after a release.
            if HOOK[i].get().is_none() {
                let _ = HOOK[i].set(current(i));
                INSTALLED[i].store(true, Ordering::SeqCst);
            }
        }
        // Registered first, installed second: a signal in between still has its original
        // disposition rather than a handler with no action.
        if !INSTALLED[i].load(Ordering::SeqCst) {
            if let Err(e) = reinstall(i) {
                WANTED[i].store(false, Ordering::SeqCst);
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Stops catching `signal`: it gets back the disposition it had before daimon touched
    /// it (the default action, or ignored if it was ignored).
    pub(crate) fn release(&self, signal: Signal) {
        if let Some(i) = slot(signal.number()) {
            let mut actions = ACTIONS.lock().unwrap_or_else(|p| p.into_inner());
            release_slot(&mut actions, i);
        }
    }

    /// Whether `signal` is currently caught.
    pub(crate) fn is_caught(&self, signal: Signal) -> bool {
        slot(signal.number()).is_some_and(|i| WANTED[i].load(Ordering::SeqCst))
    }

    /// Drains the pipe, then hands out each pending signal once (several deliveries of the
    /// same signal between two turns coalesce, as POSIX signals do).
    pub(crate) fn drain(&self, mut f: impl FnMut(Signal)) {
        // An eventfd's one read takes its whole count; a socket's pending bytes may take
        // several.
        let mut buf = [0u8; 64];
        while let Ok(n) = read_nonblocking(&self.read, &mut buf) {
            if cfg!(target_os = "linux") || n < buf.len() {
                break;
            }
        }
        for &(number, _) in NAMES {
            let i = slot(number).expect("standard signals fit");
            if PENDING[i].swap(false, Ordering::SeqCst) && WANTED[i].load(Ordering::SeqCst) {
                f(Signal::from_number(number).expect("a standard signal"));
            }
        }
    }
}

/// Puts back signal slot `i`'s disposition from before daimon, then unregisters daimon's
/// action (in that order: a signal in between takes the original disposition, never a
/// handler with no action). Called with `ACTIONS` held.
fn release_slot(actions: &mut [Option<SigId>; SLOTS], i: usize) {
    restore(i);
    WANTED[i].store(false, Ordering::SeqCst);
    PENDING[i].store(false, Ordering::SeqCst);
    if let Some(id) = actions[i].take() {
        signal_hook::low_level::unregister(id);
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        {
            let mut actions = ACTIONS.lock().unwrap_or_else(|p| p.into_inner());
            for i in 1..SLOTS {
                release_slot(&mut actions, i);
            }
        }
        for fd in self.fds() {
            crate::sys::disown(fd);
        }
        WRITE_FD.store(-1, Ordering::SeqCst);
        OWNED.store(false, Ordering::SeqCst);
    }
}

/// Forgets the parent's signal wiring in a freshly forked child: every signal daimon caught
/// gets back the disposition the parent had before daimon touched it (default, or ignored
/// as inherited), and the parent's pipe is no longer written to.
///
/// Async-signal-safe (atomic loads and stores, sigaction(2); no lock, no allocation), so it
/// may run right after `fork()`. daimon's actions stay registered in the child's copy of
/// signal-hook's registry, doing nothing until the child's own reactor wants the signal
/// again. The inherited pipe descriptors are closed when the child drops or forgets its copy
/// of the reactor.
pub fn reset_after_fork() {
    for i in 1..SLOTS {
        // Restore first: from here on the parent's wiring cannot run in this process.
        restore(i);
        WANTED[i].store(false, Ordering::SeqCst);
        PENDING[i].store(false, Ordering::SeqCst);
    }
    WRITE_FD.store(-1, Ordering::SeqCst);
    OWNED.store(false, Ordering::SeqCst);
}

/// Signals blocked in this thread for as long as it lives; the mask from before comes back
/// when it drops. A worker's fork happens with every signal blocked, so that a signal
/// reaching the child before [`reset_after_fork`] stays pending and is delivered, once the
/// child drops its copy, with the disposition from before daimon. The daemon's stop blocks
/// SIGCHLD alone (see `Daemon::shutdown`).
pub(crate) struct BlockedSignals {
    old: libc::sigset_t,
}

impl BlockedSignals {
    /// Every signal that can be blocked.
    pub(crate) fn new() -> io::Result<BlockedSignals> {
        // SAFETY: a zeroed sigset_t is a valid value; it is filled in below.
        let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: sigfillset(3) fills the live set it is given.
        unsafe { libc::sigfillset(&mut all) };
        BlockedSignals::block(&all)
    }

    /// `signal` only: it stays pending, and is delivered once when this is dropped.
    pub(crate) fn only(signal: Signal) -> io::Result<BlockedSignals> {
        // SAFETY: a zeroed sigset_t is a valid value; it is emptied and filled below.
        let mut one: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: sigemptyset(3) and sigaddset(3) write the live set they are given; the
        // number is a real signal's.
        unsafe {
            libc::sigemptyset(&mut one);
            libc::sigaddset(&mut one, signal.number());
        }
        BlockedSignals::block(&one)
    }

    fn block(set: &libc::sigset_t) -> io::Result<BlockedSignals> {
        // SAFETY: a zeroed sigset_t is a valid value; pthread_sigmask fills it.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: pthread_sigmask(3) reads `set` and writes the old mask into `old`, both
        // live. SIGKILL and SIGSTOP cannot be blocked and are left as they are.
        let e = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, set, &mut old) };
        if e != 0 {
            return Err(io::Error::from_raw_os_error(e));
        }
        Ok(BlockedSignals { old })
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        // SAFETY: `old` is the mask pthread_sigmask(3) reported; setting it back is
        // async-signal-safe, so a freshly forked child may drop its copy.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

/// One non-blocking read(2) of `fd` into `buf`; end of file is an error.
fn read_nonblocking(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: read(2) writes at most `buf.len()` bytes into `buf`, a live buffer; `fd` is
    // open for as long as the borrow.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    match n {
        0 => Err(io::ErrorKind::UnexpectedEof.into()),
        n if n < 0 => Err(io::Error::last_os_error()),
        n => Ok(n as usize),
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

    /// Changes this thread's mask only (never a disposition), so it may run beside other
    /// tests. SIGWINCH's default action is to ignore it, but a blocked signal stays pending.
    #[test]
    fn blocked_signals_wait_until_the_guard_drops() {
        let pending = |sig| {
            // SAFETY: a zeroed sigset_t is valid; sigpending(2) fills the live local.
            let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            unsafe { libc::sigpending(&mut set) };
            // SAFETY: `set` is initialized.
            unsafe { libc::sigismember(&set, sig) == 1 }
        };
        let blocked = BlockedSignals::new().unwrap();
        // SAFETY: raise(3) sends SIGWINCH to this thread, which blocks it.
        unsafe { libc::raise(libc::SIGWINCH) };
        assert!(pending(libc::SIGWINCH), "held while blocked");
        drop(blocked);
        assert!(!pending(libc::SIGWINCH), "delivered once the mask is back");
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
