//! Reload: reads the configuration file again on SIGHUP.

use daimon::bus::{Bus, Context, Event, Listener, PostAction, SubscriptionId};
use daimon::daemon::DaemonHost;
use daimon::slog::{error, info};

/// On SIGHUP, reloads the daemon's configuration as `daemon.reload` does
/// ([`DaemonHost::reload`]): the `--config` file is read again, its run-time keys applied,
/// the others reported as needing a restart, a bad file refused with its key named and the
/// running configuration kept; `daemon.reload` then fires on the bus.
#[derive(Debug, Default, Clone, Copy)]
pub struct Reload;

impl Reload {
    /// The signal it answers to.
    pub const SIGNAL: &'static str = "daemon.posix.SIGHUP";

    /// Subscribes a `Reload` to SIGHUP on the daemon's `bus`.
    pub fn subscribe(bus: &mut Bus<DaemonHost>) -> SubscriptionId {
        bus.subscribe(Self::SIGNAL, Reload)
            .expect("the pattern is well formed")
    }
}

impl Listener<DaemonHost> for Reload {
    fn handle(&mut self, _event: &dyn Event, ctx: &mut Context<'_, DaemonHost>) -> PostAction {
        let log = ctx.logger().clone();
        match ctx.host().reload() {
            Ok(done) => info!(log, "SIGHUP: configuration reloaded";
                "applied" => done.applied.join(","), "restart_needed" => done.restart_needed.join(",")),
            Err(e) => error!(log, "SIGHUP: reload refused, the running configuration is kept";
                "error" => %e),
        }
        PostAction::Continue
    }
}
