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

mod stop;

pub use stop::StopDaemon;

use daimon::{Daemon, Result};

/// Installs the standard set on `daemon`: [`StopDaemon`] on SIGTERM and SIGINT.
///
/// # Errors
///
/// Only if a pattern were malformed, which the standard ones are not.
pub fn install(daemon: &mut Daemon) -> Result<()> {
    StopDaemon::subscribe(daemon.bus())
}
