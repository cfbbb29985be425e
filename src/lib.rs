#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

// The standard listeners are written against `daimon::` paths (see `listeners`).
extern crate self as daimon;

pub mod bus;
pub mod client;
pub mod config;
pub mod console;
pub mod daemon;
mod driver;
mod error;
pub mod listeners;
pub mod log;
pub mod pidfile;
pub mod privs;
pub mod process;
pub mod reactor;
pub mod rpc;
pub mod socket;
mod sys;
pub mod worker;

pub use argh;
pub use bus::{Bus, Context, Event, Listener, PostAction};
pub use client::Client;
pub use config::{Config, Peers};
pub use daemon::{Daemon, DaemonHost, LoopSignal};
pub use error::{Error, Result, SetupError, WorkerError};
pub use slog;
pub use slog::Logger;

#[cfg(test)]
mod testing {
    use std::sync::Mutex;

    /// Serializes the tests that swap the process-wide panic hook, so one cannot restore
    /// another's silent hook.
    static PANIC_HOOK: Mutex<()> = Mutex::new(());

    /// Runs `f` with panics reported nowhere (for deliberate panics).
    pub(crate) fn quiet_panics<T>(f: impl FnOnce() -> T) -> T {
        let _guard = PANIC_HOOK.lock().unwrap_or_else(|e| e.into_inner());
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        std::panic::set_hook(hook);
        match out {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}
