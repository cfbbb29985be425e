//! The worker process: what runs in the child after `fork()`.
//!
//! The child may run ordinary Rust, allocation included, only because the daemon is
//! single-threaded when it forks (it checks before every fork and never starts a thread): no
//! lock can be held by a thread that does not exist in the child. It resets the signal
//! handlers first, closes the daemon's own descriptors (and only those: what the worker
//! value owns stays open), and runs the same driver loop as the daemon over a fresh
//! reactor; it never returns into the daemon's code.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::libc;
use serde_json::Value;
use slog::{Drain, Level, Logger, OwnedKVList, Record, error, o, warn};

use super::channel::{ChannelError, Wakeup};
use super::frame::{self, Down, Up};
use super::job::Job;
use super::{Channel, CommandError, State, Worker, WorkerContext, WorkerHost, WorkerLoop};
use crate::bus::{self, Bus, PostAction};
use crate::driver::{self, Driven, Due};
use crate::reactor::{Interest, Reactor, Signal, Source, Token};

/// Frames handled per turn at most, so a flood of commands cannot starve the ticks.
const FRAMES_PER_TURN: usize = 1024;

/// Replies kept while the daemon's ring is full, sent again each turn; past it a reply is
/// dropped (its caller times out). As many as the supervisor lets wait for one worker.
const REPLIES_KEPT: usize = 1024;

/// How often replies kept for a full ring are sent again.
const REPLY_RETRY: Duration = Duration::from_millis(2);

/// Exit codes of a worker process that did not stop normally.
pub(crate) mod exit {
    /// The daemon died before the worker could start, or its end of the channel closed.
    pub const ORPHAN: i32 = 65;
    /// `spinup()` failed.
    pub const SPINUP: i32 = 66;
    /// The daemon wrote garbage into the channel.
    pub const CORRUPT: i32 = 67;
    /// The worker could not set itself up (poller, signals).
    pub const SETUP: i32 = 68;
    /// The worker's process settings (user, group, limits, niceness) could not be applied.
    pub const PROCESS: i32 = 69;
    /// `spinup`, `tick` or `spindown` panicked.
    pub const PANIC: i32 = 70;
}

/// Ends the process at once: nothing of the daemon's is flushed or dropped in the child.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit(2) never returns and touches nothing of the process's memory.
    unsafe { libc::_exit(code) }
}

/// Becomes the worker `build` makes (once this process is cut off from the daemon's
/// descriptors, so what it opens is the worker's own) and returns its exit code.
pub(crate) fn serve<W: Worker>(build: impl FnOnce(&super::Spawn) -> W, job: Job) -> i32 {
    // A worker never outlives its daemon: killed when the daemon dies, and checked now in
    // case it died before the call.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    if nix::unistd::getppid().as_raw() != job.parent {
        return exit::ORPHAN;
    }
    // The daemon's own descriptors go (its poller, sockets, connections, pid file, log,
    // the other workers' channels, the stop line's write end); this worker's channel, the
    // line's read end and whatever the worker value owns stay.
    let keep: Vec<_> = job
        .channel
        .fds()
        .map(|fd| fd.as_raw_fd())
        .chain(job.line)
        .collect();
    crate::sys::close_owned_except(&keep);
    let logger = Logger::root(
        ChannelDrain {
            channel: job.channel.same_end(),
            level: job.level,
        }
        .fuse(),
        o!(),
    );
    // The descriptor limit the daemon started with, before the worker's own settings.
    crate::privs::restore_nofile_in_child();
    if let Err(e) = job.process.apply_in_child(&job.name) {
        error!(logger, "cannot set up the worker's process"; "error" => %e);
        return exit::PROCESS;
    }
    // A change of user clears the parent-death signal: set again, and checked again. (A
    // worker whose own code changes its user later still ends with the daemon: it reads
    // the end of file on its channel, see `commands`.)
    if job.process.user().is_some() {
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
        if nix::unistd::getppid().as_raw() != job.parent {
            return exit::ORPHAN;
        }
    }
    let header = job.channel.header();
    header.pid.store(crate::process::pid(), Ordering::Relaxed);
    header.state.store(State::Spinup as u32, Ordering::Release);
    let worker = build(&job.spawn);
    let reactor = match Reactor::new() {
        Ok(r) => r,
        Err(e) => {
            error!(logger, "cannot create the worker's poller"; "error" => %e);
            return exit::SETUP;
        }
    };
    let wakeup = match reactor.register(job.channel.wakeup(), Interest::READ) {
        Ok(w) => w,
        Err(e) => {
            error!(logger, "cannot poll the channel"; "error" => %e);
            return exit::SETUP;
        }
    };
    // SAFETY: the line's read end is open in this process at this number (inherited at
    // its fork, and kept above). The daemon's `Line` value (or the fork server's), copied
    // into this process's memory, names it too, but is never dropped here: this process
    // never returns into that code, and ends in `_exit`.
    let line = job.line.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    let line = match line.map(|fd| reactor.register(fd, Interest::READ)) {
        None => None,
        Some(Ok(source)) => Some(source),
        Some(Err(e)) => {
            // The daemon would stop it by the line alone.
            error!(logger, "cannot poll the daemon's stop line"; "error" => %e);
            return exit::SETUP;
        }
    };
    let mut process = Process {
        host: WorkerHost {
            name: job.name,
            logger,
            worker: Some(worker),
            channel: job.channel,
            stop: false,
            reactor,
        },
        bus: Bus::new(),
        wakeup,
        line,
        paused: false,
        woken: false,
        warm: false,
        again: false,
        again_due: false,
        exit: None,
        buffer: Vec::new(),
        unsent: std::collections::VecDeque::new(),
    };
    let code = process.run(job.looptime);
    // The process ends now, with this code (`_exit`). What the user's code owns is dropped
    // (a `Drop` may flush a file); the worker's own poller, channel and logger are left to
    // the kernel, which frees them at the exit anyway, without a syscall each.
    // (In the order they always went: the worker value, then its listeners.)
    let Process {
        host,
        bus,
        wakeup,
        line,
        ..
    } = process;
    let WorkerHost {
        worker,
        channel,
        reactor,
        logger,
        ..
    } = host;
    drop(worker);
    drop(bus);
    std::mem::forget((wakeup, line, channel, reactor, logger));
    code
}

