//! The event bus: typed events, listeners, subscriptions by type, name or prefix, priorities.
//!
//! A bus runs in one process and is typed by that process's host: the daemon's bus is a
//! `Bus<DaemonHost>`, a worker's a `Bus<WorkerHost<W>>`, and a listener reaches the host
//! with its real type through [`Context::host`].
//!
//! Listeners subscribe to an event type ([`Bus::on_event`]: `WorkerExited`, `DaemonEvent`,
//! your own), to an exact name (`daemon.posix.SIGTERM`, or its alias `daemon.posix.15`), or
//! to a prefix ending in `*` (`daemon.posix.*`, or `*` for everything). Higher priorities run
//! first; equal priorities run in subscription order. Events emitted while one is being
//! dispatched are queued and dispatched after it, in order.
//!
//! # Examples
//!
//! ```
//! use daimon::bus::{Bus, DaemonEvent, PostAction, TestHost};
//! use std::{cell::Cell, rc::Rc};
//!
//! let seen = Rc::new(Cell::new(0));
//! let mut bus = Bus::<TestHost>::new();
//! let s = seen.clone();
//! bus.on_event(move |event: &DaemonEvent, _ctx| {
//!     assert_eq!(*event, DaemonEvent::Ready);
//!     s.set(s.get() + 1);
//!     PostAction::Continue
//! });
//! bus.on("daemon.*", |_event, _ctx| PostAction::Continue)?;
//! bus.emit(DaemonEvent::Ready);
//! bus.dispatch(&mut TestHost::default());
//! assert_eq!(seen.get(), 1);
//! # Ok::<(), daimon::Error>(())
//! ```

mod event;
mod listener;
mod testing;

use std::any::{Any, TypeId};
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};

use slog::error;

pub use event::{DaemonEvent, Event, PosixEvent, ReloadEvent, TimerEvent};
pub use listener::{Context, FnListener, Host, Listener, PostAction, from_fn};
pub use testing::TestHost;

use crate::error::{Error, Result};
use crate::reactor::{Reactor, Signal};

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

/// A name pattern: an exact name, or a prefix ending in `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    pub(crate) fn parse(pattern: &str) -> Result<Pattern> {
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

    pub(crate) fn matches(&self, event: &dyn Event) -> bool {
        self.matches_name(event.name()) || event.alias().is_some_and(|a| self.matches_name(a))
    }
}

/// What a subscription receives: events with one of some names, or events of one type.
enum Filter {
    Names(Vec<Pattern>),
    Type(TypeId),
    /// Names wanted outside the process (the control socket's subscribers): matched like
    /// [`Filter::Names`], but never a reason to catch a signal.
    Remote(Vec<Pattern>),
}

impl Filter {
    fn names(patterns: &[&str]) -> Result<Filter> {
        let patterns = patterns
            .iter()
            .map(|p| Pattern::parse(p))
            .collect::<Result<Vec<_>>>()?;
        if patterns.is_empty() {
            return Err(Error::BadPattern(String::new()));
        }
        Ok(Filter::Names(patterns))
    }

    fn matches(&self, event: &dyn Event) -> bool {
        match self {
            Filter::Names(patterns) | Filter::Remote(patterns) => {
                patterns.iter().any(|p| p.matches(event))
            }
            Filter::Type(id) => (event as &dyn Any).type_id() == *id,
        }
    }

    /// The patterns that decide which signals are caught.
    fn patterns(&self) -> &[Pattern] {
        match self {
            Filter::Names(p) => p,
            Filter::Type(_) | Filter::Remote(_) => &[],
        }
    }
}

struct Subscription<H> {
    id: u64,
    filter: Filter,
    priority: i32,
    /// `None` while the listener runs.
    listener: Option<Box<dyn Listener<H>>>,
    removed: bool,
}

/// The subscriptions, kept sorted by priority (highest first), then age.
pub(crate) struct Registry<H> {
    subs: Vec<Subscription<H>>,
    /// Subscribed during a dispatch; merged in when it ends.
    pending: Vec<Subscription<H>>,
    next_id: u64,
    generation: u64,
}

impl<H> Default for Registry<H> {
    fn default() -> Self {
        Registry {
            subs: Vec::new(),
            pending: Vec::new(),
            next_id: 0,
            generation: 0,
        }
    }
}

impl<H> Registry<H> {
    fn insert(
        &mut self,
        filter: Filter,
        priority: i32,
        listener: Box<dyn Listener<H>>,
        deferred: bool,
    ) -> SubscriptionId {
        self.next_id += 1;
        let sub = Subscription {
            id: self.next_id,
            filter,
            priority,
            listener: Some(listener),
            removed: false,
        };
        if deferred {
            self.pending.push(sub);
            self.generation += 1;
        } else {
            self.place(sub);
        }
        SubscriptionId(self.next_id)
    }

