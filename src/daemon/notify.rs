//! systemd's side of the daemon: the notify protocol (`READY=1` once every worker is up,
//! `STATUS=`, `WATCHDOG=1` from a reactor timer, `RELOADING=1`, `STOPPING=1`,
//! `EXTEND_TIMEOUT_USEC=`), and the same readiness for the `-d` launcher.
//!
//! The messages are formatted by the `sd-notify` crate ([`NotifyState`]), which also reads
//! `WATCHDOG_USEC`/`WATCHDOG_PID`. They are sent by our own [`send`] (over
//! `crate::process`'s datagram code) because the crate's `notify` connects to
//! `NOTIFY_SOCKET` as a path and does not handle the abstract namespace (`@...`), which
//! systemd uses in some setups; ours does both.
//!
//! `NOTIFY_SOCKET` stays in the daemon's environment (it sends from any point of its life)
//! and is removed in each worker right after its fork ([`forget_in_worker`]), so what a
//! worker execs does not see it. That is not a security boundary: a forked worker has the
//! daemon's memory and could find the path anyway. The boundary is `NotifyAccess=main` in
//! the unit (contrib/systemd): systemd then ignores every message not from the main pid.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use slog::{Logger, info, warn};

use crate::process::Readiness;

/// How long the daemon waits for its workers' spinup before it says it is ready anyway
/// (systemd's default `TimeoutStartSec`, so a unit without its own is killed no earlier).
pub(crate) const START_BOUND: Duration = Duration::from_secs(90);

/// How often the readiness is checked until every worker is up.
const READY_POLL: Duration = Duration::from_millis(20);

/// How often `STATUS=` is brought up to date, and `EXTEND_TIMEOUT_USEC=` sent while stopping.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// What `EXTEND_TIMEOUT_USEC=` adds to the time the shutdown may still take.
const EXTEND_MARGIN: Duration = Duration::from_secs(5);

/// At most one logged send failure per this period (the rest are counted).
const ERROR_LOG_EVERY: Duration = Duration::from_secs(60);

/// The daemon's notify timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Until ready: are all workers up?
    Readiness,
    /// `WATCHDOG=1`.
    Watchdog,
    /// `STATUS=` when it changed; `EXTEND_TIMEOUT_USEC=` while stopping.
    Status,
}

/// How far the installed workers are (counts by state), from the supervisor.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Picture {
    /// LOOPING or PAUSED, or said ready from their spinup.
    pub looping: usize,
    /// Still in their spinup.
    pub starting: usize,
    /// Gone, with a restart armed (backoff).
    pub restarting: usize,
    /// In their spindown.
    pub stopping: usize,
    /// Ended cleanly, no restart.
    pub exited: usize,
    /// Crashed or given up, no restart.
    pub failed: usize,
}

impl Picture {
    /// Every worker is past its spinup: looping, or ended (a worker that fails at start
    /// does not hold the readiness: it shows in the status instead).
    pub fn settled(&self) -> bool {
        self.starting == 0
    }

    /// Processes still there.
    pub fn alive(&self) -> usize {
        self.looping + self.starting + self.stopping
    }

