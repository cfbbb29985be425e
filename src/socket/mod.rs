//! The control socket: addresses, the listener, connections.

mod address;
mod connection;
mod deadline;
mod event;
pub mod framing;
mod listener;
mod quiet;
pub(crate) mod server;
pub(crate) mod subscribers;

pub use address::Address;
#[cfg(any(fuzzing, feature = "internals"))]
pub use connection::{Admission, Connection, Limits};
pub use event::SocketEvent;
pub use listener::{Leftover, Listener, Peer, SocketFile, Stream};
