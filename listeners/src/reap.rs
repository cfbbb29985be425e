//! ReapChild: reaps exited workers on SIGCHLD.

use daimon::Result;
use daimon::bus::{Bus, Context, Event, Listener, PostAction, WorkerEvent};

/// On SIGCHLD, reaps every child that exited (in a loop: signals coalesce) and emits
/// `daemon.worker.exited` for each worker among them, with its exit as payload (`pid`,
/// `code`, `signal`, `forever`, `requested`, `crashed`).
#[derive(Debug, Default, Clone, Copy)]
pub struct ReapChild;

impl ReapChild {
    /// Subscribes a `ReapChild` to SIGCHLD on `bus`.
    ///
    /// # Errors
    ///
    /// Never in practice: the pattern is well formed.
    pub fn subscribe(bus: &mut Bus) -> Result<()> {
        bus.subscribe("daemon.posix.SIGCHLD", ReapChild)?;
        Ok(())
    }
}

impl Listener for ReapChild {
    fn handle(&mut self, _event: &dyn Event, ctx: &mut Context<'_>) -> PostAction {
        let Some(workers) = ctx.workers() else {
            return PostAction::Continue;
        };
        for exit in workers.reap() {
            let payload = exit.to_json();
            ctx.emit(WorkerEvent::new("exited", exit.name).with_payload(Some(payload)));
        }
        PostAction::Continue
    }
}
