//! Workers: processes forked from the daemon, each with a shared-memory channel.

pub mod channel;
pub mod ring;
