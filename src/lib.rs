#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod bus;
pub mod client;
pub mod config;
pub mod console;
mod daemon;
mod error;
pub mod log;
pub mod pidfile;
pub mod process;
pub mod reactor;
pub mod rpc;
pub mod socket;
pub mod worker;

pub use argh;
pub use bus::{Bus, Context, Event, Listener, PostAction};
pub use client::Client;
pub use config::{Config, Peers};
pub use daemon::{Daemon, SetupError};
pub use error::{Error, Result};
pub use slog;
pub use slog::Logger;
