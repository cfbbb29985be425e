//! What a worker's command handler ([`Worker::command`](super::Worker::command)) returns when
//! it fails: a code and a message, which reach the client of `worker.call` as its error.

use std::fmt;

use crate::rpc::RpcError;

/// A command handler's error: the caller of `worker.call` gets it as an RPC error with this
/// code and message (`worker.send` and [`Workers::send`](super::Workers::send) discard it;
/// the worker logs it).
///
/// # Examples
///
/// ```
/// use daimon::worker::CommandError;
///
/// let e = CommandError::from("no such file");
/// assert_eq!((e.code(), e.message()), (-32000, "no such file"));
/// let e = CommandError::new(-32602, "payload: a file name");
/// assert_eq!(e.code(), -32602);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    code: i64,
    message: String,
}

impl CommandError {
    /// The code of an error built from a message alone: JSON-RPC's server error.
    pub const DEFAULT_CODE: i64 = RpcError::SERVER_ERROR;

    /// An error with a code of the handler's choosing (`i64::MIN`, which daimon keeps for
    /// itself, becomes [`CommandError::DEFAULT_CODE`]).
    pub fn new(code: i64, message: impl Into<String>) -> CommandError {
        CommandError {
            code: if code == RpcError::DEFERRED {
                Self::DEFAULT_CODE
            } else {
                code
            },
            message: message.into(),
        }
    }

    /// The code the caller gets.
    pub fn code(&self) -> i64 {
        self.code
    }

    /// The message the caller gets.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for CommandError {}

impl From<String> for CommandError {
    fn from(message: String) -> Self {
        CommandError::new(Self::DEFAULT_CODE, message)
    }
}

impl From<&str> for CommandError {
    fn from(message: &str) -> Self {
        CommandError::new(Self::DEFAULT_CODE, message)
    }
}

/// An RPC error's code and message (its data does not cross the channel).
impl From<RpcError> for CommandError {
    fn from(e: RpcError) -> Self {
        CommandError::new(e.code, e.message)
    }
}

/// A daimon error (a failed `send` from the handler, say) as a server error with its text.
impl From<crate::Error> for CommandError {
    fn from(e: crate::Error) -> Self {
        CommandError::from(RpcError::from(e))
    }
}

impl From<CommandError> for RpcError {
    fn from(e: CommandError) -> Self {
        RpcError::new(e.code, e.message)
    }
}

impl From<CommandError> for crate::Error {
    fn from(e: CommandError) -> Self {
        crate::Error::Rpc {
            code: e.code,
            message: e.message,
            data: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_reach_the_rpc_error_and_the_reserved_one_is_replaced() {
        let e = RpcError::from(CommandError::new(42, "nope"));
        assert_eq!((e.code, e.message.as_str()), (42, "nope"));
        assert_eq!(CommandError::new(i64::MIN, "x").code(), -32000);
        let back = CommandError::from(RpcError::invalid_params("bad"));
        assert_eq!(back.code(), -32602);
        assert_eq!(CommandError::from("x".to_owned()).to_string(), "x (-32000)");
    }
}
