//! How a worker is run and restarted: its looptime and its restart policy, like OTP's child
//! specifications.

use std::time::Duration;

use super::process::Process;
use crate::privs::Rlimits;

/// When a worker that ended is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Restart {
    /// Always (the ancestor's `forever`): after a crash and after a clean exit.
    Permanent,
    /// Only after an abnormal exit; a clean exit (code 0, or the worker stopping itself)
    /// ends it, `EXITED`.
    Transient,
    /// Never; its exit, clean or not, never stops the daemon.
    Temporary,
}

impl Restart {
    /// `permanent`, `transient` or `temporary`.
    pub fn name(self) -> &'static str {
        match self {
            Restart::Permanent => "permanent",
            Restart::Transient => "transient",
            Restart::Temporary => "temporary",
        }
    }
}

/// What happens when the policy gives up on a worker (more restarts than
/// [`Spec::max_restarts`] within its window).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GiveUp {
    /// It is marked `FAILED` (and `daemon.worker.failed` emitted); the daemon goes on and
    /// `worker.start` revives it.
    Fail,
    /// As `Fail`, then the daemon stops with exit code 1 (a worker the daemon cannot live
    /// without).
    StopDaemon,
}

/// Where a worker's standard output and standard error go ([`Spec::output`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    /// A pipe each, read by the daemon: every line is logged with the worker's name and
    /// its stream, and kept for `worker.log` (the default). Two descriptors in the daemon
    /// per worker.
    #[default]
    Separate,
    /// One pipe for both (supervisord's `redirect_stderr`): the lines are logged as
    /// `stdout`, in the order the worker wrote them. One descriptor in the daemon.
    Merged,
    /// Neither is read: both are `/dev/null`. What the worker logs through its logger still
    /// reaches the daemon's log, through the channel. No descriptor in the daemon, for fleets
    /// larger than the daemon's descriptor limit would allow otherwise.
    Discard,
}

impl Output {
    /// `separate`, `merged` or `discard`, as in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Output::Separate => "separate",
            Output::Merged => "merged",
            Output::Discard => "discard",
        }
    }

    /// The output a name in the configuration stands for.
    pub fn from_name(name: &str) -> Option<Output> {
        [Output::Separate, Output::Merged, Output::Discard]
            .into_iter()
            .find(|o| o.name() == name)
    }
}

/// A worker's looptime and restart policy. `Spec::every(looptime)` (or a bare `Duration`)
/// is a permanent worker with the default policy.
///
/// The policy: an ended worker is restarted according to its [`Restart`] type. One that ran
/// at least [`Spec::stable_after`] restarts at once; one that crashes soon after its start
/// again and again is restarted after a backoff that doubles from [`Spec::backoff`] up to
/// its cap, with up to a quarter of jitter (its first quick crash restarts at
/// once). Every restart counts toward the intensity limit: more than
/// [`Spec::max_restarts`] within its window and the policy gives up ([`GiveUp`]).
/// An exit that was asked for (an administrator's stop or restart, the daemon's shutdown)
/// never counts, and an administrator's stop always beats the policy.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use daimon::worker::{GiveUp, Restart, Spec};
///
/// let job = Spec::every(Duration::from_secs(1))
///     .restart(Restart::Transient)
///     .max_restarts(3, Duration::from_secs(30))
///     .give_up(GiveUp::StopDaemon);
/// assert_eq!(job.restart_type(), Restart::Transient);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub(crate) looptime: Duration,
    pub(crate) restart: Restart,
    pub(crate) give_up: GiveUp,
    pub(crate) max_restarts: usize,
    pub(crate) window: Duration,
    pub(crate) backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) stable_after: Duration,
    /// User, limits, niceness, environment and title of the process.
    pub(crate) process: Process,
    pub(crate) output: Output,
}

impl Spec {
    /// A permanent worker ticking every `looptime`, with the default policy: at most 5
    /// restarts in 60 s, then `FAILED`; backoff from 100 ms to 30 s; stable after 1 s.
    pub fn every(looptime: Duration) -> Spec {
        Spec {
            looptime,
            restart: Restart::Permanent,
            give_up: GiveUp::Fail,
            max_restarts: 5,
            window: Duration::from_secs(60),
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            stable_after: Duration::from_secs(1),
            process: Process::default(),
            output: Output::Separate,
        }
    }

    /// The restart type (default [`Restart::Permanent`]).
    pub fn restart(mut self, restart: Restart) -> Spec {
        self.restart = restart;
        self
    }

