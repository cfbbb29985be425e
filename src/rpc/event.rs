//! The event every call is before its handler runs.

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
