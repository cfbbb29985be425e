//! A host for driving a bus outside a daemon.

use std::time::{Duration, Instant};

use slog::{Logger, o};

use super::{Bus, Host, TimerEvent};
use crate::reactor::{TimerId, Timers};

/// A [`Host`] for driving a bus outside a daemon: in tests, examples and tools.
///
/// It discards logs unless given a logger, records stop requests, and keeps timers that
/// [`TestHost::fire_due`] turns into [`TimerEvent`]s.
pub struct TestHost {
    logger: Logger,
    stopped: Option<i32>,
    timers: Timers<String>,
}

impl Default for TestHost {
    fn default() -> Self {
        TestHost::with_logger(Logger::root(slog::Discard, o!()))
    }
}

impl TestHost {
    /// A host whose listeners log to `logger`.
    pub fn with_logger(logger: Logger) -> TestHost {
        TestHost {
            logger,
            stopped: None,
            timers: Timers::default(),
        }
    }

    /// The exit code of the last stop request, if any.
    pub fn stopped(&self) -> Option<i32> {
        self.stopped
    }

    /// How many timers are armed.
    pub fn armed_timers(&self) -> usize {
        self.timers.len()
    }

    /// Emits a [`TimerEvent`] on `bus` for every timer due at `now`; returns how many.
    pub fn fire_due(&mut self, bus: &mut Bus<TestHost>, now: Instant) -> usize {
        let mut due = Vec::new();
        self.timers.expire(now, &mut due);
        let n = due.len();
        for (id, name) in due {
            bus.emit(TimerEvent::new(name, id));
        }
        n
    }
}

impl Host for TestHost {
    fn logger(&self) -> &Logger {
        &self.logger
    }

    fn stop(&mut self, code: i32) {
        self.stopped = Some(code);
    }

    fn arm_timer(&mut self, after: Duration, period: Option<Duration>, name: String) -> TimerId {
        self.timers
            .insert(crate::reactor::after(after), period, name)
    }

    fn cancel_timer(&mut self, id: TimerId) -> bool {
        self.timers.cancel(id).is_some()
    }
}