    /// What happens when the policy gives up (default [`GiveUp::Fail`]).
    pub fn give_up(mut self, give_up: GiveUp) -> Spec {
        self.give_up = give_up;
        self
    }

    /// At most `n` restarts within `window` (default 5 in 60 s); the next end gives up.
    pub fn max_restarts(mut self, n: usize, window: Duration) -> Spec {
        self.max_restarts = n;
        self.window = window;
        self
    }

    /// The first delay of the backoff and its cap (default 100 ms and 30 s).
    pub fn backoff(mut self, first: Duration, max: Duration) -> Spec {
        self.backoff = first;
        self.max_backoff = max.max(first);
        self
    }

    /// How long a worker must have run for its end not to count as a crash loop: it is
    /// restarted at once, with no backoff (default 1 s).
    pub fn stable_after(mut self, after: Duration) -> Spec {
        self.stable_after = after;
        self
    }

    /// Runs the worker as `user` (a name or a uid). Needs a daemon that keeps root (no
    /// daemon-level `user`) or runs as that same user; otherwise the worker exits at start
    /// with a log line naming `workers.NAME.user`.
    pub fn user(mut self, user: impl Into<String>) -> Spec {
        self.process.user = Some(user.into());
        self
    }

    /// Runs the worker with `group` (a name or a gid) as its primary group; default the
    /// user's primary group. Only with [`Spec::user`].
    pub fn group(mut self, group: impl Into<String>) -> Spec {
        self.process.group = Some(group.into());
        self
    }

    /// The worker's absolute niceness, `-20..=19` (lowering it needs root).
    pub fn nice(mut self, nice: i32) -> Spec {
        self.process.nice = Some(nice);
        self
    }

    /// Sets the environment variable `key` to `value` in the worker.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Spec {
        self.process.env.insert(key.into(), Some(value.into()));
        self
    }

    /// Removes the environment variable `key` in the worker.
    pub fn env_remove(mut self, key: impl Into<String>) -> Spec {
        self.process.env.insert(key.into(), None);
        self
    }

    /// The worker's resource limits (see [`Rlimits::from_json`]).
    pub fn rlimits(mut self, rlimits: Rlimits) -> Spec {
        self.process.rlimits = rlimits;
        self
    }

    /// The worker's process title, shown by `ps` (and its first 15 bytes by `top`); default
    /// `daimon: NAME`.
    pub fn title(mut self, title: impl Into<String>) -> Spec {
        self.process.title = Some(title.into());
        self
    }

    /// Replaces every process setting at once, e.g. with [`Process::from_json`] of a
    /// configuration object.
    pub fn process(mut self, process: Process) -> Spec {
        self.process = process;
        self
    }

    /// Where the worker's stdout and stderr go (default [`Output::Separate`]).
    pub fn output(mut self, output: Output) -> Spec {
        self.output = output;
        self
    }

    /// Where the worker's stdout and stderr go.
    pub fn output_mode(&self) -> Output {
        self.output
    }

    /// The looptime.
    pub fn looptime(&self) -> Duration {
        self.looptime
    }

    /// The restart type.
    pub fn restart_type(&self) -> Restart {
        self.restart
    }

    /// The intensity limit: at most this many restarts within this window.
    pub fn restart_limit(&self) -> (usize, Duration) {
        (self.max_restarts, self.window)
    }

    /// The backoff's first delay and its cap.
    pub fn backoff_range(&self) -> (Duration, Duration) {
        (self.backoff, self.max_backoff)
    }

    /// The backoff before the restart after `quick` crashes in a row soon after their start
    /// (1 for the first), before jitter: zero for the first, then doubling.
    pub(crate) fn backoff_for(&self, quick: u32) -> Duration {
        if quick <= 1 {
            return Duration::ZERO;
        }
        let exponent = (quick - 2).min(30);
        self.backoff
            .saturating_mul(1 << exponent)
            .min(self.max_backoff)
    }
}

impl From<Duration> for Spec {
    fn from(looptime: Duration) -> Spec {
        Spec::every(looptime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_second_quick_crash_up_to_the_cap() {
        let s = Spec::every(Duration::from_secs(1))
            .backoff(Duration::from_millis(100), Duration::from_millis(500));
        let delays: Vec<u128> = (1..=6).map(|n| s.backoff_for(n).as_millis()).collect();
        assert_eq!(delays, [0, 100, 200, 400, 500, 500]);
        assert_eq!(s.backoff_for(u32::MAX), Duration::from_millis(500));
    }
}
