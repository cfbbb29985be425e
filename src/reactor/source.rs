//! RAII registration of file descriptors in the poller.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;

use polling::{Event, PollMode};

/// Identifies a registered source in the readiness the reactor reports.
///
/// Tokens come from a counter that is never reused, so readiness for a source that was
/// dropped earlier in the same turn cannot be mistaken for a newer one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub(crate) usize);

impl Token {
    /// The token as a number, for logs.
    pub fn as_usize(self) -> usize {
        self.0
    }
}

/// A hasher for maps keyed by [`Token`]: tokens are unique counters, so the value itself is
/// a perfect hash (no SipHash on the hot path of every readiness).
#[derive(Default, Clone, Copy)]
pub struct TokenHasher(u64);

impl std::hash::Hasher for TokenHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = n as u64;
    }
}

/// A `HashMap` keyed by [`Token`].
pub type TokenMap<V> =
    std::collections::HashMap<Token, V, std::hash::BuildHasherDefault<TokenHasher>>;

/// The readiness a source asks to be told about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interest {
    /// Report when reading would not block (or the peer hung up).
    pub readable: bool,
    /// Report when writing would not block.
    pub writable: bool,
}

impl Interest {
    /// Readable only.
    pub const READ: Interest = Interest {
        readable: true,
        writable: false,
    };
    /// Writable only.
    pub const WRITE: Interest = Interest {
        readable: false,
        writable: true,
    };
    /// Readable and writable.
    pub const BOTH: Interest = Interest {
        readable: true,
        writable: true,
    };
    /// Nothing: the source stays registered, and reports only a hang-up or an error (which
    /// epoll reports whatever the interest).
    pub const NONE: Interest = Interest {
        readable: false,
        writable: false,
    };

    pub(crate) fn event(self, token: Token) -> Event {
        Event::new(token.0, self.readable, self.writable)
    }
}

/// A file descriptor registered in a reactor, level-triggered, for as long as this value lives.
///
/// Dropping it deletes the registration first and closes the descriptor after, which is the
/// contract `polling` asks of every caller of `Poller::add`.
pub struct Source<T: AsFd> {
    poller: Arc<super::OwnedPoller>,
    token: Token,
    interest: Interest,
    /// # Invariant
    ///
    /// While `watched`, `inner` is registered in `poller` under `token`: from `Source::new`
    /// until `drop` or `unwatch`, which delete it before the field itself is dropped; it is
    /// never replaced.
    inner: T,
    watched: bool,
}

impl<T: AsFd> Source<T> {
    pub(crate) fn new(
        poller: Arc<super::OwnedPoller>,
        token: Token,
        inner: T,
        interest: Interest,
    ) -> io::Result<Self> {
        // SAFETY: the fd is owned by `inner`, which the returned `Source` keeps until its `drop`
        // deletes the registration (see the invariant on `inner`). On error nothing was added.
        unsafe {
            poller.add_with_mode(
                inner.as_fd().as_raw_fd(),
                interest.event(token),
                PollMode::Level,
            )?
        };
        crate::sys::own(inner.as_fd().as_raw_fd());
        Ok(Source {
            poller,
            token,
            interest,
            inner,
            watched: true,
        })
    }

    /// The token readiness for this source carries.
    pub fn token(&self) -> Token {
        self.token
    }

    /// The interest currently registered.
    pub fn interest(&self) -> Interest {
        self.interest
    }

    /// Changes the interest; a no-op when it is unchanged.
    ///
    /// # Errors
    ///
    /// The poller's error, if the kernel refuses the change.
    pub fn set_interest(&mut self, interest: Interest) -> io::Result<()> {
        if interest != self.interest && self.watched {
            self.poller.modify_with_mode(
                self.inner.as_fd(),
                interest.event(self.token),
                PollMode::Level,
            )?;
            self.interest = interest;
        }
        Ok(())
    }

    /// Takes the descriptor out of the poller for good (a peer's end of file would keep it
    /// ready for ever): nothing is reported for it any more, whatever its interest.
    pub(crate) fn unwatch(&mut self) {
        if std::mem::replace(&mut self.watched, false) {
            let _ = self.poller.delete(self.inner.as_fd());
        }
    }

    /// The wrapped value.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The wrapped value, mutably (to read or write it; it must not be replaced).
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// In a forked child: takes the value out without deleting its registration. The child
    /// shares its parent's epoll instance, so deleting would delete the parent's registration.
    pub(crate) fn leak_registration(self) -> T {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never used nor dropped again, so `inner` is moved out exactly once;
        // the poller's `Arc` is leaked on purpose (the child never touches the poller).
        unsafe { std::ptr::read(&this.inner) }
    }

    /// The registered descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl<T: AsFd> Drop for Source<T> {
    fn drop(&mut self) {
        if self.watched {
            // Deleting can only fail if the fd was not registered, which the invariant
            // rules out.
            let _ = self.poller.delete(self.inner.as_fd());
        }
        crate::sys::disown(self.inner.as_fd().as_raw_fd());
    }
}

impl<T: AsFd + std::fmt::Debug> std::fmt::Debug for Source<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("token", &self.token)
            .field("interest", &self.interest)
            .field("inner", &self.inner)
            .finish()
    }
}
