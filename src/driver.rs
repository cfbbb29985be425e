//! The one driver loop, shared by the daemon (its run and its shutdown) and by every worker
//! process: one reactor, one timer queue, one place where signals and timers become events.
//!
//! A turn: hand what the host produced to the bus, dispatch, check whether to go on, catch
//! the signals the listeners subscribe to, wait for readiness (no longer than the next
//! timer, and not at all while events wait), turn caught signals into [`PosixEvent`]s and
//! listener timers into [`TimerEvent`]s, and give readiness and the host's own deadlines to
//! the host.

use std::time::{Duration, Instant};

use crate::bus::{self, Bus, Host, PosixEvent, TimerEvent};
use crate::error::Result;
use crate::reactor::{Reactor, Ready, TimerId, Token};

/// What the one timer queue holds: a listener's timer (it becomes a [`TimerEvent`]) or one
/// of the host's own deadlines.
#[derive(Debug, Clone)]
pub(crate) enum Due<D> {
    Listener(String),
    Own(D),
}

/// A host that owns the loop's reactor and timer queue.
pub(crate) trait LoopHost: Host {
    /// The host's own deadlines.
    type Deadline: Clone;

    fn reactor(&mut self) -> &mut Reactor<Due<Self::Deadline>>;

    /// Arms a listener's timer on the one queue.
    fn arm_listener_timer(
        &mut self,
        after: Duration,
        period: Option<Duration>,
        name: String,
    ) -> TimerId {
        self.reactor()
            .timers()
            .insert(crate::reactor::after(after), period, Due::Listener(name))
    }
}

/// What the loop drives: a bus, its host, and what readiness and deadlines mean.
pub(crate) trait Driven {
    type Host: LoopHost;

    fn bus_and_host(&mut self) -> (&mut Bus<Self::Host>, &mut Self::Host);

    /// A registered source is ready.
    fn io(&mut self, token: Token, readable: bool, writable: bool);

    /// One of the host's own deadlines is due.
    fn deadline(&mut self, deadline: <Self::Host as LoopHost>::Deadline, now: Instant);

    /// Moves what the host produced (events, deadlines, replies) where it belongs.
    fn settle(&mut self) {}

    /// The longest the next wait may last, besides the timers.
    fn max_wait(&mut self) -> Option<Duration> {
        None
    }

    /// After each turn.
    fn after_turn(&mut self, _now: Instant) {}
}

/// Runs turns until `done` says so (checked after each dispatch).
pub(crate) fn drive<D: Driven>(d: &mut D, mut done: impl FnMut(&mut D) -> bool) -> Result<()> {
    let mut seen = None;
    let mut ready = Vec::new();
    loop {
        d.settle();
        {
            let (bus, host) = d.bus_and_host();
            bus.dispatch(host);
        }
        d.settle();
        if done(d) {
            return Ok(());
        }
        let limit = d.max_wait();
        let (bus, host) = d.bus_and_host();
        let pending = bus.has_pending();
        let reactor = host.reactor();
        bus::catch_subscribed_signals(reactor, bus, &mut seen)?;
        let wait = if pending { Some(Duration::ZERO) } else { limit };
        reactor.turn(wait, &mut ready)?;
        let now = Instant::now();
        for r in ready.drain(..) {
            match r {
                Ready::Signal(signal) => d.bus_and_host().0.emit(PosixEvent::new(signal)),
                Ready::Timer(id, Due::Listener(name)) => {
                    d.bus_and_host().0.emit(TimerEvent::new(name, id));
                }
                Ready::Timer(_, Due::Own(deadline)) => d.deadline(deadline, now),
                Ready::Io {
                    token,
                    readable,
                    writable,
                } => d.io(token, readable, writable),
            }
        }
        d.after_turn(now);
    }
}