/// Sends the worker's log lines up the channel; the daemon logs them with the worker's name.
struct ChannelDrain {
    channel: Channel,
    level: Level,
}

struct Text<'a>(&'a mut String);

impl slog::Serializer for Text<'_> {
    fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments<'_>) -> slog::Result {
        use std::fmt::Write;
        let _ = write!(self.0, ", {key}: {value}");
        Ok(())
    }
}

impl Drain for ChannelDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        if !record.level().is_at_least(self.level) {
            return Ok(());
        }
        let mut text = record.msg().to_string();
        let _ = slog::KV::serialize(&record.kv(), record, &mut Text(&mut text));
        let _ = slog::KV::serialize(values, record, &mut Text(&mut text));
        // A line longer than the daemon takes is cut here, not lost.
        super::frame::truncate(&mut text, super::frame::MAX_LOG_TEXT);
        let level = u8::try_from(record.level().as_usize()).unwrap_or(3);
        if self
            .channel
            .send_frame(&Up::Log(level, text).encode())
            .is_err()
        {
            // Counted, never silent: the daemon reports lost lines.
            self.channel
                .header()
                .lost_logs
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// The worker's loop state.
struct Process<W> {
    host: WorkerHost<W>,
    bus: Bus<WorkerHost<W>>,
    wakeup: Source<Wakeup>,
    /// The daemon's stop line (see `supervisor::line`): readable once the daemon stops.
    line: Option<Source<OwnedFd>>,
    paused: bool,
    /// Whether the warm-up was done (its turn reads the channel next, see `warm_up`), and
    /// whether the decoder ran.
    woken: bool,
    warm: bool,
    /// Whether the channel is read again on the next turn without a wake-up (frames were
    /// left past a turn's budget, or the warm-up asks for it): set during a turn, and due
    /// on the one after (so a flood of commands still leaves every turn to the ticks).
    again: bool,
    again_due: bool,
    /// Set when the worker must end abnormally (a panic, a corrupt channel).
    exit: Option<i32>,
    buffer: Vec<u8>,
    /// Replies (encoded) that found the daemon's ring full, oldest first.
    unsent: std::collections::VecDeque<Vec<u8>>,
}

impl<W: Worker> Process<W> {
    fn run(&mut self, looptime: Duration) -> i32 {
        // SIGTERM: a graceful stop, as the `Stop` command.
        self.bus.on_signal(Signal::TERM, |_, ctx| {
            ctx.stop(0);
            PostAction::Continue
        });
        match self.with_worker(|w, ctx| w.spinup(ctx).map_err(|e| e.to_string())) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                error!(self.host.logger, "spinup failed"; "error" => e);
                return exit::SPINUP;
            }
            Err(code) => return code,
        }
        // The first tick at once, then every looptime at a fixed rate.
        self.host
            .reactor
            .timers()
            .insert(Instant::now(), Some(looptime), Due::Own(()));
        self.set_state(State::Looping);
        let outcome = driver::drive(self, |p| p.host.stop || p.exit.is_some());
        if let Err(e) = outcome {
            error!(self.host.logger, "the worker's loop failed"; "error" => %e);
            return exit::SETUP;
        }
        if let Some(code) = self.exit {
            return code;
        }
        self.set_state(State::Spindown);
        match self.with_worker(|w, ctx| w.spindown(ctx)) {
            Ok(()) => 0,
            Err(code) => code,
        }
    }

    /// After the first tick: prepares the receiving path before a frame needs it, so that
    /// the first command (most often the stop, when thousands of workers stop at once) pays
    /// no page faults for its code, its buffer or its stack. Stdout is made too (the process
    /// flushes it as it ends; std makes its buffer on first use), then the worker asks its next
    /// turn to read the channel (`again`): that turn takes whatever was sent meanwhile and
    /// runs the decoder once, exactly where a frame is decoded (see `commands`, called from
    /// the loop's turn as for a wake-up), stack depth included.
    fn warm_up(&mut self) {
        self.woken = true;
        let _ = std::io::Write::flush(&mut std::io::stdout());
        self.buffer.reserve(64);
        self.again = true;
    }

    fn set_state(&self, state: State) {
        self.host
            .channel
            .header()
            .state
            .store(state as u32, Ordering::Release);
    }

    /// Runs `f` on the worker, taken out of the host so listeners can reach the host
    /// meanwhile; a panic is logged and ends the worker.
    fn with_worker<T>(
        &mut self,
        f: impl FnOnce(&mut W, &mut WorkerContext<'_, W>) -> T,
    ) -> Result<T, i32> {
        let Some(mut worker) = self.host.worker.take() else {
            return Err(exit::SETUP);
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut ctx = WorkerContext {
                host: &mut self.host,
                bus: &mut self.bus,
            };
            f(&mut worker, &mut ctx)
        }));
        self.host.worker = Some(worker);
        outcome.map_err(|panic| {
            let message = bus::panic_message(panic.as_ref());
            error!(self.host.logger, "the worker panicked"; "panic" => message);
            exit::PANIC
        })
    }

    fn tick(&mut self) {
        self.bus.dispatch_now(&WorkerLoop::Start, &mut self.host);
        if let Err(code) = self.with_worker(|w, ctx| w.tick(ctx)) {
            self.exit = Some(code);
            return;
        }
        self.host
            .channel
            .header()
            .ticks
            .fetch_add(1, Ordering::Relaxed);
        self.bus.dispatch_now(&WorkerLoop::Stop, &mut self.host);
    }

    /// Reads the daemon's frames, a turn's budget of them; true once none is left (or the
    /// worker must end), false if some are left for the next turn.
    fn commands(&mut self) -> bool {
        // Cleared once, before reading: a frame written after this wakes us again.
        if !self.host.channel.clear_wakeup() {
            // The daemon's end of the socket pair is closed: nobody supervises this worker
            // any more (the daemon died, or gave up on it), and the end of file would keep
            // its loop busy.
            error!(
                self.host.logger,
                "the daemon's end of the channel is closed"
            );
            self.exit = Some(exit::ORPHAN);
            return true;
        }
        for _ in 0..FRAMES_PER_TURN {
            let frame = match self.host.channel.receive_frame(&mut self.buffer) {
                Ok(false) => {
                    if !self.warm {
                        // See `warm_up`: decoded here, at the depth a frame is.
                        self.warm = true;
                        let stop = std::hint::black_box(&frame::STOP_FRAME[..]);
                        let _ = std::hint::black_box(Down::decode(stop));
                    }
                    return true;
                }
                Ok(true) => Down::decode(&self.buffer),
                Err(e) => {
                    error!(self.host.logger, "the daemon's channel is corrupt"; "error" => %e);
                    self.exit = Some(exit::CORRUPT);
                    return true;
                }
            };
            let (state, seq) = match frame {
                Err(e) => {
                    // A frame this end cannot decode is dropped and counted, never a crash.
                    let dropped = &self.host.channel.header().dropped;
                    if dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                        error!(self.host.logger, "dropped a frame from the daemon: it cannot be decoded"; "error" => e);
                    }
                    continue;
                }
                Ok(Down::Stop) => {
                    self.host.stop = true;
                    (State::Spindown, 0)
                }
                Ok(Down::Pause(seq)) => {
                    self.paused = true;
                    (State::Paused, seq)
                }
                Ok(Down::Resume(seq)) => {
                    self.paused = false;
                    (State::Looping, seq)
                }
                Ok(Down::Command(command, payload)) => {
                    match self.with_worker(|w, ctx| w.command(&command, payload, ctx)) {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            warn!(self.host.logger, "command failed"; "command" => command, "error" => %e);
                        }
                        Err(code) => {
                            self.exit = Some(code);
                            return true;
                        }
                    }
                    continue;
                }
                Ok(Down::Call(id, command, payload)) => {
                    match self.with_worker(|w, ctx| w.command(&command, payload, ctx)) {
                        Ok(outcome) => self.reply(id, outcome),
                        Err(code) => {
                            // The supervisor tells the caller the worker exited.
                            self.exit = Some(code);
                            return true;
                        }
                    }
                    continue;
                }
            };
            self.set_state(state);
            if seq != 0 {
                // An ack that does not fit is a full ring: the daemon times the request out.
                let _ = self
                    .host
                    .channel
                    .send_frame(&Up::Ack(seq, state as u32).encode());
            }
        }
        // More may be waiting: come back next turn.
        self.again = true;
        false
    }

    /// The daemon pulled its stop line: a stop, as the `Stop` frame, after what the daemon
    /// sent before it (read first, in order). The loop ends with the turn that stops, so the
    /// line, which stays readable, is not polled again (nor read: its byte is every
    /// worker's).
    fn line_pulled(&mut self) {
        if !self.commands() {
            // Frames are left past the turn's budget: the line, still readable, comes
            // back on the next turn, after them.
            return;
        }
        if self.exit.is_none() && !self.host.stop {
            self.host.stop = true;
            self.set_state(State::Spindown);
        }
    }

    /// Answers the call `id`. A value the daemon could not decode (too deep) or that does
    /// not fit a frame becomes an error saying so; a reply that finds the ring full is kept
    /// and sent again (see [`REPLY_RETRY`]).
    fn reply(&mut self, id: u64, outcome: Result<Value, CommandError>) {
        let internal =
            |why: String| Err(CommandError::new(crate::rpc::RpcError::INTERNAL_ERROR, why));
        let outcome = match outcome {
            Ok(v) if frame::too_deep(&v) => internal(format!("the reply: {}", frame::TOO_DEEP)),
            other => other,
        };
        let encoded = Up::Reply(id, outcome).encode();
        if !self.unsent.is_empty() {
            // In order, behind those waiting.
            self.keep(encoded);
            return;
        }
        match self.host.channel.send_frame(&encoded) {
            Ok(()) => {}
            Err(ChannelError::Full(_)) => self.keep(encoded),
            Err(e) => {
                let why = internal(format!("the reply cannot cross the channel: {e}"));
                if let Err(ChannelError::Full(_)) =
                    self.host.channel.send_frame(&Up::Reply(id, why).encode())
                {
                    error!(self.host.logger, "a reply was lost: the daemon's ring is full"; "id" => id);
                }
            }
        }
    }

    fn keep(&mut self, encoded: Vec<u8>) {
        if self.unsent.len() < REPLIES_KEPT {
            self.unsent.push_back(encoded);
        } else {
            error!(
                self.host.logger,
                "a reply was dropped: the daemon's ring stays full"
            );
        }
    }

    /// Sends the replies kept for a full ring, in order, until it is full again.
    fn send_unsent(&mut self) {
        while let Some(encoded) = self.unsent.front() {
            if let Err(ChannelError::Full(_)) = self.host.channel.send_frame(encoded) {
                return;
            }
            // Sent (or refused for good, which a frame that fitted once is not).
            self.unsent.pop_front();
        }
    }
}

