//! ReopenLog: reopens the log file on SIGUSR1, for logrotate.

use daimon::bus::{Bus, Context, Event, Listener, PostAction, SubscriptionId};
use daimon::daemon::DaemonHost;
use daimon::slog::{error, info};

/// On SIGUSR1, reopens the daemon's log file at its path (`logfile`, when detached), so a
/// log moved away by logrotate is followed by a new one; the daemon goes on logging to the
/// old file when the path cannot be opened. Without a log file of the daemon's own it does
/// nothing, and SIGUSR1 is caught all the same rather than killing the daemon.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReopenLog;

impl ReopenLog {
    /// The signal it answers to.
    pub const SIGNAL: &'static str = "daemon.posix.SIGUSR1";

    /// Subscribes a `ReopenLog` to SIGUSR1 on the daemon's `bus`.
    pub fn subscribe(bus: &mut Bus<DaemonHost>) -> SubscriptionId {
        bus.subscribe(Self::SIGNAL, ReopenLog)
            .expect("the pattern is well formed")
    }
}

impl Listener<DaemonHost> for ReopenLog {
    fn handle(&mut self, _event: &dyn Event, ctx: &mut Context<'_, DaemonHost>) -> PostAction {
        let log = ctx.logger().clone();
        match ctx.host().reopen_log() {
            Ok(true) => info!(log, "log file reopened"),
            Ok(false) => info!(log, "SIGUSR1: no log file to reopen"),
            Err(e) => error!(log, "cannot reopen the log file"; "error" => %e),
        }
        PostAction::Continue
    }
}
