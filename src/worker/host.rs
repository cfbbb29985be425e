//! The worker process's host: what its listeners reach, the worker itself included.

use std::time::Duration;

use serde_json::Value;
use slog::Logger;

use super::Channel;
use super::frame::{self, Up};
use crate::bus::{Bus, Host};
use crate::driver::{Due, LoopHost};
use crate::error::{Error, Result};
use crate::reactor::{Reactor, TimerId};

/// A worker process's [`Host`]: its listeners reach it with `ctx.host()`, and through it
/// their own worker, with its type.
pub struct WorkerHost<W> {
    pub(super) name: String,
    pub(super) logger: Logger,
    pub(super) worker: Option<W>,
    pub(super) channel: Channel,
    pub(super) stop: bool,
    pub(super) reactor: Reactor<Due<()>>,
}

impl<W> WorkerHost<W> {
    /// The worker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The worker's logger: its lines reach the daemon's log, tagged with the worker's name.
    pub fn logger(&self) -> &Logger {
        &self.logger
    }

    /// The worker itself (the seed's `getWorker()->getInstance()`); `None` only while its
    /// own `spinup`, `tick` or `spindown` runs.
    pub fn worker(&mut self) -> Option<&mut W> {
        self.worker.as_mut()
    }

    /// Says this worker is ready before its `spinup` ends (a long spinup that can serve
    /// early): the daemon's readiness (systemd's `READY=1`, the `-d` launcher's exit) then
    /// stops waiting for it. Without it, a worker is ready when its spinup returns.
    pub fn ready(&self) {
        self.channel
            .header()
            .ready
            .store(1, std::sync::atomic::Ordering::Release);
    }

    /// Sends a message up to the daemon, where it becomes a
    /// [`WorkerMessage`](super::WorkerMessage) named
    /// `daemon.worker.message.<name>.<command>`.
    ///
    /// The channel never blocks: a full ring (the daemon reads a bounded amount per turn,
    /// and nothing while its bus is backed up) is an error now, and the message can be sent
    /// again later.
    ///
    /// # Errors
    ///
    /// [`Error::Worker`] with [`WorkerError::Full`](crate::WorkerError::Full) when the ring
    /// is full now (send again later), [`WorkerError::Channel`](crate::WorkerError::Channel)
    /// when the message is too large for a frame or its payload nests deeper than
    /// [`MAX_DEPTH`](crate::rpc::MAX_DEPTH), which the daemon would not decode. Nothing is
    /// sent then.
    pub fn send(&self, command: &str, payload: Option<Value>) -> Result<()> {
        let refused = |kind: crate::error::WorkerError| Error::Worker {
            name: self.name.clone(),
            kind,
        };
        if payload.as_ref().is_some_and(frame::too_deep) {
            return Err(refused(crate::error::WorkerError::Channel(
                frame::TOO_DEEP.into(),
            )));
        }
        let frame = Up::Message(command.to_owned(), payload).encode();
        self.channel
            .send_frame(&frame)
            .map_err(|e| refused(e.into()))
    }

    /// Asks the worker to stop after this turn (spindown, then exit 0).
    pub fn stop(&mut self) {
        self.stop = true;
    }
}

impl<W: 'static> Host for WorkerHost<W> {
    fn logger(&self) -> &Logger {
        &self.logger
    }

    fn stop(&mut self, _code: i32) {
        self.stop = true;
    }

    fn arm_timer(&mut self, after: Duration, period: Option<Duration>, name: String) -> TimerId {
        self.arm_listener_timer(after, period, name)
    }

    fn cancel_timer(&mut self, id: TimerId) -> bool {
        self.reactor.cancel(id).is_some()
    }
}

impl<W: 'static> LoopHost for WorkerHost<W> {
    type Deadline = ();

    fn reactor(&mut self) -> &mut Reactor<Due<()>> {
        &mut self.reactor
    }
}

/// What `spinup`, `tick` and `spindown` get: the worker's host (without the worker, which
/// is `self` there) and its bus.
pub struct WorkerContext<'a, W> {
    pub(super) host: &'a mut WorkerHost<W>,
    pub(super) bus: &'a mut Bus<WorkerHost<W>>,
}

impl<W: 'static> WorkerContext<'_, W> {
    /// Says the worker is ready before its `spinup` returns (see [`WorkerHost::ready`]).
    pub fn ready(&self) {
        self.host.ready();
    }

    /// The worker's name.
    pub fn name(&self) -> &str {
        &self.host.name
    }

    /// The worker's logger: its lines reach the daemon's log, tagged with the worker's name.
    pub fn logger(&self) -> &Logger {
        &self.host.logger
    }

    /// The worker's own bus, to subscribe listeners for commands (`daemon.worker.<command>`,
    /// as [`WorkerCommand`](super::WorkerCommand)s).
    pub fn bus(&mut self) -> &mut Bus<WorkerHost<W>> {
        self.bus
    }

    /// The worker's host.
    pub fn host(&mut self) -> &mut WorkerHost<W> {
        self.host
    }

    /// Asks the worker to stop after this turn (spindown, then exit 0): a worker whose work
    /// is done ends cleanly (a `Transient` or `Temporary` one is not restarted).
    pub fn stop(&mut self) {
        self.host.stop = true;
    }

    /// Sends a message up to the daemon; see [`WorkerHost::send`].
    ///
    /// # Errors
    ///
    /// As [`WorkerHost::send`].
    pub fn send(&self, command: &str, payload: Option<Value>) -> Result<()> {
        self.host.send(command, payload)
    }

    /// What the default [`Worker::command`](super::Worker::command) does: emits the
    /// command on the worker's bus as a [`WorkerCommand`](super::WorkerCommand)
    /// (`daemon.worker.<command>`, for its listeners, after the handler returns) and
    /// answers `null`.
    ///
    /// # Errors
    ///
    /// Never: it returns a `Result` to be the tail of a handler's `match`.
    pub fn forward(
        &mut self,
        command: &str,
        payload: Option<Value>,
    ) -> std::result::Result<Value, super::CommandError> {
        self.bus.emit(super::WorkerCommand::new(command, payload));
        Ok(Value::Null)
    }
}
