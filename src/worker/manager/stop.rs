//! Stopping workers: `stop` on the channel, then SIGTERM, then SIGKILL, all in parallel.

use std::time::Instant;

use nix::sys::signal::{Signal, kill};
use slog::warn;

use super::{Deadline, Workers};

impl Workers {
    pub(super) fn escalate(&mut self, name: &str, now: Instant) {
        let timeout = self.stop_timeout;
        let Some(i) = self.find(name) else { return };
        let Some(run) = self.entries[i].1.run.as_mut() else {
            return;
        };
        if !run.sigterm_sent {
            warn!(self.logger, "worker did not stop: SIGTERM"; "worker" => name);
            let _ = kill(run.pid, Signal::SIGTERM);
            run.sigterm_sent = true;
            self.deadlines
                .insert(now + timeout / 2, None, Deadline::Escalate(name.to_owned()));
        } else {
            warn!(self.logger, "worker did not stop: SIGKILL"; "worker" => name);
            let _ = kill(run.pid, Signal::SIGKILL);
        }
    }

    /// The daemon's stop: every worker asked at once (in parallel), escalating alike.
    pub(crate) fn shutdown(&mut self) {
        self.shutting_down = true;
        let running: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.run.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        for name in running {
            let _ = self.ask_to_stop(&name);
        }
    }

    /// Whether no worker process runs.
    pub(crate) fn all_gone(&self) -> bool {
        self.entries.iter().all(|(_, e)| e.run.is_none())
    }

    /// SIGKILLs every worker still running (the last resort of a shutdown).
    pub(crate) fn kill_all(&mut self) {
        for (_, e) in &self.entries {
            if let Some(run) = &e.run {
                let _ = kill(run.pid, Signal::SIGKILL);
            }
        }
    }
}
