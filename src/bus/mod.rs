//! The event bus: typed events, listeners, subscriptions by name or prefix, priorities.
//!
//! Listeners subscribe to an exact name (`daemon.posix.SIGTERM`, or its alias
//! `daemon.posix.15`) or to a prefix ending in `*` (`daemon.posix.*`, or `*` for everything).
//! Higher priorities run first; equal priorities run in subscription order. Events emitted
//! while one is being dispatched are queued and dispatched after it, in order.
//!
//! # Examples
//!
//! ```
//! use daimon::bus::{Bus, DaemonEvent, PostAction, TestHost};
//! use std::{cell::Cell, rc::Rc};
//!
//! let seen = Rc::new(Cell::new(0));
//! let mut bus = Bus::new();
//! let s = seen.clone();
//! bus.on("daemon.*", move |event, _ctx| {
//!     s.set(s.get() + 1);
//!     PostAction::Continue
//! })?;
//! bus.emit(DaemonEvent::Ready);
//! bus.dispatch(&mut TestHost::default());
//! assert_eq!(seen.get(), 1);
//! # Ok::<(), daimon::Error>(())
//! ```

mod event;
mod listener;

use std::any::Any;
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use slog::{Logger, error, o};

pub use event::{DaemonEvent, Event, PosixEvent, RpcEvent, SocketEvent, TimerEvent, WorkerEvent};
pub use listener::{Context, FnListener, Host, Listener, PostAction, from_fn};

use crate::error::{Error, Result};
use crate::reactor::{Reactor, Signal, TimerId, Timers};

/// Identifies a subscription; ids are never reused, so a stale one is an error, not a mistake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubscriptionId(u64);

impl SubscriptionId {
    /// The id as a number, for logs.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

/// The most events one [`Bus::dispatch`] call handles, so a listener that keeps emitting
/// cannot starve the reactor.
pub const DISPATCH_LIMIT: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn parse(pattern: &str) -> Result<Pattern> {
        match pattern.find('*') {
            None if !pattern.is_empty() => Ok(Pattern::Exact(pattern.to_owned())),
            Some(i) if i == pattern.len() - 1 => Ok(Pattern::Prefix(pattern[..i].to_owned())),
            _ => Err(Error::BadPattern(pattern.to_owned())),
        }
    }

    fn text(&self) -> &str {
        match self {
            Pattern::Exact(p) | Pattern::Prefix(p) => p,
        }
    }

    fn matches_name(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(p) => p == name,
            Pattern::Prefix(p) => name.starts_with(p.as_str()),
        }
    }

    fn matches(&self, event: &dyn Event) -> bool {
        self.matches_name(event.name()) || event.alias().is_some_and(|a| self.matches_name(a))
    }
}

struct Subscription {
    id: u64,
    pattern: Pattern,
    priority: i32,
    /// `None` while the listener runs.
    listener: Option<Box<dyn Listener>>,
    removed: bool,
}

/// The subscriptions, kept sorted by priority (highest first), then age.
#[derive(Default)]
pub(crate) struct Registry {
    subs: Vec<Subscription>,
    /// Subscribed during a dispatch; merged in when it ends.
    pending: Vec<Subscription>,
    next_id: u64,
    generation: u64,
}

impl Registry {
    fn insert(
        &mut self,
        pattern: &str,
        priority: i32,
        listener: Box<dyn Listener>,
        deferred: bool,
    ) -> Result<SubscriptionId> {
        let pattern = Pattern::parse(pattern)?;
        self.next_id += 1;
        let sub = Subscription {
            id: self.next_id,
            pattern,
            priority,
            listener: Some(listener),
            removed: false,
        };
        if deferred {
            self.pending.push(sub);
        } else {
            self.place(sub);
        }
        Ok(SubscriptionId(self.next_id))
    }

    fn place(&mut self, sub: Subscription) {
        // After every subscription of higher or equal priority: ids grow, so this keeps age order.
        let at = self.subs.partition_point(|s| s.priority >= sub.priority);
        self.subs.insert(at, sub);
        self.generation += 1;
    }

    fn remove(&mut self, id: SubscriptionId) -> Result<()> {
        if let Some(s) = self.subs.iter_mut().find(|s| s.id == id.0 && !s.removed) {
            s.removed = true;
            self.generation += 1;
            return Ok(());
        }
        match self.pending.iter().position(|s| s.id == id.0) {
            Some(i) => {
                self.pending.remove(i);
                Ok(())
            }
            None => Err(Error::UnknownSubscription(id.0)),
        }
    }

