//! The control socket: addresses, the listener, connections.

mod address;

pub use address::Address;
