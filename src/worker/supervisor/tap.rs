//! `daemon.log.<worker>` events: each line a worker writes on its stdout or stderr, or logs
//! with its own logger, becomes a [`WorkerLog`] on the daemon's bus, besides being logged
//! and kept for `worker.log`.
//!
//! Built only while some listener or subscription could receive one (the daemon tells the
//! supervisor each turn), so a worker's output costs nothing more when nobody listens; and
//! bounded: while the events already waiting on the bus hold [`LOG_EVENTS_HIGH_WATER`] bytes,
//! further lines are not emitted (they are counted, and still logged and kept).

use slog::{Logger, warn};

use crate::bus::Event;
use crate::log::Stream;
use crate::worker::WorkerLog;
use crate::worker::backlog::Backlog;

/// The memory that undispatched log events may hold; past it, lines are not emitted.
pub(crate) const LOG_EVENTS_HIGH_WATER: usize = 1024 * 1024;

/// What a log event costs besides its text: the event, its box, its name's prefix.
const EVENT_COST: usize = std::mem::size_of::<WorkerLog>() + 64;

/// Where workers' lines become events.
#[derive(Debug, Default)]
pub(super) struct LogTap {
    /// Whether a [`WorkerLog`] could be received now.
    pub(super) listening: bool,
    backlog: Backlog,
    /// Lines not emitted since the backlog filled (told when it has room again).
    dropped: u64,
}

impl LogTap {
    /// Emits `line` of `worker` on `stream` into `out`, if anyone may receive it and the
    /// backlog has room.
    pub(super) fn line(
        &mut self,
        logger: &Logger,
        out: &mut Vec<Box<dyn Event>>,
        worker: &str,
        stream: Stream,
        line: &str,
    ) {
        if !self.listening {
            return;
        }
        if self.backlog.bytes() >= LOG_EVENTS_HIGH_WATER {
            if self.dropped == 0 {
                warn!(
                    logger,
                    "workers' log events are dropped: their listeners do not keep up"
                );
            }
            self.dropped += 1;
            return;
        }
        if self.dropped > 0 {
            warn!(logger, "workers' log events were dropped"; "dropped" => self.dropped);
            self.dropped = 0;
        }
        let charge = self
            .backlog
            .charge(EVENT_COST + WorkerLog::PREFIX.len() + worker.len() + line.len());
        out.push(Box::new(
            WorkerLog::new(worker, stream, line).charged(charge),
        ));
    }

    /// The bytes the events waiting on the bus hold.
    #[cfg(test)]
    pub(super) fn backlog(&self) -> usize {
        self.backlog.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_events_only_for_listeners_and_within_the_bound() {
        let logger = crate::log::discard();
        let mut tap = LogTap::default();
        let mut out = Vec::new();
        tap.line(&logger, &mut out, "w0", Stream::Stdout, "nobody listens");
        assert!(out.is_empty());
        tap.listening = true;
        let long = "x".repeat(1000);
        while tap.backlog() < LOG_EVENTS_HIGH_WATER {
            tap.line(&logger, &mut out, "w0", Stream::Stderr, &long);
        }
        let held = out.len();
        assert!(held < 2 * LOG_EVENTS_HIGH_WATER / 1000, "{held} events");
        tap.line(&logger, &mut out, "w0", Stream::Stderr, &long);
        assert_eq!(out.len(), held, "past the bound, no event");
        assert_eq!(tap.dropped, 1);
        // Dispatched (dropped by the bus): room again.
        let first = out.remove(0);
        assert_eq!(first.name(), "daemon.log.w0");
        drop(first);
        out.clear();
        assert_eq!(tap.backlog(), 0);
        tap.line(&logger, &mut out, "w0", Stream::Log, "again");
        assert_eq!(out.len(), 1);
        assert_eq!(tap.dropped, 0);
    }
}
