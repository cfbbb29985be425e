//! ReapChild: reaps exited workers on SIGCHLD.

use daimon::bus::{Bus, Context, Event, Listener, PostAction, SubscriptionId};
use daimon::daemon::DaemonHost;

/// On SIGCHLD, reaps every worker whose process ended (only the daemon's own workers: a
/// child your code spawned stays yours to wait for) and lets the supervisor apply their
/// restart policy; `daemon.worker.exited` (a `WorkerExited`) follows for each.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReapChild;

impl ReapChild {
    /// The signal it answers to.
    pub const SIGNAL: &'static str = "daemon.posix.SIGCHLD";

    /// Subscribes a `ReapChild` to SIGCHLD on the daemon's `bus`.
    pub fn subscribe(bus: &mut Bus<DaemonHost>) -> SubscriptionId {
        bus.subscribe(Self::SIGNAL, ReapChild)
            .expect("the pattern is well formed")
    }
}

impl Listener<DaemonHost> for ReapChild {
    fn handle(&mut self, _event: &dyn Event, ctx: &mut Context<'_, DaemonHost>) -> PostAction {
        ctx.host().workers().reap();
        PostAction::Continue
    }
}
