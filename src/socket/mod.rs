//! The control socket: addresses, the listener, connections.

mod address;
mod connection;
mod event;
pub mod framing;
mod listener;
pub mod server;

pub use address::Address;
pub use connection::{Admission, Connection, Limits};
pub use event::SocketEvent;
pub use listener::{Leftover, Listener, Peer, Stream};
