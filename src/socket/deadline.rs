//! When a connection times out: the policy behind every connection deadline, apart from
//! the I/O, so it can be tested with a clock of its own.
//!
//! - A request must arrive whole within `sockettimeout` of its first byte: bytes that
//!   trickle in do not extend it (slowloris).
//! - Replies being written, or a closing connection, get `sockettimeout` without progress.
//! - A connection with nothing in flight gets `socketidletimeout` (zero: forever), unless
//!   it is subscribed to events.
//! - A deferred reply the connection times out (a user method's, `worker.call`'s) is
//!   answered with a timeout error at its deadline.
//! - A refused connection gets `sockettimeout` from its accept, whatever it sends.
//! - A tcp connection that has not presented the secret gets `socketauthtimeout` from its
//!   accept, whatever else it does.
//! - A connection whose last reply is held back (a wrong secret) waits until it is released.

use std::time::{Duration, Instant};

/// The connection timeouts of the configuration.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    /// `sockettimeout`.
    pub request: Duration,
    /// `socketidletimeout`; zero is never.
    pub idle: Duration,
    /// `socketauthtimeout`.
    pub auth: Duration,
}

/// The instants a connection's deadline is computed from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    /// When it was accepted.
    pub accepted: Instant,
    /// The last time bytes moved either way.
    pub progress: Instant,
    /// When the first byte of the request now partly buffered arrived.
    pub request_started: Option<Instant>,
    /// Its last reply is held back until then.
    pub held_until: Option<Instant>,
}

/// What a connection is doing, as far as its deadline cares.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Phase {
    /// Counted against the cap (not refused).
    pub admitted: bool,
    /// Waiting for the daemon (a worker's acknowledgement, which times out itself).
    pub waiting: bool,
    /// While waiting: when the deferred reply times out, if the connection times it out.
    pub reply_due: Option<Instant>,
    /// It receives events (`daemon.subscribe`): never idle, though a subscriber that does
    /// not read what is sent to it is dropped like any client that does not read.
    pub subscribed: bool,
    /// A tcp peer that has not presented the secret yet.
    pub needs_secret: bool,
    /// Part of a request is buffered.
    pub partial: bool,
    /// Closing, or replies wait to be written.
    pub writing: bool,
    /// Replies wait to be written.
    pub unsent: bool,
}

impl Clock {
    /// A clock for a connection accepted at `now`.
    pub fn new(now: Instant) -> Clock {
        Clock {
            accepted: now,
            progress: now,
            request_started: None,
            held_until: None,
        }
    }

    /// After bytes were read at `now` (or a deferred reply written): a request's clock starts
    /// with the first byte buffered after the last whole request (`consumed`: some input was
    /// used up), and stops when none is partly buffered.
    pub fn track_request(&mut self, consumed: bool, partial: bool, now: Instant) {
        if consumed || !partial {
            self.request_started = None;
        }
        if partial {
            self.request_started.get_or_insert(now);
        }
    }
}

impl Timeouts {
    /// When the connection times out, if it does.
    pub fn due(&self, clock: &Clock, phase: Phase) -> Option<Instant> {
        if let Some(until) = clock.held_until {
            return Some(until);
        }
        if phase.waiting {
            return phase.reply_due;
        }
        let mut due = if !phase.admitted {
            Some(clock.accepted + self.request)
        } else {
            let write_due = phase.writing.then(|| clock.progress + self.request);
            let request_start = clock.request_started.unwrap_or(clock.progress);
            let request_due = phase.partial.then(|| request_start + self.request);
            match (write_due, request_due) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b).or_else(|| {
                    (!self.idle.is_zero() && !phase.subscribed).then(|| clock.progress + self.idle)
                }),
            }
        };
        if phase.admitted && phase.needs_secret {
            let auth = clock.accepted + self.auth;
            due = Some(due.map_or(auth, |d| d.min(auth)));
        }
        due
    }

    /// Why a connection whose deadline passed at `now` is dropped, for the log.
    pub fn why(&self, clock: &Clock, phase: Phase, now: Instant) -> &'static str {
        if !phase.admitted {
            "refused connection did not send its request in time"
        } else if phase.needs_secret && now >= clock.accepted + self.auth {
            "did not authenticate within socketauthtimeout"
        } else if phase.unsent && now >= clock.progress + self.request {
            // Its replies wait (and hold back the requests it sent after them).
            "does not read its replies"
        } else if phase.partial {
            "request not complete within sockettimeout of its first byte"
        } else if phase.unsent {
            "does not read its replies"
        } else {
            "idle"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const T: Timeouts = Timeouts {
        request: Duration::from_secs(2),
        idle: Duration::from_secs(300),
        auth: Duration::from_secs(5),
    };

    fn open() -> Phase {
        Phase {
            admitted: true,
            ..Phase::default()
        }
    }

    #[test]
    fn trickled_bytes_do_not_extend_a_request() {
        let t0 = Instant::now();
        let mut clock = Clock::new(t0);
        let phase = Phase {
            partial: true,
            ..open()
        };
        // One byte every 100 ms: progress moves, the request's start does not.
        for i in 1..=30 {
            let now = t0 + ms(100 * i);
            clock.progress = now;
            clock.track_request(false, true, now);
        }
        assert_eq!(T.due(&clock, phase), Some(t0 + ms(100) + T.request));
        assert!(
            T.why(&clock, phase, t0 + ms(3000))
                .contains("request not complete")
        );
        // A whole request consumed with a new one begun: the clock restarts.
        let now = t0 + ms(3100);
        clock.track_request(true, true, now);
        assert_eq!(T.due(&clock, phase), Some(now + T.request));
        // Nothing partial left: no request clock, the idle allowance.
        clock.progress = now;
        clock.track_request(true, false, now);
        assert_eq!(clock.request_started, None);
        assert_eq!(T.due(&clock, open()), Some(now + T.idle));
    }

    #[test]
    fn refused_and_unauthenticated_count_from_the_accept() {
        let t0 = Instant::now();
        let mut clock = Clock::new(t0);
        clock.progress = t0 + ms(1900);
        let refused = Phase::default();
        assert_eq!(T.due(&clock, refused), Some(t0 + T.request));
        let stranger = Phase {
            needs_secret: true,
            ..open()
        };
        assert_eq!(T.due(&clock, stranger), Some(t0 + T.auth));
        assert!(
            T.why(&clock, stranger, t0 + T.auth)
                .contains("socketauthtimeout")
        );
        // A stranger mid-request: the earlier of the two.
        let busy = Phase {
            partial: true,
            ..stranger
        };
        clock.track_request(false, true, t0 + ms(4000));
        assert_eq!(T.due(&clock, busy), Some(t0 + T.auth));
    }

    #[test]
    fn held_waiting_idle_and_writing() {
        let t0 = Instant::now();
        let mut clock = Clock::new(t0);
        let waiting = Phase {
            waiting: true,
            ..open()
        };
        assert_eq!(T.due(&clock, waiting), None);
        let forever = Timeouts {
            idle: Duration::ZERO,
            ..T
        };
        assert_eq!(forever.due(&clock, open()), None);
        let writing = Phase {
            writing: true,
            unsent: true,
            ..open()
        };
        assert_eq!(T.due(&clock, writing), Some(t0 + T.request));
        assert_eq!(
            T.why(&clock, writing, t0 + T.request),
            "does not read its replies"
        );
        clock.held_until = Some(t0 + ms(1000));
        assert_eq!(T.due(&clock, waiting), Some(t0 + ms(1000)));
    }
}
