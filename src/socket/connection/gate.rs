//! The gate every call of a connection passes: its admission, and the secret it must present
//! first.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::Admission;
use crate::rpc::{Engine, Meta, RpcError, Ticket};

/// Applies the connection's admission and secret to every call before the engine sees it.
pub(super) struct Gate<'a> {
    pub(super) engine: &'a mut dyn Engine,
    pub(super) admission: &'a Admission,
    pub(super) secret: &'a mut Option<Arc<str>>,
    pub(super) close: &'a mut bool,
    pub(super) deferred: &'a mut Option<(Ticket, Option<Duration>)>,
}

impl Gate<'_> {
    pub(super) fn refusal(&self) -> Option<RpcError> {
        refusal(self.admission, self.secret)
    }
}

/// The error every call gets, if every call gets one: a refused connection's, or the
/// secret's before it is presented.
pub(super) fn refusal(admission: &Admission, secret: &Option<Arc<str>>) -> Option<RpcError> {
    if let Admission::Refused(error) = admission {
        return Some(error.clone());
    }
    secret
        .is_some()
        .then(|| RpcError::server_error("authentication required"))
}

impl Engine for Gate<'_> {
    fn call(&mut self, meta: &Meta<'_>, method: &str, params: Value) -> Result<Value, RpcError> {
        if let Admission::Refused(error) = self.admission {
            let outcome = Err(error.clone());
            self.engine.answered(meta, method, &outcome);
            return outcome;
        }
        let Some(secret) = self.secret.as_deref() else {
            let outcome = self.engine.call(meta, method, params);
            if let Err(e) = &outcome {
                if let (Some(deferred), true) = (e.as_deferred(), meta.deferrable) {
                    *self.deferred = Some(deferred);
                }
            }
            return outcome;
        };
        let outcome = if method != "system.auth" {
            Err(RpcError::server_error("authentication required"))
        } else {
            let given = match &params {
                Value::Array(a) if a.len() == 1 => a[0].as_str(),
                Value::Object(o) if o.len() == 1 => o.get("secret").and_then(Value::as_str),
                _ => None,
            };
            if given.is_some_and(|g| constant_time_eq(g.as_bytes(), secret.as_bytes())) {
                *self.secret = None;
                Ok(Value::Bool(true))
            } else {
                *self.close = true;
                Err(RpcError::server_error("authentication failed"))
            }
        };
        self.engine.answered(meta, method, &outcome);
        outcome
    }
}

/// Compares without stopping at the first difference, so timing tells nothing but the length.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
