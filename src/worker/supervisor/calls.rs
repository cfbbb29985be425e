//! Calls: user commands whose reply a caller waits for (`worker.call`, [`Workers::call`]).
//!
//! Each call waits in the table of the process it was sent to, under an id of its own (not
//! the caller's ticket), until one of three things ends it: the process replies with that
//! id, the process ends (reaped: the caller is told it exited first), or the supervisor's
//! deadline for it passes (a little before the caller's own, so the caller hears which
//! worker did not reply to what). A reply is only looked up in the table of the process that
//! sent it: no worker can answer a call made to another, or to an earlier process of its
//! own; one for an id it does not owe is ignored. The table is bounded.
//!
//! The calls' deadlines wait in a queue of the supervisor's own, cancelled when a call ends
//! otherwise, so that a stream of calls answered at once leaves nothing behind however long
//! their timeouts; the daemon's timer queue holds only a few sweeps of it (at most
//! [`MAX_SWEEPS`], at the earliest deadlines).

use std::time::{Duration, Instant};

use serde_json::Value;
use slog::debug;

use super::{Deadline, Workers, worker_error};
use crate::error::{Result, WorkerError};
use crate::reactor::{TimerId, Timers};
use crate::rpc::{Reply, Ticket};
use crate::worker::CommandError;
use crate::worker::events::RESERVED_COMMANDS;
use crate::worker::frame::{self, Down};

/// The most calls that wait for the replies of one worker process; past it, a call is
/// refused at once.
pub(crate) const MAX_CALLS: usize = 1024;

const _: () = assert!(
    MAX_CALLS == 1024,
    "Workers::call and PROTOCOL.md name the bound"
);

/// The supervisor's deadline for a call comes this much before the caller's, so that it is
/// the one that answers (the connection times the caller out at its deadline too).
const EARLY: Duration = Duration::from_millis(5);

/// The most sweeps of the call deadlines armed on the daemon's timer queue at once. Past
/// it (deadlines that keep coming earlier than every sweep armed), a call may fail a little
/// late: its caller is answered by the connection's own timeout meanwhile.
const MAX_SWEEPS: usize = 4;

/// A call waiting for its reply.
#[derive(Debug)]
pub(super) struct Pending {
    /// The caller's.
    ticket: Ticket,
    command: String,
    /// How long the caller waits, for the timeout's message.
    timeout: Duration,
    /// Its deadline in [`CallClock::queue`].
    timer: TimerId,
}

/// The deadlines of every worker's calls.
#[derive(Default)]
pub(super) struct CallClock {
    /// Each call's deadline: its entry, the process's generation, the call's id.
    queue: Timers<(usize, u64, u64)>,
    /// The sweeps armed on the daemon's timer queue that have not come yet.
    armed: Vec<Instant>,
}

impl Workers {
    /// The entry a user command for `name` goes to: it exists and runs, the command is a
    /// user's, and the payload can cross the channel.
    pub(super) fn command_target(
        &self,
        name: &str,
        command: &str,
        payload: Option<&Value>,
    ) -> Result<usize> {
        let i = self.index(name)?;
        if command.is_empty() {
            return Err(worker_error(
                name,
                WorkerError::Invalid("a command needs a name".into()),
            ));
        }
        if RESERVED_COMMANDS.contains(&command) {
            return Err(worker_error(
                name,
                WorkerError::Reserved(command.to_owned()),
            ));
        }
        if self.entries[i].run.is_none() {
            return Err(self.not_running(i));
        }
        if payload.is_some_and(frame::too_deep) {
            return Err(worker_error(
                name,
                WorkerError::Channel(frame::TOO_DEEP.into()),
            ));
        }
        Ok(i)
    }

