//! Acknowledged commands: `pause` and `resume` whose RPC reply waits for the worker(s).

use std::time::Instant;

use serde_json::{Value, json};

use super::{Deadline, Workers};
use crate::reactor::TimerId;
use crate::rpc::{RpcError, Ticket};

pub(super) struct Ack {
    pub(super) ticket: Ticket,
    /// The workers whose acknowledgement is still awaited.
    pub(super) waiting: Vec<String>,
    /// The states acknowledged so far, by worker.
    states: serde_json::Map<String, Value>,
    /// Asked of one worker by name: the reply is its state alone.
    single: bool,
    pub(super) command: &'static str,
    deadline: TimerId,
}

impl Workers {
    /// Sends `pause` or `resume` to one worker, or to every running one; the returned
    /// ticket is resolved once each has acknowledged (see [`Workers::take_resolved`]) with
    /// its state (for one) or a struct of states by name (for all), or with an error after
    /// the acknowledgement timeout.
    pub(crate) fn command_with_ack(
        &mut self,
        name: Option<&str>,
        command: &'static str,
    ) -> std::result::Result<Ticket, RpcError> {
        let ticket = Ticket(self.next_ticket);
        let names: Vec<String> = match name {
            Some(n) => vec![n.to_owned()],
            None => self
                .entries
                .iter()
                .filter(|(_, e)| e.run.is_some())
                .map(|(n, _)| n.clone())
                .collect(),
        };
        for n in &names {
            self.send(n, command, Some(json!({"seq": ticket.0})))?;
        }
        self.next_ticket += 1;
        if names.is_empty() {
            self.resolved.push((ticket, Ok(json!({}))));
            return Ok(ticket);
        }
        let deadline = self.deadlines.insert(
            Instant::now() + self.ack_timeout,
            None,
            Deadline::Ack(ticket),
        );
        self.acks.push(Ack {
            ticket,
            waiting: names,
            states: serde_json::Map::new(),
            single: name.is_some(),
            command,
            deadline,
        });
        Ok(ticket)
    }

    /// Acknowledged or timed-out commands: each ticket with the reply for its caller.
    pub(crate) fn take_resolved(&mut self) -> Vec<(Ticket, std::result::Result<Value, RpcError>)> {
        std::mem::take(&mut self.resolved)
    }

    /// Records `worker`'s acknowledgement of `ticket` with `state`; resolves the ticket when
    /// nobody else is awaited.
    pub(super) fn acknowledged(&mut self, ticket: Ticket, worker: &str, state: Value) {
        let Some(i) = self.acks.iter().position(|a| a.ticket == ticket) else {
            return;
        };
        let ack = &mut self.acks[i];
        ack.waiting.retain(|w| w != worker);
        ack.states.insert(worker.to_owned(), state.clone());
        if ack.waiting.is_empty() {
            let ack = self.acks.swap_remove(i);
            self.deadlines.cancel(ack.deadline);
            let reply = if ack.single {
                state
            } else {
                Value::Object(ack.states)
            };
            self.resolved.push((ticket, Ok(reply)));
        }
    }

    pub(super) fn fail_ack(&mut self, ticket: Ticket, error: RpcError) {
        if let Some(i) = self.acks.iter().position(|a| a.ticket == ticket) {
            let ack = self.acks.swap_remove(i);
            self.deadlines.cancel(ack.deadline);
            self.resolved.push((ticket, Err(error)));
        }
    }
}
