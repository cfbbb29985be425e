//! StopDaemon: a controlled shutdown on SIGTERM and SIGINT.

use daimon::Result;
use daimon::bus::{Bus, Context, Event, Listener, PostAction};
use daimon::slog::info;

/// Asks the daemon for a controlled shutdown with exit code 0: `daemon.stopping`, stop
/// accepting, remove the socket file and the pid file, `daemon.stop`.
#[derive(Debug, Default, Clone, Copy)]
pub struct StopDaemon;

impl StopDaemon {
    /// The signals it answers to.
    pub const SIGNALS: [&'static str; 2] = ["daemon.posix.SIGTERM", "daemon.posix.SIGINT"];

    /// Subscribes a `StopDaemon` to SIGTERM and SIGINT on `bus`.
    ///
    /// # Errors
    ///
    /// Never in practice: the patterns are well formed.
    pub fn subscribe(bus: &mut Bus) -> Result<()> {
        for pattern in Self::SIGNALS {
            bus.subscribe(pattern, StopDaemon)?;
        }
        Ok(())
    }
}

impl Listener for StopDaemon {
    fn handle(&mut self, event: &dyn Event, ctx: &mut Context<'_>) -> PostAction {
        info!(ctx.logger(), "stop requested"; "event" => event.name());
        ctx.stop(0);
        PostAction::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use daimon::bus::{PosixEvent, TestHost};
    use daimon::reactor::Signal;

    #[test]
    fn sigterm_and_sigint_stop_with_code_0_and_others_do_not() {
        for (name, stops) in [("SIGTERM", true), ("SIGINT", true), ("SIGHUP", false)] {
            let mut bus = Bus::new();
            StopDaemon::subscribe(&mut bus).unwrap();
            let mut host = TestHost::default();
            bus.emit(PosixEvent::new(Signal::from_name(name).unwrap()));
            bus.dispatch(&mut host);
            assert_eq!(host.stopped, stops.then_some(0), "{name}");
        }
    }
}
