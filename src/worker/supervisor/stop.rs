//! Stopping workers: `Stop` on the channel (or, for the daemon's shutdown, the stop line
//! pulled once for all), then SIGTERM, then SIGKILL, all in parallel; every escalation
//! belongs to the process it was armed for, and reaches its whole process group (the
//! worker and what it started).

use nix::sys::signal::Signal;
use slog::warn;

use super::{Deadline, Workers};
use crate::error::Result;
use crate::worker::frame;

impl Workers {
    /// An administrator's stop: `stop` on the channel, then SIGTERM, then SIGKILL after
    /// `shutdowntimeout`. It beats the restart policy: no restart (not one pending after a
    /// backoff, nor one asked with [`Workers::restart`]) until it is started again.
    ///
    /// # Errors
    ///
    /// [`Error::Worker`](crate::Error::Worker) if there is no such worker, or it neither
    /// runs nor waits for a restart.
    pub fn stop(&mut self, name: &str) -> Result<()> {
        let i = self.index(name)?;
        let cancelled = self.cancel_restart(i);
        let entry = &mut self.entries[i];
        entry.admin_stopped = true;
        entry.restart_when_gone = false;
        if entry.run.is_none() {
            return if cancelled {
                Ok(())
            } else {
                Err(self.not_running(i))
            };
        }
        self.ask_to_stop(i);
        Ok(())
    }

    /// Stops a worker and starts it again once it is gone; a worker that does not run just
    /// starts. An administrator's stop after it wins.
    ///
    /// # Errors
    ///
    /// As [`Workers::start`].
    pub fn restart(&mut self, name: &str) -> Result<()> {
        let i = self.index(name)?;
        if self.entries[i].run.is_none() {
            return self.start(name);
        }
        let entry = &mut self.entries[i];
        entry.admin_stopped = false;
        entry.restart_when_gone = true;
        entry.restarts.clear();
        entry.quick = 0;
        self.ask_to_stop(i);
        Ok(())
    }

    /// Asks entry `i`'s process to stop, and arms its escalation. Asking twice does nothing
    /// more.
    fn ask_to_stop(&mut self, i: usize) {
        let half = self.stop_timeout / 2;
        let Some(run) = self.entries[i].run.as_mut() else {
            return;
        };
        if run.stopping {
            return;
        }
        run.stopping = true;
        let (pid, generation) = (run.pid, run.generation);
        // A worker on the pulled line reads its stop there (after whatever its ring holds).
        let asked = self.line_pulled && run.on_line;
        if !asked && run.channel().send_frame(&frame::STOP_FRAME).is_err() {
            // The channel is full or broken: go straight to SIGTERM.
            run.sigterm_sent = true;
            let _ = self.procs.signal_group(pid, Signal::SIGTERM);
        }
        self.arm(
            half,
            Deadline::Escalate {
                worker: i,
                generation,
            },
        );
    }

    /// A stop's deadline: SIGTERM, then SIGKILL, to the process it was armed for only.
    pub(super) fn escalate(&mut self, i: usize, generation: u64) {
        let half = self.stop_timeout / 2;
        let Some(entry) = self.entries.get_mut(i) else {
            return;
        };
        let Some(run) = entry.run.as_mut() else {
            return;
        };
        if run.generation != generation || !run.stopping {
            return;
        }
        let pid = run.pid;
        if !run.sigterm_sent {
            run.sigterm_sent = true;
            warn!(self.logger, "worker did not stop: SIGTERM"; "worker" => &entry.name);
            let _ = self.procs.signal_group(pid, Signal::SIGTERM);
            self.arm(
                half,
                Deadline::Escalate {
                    worker: i,
                    generation,
                },
            );
        } else {
            warn!(self.logger, "worker did not stop: SIGKILL"; "worker" => &entry.name);
            let _ = self.procs.signal_group(pid, Signal::SIGKILL);
            // And the process itself, should it have left its group.
            self.procs.signal(pid, Signal::SIGKILL);
        }
    }

    /// The daemon's stop: every worker asked at once (in parallel), escalating alike; no
    /// restart from now on. The workers on the stop line are asked by pulling it, one call
    /// for all of them; the others (forked while there was no line) by a `Stop` frame each.
    pub(crate) fn shutdown(&mut self) {
        self.shutting_down = true;
        // (Pulled once: a second shutdown finds it pulled already.)
        self.line_pulled |= self.procs.pull_line();
        for i in 0..self.entries.len() {
            self.cancel_restart(i);
            self.ask_to_stop(i);
        }
    }

    /// Whether no worker process runs, and nothing a gone worker started is left unreaped.
    ///
    /// Asked after every turn of a shutdown: it reads the count of running workers (those
    /// with a pid, see `by_pid`), where a walk over the entries, the gone ones first, made a
    /// stop of thousands quadratic.
    pub(crate) fn all_gone(&self) -> bool {
        self.by_pid.is_empty() && self.groups.is_empty()
    }

    /// SIGKILLs every worker still running, with its process group, and what is left of gone
    /// workers' groups (the last resort of a shutdown).
    pub(crate) fn kill_all(&mut self) {
        for e in &self.entries {
            if let Some(run) = &e.run {
                let _ = self.procs.signal_group(run.pid, Signal::SIGKILL);
                self.procs.signal(run.pid, Signal::SIGKILL);
            }
        }
        for &pgid in &self.groups {
            let _ = self.procs.signal_group(pgid, Signal::SIGKILL);
        }
    }
}
