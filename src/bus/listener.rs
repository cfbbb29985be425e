//! Listeners, what they return, the host they act on, and the context they act through.

use std::collections::VecDeque;
use std::time::Duration;

use slog::Logger;

use super::event::Event;
use super::{Filter, Registry, SubscriptionId};
use crate::error::{Error, Result};
use crate::reactor::TimerId;

/// What should happen after a listener handled an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostAction {
    /// Go on: later listeners get the event, this one stays subscribed.
    Continue,
    /// Stop propagation: listeners after this one do not get the event.
    Stop,
    /// Unsubscribe this listener; later listeners still get the event.
    Remove,
}

/// Reacts to events on a [`Bus<H>`](super::Bus), in a process whose host is `H`.
///
/// A listener written for any host implements `Listener<H>` for every `H: Host`; one that
/// needs the daemon's workers implements `Listener<DaemonHost>` only, so it cannot be
/// subscribed on a worker's bus by mistake: the compiler refuses it.
///
/// A closure `FnMut(&dyn Event, &mut Context<H>) -> PostAction` is a listener too; give it to
/// [`Bus::on`](super::Bus::on) or wrap it with [`from_fn`].
pub trait Listener<H>: 'static {
    /// Handles one event and says what happens next.
    fn handle(&mut self, event: &dyn Event, ctx: &mut Context<'_, H>) -> PostAction;
}

/// A closure used as a [`Listener`]; see [`from_fn`].
pub struct FnListener<F>(F);

/// Turns a closure into a [`Listener`] (the closure's argument types are inferred).
pub fn from_fn<H, F>(f: F) -> FnListener<F>
where
    F: FnMut(&dyn Event, &mut Context<'_, H>) -> PostAction + 'static,
{
    FnListener(f)
}

impl<H, F> Listener<H> for FnListener<F>
where
    F: FnMut(&dyn Event, &mut Context<'_, H>) -> PostAction + 'static,
{
    fn handle(&mut self, event: &dyn Event, ctx: &mut Context<'_, H>) -> PostAction {
        (self.0)(event, ctx)
    }
}

/// A closure on one event type, used by [`Bus::on_event`](super::Bus::on_event).
pub(super) struct Typed<E, F> {
    pub(super) f: F,
    pub(super) _event: std::marker::PhantomData<fn(&E)>,
}

impl<H, E, F> Listener<H> for Typed<E, F>
where
    E: Event,
    F: FnMut(&E, &mut Context<'_, H>) -> PostAction + 'static,
{
    fn handle(&mut self, event: &dyn Event, ctx: &mut Context<'_, H>) -> PostAction {
        match event.downcast_ref::<E>() {
            Some(e) => (self.f)(e, ctx),
            None => PostAction::Continue,
        }
    }
}

/// What the process running a bus (the daemon, a worker, a test) lets every listener do.
///
/// What is particular to one process (the daemon's workers, a worker's own value) is
/// reached through the host's concrete type with [`Context::host`].
pub trait Host: 'static {
    /// The logger listeners write to.
    fn logger(&self) -> &Logger;
    /// Asks the process to stop with exit `code` (for the daemon: a controlled shutdown).
    fn stop(&mut self, code: i32);
    /// Arms a timer that emits a [`TimerEvent`](super::TimerEvent) named `name` after
    /// `after`, then every `period` if one is given.
    fn arm_timer(&mut self, after: Duration, period: Option<Duration>, name: String) -> TimerId;
    /// Disarms a timer; false if it was not armed.
    fn cancel_timer(&mut self, id: TimerId) -> bool;
}

/// A listener's window on the bus and on its process's host while it handles an event.
pub struct Context<'a, H> {
    pub(super) registry: &'a mut Registry<H>,
    pub(super) queue: &'a mut VecDeque<Box<dyn Event>>,
    pub(super) host: &'a mut H,
}

impl<H> Context<'_, H> {
    /// The host with its real type: `DaemonHost` in the daemon (with its workers), a
    /// `WorkerHost` in a worker (with the worker itself).
    pub fn host(&mut self) -> &mut H {
        self.host
    }

    /// Emits an event; it is dispatched after the current one, in emission order.
    pub fn emit(&mut self, event: impl Event) {
        self.queue.push_back(Box::new(event));
    }

    /// Subscribes a listener to a name pattern; it receives events from the next one on.
    ///
    /// # Errors
    ///
    /// [`Error::BadPattern`] for a malformed pattern.
    pub fn subscribe(
        &mut self,
        pattern: &str,
        priority: i32,
        listener: impl Listener<H>,
    ) -> Result<SubscriptionId> {
        let filter = Filter::names(&[pattern])?;
        Ok(self
            .registry
            .insert(filter, priority, Box::new(listener), true))
    }

    /// Unsubscribes a listener; it receives nothing more, not even the current event.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownSubscription`] for a token that is not subscribed.
    pub fn unsubscribe(&mut self, id: SubscriptionId) -> Result<()> {
        self.registry.remove(id)
    }
}

impl<H: Host> Context<'_, H> {
    /// Asks the process to stop with exit `code`; in the daemon this is a controlled
    /// shutdown (`daemon.stopping`, socket and pid file removed, `daemon.stop`).
    pub fn stop(&mut self, code: i32) {
        self.host.stop(code);
    }

    /// Arms a one-shot timer that emits a [`TimerEvent`](super::TimerEvent) named `name`.
    ///
    /// # Panics
    ///
    /// Never: a delay too far in the future to represent is capped (a year).
    pub fn timer(&mut self, after: Duration, name: impl Into<String>) -> TimerId {
        self.host.arm_timer(after, None, name.into())
    }

    /// Arms a periodic timer that emits a [`TimerEvent`](super::TimerEvent) named `name`
    /// every `every`, at a fixed rate.
    pub fn periodic(&mut self, every: Duration, name: impl Into<String>) -> TimerId {
        self.host.arm_timer(every, Some(every), name.into())
    }

    /// Disarms a timer.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTimer`] if it is not armed (a one-shot timer that fired, or cancelled).
    pub fn cancel_timer(&mut self, id: TimerId) -> Result<()> {
        if self.host.cancel_timer(id) {
            Ok(())
        } else {
            Err(Error::UnknownTimer(id.as_u64()))
        }
    }

    /// The logger.
    pub fn logger(&self) -> &Logger {
        self.host.logger()
    }
}
