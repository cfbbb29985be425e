//! The daemon's one stop signal.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};

use crate::reactor::Handle;

/// Stops a running daemon with a controlled shutdown, like calloop's `LoopSignal`: get it
/// with [`Daemon::loop_signal`](crate::Daemon::loop_signal) before the daemon runs, or from
/// the host while it runs. Listeners' `ctx.stop(code)`, `daemon.shutdown` and the standard
/// SIGTERM listener all go through it. The first stop's code wins.
///
/// It may be used from another thread, but a daemon that forks workers refuses to fork
/// while other threads exist: embed such a daemon in a single-threaded program.
#[derive(Clone, Default)]
pub struct LoopSignal {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    stopped: AtomicBool,
    code: AtomicI32,
    waker: OnceLock<Handle>,
}

impl LoopSignal {
    pub(crate) fn new() -> LoopSignal {
        LoopSignal::default()
    }

    /// Asks for a controlled shutdown with exit code 0.
    pub fn stop(&self) {
        self.stop_with(0);
    }

    /// Asks for a controlled shutdown with exit `code` (unless a stop was asked already).
    pub fn stop_with(&self, code: i32) {
        if self
            .inner
            .stopped
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.inner.code.store(code, Ordering::SeqCst);
        }
        if let Some(waker) = self.inner.waker.get() {
            waker.wake();
        }
    }

    /// Whether a stop was asked.
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::SeqCst)
    }

    /// The exit code of the stop asked (0 while none was).
    pub(crate) fn code(&self) -> i32 {
        self.inner.code.load(Ordering::SeqCst)
    }

    /// Wakes this reactor on a stop from now on.
    pub(crate) fn attach(&self, handle: Handle) {
        let _ = self.inner.waker.set(handle);
    }
}
