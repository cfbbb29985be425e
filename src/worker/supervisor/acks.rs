//! Acknowledged commands: `pause` and `resume` whose reply waits for the worker(s).

use serde_json::{Value, json};

use super::{Deadline, Workers, worker_error};
use crate::error::{Result, WorkerError};
use crate::worker::frame::Down;

/// Pause or resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Toggle {
    Pause,
    Resume,
}

impl Toggle {
    fn name(self) -> &'static str {
        match self {
            Toggle::Pause => "pause",
            Toggle::Resume => "resume",
        }
    }

    fn frame(self, seq: u64) -> Down {
        match self {
            Toggle::Pause => Down::Pause(seq),
            Toggle::Resume => Down::Resume(seq),
        }
    }
}

pub(super) struct Ack {
    id: u64,
    toggle: Toggle,
    /// The workers (by entry) whose acknowledgement is still awaited.
    waiting: Vec<usize>,
    /// The states acknowledged so far, by worker.
    states: serde_json::Map<String, Value>,
    /// Asked of one worker by name: the reply is its state alone.
    single: bool,
}

impl Workers {
    /// Sends a user command, with an optional payload, to a worker, whose
    /// [`Worker::command`](crate::worker::Worker::command) handles it (by default, a
    /// `WorkerCommand` named `daemon.worker.<command>` on the worker's bus); what it returns
    /// is discarded (see [`Workers::call`] to wait for it).
    ///
    /// # Errors
    ///
    /// [`Error::Worker`](crate::Error::Worker) if there is no such worker, it is not
    /// running, the command is one of the supervisor's own (`stop`, `pause`, `resume`: use
    /// the methods of the same name), or the channel refused it: full, too large for a frame,
    /// or a payload nested deeper than [`MAX_DEPTH`](crate::rpc::MAX_DEPTH) (nothing is sent
    /// then).
    pub fn send(&mut self, name: &str, command: &str, payload: Option<Value>) -> Result<()> {
        let i = self.command_target(name, command, payload.as_ref())?;
        let run = self.entries[i]
            .run
            .as_ref()
            .expect("checked by command_target");
        let frame = Down::Command(command.to_owned(), payload).encode();
        run.channel()
            .send_frame(&frame)
            .map_err(|e| worker_error(name, e.into()))
    }

    /// Pauses a worker (no ticks until resumed), without waiting for it.
    ///
    /// # Errors
    ///
    /// As [`Workers::send`].
    pub fn pause(&mut self, name: &str) -> Result<()> {
        self.toggle(Some(name), Toggle::Pause, false).map(drop)
    }

    /// Resumes a paused worker, without waiting for it.
    ///
    /// # Errors
    ///
    /// As [`Workers::send`].
    pub fn resume(&mut self, name: &str) -> Result<()> {
        self.toggle(Some(name), Toggle::Resume, false).map(drop)
    }

    /// Sends `pause` or `resume` to one worker, or to every running one; with `ack`, the
    /// returned id is resolved (see the outbox) once each has acknowledged, with its state
    /// (for one) or a struct of states by name (for all), or with an error after the
    /// acknowledgement timeout. A pause that times out is cancelled (the worker is resumed).
    pub(crate) fn toggle(&mut self, name: Option<&str>, toggle: Toggle, ack: bool) -> Result<u64> {
        let targets: Vec<usize> = match name {
            Some(n) => {
                let i = self.index(n)?;
                if self.entries[i].run.is_none() {
                    return Err(self.not_running(i));
                }
                vec![i]
            }
            None => (0..self.entries.len())
                .filter(|&i| self.entries[i].run.is_some())
                .collect(),
        };
        // Taken before anything is sent, so no id is ever used twice.
        let id = crate::rpc::Ticket::next().0;
        let seq = if ack { id } else { 0 };
        let mut sent = Vec::new();
        for i in targets {
            let run = self.entries[i].run.as_ref().expect("filtered above");
            match run.channel().send_frame(&toggle.frame(seq).encode()) {
                Ok(()) => sent.push(i),
                Err(e) if name.is_some() => {
                    let name = self.entries[i].name.as_str().to_owned();
                    return Err(worker_error(&name, e.into()));
                }
                // One full channel among many: that worker is reported as not acknowledging.
                Err(_) => sent.push(i),
            }
        }
        if !ack {
            return Ok(id);
        }
        if sent.is_empty() {
            self.out.resolved.push((id, Ok(json!({}))));
            return Ok(id);
        }
        self.arm(self.ack_timeout, Deadline::Ack(id));
        self.acks.push(Ack {
            id,
            toggle,
            waiting: sent,
            states: serde_json::Map::new(),
            single: name.is_some(),
        });
        Ok(id)
    }

    /// Records `worker`'s acknowledgement of `seq` with `state`; resolves the command when
    /// nobody else is awaited. An acknowledgement nobody asked this worker for is ignored.
    pub(super) fn acknowledged(&mut self, seq: u64, worker: &str, state: Value) {
        let Some(from) = self.find(worker) else {
            return;
        };
        let Some(a) = self.acks.iter().position(|a| a.id == seq) else {
            return;
        };
        let ack = &mut self.acks[a];
        let Some(w) = ack.waiting.iter().position(|&i| i == from) else {
            return;
        };
        ack.waiting.swap_remove(w);
        ack.states.insert(worker.to_owned(), state.clone());
        if ack.waiting.is_empty() {
            let ack = self.acks.swap_remove(a);
            let reply = if ack.single {
                state
            } else {
                Value::Object(ack.states)
            };
            self.out.resolved.push((ack.id, Ok(reply)));
        }
    }

    /// An acknowledgement is overdue: the command fails, and a pause is cancelled so that
    /// what the caller was told (it failed) stays true.
    pub(super) fn ack_overdue(&mut self, id: u64) {
        let Some(a) = self.acks.iter().position(|a| a.id == id) else {
            return;
        };
        let ack = self.acks.swap_remove(a);
        let names: Vec<String> = ack
            .waiting
            .iter()
            .map(|&i| self.entries[i].name.as_str().to_owned())
            .collect();
        let mut cancelled = "";
        if ack.toggle == Toggle::Pause {
            for &i in &ack.waiting {
                if let Some(run) = &self.entries[i].run {
                    let _ = run.channel().send_frame(&Down::Resume(0).encode());
                }
            }
            cancelled = "; the pause is cancelled";
        }
        let message = format!(
            "did not acknowledge {} within {:?}{cancelled}",
            ack.toggle.name(),
            self.ack_timeout
        );
        let error = worker_error(&names.join(", "), WorkerError::NoAck(message));
        self.out.resolved.push((id, Err(error)));
    }

    /// Fails the commands that wait for a worker that exited.
    pub(super) fn fail_acks_of(&mut self, worker: &str) {
        let Some(i) = self.find(worker) else { return };
        let mut k = 0;
        while k < self.acks.len() {
            if self.acks[k].waiting.contains(&i) {
                let ack = self.acks.swap_remove(k);
                let error = worker_error(
                    worker,
                    WorkerError::NoAck(format!(
                        "it exited before acknowledging {}",
                        ack.toggle.name()
                    )),
                );
                self.out.resolved.push((ack.id, Err(error)));
            } else {
                k += 1;
            }
        }
    }
}
