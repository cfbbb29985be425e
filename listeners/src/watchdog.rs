//! Watchdog: the restart policy for crashed workers.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use daimon::Result;
use daimon::bus::{
    Bus, Context, DaemonEvent, Event, Listener, PostAction, TimerEvent, WorkerEvent,
};
use daimon::reactor::Signal;
use daimon::slog::{error, info, warn};
use daimon::worker::State;

/// The prefix of the timer events that restart a worker after its backoff.
const RESTART: &str = "watchdog.restart.";
/// The timer event of the hang check.
const HANG_CHECK: &str = "watchdog.hangcheck";

/// The restart policy, as `daemon.worker.exited` events reveal crashes:
///
/// - a crashed `forever` worker is restarted: the first time at once, then after a backoff
///   that doubles with each crash (from [`Watchdog::backoff`] up to
///   [`Watchdog::max_backoff`]);
/// - past [`Watchdog::max_restarts`] crashes within [`Watchdog::window`], it is `FAILED`
///   and `daemon.worker.failed` is emitted (`worker.start` revives it);
/// - a crashed worker that is not `forever` makes the daemon stop, with exit code 1;
/// - with [`Watchdog::hang_timeout`], a worker whose heartbeat stalls that long (and longer
///   than two of its looptimes) is killed, then handled as crashed.
///
/// An exit that was asked for (an administrator's stop, the daemon's shutdown) is never a
/// crash, and a stopped worker is never restarted by the policy.
#[derive(Clone)]
pub struct Watchdog {
    config: Config,
    state: Rc<RefCell<Memory>>,
}

#[derive(Debug, Clone, Copy)]
struct Config {
    max_restarts: usize,
    window: Duration,
    backoff: Duration,
    max_backoff: Duration,
    hang_timeout: Option<Duration>,
}

#[derive(Default)]
struct Memory {
    /// Crash times within the window, by worker.
    crashes: HashMap<String, VecDeque<Instant>>,
    /// The last heartbeat seen and when it last changed, by worker.
    heartbeats: HashMap<String, (u64, Instant)>,
}

impl Default for Watchdog {
    fn default() -> Self {
        Watchdog {
            config: Config {
                max_restarts: 5,
                window: Duration::from_secs(60),
                backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(30),
                hang_timeout: None,
            },
            state: Rc::default(),
        }
    }
}

impl Watchdog {
    /// At most `n` restarts within the window (default 5); the next crash is `FAILED`.
    pub fn max_restarts(mut self, n: usize) -> Self {
        self.config.max_restarts = n;
        self
    }

    /// The window crashes are counted in (default 60 s).
    pub fn window(mut self, window: Duration) -> Self {
        self.config.window = window;
        self
    }

