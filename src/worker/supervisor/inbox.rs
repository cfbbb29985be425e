//! What workers send up: log lines, acknowledgements, and the user's messages.

use serde_json::Value;
use slog::{Level, crit, debug, error, info, trace, warn};

use super::Workers;
use crate::reactor::Token;
use crate::worker::frame::Up;
use crate::worker::{WorkerMessage, channel::ChannelError};

/// Frames read from one worker per turn at most, so a chatty worker cannot starve the rest.
pub(crate) const FRAMES_PER_TURN: usize = 1024;

impl Workers {
    /// Handles readiness of a worker's channel. Returns false for a token that is not a
    /// worker's.
    pub(crate) fn ready(&mut self, token: Token) -> bool {
        let Some(&i) = self.by_token.get(&token) else {
            return false;
        };
        if self.drain(i, FRAMES_PER_TURN) {
            // The budget ran out with frames left: come back on the next turn, even if the
            // worker writes nothing more.
            if let Some(run) = &self.entries[i].run {
                run.channel().wake_self();
            }
        }
        true
    }

    /// Reads at most `budget` frames from entry `i`; true if it stopped with frames left. A
    /// worker whose channel is corrupt is killed (it is then handled as crashed).
    pub(super) fn drain(&mut self, i: usize, budget: usize) -> bool {
        let mut buffer = std::mem::take(&mut self.buffer);
        let mut left = false;
        if let Some(run) = &self.entries[i].run {
            // Cleared once, before reading: a frame written after this wakes us again.
            run.channel().clear_wakeup();
        }
        for n in 0.. {
            if n == budget {
                left = true;
                break;
            }
            let Some(run) = &self.entries[i].run else {
                break;
            };
            let channel = run.channel();
            let frame = if !channel.header_ok() {
                Err("the header's magic or version was overwritten".to_owned())
            } else {
                match channel.receive_frame(&mut buffer) {
                    Ok(false) => break,
                    Ok(true) => Up::decode(&buffer),
                    Err(ChannelError::Corrupt(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            };
            match frame {
                Ok(up) => self.arrived(i, up),
                Err(why) => {
                    let pid = run.pid;
                    error!(self.logger, "worker killed: its channel is corrupt";
                        "worker" => &self.entries[i].name, "error" => why);
                    self.procs.signal(pid, nix::sys::signal::Signal::SIGKILL);
                    break;
                }
            }
        }
        self.buffer = buffer;
        left
    }

    fn arrived(&mut self, i: usize, up: Up) {
        let name = &self.entries[i].name;
        match up {
            Up::Log(level, text) => log(&self.logger, name, level, &text),
            Up::Ack(seq, state) => {
                let name = name.clone();
                self.acknowledged(seq, &name, Value::from(state));
            }
            Up::Message(command, payload) => {
                let message = WorkerMessage::new(name, &command, payload);
                self.emit(message);
            }
        }
    }
}

fn log(logger: &slog::Logger, name: &str, level: u8, text: &str) {
    let level = Level::from_usize(usize::from(level)).unwrap_or(Level::Info);
    match level {
        Level::Critical => crit!(logger, "{}", text; "worker" => name),
        Level::Error => error!(logger, "{}", text; "worker" => name),
        Level::Warning => warn!(logger, "{}", text; "worker" => name),
        Level::Info => info!(logger, "{}", text; "worker" => name),
        Level::Debug => debug!(logger, "{}", text; "worker" => name),
        Level::Trace => trace!(logger, "{}", text; "worker" => name),
    }
}