    fn place(&mut self, sub: Subscription<H>) {
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

/// The event bus of a process whose host is `H`. See the [module documentation](self).
pub struct Bus<H> {
    registry: Registry<H>,
    queue: VecDeque<Box<dyn Event>>,
    /// What [`Bus::may_receive`] answered, by event type and prefix, for the registry's
    /// generation it was computed at: asked on every call, it changes only when a
    /// subscription does.
    receivers: std::cell::RefCell<Vec<(TypeId, &'static str, u64, bool)>>,
}

impl<H> Default for Bus<H> {
    fn default() -> Self {
        Bus {
            registry: Registry::default(),
            queue: VecDeque::new(),
            receivers: std::cell::RefCell::new(Vec::new()),
        }
    }
}

impl<H: Host> Bus<H> {
    /// An empty bus.
    pub fn new() -> Bus<H> {
        Bus::default()
    }

    /// Subscribes `listener` to a name `pattern` with priority 0.
    ///
    /// # Errors
    ///
    /// [`Error::BadPattern`] if `pattern` is empty or has a `*` anywhere but at its end.
    pub fn subscribe(
        &mut self,
        pattern: &str,
        listener: impl Listener<H>,
    ) -> Result<SubscriptionId> {
        self.subscribe_with_priority(pattern, 0, listener)
    }

    /// Subscribes `listener` to a name `pattern`; higher priorities are called first.
    ///
    /// # Errors
    ///
    /// [`Error::BadPattern`] if `pattern` is empty or has a `*` anywhere but at its end.
    pub fn subscribe_with_priority(
        &mut self,
        pattern: &str,
        priority: i32,
        listener: impl Listener<H>,
    ) -> Result<SubscriptionId> {
        self.subscribe_all(&[pattern], priority, listener)
    }

    /// Subscribes one listener to several name patterns: it gets each event once, whichever
    /// of its patterns match.
    ///
    /// # Errors
    ///
    /// [`Error::BadPattern`] if a pattern is malformed or there is none.
    pub fn subscribe_all(
        &mut self,
        patterns: &[&str],
        priority: i32,
        listener: impl Listener<H>,
    ) -> Result<SubscriptionId> {
        let filter = Filter::names(patterns)?;
        Ok(self
            .registry
            .insert(filter, priority, Box::new(listener), false))
    }

    /// Subscribes `listener`, first of all (before any listener can stop an event), to the
    /// events the control socket's subscribers want: `patterns` never make the process catch
    /// a signal.
    pub(crate) fn subscribe_remote(
        &mut self,
        patterns: Vec<Pattern>,
        listener: impl Listener<H>,
    ) -> SubscriptionId {
        self.registry.insert(
            Filter::Remote(patterns),
            i32::MAX,
            Box::new(listener),
            false,
        )
    }

    /// Subscribes `listener` to every event of type `E`, whatever its name, with `priority`.
    pub fn subscribe_event<E: Event>(
        &mut self,
        priority: i32,
        listener: impl Listener<H>,
    ) -> SubscriptionId {
        let filter = Filter::Type(TypeId::of::<E>());
        self.registry
            .insert(filter, priority, Box::new(listener), false)
    }

    /// Subscribes a closure to every event of type `E` (priority 0); it gets the event as
    /// an `&E`, with no downcast.
    ///
    /// Signals are caught only for name subscriptions (see [`Bus::on_signal`]): a typed
    /// subscription to [`PosixEvent`] sees the signals other listeners caught.
    pub fn on_event<E, F>(&mut self, f: F) -> SubscriptionId
    where
        E: Event,
        F: FnMut(&E, &mut Context<'_, H>) -> PostAction + 'static,
    {
        let listener = listener::Typed {
            f,
            _event: std::marker::PhantomData,
        };
        self.subscribe_event::<E>(0, listener)
    }

    /// Subscribes a closure to a name `pattern` with priority 0.
    ///
    /// # Errors
    ///
    /// [`Error::BadPattern`] if `pattern` is malformed.
    pub fn on<F>(&mut self, pattern: &str, f: F) -> Result<SubscriptionId>
    where
        F: FnMut(&dyn Event, &mut Context<'_, H>) -> PostAction + 'static,
    {
        self.subscribe(pattern, from_fn(f))
    }

    /// Subscribes a closure to one signal: the process catches it from now on (instead of
    /// its default action) and the closure gets it as a [`PosixEvent`]; unless the signal
    /// was ignored before daimon touched it ([`Signal::is_inherited_ignored`]: SIGHUP under
    /// `nohup`, SIGPIPE in any Rust program), which stays ignored.
    pub fn on_signal<F>(&mut self, signal: Signal, mut f: F) -> SubscriptionId
    where
        F: FnMut(&PosixEvent, &mut Context<'_, H>) -> PostAction + 'static,
    {
        let name = format!("{}{}", PosixEvent::PREFIX, signal.name());
        let filter = Filter::Names(vec![Pattern::Exact(name)]);
        let listener =
            from_fn(move |event: &dyn Event, ctx: &mut Context<'_, H>| {
                match event.downcast_ref::<PosixEvent>() {
                    Some(e) => f(e, ctx),
                    None => PostAction::Continue,
                }
            });
        self.registry.insert(filter, 0, Box::new(listener), false)
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

    /// Queues an event already boxed.
    pub(crate) fn emit_boxed(&mut self, event: Box<dyn Event>) {
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
    pub(crate) fn generation(&self) -> u64 {
        self.registry.generation
    }

    /// Whether some name subscription whose pattern starts with `scope` would receive an
    /// event with this name or alias.
    ///
    /// The daemon catches a signal when a pattern within `daemon.posix.` names it, so a
    /// listener on `*` or `daemon.*` sees the signals that are caught without changing which.
    pub(crate) fn is_subscribed(&self, name: &str, alias: Option<&str>, scope: &str) -> bool {
        self.live_patterns().any(|p| {
            p.text().starts_with(scope)
                && (p.matches_name(name) || alias.is_some_and(|a| p.matches_name(a)))
        })
    }

    /// Whether some exact name subscription within `scope` names this event or its alias.
    pub(crate) fn is_named(&self, name: &str, alias: Option<&str>, scope: &str) -> bool {
        self.live_patterns().any(|p| match p {
            Pattern::Exact(text) => {
                text.starts_with(scope) && (text == name || alias.is_some_and(|a| text == a))
            }
            Pattern::Prefix(_) => false,
        })
    }

    /// The name patterns of the live subscriptions, pending ones included.
    fn live_patterns(&self) -> impl Iterator<Item = &Pattern> {
        self.registry
            .subs
            .iter()
            .chain(&self.registry.pending)
            .filter(|s| !s.removed)
            .flat_map(|s| s.filter.patterns())
    }

    /// Whether some subscription could receive an event of type `E` whose name starts with
    /// `prefix` (a cheap test before building an event nobody listens to). The answer is
    /// remembered until the subscriptions change, so the hot path pays a lookup, not a scan.
    pub(crate) fn may_receive<E: Event>(&self, prefix: &'static str) -> bool {
        let typed = TypeId::of::<E>();
        let generation = self.registry.generation;
        let mut memo = self.receivers.borrow_mut();
        let found = memo
            .iter_mut()
            .find(|(t, p, _, _)| *t == typed && (std::ptr::eq(*p, prefix) || *p == prefix));
        if let Some((_, _, seen, answer)) = found {
            if *seen == generation {
                return *answer;
            }
            *answer = self.scan_receivers(typed, prefix);
            *seen = generation;
            return *answer;
        }
        let answer = self.scan_receivers(typed, prefix);
        memo.push((typed, prefix, generation, answer));
        answer
    }

    fn scan_receivers(&self, typed: TypeId, prefix: &str) -> bool {
        self.registry
            .subs
            .iter()
            .chain(&self.registry.pending)
            .filter(|s| !s.removed)
            .any(|s| match &s.filter {
                Filter::Type(id) => *id == typed,
                Filter::Names(patterns) | Filter::Remote(patterns) => {
                    patterns.iter().any(|p| match p {
                        Pattern::Exact(p) => p.starts_with(prefix),
                        Pattern::Prefix(p) => {
                            p.starts_with(prefix) || prefix.starts_with(p.as_str())
                        }
                    })
                }
            })
    }

    /// Delivers `event` to its listeners now, ahead of the queue (for events whose outcome
    /// the caller needs, such as an `RpcEvent` a listener may refuse). Events the listeners
    /// emit are queued as usual.
    pub fn dispatch_now(&mut self, event: &dyn Event, host: &mut H) {
        self.deliver(event, host);
    }

    /// Delivers queued events (at most [`DISPATCH_LIMIT`]) to their listeners and returns how
    /// many were delivered. A panicking listener is logged and stays subscribed; the others
    /// still get the event.
    pub fn dispatch(&mut self, host: &mut H) -> usize {
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

    fn deliver(&mut self, event: &dyn Event, host: &mut H) {
        let mut i = 0;
        while i < self.registry.subs.len() {
            let sub = &mut self.registry.subs[i];
            i += 1;
            if sub.removed || !sub.filter.matches(event) {
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

/// Makes `reactor` catch exactly the signals some listener of `bus` subscribes to by name
/// (by name, number or a `daemon.posix.` prefix); the others keep (or get back) the
/// disposition they had before daimon touched them. A signal ignored before then is not
/// caught (SIGCHLD excepted), and a prefix never catches those of
/// [`NOT_BY_PREFIX`](crate::reactor::NOT_BY_PREFIX).
/// Does nothing when the subscriptions did not change since `seen`.
pub(crate) fn catch_subscribed_signals<H: Host, T: Clone>(
    reactor: &mut Reactor<T>,
    bus: &Bus<H>,
    seen: &mut Option<u64>,
) -> Result<()> {
    if *seen == Some(bus.generation()) {
        return Ok(());
    }
    for signal in Signal::catchable() {
        let event = PosixEvent::new(signal);
        let (name, alias) = (event.name(), event.alias());
        // A signal ignored before daimon touched it stays ignored; a prefix does not catch
        // the noisy ones (see `Signal::is_caught_by_prefix`).
        let wanted = if bus.is_named(name, alias, PosixEvent::PREFIX) {
            signal.is_caught_by_name()
        } else {
            signal.is_caught_by_prefix() && bus.is_subscribed(name, alias, PosixEvent::PREFIX)
        };
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

#[cfg(test)]
mod tests;
