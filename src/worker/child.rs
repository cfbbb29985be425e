//! The worker process: what runs in the child after `fork()`.
//!
//! Until the loop starts, the child only makes async-signal-safe calls (atomic stores,
//! `setpgid`, `prctl`, `getppid`, `close_range`, `munmap`). It may then run ordinary Rust,
//! allocation included, only because the daemon is single-threaded when it forks (the daemon
//! checks this before detaching and never starts a thread): no lock can be held by a thread
//! that does not exist in the child.

use std::os::fd::{AsRawFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::libc;
use serde_json::json;
use slog::{Drain, Level, Logger, OwnedKVList, Record, error, o};

use super::{Channel, Message, State, Worker, WorkerContext, WorkerHost};
use crate::bus::{self, Bus, PosixEvent, PostAction, TimerEvent, WorkerEvent};
use crate::reactor::{self, Interest, Reactor, Ready, Timers};

/// Messages handled per turn at most, so a flood of commands cannot starve the ticks.
const MESSAGES_PER_TURN: usize = 1024;

/// Exit codes of a worker process that did not stop normally.
pub(crate) mod exit {
    /// The daemon died before the worker could start.
    pub const ORPHAN: i32 = 65;
    /// `spinup()` failed.
    pub const SPINUP: i32 = 66;
    /// The daemon wrote garbage into the channel.
    pub const CORRUPT: i32 = 67;
    /// The worker could not set itself up (poller, signals).
    pub const SETUP: i32 = 68;
    /// `spinup`, `tick` or `spindown` panicked.
    pub const PANIC: i32 = 70;
}

/// Turns the forked child into the worker; never returns.
pub(crate) fn become_worker(
    worker: Box<dyn Worker>,
    channel: Channel,
    looptime: Duration,
    parent: i32,
    level: Level,
) -> ! {
    reactor::reset_after_fork();
    // Its own process group: a terminal's Ctrl-C reaches the daemon, which stops workers.
    let _ = nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0));
    // A worker never outlives its daemon: killed when the daemon dies, and checked now in
    // case it died before the call.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    if nix::unistd::getppid().as_raw() != parent {
        exit_now(exit::ORPHAN);
    }
    let [down, up] = channel.fds();
    close_other_fds([down.as_raw_fd(), up.as_raw_fd()]);
    let channel = Arc::new(channel.into_worker_end());
    let code = catch_unwind(AssertUnwindSafe(|| serve(worker, channel, looptime, level)))
        .unwrap_or(exit::PANIC);
    exit_now(code)
}

fn exit_now(code: i32) -> ! {
    // SAFETY: _exit(2) is async-signal-safe and never returns; nothing of the daemon's is
    // flushed or dropped in the child.
    unsafe { libc::_exit(code) }
}

/// Closes every inherited descriptor but stdio and `keep`: the daemon's sockets, its
/// connections, its pid file lock, its poller, other workers' eventfds.
fn close_other_fds(mut keep: [RawFd; 2]) {
    keep.sort_unstable();
    let mut low: u32 = 3;
    for fd in keep {
        let fd = fd as u32;
        if fd > low {
            close_range(low, fd - 1);
        }
        low = low.max(fd + 1);
    }
    close_range(low, u32::MAX);
}

fn close_range(low: u32, high: u32) {
    // SAFETY: close_range(2) only closes descriptors; the child never uses the closed ones
    // (it never returns into the daemon's code that owns them).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, low, high, 0) };
    if rc != 0 {
        // Kernels before 5.9: close one by one up to the descriptor limit.
        let max = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft.min(1 << 20) as u32)
            .unwrap_or(4096);
        for fd in low..=high.min(max) {
            // SAFETY: as above, one descriptor at a time.
            unsafe { libc::close(fd as i32) };
        }
    }
}