    /// Drops removed subscriptions and merges pending ones.
    fn settle(&mut self) {
        if self.subs.iter().any(|s| s.removed) {
            self.subs.retain(|s| !s.removed);
        }
        for sub in std::mem::take(&mut self.pending) {
            self.place(sub);
        }
    }
}

/// The event bus. See the [module documentation](self).
#[derive(Default)]
pub struct Bus {
    registry: Registry,
    queue: VecDeque<Box<dyn Event>>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Bus {
        Bus::default()
    }

    /// Subscribes `listener` to `pattern` with priority 0.
    ///
    /// # Errors
    ///
    /// [`Error::BadPattern`] if `pattern` is empty or has a `*` anywhere but at its end.
    pub fn subscribe(&mut self, pattern: &str, listener: impl Listener) -> Result<SubscriptionId> {
        self.subscribe_with_priority(pattern, 0, listener)
    }

    /// Subscribes `listener` to `pattern`; higher priorities are called first.
    ///
    /// # Errors
    ///
    /// [`Error::BadPattern`] if `pattern` is empty or has a `*` anywhere but at its end.
    pub fn subscribe_with_priority(
        &mut self,
        pattern: &str,
        priority: i32,
        listener: impl Listener,
    ) -> Result<SubscriptionId> {
        self.registry
            .insert(pattern, priority, Box::new(listener), false)
    }

    /// Subscribes a closure to `pattern` with priority 0.
    ///
    /// # Errors
    ///
    /// [`Error::BadPattern`] if `pattern` is malformed.
    pub fn on<F>(&mut self, pattern: &str, f: F) -> Result<SubscriptionId>
    where
        F: FnMut(&dyn Event, &mut Context<'_>) -> PostAction + 'static,
    {
        self.subscribe(pattern, from_fn(f))
    }

    /// Removes a subscription.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownSubscription`] if it is not (or no longer) subscribed.
    pub fn unsubscribe(&mut self, id: SubscriptionId) -> Result<()> {
        self.registry.remove(id)?;
        self.registry.settle();
        Ok(())
    }

    /// Queues an event; [`Bus::dispatch`] delivers it.
    pub fn emit(&mut self, event: impl Event) {
        self.queue.push_back(Box::new(event));
    }

    /// Queues a boxed event.
    pub fn emit_boxed(&mut self, event: Box<dyn Event>) {
        self.queue.push_back(event);
    }

    /// Whether events wait to be dispatched.
    pub fn has_pending(&self) -> bool {
        !self.queue.is_empty()
    }

    /// The number of live subscriptions.
    pub fn len(&self) -> usize {
        self.registry.subs.len() + self.registry.pending.len()
    }

    /// Whether nothing is subscribed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A number that changes whenever the set of subscriptions changes.
    pub fn generation(&self) -> u64 {
        self.registry.generation
    }

    /// Whether some subscription whose pattern starts with `scope` would receive an event
    /// with this name or alias.
    ///
    /// The daemon catches a signal when a pattern within `daemon.posix.` names it, so a
    /// listener on `*` or `daemon.*` sees the signals that are caught without changing which.
    pub fn is_subscribed(&self, name: &str, alias: Option<&str>, scope: &str) -> bool {
        self.live_patterns().any(|p| {
            p.text().starts_with(scope)
                && (p.matches_name(name) || alias.is_some_and(|a| p.matches_name(a)))
        })
    }

    /// The patterns of the live subscriptions, pending ones included.
    fn live_patterns(&self) -> impl Iterator<Item = &Pattern> {
        self.registry
            .subs
            .iter()
            .chain(&self.registry.pending)
            .filter(|s| !s.removed)
            .map(|s| &s.pattern)
    }

    /// Whether some subscription could receive an event whose name starts with `prefix`
    /// (a cheap test before building an event nobody listens to).
    pub fn may_receive(&self, prefix: &str) -> bool {
        self.live_patterns().any(|p| match p {
            Pattern::Exact(p) => p.starts_with(prefix),
            Pattern::Prefix(p) => p.starts_with(prefix) || prefix.starts_with(p.as_str()),
        })
    }

    /// Delivers `event` to its listeners now, ahead of the queue (for events whose outcome
    /// the caller needs, such as an [`RpcEvent`] a listener may refuse). Events the listeners
    /// emit are queued as usual.
    pub fn dispatch_now(&mut self, event: &dyn Event, host: &mut dyn Host) {
        self.deliver(event, host);
    }

    /// Delivers queued events (at most [`DISPATCH_LIMIT`]) to their listeners and returns how
    /// many were delivered. A panicking listener is logged and stays subscribed; the others
    /// still get the event.
    pub fn dispatch(&mut self, host: &mut dyn Host) -> usize {
        let mut done = 0;
        while done < DISPATCH_LIMIT {
            let Some(event) = self.queue.pop_front() else {
                break;
            };
            self.deliver(event.as_ref(), host);
            done += 1;
        }
        done
    }

    fn deliver(&mut self, event: &dyn Event, host: &mut dyn Host) {
        let mut i = 0;
        while i < self.registry.subs.len() {
            let sub = &mut self.registry.subs[i];
            i += 1;
            if sub.removed || !sub.pattern.matches(event) {
                continue;
            }
            let Some(mut listener) = sub.listener.take() else {
                continue;
            };
            let id = sub.id;
            let mut ctx = Context {
                registry: &mut self.registry,
                queue: &mut self.queue,
                host: &mut *host,
            };
            let outcome = catch_unwind(AssertUnwindSafe(|| listener.handle(event, &mut ctx)));
            // Subscriptions made meanwhile are pending, so index `i - 1` is still this one.
            let sub = &mut self.registry.subs[i - 1];
            debug_assert_eq!(sub.id, id);
            sub.listener = Some(listener);
            match outcome {
                Ok(PostAction::Continue) => {}
                Ok(PostAction::Stop) => break,
                Ok(PostAction::Remove) => {
                    if !sub.removed {
                        sub.removed = true;
                        self.registry.generation += 1;
                    }
                }
                Err(panic) => {
                    let message = panic_message(panic.as_ref());
                    error!(host.logger(), "listener panicked";
                        "event" => event.name(), "subscription" => id, "panic" => message);
                }
            }
        }
        self.registry.settle();
    }
}

/// Makes `reactor` catch exactly the signals some listener of `bus` subscribes to (by name,
/// number or a `daemon.posix.` prefix); the others keep their default action. Does nothing
/// when the subscriptions did not change since `seen`.
pub(crate) fn catch_subscribed_signals<T: Clone>(
    reactor: &mut Reactor<T>,
    bus: &Bus,
    seen: &mut Option<u64>,
) -> Result<()> {
    if *seen == Some(bus.generation()) {
        return Ok(());
    }
    for signal in Signal::catchable() {
        let event = PosixEvent::new(signal);
        let wanted = bus.is_subscribed(event.name(), event.alias(), PosixEvent::PREFIX);
        if wanted && !reactor.is_caught(signal) {
            reactor.catch_signal(signal)?;
        } else if !wanted && reactor.is_caught(signal) {
            reactor.release_signal(signal);
        }
    }
    *seen = Some(bus.generation());
    Ok(())
}

pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(not a string)".to_owned()
    }
}

