//! Listeners, what they return, and the context they act through.

use std::any::Any;
use std::collections::VecDeque;
use std::time::Duration;

use slog::Logger;

use super::event::Event;
use super::{Registry, SubscriptionId};
use crate::error::{Error, Result};
use crate::reactor::TimerId;
use crate::worker::Workers;

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

/// Reacts to events on a [`Bus`](super::Bus).
///
/// A closure `FnMut(&dyn Event, &mut Context) -> PostAction` is a listener too; give it to
/// [`Bus::on`](super::Bus::on) or wrap it with [`from_fn`].
pub trait Listener: 'static {
    /// Handles one event and says what happens next.
    fn handle(&mut self, event: &dyn Event, ctx: &mut Context<'_>) -> PostAction;
}

/// A closure used as a [`Listener`]; see [`from_fn`].
pub struct FnListener<F>(F);

/// Turns a closure into a [`Listener`] (the closure's argument types are inferred).
pub fn from_fn<F>(f: F) -> FnListener<F>
where
    F: FnMut(&dyn Event, &mut Context<'_>) -> PostAction + 'static,
{
    FnListener(f)
}

impl<F> Listener for FnListener<F>
where
    F: FnMut(&dyn Event, &mut Context<'_>) -> PostAction + 'static,
{
    fn handle(&mut self, event: &dyn Event, ctx: &mut Context<'_>) -> PostAction {
        (self.0)(event, ctx)
    }
}

/// What the process running a bus (the daemon, a worker, a test) lets listeners do.
pub trait Host {
    /// The logger listeners write to.
    fn logger(&self) -> &Logger;
    /// Asks the process to stop with exit `code` (for the daemon: a controlled shutdown).
    fn stop(&mut self, code: i32);
    /// Arms a timer that emits a [`TimerEvent`](super::TimerEvent) named `name` after
    /// `after`, then every `period` if one is given.
    fn arm_timer(&mut self, after: Duration, period: Option<Duration>, name: String) -> TimerId;
    /// Disarms a timer; false if it was not armed.
    fn cancel_timer(&mut self, id: TimerId) -> bool;
    /// The host itself, for listeners that know its concrete type.
    fn as_any(&mut self) -> &mut dyn Any;
    /// The workers, in the daemon; `None` elsewhere.
    fn workers(&mut self) -> Option<&mut Workers> {
        None
    }
}

/// A listener's window on the bus and the process while it handles an event.
pub struct Context<'a> {
    pub(super) registry: &'a mut Registry,
    pub(super) queue: &'a mut VecDeque<Box<dyn Event>>,
    pub(super) host: &'a mut dyn Host,
}

impl Context<'_> {
    /// Emits an event; it is dispatched after the current one, in emission order.
    pub fn emit(&mut self, event: impl Event) {
        self.queue.push_back(Box::new(event));
    }

    /// Subscribes a listener; it receives events from the next one on.
    ///
    /// # Errors
    ///
    /// [`Error::BadPattern`] for a malformed pattern.
    pub fn subscribe(
        &mut self,
        pattern: &str,
        priority: i32,
        listener: impl Listener,
    ) -> Result<SubscriptionId> {
        self.registry
            .insert(pattern, priority, Box::new(listener), true)
    }

    /// Unsubscribes a listener; it receives nothing more, not even the current event.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownSubscription`] for a token that is not subscribed.
    pub fn unsubscribe(&mut self, id: SubscriptionId) -> Result<()> {
        self.registry.remove(id)
    }

    /// Asks the process to stop with exit `code`; in the daemon this is a controlled
    /// shutdown (`daemon.stopping`, socket and pid file removed, `daemon.stop`).
    pub fn stop(&mut self, code: i32) {
        self.host.stop(code);
    }

    /// Arms a one-shot timer that emits a [`TimerEvent`](super::TimerEvent) named `name`.
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

    /// The daemon's workers (`None` in a worker process or a test host).
    pub fn workers(&mut self) -> Option<&mut Workers> {
        self.host.workers()
    }

    /// The host as its concrete type `H`, if it is one.
    pub fn host<H: Any>(&mut self) -> Option<&mut H> {
        self.host.as_any().downcast_mut::<H>()
    }
}