    /// The delay before the second restart in a row (default 100 ms); it doubles after.
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// The longest delay before a restart (default 30 s).
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.config.max_backoff = max;
        self
    }

    /// Kills a worker whose heartbeat stalls this long (off by default).
    pub fn hang_timeout(mut self, timeout: Duration) -> Self {
        self.config.hang_timeout = Some(timeout);
        self
    }

    /// Subscribes the watchdog on `bus`.
    ///
    /// # Errors
    ///
    /// Never in practice: the patterns are well formed.
    pub fn subscribe(self, bus: &mut Bus) -> Result<()> {
        bus.subscribe("daemon.worker.exited", self.clone())?;
        bus.subscribe(&format!("{RESTART}*"), self.clone())?;
        if self.config.hang_timeout.is_some() {
            bus.subscribe("daemon.ready", self.clone())?;
            bus.subscribe(HANG_CHECK, self)?;
        }
        Ok(())
    }

    fn delay(&self, crashes: usize) -> Duration {
        if crashes == 0 {
            return Duration::ZERO;
        }
        let exponent = u32::try_from(crashes - 1).unwrap_or(u32::MAX).min(30);
        self.config
            .backoff
            .saturating_mul(1 << exponent)
            .min(self.config.max_backoff)
    }

    fn exited(&mut self, event: &WorkerEvent, ctx: &mut Context<'_>) {
        let payload = event.payload().cloned().unwrap_or_default();
        if payload["crashed"] != true {
            return;
        }
        let name = event.worker().to_owned();
        let Some(workers) = ctx.workers() else { return };
        if workers.is_shutting_down() || workers.is_admin_stopped(&name) {
            return;
        }
        if payload["forever"] != true {
            error!(ctx.logger(), "a worker that is not forever crashed: stopping the daemon"; "worker" => &name);
            ctx.stop(1);
            return;
        }
        let now = Instant::now();
        let recent = {
            let mut memory = self.state.borrow_mut();
            let crashes = memory.crashes.entry(name.clone()).or_default();
            while crashes
                .front()
                .is_some_and(|t| now.duration_since(*t) > self.config.window)
            {
                crashes.pop_front();
            }
            crashes.push_back(now);
            crashes.len()
        };
        if recent > self.config.max_restarts {
            workers.fail(&name);
            error!(ctx.logger(), "worker failed: too many crashes";
                "worker" => &name, "crashes" => recent, "window_s" => self.config.window.as_secs_f64());
            ctx.emit(WorkerEvent::new("failed", name));
            return;
        }
        let delay = self.delay(recent - 1);
        let restarting = WorkerEvent::new("restarting", name.clone()).with_payload(Some(
            serde_json::json!({"delay_ms": delay.as_millis() as u64}),
        ));
        if delay.is_zero() {
            match workers.start(&name) {
                Ok(()) => info!(ctx.logger(), "worker restarted"; "worker" => &name),
                Err(e) => {
                    error!(ctx.logger(), "cannot restart the worker"; "worker" => &name, "error" => %e)
                }
            }
        } else {
            warn!(ctx.logger(), "worker restarts after a backoff"; "worker" => &name, "delay_ms" => delay.as_millis() as u64);
            ctx.timer(delay, format!("{RESTART}{name}"));
        }
        ctx.emit(restarting);
    }

    fn restart_due(&mut self, name: &str, ctx: &mut Context<'_>) {
        let Some(workers) = ctx.workers() else { return };
        let running = workers.info(name).is_ok_and(|w| w.pid.is_some());
        if running || workers.is_shutting_down() || workers.is_admin_stopped(name) {
            return;
        }
        if let Err(e) = workers.start(name) {
            error!(ctx.logger(), "cannot restart the worker"; "worker" => name, "error" => %e);
        }
    }

    fn check_hangs(&mut self, ctx: &mut Context<'_>) {
        let Some(timeout) = self.config.hang_timeout else {
            return;
        };
        let now = Instant::now();
        let log = ctx.logger().clone();
        let Some(workers) = ctx.workers() else { return };
        let mut hung = Vec::new();
        {
            let mut memory = self.state.borrow_mut();
            for info in workers.list() {
                let Some(beat) = info.heartbeat else {
                    memory.heartbeats.remove(&info.name);
                    continue;
                };
                let limit = timeout.max(info.looptime * 2);
                let seen = memory
                    .heartbeats
                    .entry(info.name.clone())
                    .or_insert((beat, now));
                if seen.0 != beat {
                    *seen = (beat, now);
                } else if info.state != State::Paused && now.duration_since(seen.1) > limit {
                    hung.push(info.name.clone());
                    memory.heartbeats.remove(&info.name);
                }
            }
        }
        for name in hung {
            let _ = workers.kill(&name, Signal::from_name("SIGKILL").expect("SIGKILL exists"));
            error!(log, "worker killed: its heartbeat stalled"; "worker" => &name);
        }
    }
}

impl Listener for Watchdog {
    fn handle(&mut self, event: &dyn Event, ctx: &mut Context<'_>) -> PostAction {
        if let Some(e) = event.downcast_ref::<WorkerEvent>() {
            self.exited(e, ctx);
        } else if let Some(t) = event.downcast_ref::<TimerEvent>() {
            match t.name().strip_prefix(RESTART) {
                Some(name) => self.restart_due(name, ctx),
                None => self.check_hangs(ctx),
            }
        } else if event.downcast_ref::<DaemonEvent>() == Some(&DaemonEvent::Ready) {
            if let Some(timeout) = self.config.hang_timeout {
                ctx.periodic(timeout / 2, HANG_CHECK);
            }
        }
        PostAction::Continue
    }
}
