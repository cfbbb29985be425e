//! The standard listeners: [`StopDaemon`], [`ReapChild`], [`ReopenLog`] and [`Reload`], which
//! [`Daemon::new`] installs, and [`HangCheck`].
//!
//! Their source lives in the `daimon-listeners` crate (`listeners/`), written against
//! daimon's public API only; daimon compiles the same files here, so that a daemon has them
//! by default without a dependency cycle.
//!
//! [`Daemon::new`]: crate::Daemon::new

#[path = "../listeners/src/hang.rs"]
mod hang;
#[path = "../listeners/src/reap.rs"]
mod reap;
#[path = "../listeners/src/reload.rs"]
mod reload;
#[path = "../listeners/src/reopen.rs"]
mod reopen;
#[path = "../listeners/src/stop.rs"]
mod stop;

pub use hang::HangCheck;
pub use reap::ReapChild;
pub use reload::Reload;
pub use reopen::ReopenLog;
pub use stop::StopDaemon;

/// Installs the standard set on `daemon`: [`StopDaemon`] on SIGTERM and SIGINT,
/// [`ReapChild`] on SIGCHLD, [`ReopenLog`] on SIGUSR1 and [`Reload`] on SIGHUP.
pub(crate) fn install(daemon: &mut crate::Daemon) {
    StopDaemon::subscribe(daemon.bus());
    ReapChild::subscribe(daemon.bus());
    ReopenLog::subscribe(daemon.bus());
    Reload::subscribe(daemon.bus());
}
