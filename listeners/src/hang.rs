//! HangCheck: kills workers whose loop stalls.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use daimon::bus::{Bus, Context, DaemonEvent, Event, Listener, PostAction, SubscriptionId};
use daimon::daemon::DaemonHost;
use daimon::reactor::Signal;
use daimon::slog::error;
use daimon::worker::State;

/// The timer event of the check.
const CHECK: &str = "daemon.hangcheck";

/// Kills a worker whose heartbeat (the turns of its loop) stalls for `timeout` (and longer
/// than two of its looptimes) while it is not paused; the supervisor then handles it as
/// crashed, by its restart policy.
#[derive(Debug, Clone)]
pub struct HangCheck {
    timeout: Duration,
    /// The last heartbeat seen and when it last changed, by worker.
    seen: HashMap<String, (u64, Instant)>,
}

impl HangCheck {
    /// A check with this timeout.
    pub fn new(timeout: Duration) -> HangCheck {
        HangCheck {
            timeout,
            seen: HashMap::new(),
        }
    }

    /// Subscribes the check on the daemon's `bus`: it checks every half timeout once the
    /// daemon is ready.
    pub fn subscribe(self, bus: &mut Bus<DaemonHost>) -> SubscriptionId {
        bus.subscribe_all(&[DaemonEvent::READY, CHECK], 0, self)
            .expect("the patterns are well formed")
    }

    fn check(&mut self, ctx: &mut Context<'_, DaemonHost>) {
        let now = Instant::now();
        let log = ctx.logger().clone();
        let workers = ctx.host().workers();
        let mut hung = Vec::new();
        for info in workers.list() {
            let Some(beat) = info.heartbeat else {
                self.seen.remove(&info.name);
                continue;
            };
            let limit = self.timeout.max(info.looptime * 2);
            let seen = self.seen.entry(info.name.clone()).or_insert((beat, now));
            if seen.0 != beat {
                *seen = (beat, now);
            } else if info.state != State::Paused && now.duration_since(seen.1) > limit {
                hung.push(info.name.clone());
                self.seen.remove(&info.name);
            }
        }
        for name in hung {
            let _ = workers.kill(&name, Signal::KILL);
            error!(log, "worker killed: its heartbeat stalled"; "worker" => &name);
        }
    }
}

impl Listener<DaemonHost> for HangCheck {
    fn handle(&mut self, event: &dyn Event, ctx: &mut Context<'_, DaemonHost>) -> PostAction {
        if event.name() == DaemonEvent::READY {
            ctx.periodic(self.timeout / 2, CHECK);
        } else {
            self.check(ctx);
        }
        PostAction::Continue
    }
}