    /// Calls a worker's [`Worker::command`](crate::worker::Worker::command) with `command`
    /// and `payload`, and answers `reply` with what it returns: its value, or its error
    /// (code and message), or an error if the worker's process ends before it replies
    /// ("exited before replying") or no reply comes by `reply.deadline()` ("did not reply
    /// within"). Returns at once; the answer comes later, through the daemon's loop.
    ///
    /// `reply` comes from [`CallContext::defer`](crate::rpc::CallContext::defer): this is
    /// how a method of the daemon's replies with a worker's answer.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use daimon::rpc::Method;
    /// use daimon::DaemonHost;
    ///
    /// let status = Method::<DaemonHost>::new("handyman.status", |_, ctx| {
    ///     let reply = ctx.defer(Duration::from_secs(2))?;
    ///     ctx.host().workers().call("handyman", "status", None, reply)?;
    ///     Ok(serde_json::Value::Null) // not sent: the worker's answer is
    /// });
    /// ```
    ///
    /// # Errors
    ///
    /// At once (and `reply` is not answered: return the error from the method, the caller
    /// gets it), [`Error::Worker`](crate::Error::Worker) if there is no such worker, it is
    /// not running, the command is one of the supervisor's own, 1024 calls (the most) wait
    /// for it already, or the channel refused the call: full, too large for a frame, or a
    /// payload nested deeper than [`MAX_DEPTH`](crate::rpc::MAX_DEPTH).
    pub fn call(
        &mut self,
        name: &str,
        command: &str,
        payload: Option<Value>,
        reply: Reply,
    ) -> Result<()> {
        let i = self.command_target(name, command, payload.as_ref())?;
        let now = self.procs.now();
        let run = self.entries[i]
            .run
            .as_mut()
            .expect("checked by command_target");
        if run.calls.len() >= MAX_CALLS {
            return Err(worker_error(name, WorkerError::TooManyCalls(MAX_CALLS)));
        }
        // An id of the supervisor's own: unique, and not the caller's ticket.
        let id = Ticket::next().0;
        let frame = Down::Call(id, command.to_owned(), payload).encode();
        run.channel()
            .send_frame(&frame)
            .map_err(|e| worker_error(name, e.into()))?;
        let timeout = reply.deadline().saturating_duration_since(now);
        let after = timeout
            .saturating_sub(EARLY)
            .min(crate::reactor::LONGEST_DELAY);
        let due = now.checked_add(after).unwrap_or(now);
        let timer = self
            .call_clock
            .queue
            .insert(due, None, (i, run.generation, id));
        run.calls.insert(
            id,
            Pending {
                ticket: reply.ticket(),
                command: command.to_owned(),
                timeout,
                timer,
            },
        );
        self.arm_sweep();
        Ok(())
    }

    /// Arms a sweep at the earliest call deadline, unless one is armed by then already (or
    /// [`MAX_SWEEPS`] are armed).
    fn arm_sweep(&mut self) {
        let clock = &mut self.call_clock;
        let Some(next) = clock.queue.next_deadline() else {
            return;
        };
        if clock.armed.len() >= MAX_SWEEPS || clock.armed.iter().any(|&at| at <= next) {
            return;
        }
        clock.armed.push(next);
        self.out.deadlines.push((next, Deadline::Calls(next)));
    }

    /// The sweep armed for `at` came: the calls due fail, and the next sweep is armed.
    pub(super) fn sweep_calls(&mut self, at: Instant) {
        let clock = &mut self.call_clock;
        if let Some(k) = clock.armed.iter().position(|&a| a == at) {
            clock.armed.swap_remove(k);
        }
        let mut due = Vec::new();
        clock.queue.expire(self.procs.now(), &mut due);
        for (_, (i, generation, id)) in due {
            self.call_overdue(i, generation, id);
        }
        self.arm_sweep();
    }

    /// How many calls wait for `name`'s reply (0 for a worker that does not run).
    #[cfg(test)]
    pub(super) fn calls_waiting(&self, name: &str) -> usize {
        self.find(name)
            .and_then(|i| self.entries[i].run.as_ref())
            .map_or(0, |r| r.calls.len())
    }

    /// How many call deadlines wait, and how many sweeps of them are armed.
    #[cfg(test)]
    pub(super) fn call_timers(&self) -> (usize, usize) {
        (self.call_clock.queue.len(), self.call_clock.armed.len())
    }

    /// Entry `i`'s process replied to the call `id`: its caller gets the outcome. A reply
    /// to a call this process does not owe (answered already, timed out, never made) is
    /// ignored.
    pub(super) fn replied(&mut self, i: usize, id: u64, outcome: Result<Value, CommandError>) {
        let entry = &mut self.entries[i];
        let Some(pending) = entry.run.as_mut().and_then(|r| r.calls.remove(&id)) else {
            debug!(self.logger, "ignored a reply to a call the worker does not owe";
                "worker" => &entry.name, "id" => id);
            return;
        };
        self.call_clock.queue.cancel(pending.timer);
        let outcome = outcome.map_err(crate::Error::from);
        self.out.resolved.push((pending.ticket.0, outcome));
    }

    /// The deadline of the call `id` to entry `i`'s process `generation`: still unanswered,
    /// it fails. (Answered, or its process gone, nothing is left to do.)
    fn call_overdue(&mut self, i: usize, generation: u64, id: u64) {
        let Some(entry) = self.entries.get_mut(i) else {
            return;
        };
        let Some(run) = entry.run.as_mut().filter(|r| r.generation == generation) else {
            return;
        };
        let Some(pending) = run.calls.remove(&id) else {
            return;
        };
        let ms = (pending.timeout.as_micros() + 500) / 1000;
        let why = format!("did not reply to '{}' within {ms} ms", pending.command);
        let error = worker_error(&entry.name, WorkerError::NoReply(why));
        self.out.resolved.push((pending.ticket.0, Err(error)));
    }

    /// A process of the worker `name` ended with these calls unanswered: each fails.
    pub(super) fn fail_calls(
        &mut self,
        name: &str,
        calls: std::collections::HashMap<u64, Pending>,
    ) {
        for (_, pending) in calls {
            self.call_clock.queue.cancel(pending.timer);
            let why = format!("exited before replying to '{}'", pending.command);
            let error = worker_error(name, WorkerError::NoReply(why));
            self.out.resolved.push((pending.ticket.0, Err(error)));
        }
    }
}
