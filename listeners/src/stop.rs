//! StopDaemon: a controlled shutdown on SIGTERM and SIGINT.

use daimon::bus::{Bus, Context, Event, Host, Listener, PostAction, SubscriptionId};
use daimon::slog::info;

/// Asks the process for a controlled shutdown with exit code 0 (in the daemon:
/// `daemon.stopping`, stop accepting, remove the socket file and the pid file,
/// `daemon.stop`). It works on any host.
#[derive(Debug, Default, Clone, Copy)]
pub struct StopDaemon;

impl StopDaemon {
    /// The signals it answers to.
    pub const SIGNALS: [&'static str; 2] = ["daemon.posix.SIGTERM", "daemon.posix.SIGINT"];

    /// Subscribes a `StopDaemon` to SIGTERM and SIGINT on `bus`.
    pub fn subscribe<H: Host>(bus: &mut Bus<H>) -> SubscriptionId {
        bus.subscribe_all(&Self::SIGNALS, 0, StopDaemon)
            .expect("the patterns are well formed")
    }
}

impl<H: Host> Listener<H> for StopDaemon {
    fn handle(&mut self, event: &dyn Event, ctx: &mut Context<'_, H>) -> PostAction {
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
        for (signal, stops) in [
            (Signal::TERM, true),
            (Signal::INT, true),
            (Signal::HUP, false),
        ] {
            let mut bus = Bus::new();
            StopDaemon::subscribe(&mut bus);
            let mut host = TestHost::default();
            bus.emit(PosixEvent::new(signal));
            bus.dispatch(&mut host);
            assert_eq!(host.stopped(), stops.then_some(0), "{signal}");
        }
    }
}
