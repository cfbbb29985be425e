//! The events of a call: [`RpcEvent`] before its handler runs (a listener may refuse it),
//! [`CallEvent`] once it is answered, whatever the answer.

use std::cell::RefCell;

use super::RpcError;
use crate::bus::Event;

/// An RPC call about to run, named `daemon.rpc.<method>`.
///
/// Listeners get it before the handler runs; one may refuse the call with
/// [`RpcEvent::refuse`], and the client then gets that error instead.
#[derive(Debug, Clone)]
pub struct RpcEvent {
    name: String,
    params: serde_json::Value,
    peer: String,
    refusal: RefCell<Option<RpcError>>,
}

impl RpcEvent {
    /// The prefix of every RPC event's name.
    pub const PREFIX: &'static str = "daemon.rpc.";

    /// The event for a call of `method` with `params` (by name) from `peer`.
    pub fn new(method: &str, params: serde_json::Value, peer: &str) -> Self {
        RpcEvent {
            name: format!("{}{method}", Self::PREFIX),
            params,
            peer: peer.to_owned(),
            refusal: RefCell::new(None),
        }
    }

    /// The method called.
    pub fn method(&self) -> &str {
        &self.name[Self::PREFIX.len()..]
    }

    /// The params, as an object by name.
    pub fn params(&self) -> &serde_json::Value {
        &self.params
    }

    /// Who called: a unix peer's pid and uid, or a tcp address.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Refuses the call: the client gets `error` and the handler does not run. The first
    /// refusal wins.
    pub fn refuse(&self, error: RpcError) {
        let mut refusal = self.refusal.borrow_mut();
        if refusal.is_none() {
            *refusal = Some(error);
        }
    }

    /// The refusal, if a listener refused the call.
    pub fn refusal(&self) -> Option<RpcError> {
        self.refusal.borrow().clone()
    }
}

impl Event for RpcEvent {
    fn name(&self) -> &str {
        &self.name
    }

    fn data(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({"method": self.method(), "params": self.params, "peer": self.peer}))
    }
}

/// How a call was answered, as a [`CallEvent`] tells it.
#[derive(Debug, Clone, PartialEq)]
pub enum CallOutcome {
    /// It returned a value.
    Ok,
    /// It was answered with this error: an unknown method, params that fit no signature, a
    /// refusal (by a listener, the connection's admission, its missing secret), or the
    /// handler's own error.
    Error(RpcError),
    /// Its reply comes later (a deferred reply; a worker's acknowledgement or answer).
    Deferred,
}

/// `daemon.call.<method>`: a call reached the daemon and was answered; fired for every call,
/// the refused and the unknown ones included, so a listener (or a subscriber) can audit them.
#[derive(Debug, Clone)]
pub struct CallEvent {
    name: String,
    peer: String,
    outcome: CallOutcome,
    micros: u64,
}

impl CallEvent {
    /// The prefix of every call event's name.
    pub const PREFIX: &'static str = "daemon.call.";

    /// The event for a call of `method` from `peer`, answered with `outcome` after `micros`.
    pub fn new(method: &str, peer: &str, outcome: CallOutcome, micros: u64) -> Self {
        CallEvent {
            name: format!("{}{method}", Self::PREFIX),
            peer: peer.to_owned(),
            outcome,
            micros,
        }
    }

    /// The outcome of `result` as a call answers it.
    pub(crate) fn outcome_of(result: &Result<serde_json::Value, RpcError>) -> CallOutcome {
        match result {
            Ok(_) => CallOutcome::Ok,
            Err(e) if e.as_deferred().is_some() => CallOutcome::Deferred,
            Err(e) => CallOutcome::Error(e.clone()),
        }
    }

    /// The method called.
    pub fn method(&self) -> &str {
        &self.name[Self::PREFIX.len()..]
    }

    /// Who called.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// How it was answered.
    pub fn outcome(&self) -> &CallOutcome {
        &self.outcome
    }

    /// How long it took, in microseconds.
    pub fn micros(&self) -> u64 {
        self.micros
    }
}

impl Event for CallEvent {
    fn name(&self) -> &str {
        &self.name
    }

    fn data(&self) -> Option<serde_json::Value> {
        let (outcome, error) = match &self.outcome {
            CallOutcome::Ok => ("ok", serde_json::Value::Null),
            CallOutcome::Deferred => ("deferred", serde_json::Value::Null),
            CallOutcome::Error(e) => (
                "error",
                serde_json::json!({"code": e.code, "message": e.message}),
            ),
        };
        Some(serde_json::json!({
            "method": self.method(), "peer": self.peer, "outcome": outcome,
            "error": error, "micros": self.micros,
        }))
    }
}