/// A [`Host`] for driving a bus outside a daemon: in tests, examples and tools.
///
/// It discards logs unless given a logger, records stop requests, and keeps timers that
/// [`TestHost::fire_due`] turns into [`TimerEvent`]s.
pub struct TestHost {
    /// The logger listeners get.
    pub logger: Logger,
    /// The exit code of the last stop request, if any.
    pub stopped: Option<i32>,
    /// Timers armed by listeners.
    pub timers: Timers<String>,
}

impl Default for TestHost {
    fn default() -> Self {
        TestHost {
            logger: Logger::root(slog::Discard, o!()),
            stopped: None,
            timers: Timers::default(),
        }
    }
}

impl TestHost {
    /// Emits a [`TimerEvent`] on `bus` for every timer due at `now`; returns how many.
    pub fn fire_due(&mut self, bus: &mut Bus, now: Instant) -> usize {
        let mut due = Vec::new();
        self.timers.expire(now, &mut due);
        let n = due.len();
        for (id, name) in due {
            bus.emit(TimerEvent::new(name, id));
        }
        n
    }
}

impl Host for TestHost {
    fn logger(&self) -> &Logger {
        &self.logger
    }

    fn stop(&mut self, code: i32) {
        self.stopped = Some(code);
    }

    fn arm_timer(&mut self, after: Duration, period: Option<Duration>, name: String) -> TimerId {
        self.timers.insert(Instant::now() + after, period, name)
    }

    fn cancel_timer(&mut self, id: TimerId) -> bool {
        self.timers.cancel(id).is_some()
    }

    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}

#[cfg(test)]
mod tests;
