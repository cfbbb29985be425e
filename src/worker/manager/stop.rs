//! Stopping workers: `stop` on the channel, then SIGTERM, then SIGKILL, all in parallel.

use std::time::Instant;

use nix::sys::signal::{Signal, kill};

use super::Message;
use crate::rpc::RpcError;
use slog::warn;

use super::{Deadline, Workers};

impl Workers {
    /// An administrator's stop: `stop` on the channel, then SIGTERM, then SIGKILL after
    /// `shutdowntimeout`. No restart policy applies to it until it is started again.
    ///
    /// # Errors
    ///
    /// `-32000` if there is no such worker or it is not running.
    pub fn stop(&mut self, name: &str) -> std::result::Result<(), RpcError> {
        let entry = self.entry(name)?;
        entry.admin_stopped = true;
        self.ask_to_stop(name)
    }

    fn ask_to_stop(&mut self, name: &str) -> std::result::Result<(), RpcError> {
        let timeout = self.stop_timeout;
        let entry = self.entry(name)?;
        let Some(run) = entry.run.as_mut() else {
            return Err(RpcError::server_error(format!(
                "worker '{name}' is not running"
            )));
        };
        if run.stopping.is_some() {
            return Ok(());
        }
        let deadline = Instant::now() + timeout / 2;
        run.stopping = Some(deadline);
        if run.source.get_ref().send(&Message::new("stop")).is_err() {
            // The channel is full or broken: go straight to SIGTERM.
            let _ = kill(run.pid, Signal::SIGTERM);
            run.sigterm_sent = true;
        }
        self.deadlines
            .insert(deadline, None, Deadline::Escalate(name.to_owned()));
        Ok(())
    }

    /// Stops a worker and starts it again once it is gone.
    ///
    /// # Errors
    ///
    /// `-32000` if there is no such worker; a worker that is not running just starts.
    pub fn restart(&mut self, name: &str) -> std::result::Result<(), RpcError> {
        let entry = self.entry(name)?;
        if entry.run.is_none() {
            return self.start(name);
        }
        entry.restart_when_gone = true;
        self.ask_to_stop(name)
    }

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