impl<W: Worker> Driven for Process<W> {
    type Host = WorkerHost<W>;

    fn bus_and_host(&mut self) -> (&mut Bus<WorkerHost<W>>, &mut WorkerHost<W>) {
        (&mut self.bus, &mut self.host)
    }

    fn io(&mut self, token: Token, _readable: bool, _writable: bool) {
        if token == self.wakeup.token() {
            self.commands();
        } else if self.line.as_ref().is_some_and(|l| l.token() == token) {
            self.line_pulled();
        }
    }

    fn deadline(&mut self, (): (), _now: Instant) {
        if !self.paused && !self.host.stop && self.exit.is_none() {
            self.tick();
        }
        if !self.woken {
            self.warm_up();
        }
    }

    fn max_wait(&mut self) -> Option<Duration> {
        if self.again_due {
            return Some(Duration::ZERO);
        }
        (!self.unsent.is_empty()).then_some(REPLY_RETRY)
    }

    fn after_turn(&mut self, _now: Instant) {
        if std::mem::take(&mut self.again_due) && self.exit.is_none() {
            self.commands();
        }
        self.again_due = std::mem::take(&mut self.again);
        self.send_unsent();
        self.host
            .channel
            .header()
            .heartbeat
            .fetch_add(1, Ordering::Relaxed);
    }
}
