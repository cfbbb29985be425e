//! What workers send up: log lines, acknowledgements, the user's messages, and replies.

use std::time::{Duration, Instant};

use serde_json::Value;
use slog::{Level, crit, debug, error, info, trace, warn};

use super::Workers;
use crate::reactor::Token;
use crate::worker::WorkerMessage;
use crate::worker::backlog::BACKLOG_HIGH_WATER;
use crate::worker::frame::{self, Up};

/// Bytes of frames read from one worker per turn at most (a quarter of its ring, or one
/// frame if it is larger), so a chatty worker cannot starve the rest, and what one turn
/// decodes is bounded in bytes, whatever the frames' sizes.
pub(crate) const BYTES_PER_TURN: usize = crate::worker::channel::RING_CAPACITY / 4;

/// The bytes of log text per second the daemon writes for one worker process, on average;
/// past it (and a burst of [`LOG_BURST`]), its lines are suppressed and counted, so a
/// worker that logs in a loop cannot fill the daemon's disk.
pub(crate) const LOG_BYTES_PER_SEC: usize = 256 * 1024;

/// The bytes of log text a worker may write at once, before its rate applies.
pub(crate) const LOG_BURST: usize = 1024 * 1024;

/// A log line costs its text and this much (the line's own fields).
const LOG_LINE_COST: usize = 64;

/// A token bucket over one worker process's log lines.
#[derive(Debug)]
pub(crate) struct LogBudget {
    tokens: usize,
    at: Instant,
    /// Suppressed since the last line that passed (told then).
    pub(super) suppressed: u64,
    /// Suppressed in all, for `worker.list`.
    pub(super) suppressed_total: u64,
}

impl LogBudget {
    pub(crate) fn new(now: Instant) -> LogBudget {
        LogBudget {
            tokens: LOG_BURST,
            at: now,
            suppressed: 0,
            suppressed_total: 0,
        }
    }

    /// Whether a line of `len` bytes may be written now.
    fn take(&mut self, len: usize, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at);
        let refill = (elapsed.as_secs_f64() * LOG_BYTES_PER_SEC as f64) as usize;
        if refill > 0 {
            self.tokens = self.tokens.saturating_add(refill).min(LOG_BURST);
            self.at = now;
        }
        let cost = len + LOG_LINE_COST;
        if cost <= self.tokens {
            self.tokens -= cost;
            true
        } else {
            self.suppressed += 1;
            self.suppressed_total += 1;
            false
        }
    }
}

/// How long a worker may run on once its wake-up socket is closed (a worker that ends closes
/// it a moment before it can be reaped).
pub(super) const HANG_UP_GRACE: Duration = Duration::from_secs(2);

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Drained {
    /// The ring is empty (or the worker is gone).
    Empty,
    /// The turn's budget ran out, or the backlog is full: frames wait.
    Left,
}

impl Workers {
    /// Handles readiness of a worker's channel. Returns false for a token that is not a
    /// worker's.
    pub(crate) fn ready(&mut self, token: Token) -> bool {
        let Some(&i) = self.by_token.get(&token) else {
            return self.output_ready(token);
        };
        self.drain_turn(i);
        true
    }

    /// Whether some channel has frames left from an earlier turn: the daemon's next wait
    /// must not block.
    pub(crate) fn has_left(&self) -> bool {
        !self.left.is_empty() || !self.left_due.is_empty()
    }

    /// After each turn of the daemon's loop: reads again, with a turn's budget each, the
    /// channels that had frames left in the turn before (so that each channel is read once
    /// per turn, and the connections and the other workers get theirs in between).
    pub(crate) fn drain_left(&mut self) {
        if self.left_due.is_empty() {
            // (The common case, after every turn of the daemon's loop: nothing to read.)
            std::mem::swap(&mut self.left_due, &mut self.left);
            return;
        }
        let mut due = std::mem::take(&mut self.left_due);
        due.sort_unstable();
        due.dedup();
        for &i in &due {
            self.drain_turn(i);
        }
        due.clear();
        // What this turn left is due next turn; the emptied list keeps its allocation.
        self.left_due = std::mem::replace(&mut self.left, due);
    }

    /// One turn's drain of entry `i`: the budget ran out, or the bus is full, with frames
    /// left: it is read again on the next turn, even if the worker writes nothing more.
    /// (While the backlog is full, events wait on the bus, so the daemon's loop does not
    /// block meanwhile.)
    fn drain_turn(&mut self, i: usize) {
        if self.drain(i, BYTES_PER_TURN, true) == Drained::Left {
            self.left.push(i);
        }
    }

