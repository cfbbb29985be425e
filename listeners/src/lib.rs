//! The standard listeners of [daimon], written against its public API only.
//!
//! A daemon built with `Daemon::new` has them already: daimon compiles these very files
//! into `daimon::listeners` and installs [`StopDaemon`], [`ReapChild`], [`ReopenLog`] and [`Reload`] by default (it
//! cannot depend on this crate, which depends on it). This crate compiles the same files as
//! a user's crate would, against nothing but daimon's public API: it is the proof that the
//! API is enough to write them, and it breaks the build if they ever reach for an
//! internal.
//!
//! ```no_run
//! use std::time::Duration;
//! use daimon::{Config, Daemon};
//! use daimon::listeners::HangCheck;
//!
//! fn main() -> std::process::ExitCode {
//!     let mut daemon = Daemon::new(Config::default());
//!     HangCheck::new(Duration::from_secs(30)).subscribe(daemon.bus());
//!     daemon.init()
//! }
//! ```

mod hang;
mod reap;
mod reload;
mod reopen;
mod stop;

pub use hang::HangCheck;
pub use reap::ReapChild;
pub use reload::Reload;
pub use reopen::ReopenLog;
pub use stop::StopDaemon;
