//! daimon: a framework for multi-process Unix daemons.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod bus;
pub mod config;
mod error;
pub mod reactor;
pub mod socket;

pub use config::Config;
pub use error::{Error, Result};