    /// Reads frames of entry `i`, at least one and at most `budget` bytes of them (and, with
    /// `bounded`, none while the backlog is above its high-water mark; without, the worker
    /// was reaped: its last frames are read). A worker whose ring or
    /// header is corrupt is killed (it is then handled as crashed); a frame that is not one
    /// it may send (too deep, garbage) is logged, dropped and counted.
    pub(super) fn drain(&mut self, i: usize, budget: usize, bounded: bool) -> Drained {
        let mut buffer = std::mem::take(&mut self.buffer);
        let mut outcome = Drained::Empty;
        if let Some(run) = &mut self.entries[i].run {
            // Cleared once, before reading: a frame written after this wakes us again.
            if !run.channel().clear_wakeup() && !run.hung_up {
                // The worker's socket is closed: it is ending (its frames are read at the
                // reap), or it shut the socket down. Unwatched from now (end of file would
                // keep it readable for ever); still running after a grace, it is killed.
                run.hung_up = true;
                run.source.unwatch();
                let generation = run.generation;
                self.ending.push((i, generation));
                if bounded {
                    self.arm(
                        HANG_UP_GRACE,
                        super::Deadline::HungUp {
                            worker: i,
                            generation,
                        },
                    );
                }
            }
        }
        let mut read = 0usize;
        loop {
            // At least one frame a turn, even above the high-water mark (up to twice it):
            // every worker gets its turn, none is starved by those drained before it.
            let backlog = self.backlog.bytes();
            let backed_up = bounded
                && backlog >= BACKLOG_HIGH_WATER
                && (read > 0 || backlog >= 2 * BACKLOG_HIGH_WATER);
            if read >= budget || backed_up {
                outcome = Drained::Left;
                break;
            }
            let Some(run) = &self.entries[i].run else {
                break;
            };
            let channel = run.channel();
            if !channel.header_ok() {
                let why = "the header's magic or version was overwritten".into();
                self.kill_corrupt(i, why, bounded);
                break;
            }
            match channel.receive_frame(&mut buffer) {
                Ok(false) => break,
                Ok(true) => {
                    read += buffer.len().max(1);
                    match Up::decode(&buffer) {
                        Ok(up) => self.arrived(i, up),
                        Err(why) => self.undecodable(i, &why),
                    }
                }
                Err(e) => {
                    self.kill_corrupt(i, e.to_string(), bounded);
                    break;
                }
            }
        }
        buffer.clear();
        if buffer.capacity() > BYTES_PER_TURN {
            // One large frame does not keep its buffer for the daemon's life.
            buffer.shrink_to(BYTES_PER_TURN);
        }
        self.buffer = buffer;
        outcome
    }

    /// Kills the worker of a corrupt channel (`alive`: it has not been reaped; once it
    /// has, its pid may be another process's, and only the corruption is logged).
    fn kill_corrupt(&mut self, i: usize, why: String, alive: bool) {
        let entry = &mut self.entries[i];
        let (name, Some(run)) = (&entry.name, entry.run.as_mut()) else {
            return;
        };
        if alive {
            if run.killed {
                // Once: until it is reaped, its channel may wake the daemon again.
                return;
            }
            run.killed = true;
            error!(self.logger, "worker killed: its channel is corrupt"; "worker" => name, "error" => why);
            self.procs
                .signal(run.pid, nix::sys::signal::Signal::SIGKILL);
        } else {
            error!(self.logger, "the channel of a worker that ended is corrupt"; "worker" => name, "error" => why);
        }
    }

    /// A hang-up's grace is over: a worker still running with its socket shut is killed.
    pub(super) fn hung_up(&mut self, i: usize, generation: u64) {
        let Some(run) = self.entries.get(i).and_then(|e| e.run.as_ref()) else {
            return;
        };
        if run.generation == generation {
            self.kill_corrupt(i, "its wake-up socket was shut down".into(), true);
        }
    }

    /// A frame the daemon cannot decode: dropped and counted, never a crash; logged once per
    /// process (the count shows in `worker.list` and when the process ends).
    fn undecodable(&mut self, i: usize, why: &str) {
        let Some(run) = self.entries[i].run.as_mut() else {
            return;
        };
        run.dropped += 1;
        if run.dropped == 1 {
            warn!(self.logger, "dropped a frame the worker sent: it cannot be decoded";
                "worker" => &self.entries[i].name, "error" => why);
        }
    }

    fn arrived(&mut self, i: usize, up: Up) {
        let name = &self.entries[i].name;
        match up {
            Up::Log(level, text) => {
                let now = self.procs.now();
                let cap = self.log_control.lines();
                let entry = &mut self.entries[i];
                let (name, Some(run)) = (&entry.name, entry.run.as_mut()) else {
                    return;
                };
                let shown = Level::from_usize(usize::from(level)).unwrap_or(Level::Info);
                entry
                    .ring
                    .push(cap, crate::log::Stream::Log, Some(shown), &text);
                self.tap.line(
                    &self.logger,
                    &mut self.out.events,
                    name,
                    crate::log::Stream::Log,
                    &text,
                );
                if run.logs.take(text.len(), now) {
                    if run.logs.suppressed > 0 {
                        warn!(self.logger, "worker logged past its rate limit: log lines suppressed";
                            "worker" => name, "suppressed" => run.logs.suppressed);
                        run.logs.suppressed = 0;
                    }
                    log(&self.logger, name, level, &text);
                }
            }
            Up::Ack(seq, state) => {
                let name = name.as_str().to_owned();
                self.acknowledged(seq, &name, Value::from(state));
            }
            Up::Reply(id, outcome) => self.replied(i, id, outcome),
            Up::Message(command, payload) => {
                let cost = std::mem::size_of::<WorkerMessage>()
                    + WorkerMessage::PREFIX.len()
                    + name.len()
                    + command.len()
                    + payload.as_ref().map_or(0, frame::footprint);
                let charge = self.backlog.charge(cost);
                let message = WorkerMessage::new(name, &command, payload).charged(charge);
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
