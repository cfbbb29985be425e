//! The error a call answers with.

use std::fmt;

use serde_json::Value;

/// An RPC error: a code, a message, and optional data, as JSON-RPC 2.0 and MessagePack-RPC
/// carry them. A handler returns its own with [`RpcError::new`]; its code and message reach
/// the client unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// The code: one of the constants below, or the handler's own.
    pub code: i64,
    /// A short description.
    pub message: String,
    /// What exactly went wrong, if there is more to say.
    pub data: Option<Value>,
}

impl RpcError {
    /// Bytes that are not JSON (or not MessagePack).
    pub const PARSE_ERROR: i64 = -32700;
    /// Not a request object, or a request too large.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The params match none of the method's signatures.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The handler panicked.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// Refused by the daemon (limits, permissions, authentication, a listener).
    pub const SERVER_ERROR: i64 = -32000;
    /// `system.multicall` inside `system.multicall`.
    pub const RECURSIVE_MULTICALL: i64 = -31001;
    /// Reserved, never sent: marks a call whose reply comes later (a worker acknowledgement).
    pub const DEFERRED: i64 = i64::MIN;

    /// Not an error: the call's reply comes later, when `ticket` is resolved. Only returned
    /// to a caller whose [`Meta::deferrable`](super::Meta::deferrable) is true.
    /// The connection keeps no deadline of its own for it (the supervisor times out its
    /// acknowledgements).
    pub(crate) fn deferred(ticket: super::Ticket) -> RpcError {
        RpcError::new(Self::DEFERRED, "deferred").with_data(ticket.0)
    }

    /// Not an error: the reply comes once `reply` is answered, or a timeout error at its
    /// deadline.
    pub(crate) fn deferred_until(reply: super::Reply) -> RpcError {
        let left = reply
            .deadline()
            .saturating_duration_since(std::time::Instant::now());
        // Rounded up: a 5 s timeout reads 5000 ms, not 4999.
        let ms = u64::try_from(left.as_micros().div_ceil(1000)).unwrap_or(u64::MAX);
        RpcError::new(Self::DEFERRED, "deferred")
            .with_data(serde_json::json!([reply.ticket().0, ms]))
    }

    /// The ticket of a deferred reply, and how long the caller waits for it if the
    /// connection times it out.
    pub(crate) fn as_deferred(&self) -> Option<(super::Ticket, Option<std::time::Duration>)> {
        if self.code != Self::DEFERRED {
            return None;
        }
        match self.data.as_ref()? {
            Value::Number(n) => Some((super::Ticket(n.as_u64()?), None)),
            Value::Array(a) => Some((
                super::Ticket(a.first()?.as_u64()?),
                Some(std::time::Duration::from_millis(a.get(1)?.as_u64()?)),
            )),
            _ => None,
        }
    }

    /// An error with a code and message of the handler's choosing.
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// The same error with `data`.
    pub fn with_data(mut self, data: impl Into<Value>) -> RpcError {
        self.data = Some(data.into());
        self
    }

    fn standard(code: i64, message: &str, detail: impl Into<String>) -> RpcError {
        RpcError::new(code, message).with_data(Value::String(detail.into()))
    }

    /// `-32700 Parse error`, with what failed.
    pub fn parse_error(detail: impl Into<String>) -> RpcError {
        Self::standard(Self::PARSE_ERROR, "Parse error", detail)
    }

    /// `-32600 Invalid Request`, with what is wrong.
    pub fn invalid_request(detail: impl Into<String>) -> RpcError {
        Self::standard(Self::INVALID_REQUEST, "Invalid Request", detail)
    }

    /// `-32601 Method not found`, naming the method.
    pub fn method_not_found(method: &str) -> RpcError {
        Self::standard(
            Self::METHOD_NOT_FOUND,
            "Method not found",
            format!("no method named '{method}'"),
        )
    }

    /// `-32602 Invalid params`, with what was expected.
    pub fn invalid_params(detail: impl Into<String>) -> RpcError {
        Self::standard(Self::INVALID_PARAMS, "Invalid params", detail)
    }

    /// `-32603 Internal error`, with what happened.
    pub fn internal_error(detail: impl Into<String>) -> RpcError {
        Self::standard(Self::INTERNAL_ERROR, "Internal error", detail)
    }

    /// `-32000`, with the daemon's reason as the message (`too many connections`...).
    pub fn server_error(message: impl Into<String>) -> RpcError {
        RpcError::new(Self::SERVER_ERROR, message)
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)?;
        match &self.data {
            Some(Value::String(d)) => write!(f, ": {d}"),
            Some(d) => write!(f, ": {d}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for RpcError {}

/// A daemon error as a call's reply: a refused worker request is `-32000` with the whole
/// message; anything else `-32000` too, with its text.
impl From<crate::Error> for RpcError {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::Rpc {
                code,
                message,
                data,
            } => RpcError {
                code,
                message,
                data,
            },
            other => RpcError::server_error(other.to_string()),
        }
    }
}

impl From<RpcError> for crate::Error {
    fn from(e: RpcError) -> Self {
        crate::Error::Rpc {
            code: e.code,
            message: e.message,
            data: e.data,
        }
    }
}