/// Sends the worker's log lines up the channel; the daemon logs them with the worker's name.
struct ChannelDrain {
    channel: Arc<Channel>,
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
        let line = Message::with("log", json!([record.level().as_usize(), text]));
        if self.channel.send(&line).is_err() {
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
struct Process {
    host: WorkerHost,
    bus: Bus,
    reactor: Reactor<()>,
    paused: bool,
}

fn serve(worker: Box<dyn Worker>, channel: Arc<Channel>, looptime: Duration, level: Level) -> i32 {
    let logger = Logger::root(
        ChannelDrain {
            channel: channel.clone(),
            level,
        }
        .fuse(),
        o!(),
    );
    let header = channel.header();
    header.pid.store(crate::process::pid(), Ordering::Relaxed);
    header.state.store(State::Spinup as u32, Ordering::Release);
    let name = worker.name().to_owned();
    let reactor = match Reactor::new() {
        Ok(r) => r,
        Err(e) => {
            error!(logger, "cannot create the worker's poller"; "error" => %e);
            return exit::SETUP;
        }
    };
    let mut process = Process {
        host: WorkerHost {
            name,
            logger,
            worker: Some(worker),
            channel,
            stop: false,
            timers: Timers::default(),
        },
        bus: Bus::new(),
        reactor,
        paused: false,
    };
    match process.run(looptime) {
        Ok(code) => code,
        Err(code) => code,
    }
}

impl Process {
    fn run(&mut self, looptime: Duration) -> Result<i32, i32> {
        // SIGTERM: a graceful stop, as the `stop` command.
        let _ = self.bus.on("daemon.posix.SIGTERM", |_, ctx| {
            ctx.stop(0);
            PostAction::Continue
        });
        let wakeup = self
            .host
            .channel
            .incoming_fd()
            .try_clone_to_owned()
            .map_err(|_| exit::SETUP)?;
        let wakeup = self
            .reactor
            .register(wakeup, Interest::READ)
            .map_err(|_| exit::SETUP)?;
        if let Err(e) = self.with_worker(|w, ctx| w.spinup(ctx).map_err(|e| e.to_string()))? {
            error!(self.host.logger, "spinup failed"; "error" => e);
            return Err(exit::SPINUP);
        }
        // The first tick at once, then every looptime at a fixed rate.
        self.reactor
            .timers()
            .insert(Instant::now(), Some(looptime), ());
        self.set_state(State::Looping);
        let mut seen = None;
        let mut ready = Vec::new();
        let mut buffer = Vec::new();
        while !self.host.stop {
            bus::catch_subscribed_signals(&mut self.reactor, &self.bus, &mut seen)
                .map_err(|_| exit::SETUP)?;
            let wait = if self.bus.has_pending() {
                Some(Duration::ZERO)
            } else {
                self.host
                    .timers
                    .next_deadline()
                    .map(|d| d.saturating_duration_since(Instant::now()))
            };
            if self.reactor.turn(wait, &mut ready).is_err() {
                return Err(exit::SETUP);
            }
            for r in ready.drain(..) {
                match r {
                    Ready::Signal(signal) => self.bus.emit(PosixEvent::new(signal)),
                    Ready::Timer(..) if !self.paused && !self.host.stop => self.tick()?,
                    Ready::Timer(..) => {}
                    Ready::Io { token, .. } if token == wakeup.token() => {
                        self.host.channel.clear_wakeup();
                        self.commands(&mut buffer)?;
                    }
                    Ready::Io { .. } => {}
                }
            }
            let mut due = Vec::new();
            self.host.timers.expire(Instant::now(), &mut due);
            for (id, name) in due {
                self.bus.emit(TimerEvent::new(name, id));
            }
            self.bus.dispatch(&mut self.host);
            self.host
                .channel
                .header()
                .heartbeat
                .fetch_add(1, Ordering::Relaxed);
        }
        self.set_state(State::Spindown);
        self.with_worker(|w, ctx| w.spindown(ctx))?;
        Ok(0)
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
        f: impl FnOnce(&mut dyn Worker, &mut WorkerContext<'_>) -> T,
    ) -> Result<T, i32> {
        let mut worker = self
            .host
            .worker
            .take()
            .expect("the worker is home between calls");
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut ctx = WorkerContext {
                host: &mut self.host,
                bus: &mut self.bus,
            };
            f(worker.as_mut(), &mut ctx)
        }));
        self.host.worker = Some(worker);
        outcome.map_err(|panic| {
            let message = bus::panic_message(panic.as_ref());
            error!(self.host.logger, "the worker panicked"; "panic" => message);
            exit::PANIC
        })
    }

    fn tick(&mut self) -> Result<(), i32> {
        let name = self.host.name.clone();
        self.bus
            .dispatch_now(&WorkerEvent::new("loopstart", name.clone()), &mut self.host);
        self.with_worker(|w, ctx| w.tick(ctx))?;
        self.host
            .channel
            .header()
            .ticks
            .fetch_add(1, Ordering::Relaxed);
        self.bus
            .dispatch_now(&WorkerEvent::new("loopstop", name), &mut self.host);
        Ok(())
    }

    fn commands(&mut self, buffer: &mut Vec<u8>) -> Result<(), i32> {
        for _ in 0..MESSAGES_PER_TURN {
            let message = match self.host.channel.receive(buffer) {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(()),
                Err(e) => {
                    error!(self.host.logger, "the daemon's channel is corrupt"; "error" => %e);
                    return Err(exit::CORRUPT);
                }
            };
            let state = match message.command.as_str() {
                "stop" => {
                    self.host.stop = true;
                    State::Spindown
                }
                "pause" => {
                    self.paused = true;
                    State::Paused
                }
                "resume" => {
                    self.paused = false;
                    State::Looping
                }
                _ => {
                    let event = WorkerEvent::new(&message.command, self.host.name.clone())
                        .with_payload(message.payload);
                    self.bus.emit(event);
                    continue;
                }
            };
            self.set_state(state);
            let seq = message.payload.as_ref().and_then(|p| p.get("seq")).cloned();
            let ack = Message::with(
                "ack",
                json!({"command": message.command, "seq": seq, "state": state as u32}),
            );
            // An ack that does not fit is a full ring: the daemon times the request out.
            let _ = self.host.channel.send(&ack);
        }
        // More may be waiting: come back next turn.
        self.host.channel.wake_self();
        Ok(())
    }
}