    /// `3 workers looping, 1 failed`.
    pub fn status(&self) -> String {
        let total = self.looping
            + self.starting
            + self.restarting
            + self.stopping
            + self.exited
            + self.failed;
        if total == 0 {
            return "no workers".to_owned();
        }
        let parts: Vec<String> = [
            (self.looping, "looping"),
            (self.starting, "starting"),
            (self.restarting, "restarting"),
            (self.stopping, "stopping"),
            (self.exited, "exited"),
            (self.failed, "failed"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if self.looping == 0 {
            return format!("workers: {}", parts.join(", "));
        }
        let noun = if self.looping == 1 {
            "worker"
        } else {
            "workers"
        };
        let mut s = format!("{} {noun} looping", self.looping);
        for p in &parts[1..] {
            s.push_str(", ");
            s.push_str(p);
        }
        s
    }
}

/// The daemon's notifier: the systemd socket (if any), the launcher's readiness pipe (under
/// `-d`), and what was last said.
pub(crate) struct Notifier {
    target: Option<OsString>,
    launcher: Option<Readiness>,
    logger: Logger,
    ready: bool,
    started: Instant,
    last_status: String,
    watchdog: Option<Duration>,
    /// While stopping: when the workers will have been given up on at the latest.
    stop_by: Option<Instant>,
    errors: Throttle,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and the watchdog settings of this process.
    pub fn new(logger: Logger, launcher: Option<Readiness>) -> Notifier {
        Notifier {
            target: std::env::var_os("NOTIFY_SOCKET").filter(|t| !t.is_empty()),
            launcher,
            logger,
            ready: false,
            started: Instant::now(),
            last_status: String::new(),
            watchdog: sd_notify::watchdog_enabled().filter(|d| !d.is_zero()),
            stop_by: None,
            errors: Throttle::default(),
        }
    }

    /// The launcher's pipe back, if it was never told (to report a failure).
    pub fn take_launcher(&mut self) -> Option<Readiness> {
        self.launcher.take()
    }

    /// The timers to arm once the workers are started: (first due, period, which); the
    /// readiness check has no period: it is armed again (at [`Notifier::next_check`]) as long
    /// as [`Notifier::due`] says so.
    pub fn timers(&self) -> Vec<(Instant, Option<Duration>, Timer)> {
        let now = Instant::now();
        let mut t = vec![(now, None, Timer::Readiness)];
        if self.target.is_none() {
            // No systemd: an idle daemon stays idle (no status to keep up to date).
            return t;
        }
        t.push((now + STATUS_EVERY, Some(STATUS_EVERY), Timer::Status));
        if let Some(usec) = self.watchdog {
            // Half the period, as sd_watchdog_enabled(3) advises.
            t.push((
                now,
                Some((usec / 2).max(Duration::from_millis(1))),
                Timer::Watchdog,
            ));
        }
        t
    }

    /// When the readiness check runs again.
    pub fn next_check() -> Instant {
        Instant::now() + READY_POLL
    }

    /// A timer is due. Returns true when the readiness check must be armed again.
    pub fn due(&mut self, timer: Timer, picture: Picture) -> bool {
        match timer {
            Timer::Readiness => {
                // Stopped before the workers were up: never READY after STOPPING.
                if self.ready || self.stop_by.is_some() {
                    return false;
                }
                if picture.settled() {
                    self.ready_now(picture);
                    return false;
                }
                if self.started.elapsed() >= START_BOUND {
                    warn!(self.logger, "workers still in their spinup: ready anyway";
                        "starting" => picture.starting, "bound_secs" => START_BOUND.as_secs());
                    self.ready_now(picture);
                    return false;
                }
                true
            }
            Timer::Watchdog => {
                self.watchdog();
                false
            }
            Timer::Status => {
                if let Some(by) = self.stop_by {
                    // Both in one datagram, every time: the extension must be renewed.
                    let left = by.saturating_duration_since(Instant::now());
                    let n = picture.alive();
                    let noun = if n == 1 { "worker" } else { "workers" };
                    let status = format!("stopping: {n} {noun} left");
                    self.send(&[
                        NotifyState::ExtendTimeoutUsec(extend_usec(left + EXTEND_MARGIN)),
                        NotifyState::Status(&status),
                    ]);
                    self.last_status = status;
                } else if self.ready {
                    self.status(&picture.status());
                }
                false
            }
        }
    }

    fn ready_now(&mut self, picture: Picture) {
        let status = picture.status();
        info!(self.logger, "workers up"; "status" => &status);
        if let Some(mut launcher) = self.launcher.take() {
            launcher.ready();
        }
        self.last_status = status.clone();
        self.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
        self.ready = true;
    }

    /// Whether `READY=1` went out (a reload before it says nothing to systemd).
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// `READY=1` (after a reload).
    pub fn ready(&mut self) {
        self.send(&[NotifyState::Ready]);
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=` (systemd's `Type=notify-reload` wants both).
    pub fn reloading(&mut self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// `STOPPING=1`; from now on the status timer extends systemd's stop timeout until
    /// `stop_by` (plus a margin).
    pub fn stopping(&mut self, stop_by: Instant) {
        self.stop_by = Some(stop_by);
        let left = stop_by.saturating_duration_since(Instant::now());
        let extend = extend_usec(left + EXTEND_MARGIN);
        self.send(&[
            NotifyState::Stopping,
            NotifyState::ExtendTimeoutUsec(extend),
        ]);
    }

    /// `STATUS=`, when it differs from the last one.
    pub fn status(&mut self, text: &str) {
        if text != self.last_status {
            self.last_status = text.to_owned();
            self.send(&[NotifyState::Status(text)]);
        }
    }

    /// `EXTEND_TIMEOUT_USEC=`.
    // The stop path sends its own (with the status); kept for the reload track's long reloads.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn extend_timeout(&mut self, by: Duration) {
        self.send(&[NotifyState::ExtendTimeoutUsec(extend_usec(by))]);
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&mut self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// Sends when there is a socket; a failure is logged (throttled), never fatal.
    fn send(&mut self, states: &[NotifyState<'_>]) {
        let Some(target) = &self.target else {
            return;
        };
        if let Err(e) = send(target, states) {
            if let Some(suppressed) = self.errors.allow(Instant::now()) {
                warn!(self.logger, "cannot notify systemd"; "error" => %e,
                    "suppressed_since_last" => suppressed);
            }
        }
    }
}

/// Formats `states` one per line, as sd_notify(3) wants, and sends them in one datagram.
pub(crate) fn send(target: &OsString, states: &[NotifyState<'_>]) -> std::io::Result<()> {
    let text = format_states(states);
    crate::process::send_notification(target, &text)
}

fn format_states(states: &[NotifyState<'_>]) -> String {
    let mut text = String::new();
    for s in states {
        text.push_str(&s.to_string());
        text.push('\n');
    }
    text
}

fn extend_usec(by: Duration) -> u32 {
    u32::try_from(by.as_micros()).unwrap_or(u32::MAX)
}

/// In a freshly forked worker: forget systemd's variables, so what the worker execs does
/// not talk to systemd as if it were the daemon or take its sockets.
///
/// # Safety
///
/// Only in the child right after `fork()` of the single-threaded daemon: no other thread
/// exists that could read the environment concurrently.
pub(crate) unsafe fn forget_in_worker() {
    for var in [
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
    ] {
        // SAFETY: the caller guarantees this process has a single thread.
        unsafe { std::env::remove_var(var) };
    }
}

/// One log line per period; counts the rest.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(suppressed since the last)` when a line may be logged now.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(at) if now.duration_since(at) < ERROR_LOG_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    fn notifier(path: &std::path::Path) -> Notifier {
        let mut n = Notifier::new(Logger::root(slog::Discard, slog::o!()), None);
        n.target = Some(path.as_os_str().to_owned());
        n
    }

    fn recv(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 1024];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn status_names_every_state_present() {
        let p = Picture {
            looping: 3,
            failed: 1,
            ..Picture::default()
        };
        assert_eq!(p.status(), "3 workers looping, 1 failed");
        let one = Picture {
            looping: 1,
            ..Picture::default()
        };
        assert_eq!(one.status(), "1 worker looping");
        let none_up = Picture {
            starting: 2,
            ..Picture::default()
        };
        assert_eq!(none_up.status(), "workers: 2 starting");
        assert!(!none_up.settled());
        assert_eq!(Picture::default().status(), "no workers");
    }

    #[test]
    fn messages_on_the_wire() {
        let dir = std::env::temp_dir().join(format!("daimon-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("n.sock");
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        let mut n = notifier(&path);
        // Not ready while a worker is in its spinup; ready (with the status) once none is.
        let starting = Picture {
            looping: 1,
            starting: 1,
            ..Picture::default()
        };
        assert!(n.due(Timer::Readiness, starting));
        let up = Picture {
            looping: 2,
            ..Picture::default()
        };
        assert!(!n.due(Timer::Readiness, up));
        assert_eq!(recv(&socket), "READY=1\nSTATUS=2 workers looping\n");
        n.reloading();
        let reloading = recv(&socket);
        let mut lines = reloading.lines();
        assert_eq!(lines.next(), Some("RELOADING=1"));
        let usec: u64 = lines
            .next()
            .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
            .and_then(|v| v.parse().ok())
            .expect("MONOTONIC_USEC with a number");
        assert!(usec > 0);
        n.ready();
        assert_eq!(recv(&socket), "READY=1\n");
        n.watchdog();
        assert_eq!(recv(&socket), "WATCHDOG=1\n");
        // The same status twice is sent once.
        n.status("x");
        n.status("x");
        n.status("y");
        assert_eq!(recv(&socket), "STATUS=x\n");
        assert_eq!(recv(&socket), "STATUS=y\n");
        n.extend_timeout(Duration::from_secs(2));
        assert_eq!(recv(&socket), "EXTEND_TIMEOUT_USEC=2000000\n");
        n.stopping(Instant::now() + Duration::from_secs(10));
        let stopping = recv(&socket);
        assert!(
            stopping.starts_with("STOPPING=1\nEXTEND_TIMEOUT_USEC="),
            "{stopping}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_send_failure_is_logged_once_per_period() {
        let mut t = Throttle::default();
        let now = Instant::now();
        assert_eq!(t.allow(now), Some(0));
        assert_eq!(t.allow(now + Duration::from_secs(1)), None);
        assert_eq!(t.allow(now + Duration::from_secs(2)), None);
        assert_eq!(
            t.allow(now + ERROR_LOG_EVERY + Duration::from_secs(1)),
            Some(2)
        );
        // And a missing socket does not panic or stop anything.
        let mut n = notifier(std::path::Path::new("/nonexistent/daimon/notify.sock"));
        n.watchdog();
        n.watchdog();
    }
}
