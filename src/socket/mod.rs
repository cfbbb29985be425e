//! The control socket: addresses, the listener, connections.

mod address;
mod listener;
pub mod server;

pub use address::Address;
pub use listener::{Leftover, Listener, Stream};
