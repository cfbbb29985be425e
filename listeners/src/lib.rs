//! The standard listeners of [daimon], written against its public API only: they
//! are what a user could write, and prove that the API is enough.
//!
//! ```no_run
//! use daimon::{Config, Daemon};
//!
//! fn main() -> std::process::ExitCode {
//!     let mut daemon = Daemon::new(Config::default());
//!     daimon_listeners::install(&mut daemon).expect("valid patterns");
//!     daemon.init()
//! }
//! ```

mod reap;
mod stop;
mod watchdog;

pub use reap::ReapChild;
pub use stop::StopDaemon;
pub use watchdog::Watchdog;

use daimon::{Daemon, Result};

/// Installs the standard set on `daemon`: [`StopDaemon`] on SIGTERM and SIGINT,
/// [`ReapChild`] on SIGCHLD, and a [`Watchdog`] with its default policy.
///
/// # Errors
///
/// Only if a pattern were malformed, which the standard ones are not.
pub fn install(daemon: &mut Daemon) -> Result<()> {
    install_with(daemon, Watchdog::default())
}

/// Installs the standard set with a watchdog of your own policy.
///
/// # Errors
///
/// Only if a pattern were malformed, which the standard ones are not.
pub fn install_with(daemon: &mut Daemon, watchdog: Watchdog) -> Result<()> {
    let bus = daemon.bus();
    StopDaemon::subscribe(bus)?;
    ReapChild::subscribe(bus)?;
    watchdog.subscribe(bus)
}
