//! Signals to a real daemon, the `echo_daemon` example: SIGTERM and SIGINT stop it cleanly,
//! the SIGHUP it subscribes to leaves it running, the SIGUSR2 it does not keeps its default
//! action (SIGUSR1 reopens the log: tests/hostile_ops.rs).
//!
//! Every test has its own temp dir and kills what it started, so they run in parallel.

mod common;

use std::os::unix::process::ExitStatusExt;

use common::{DEADLINE, Foreground, TestDir, accepts, wait_until};
use nix::sys::signal::Signal;

/// Asserts the standard pid file and socket are gone.
fn assert_cleaned_up(dir: &TestDir) {
    assert!(!dir.pidfile().exists(), "the pid file was left behind");
    assert!(!dir.socket().exists(), "the socket file was left behind");
}

fn foreground_stops_cleanly_on(sig: Signal) {
    let dir = TestDir::new();
    let mut daemon = Foreground::start(&dir, &[]);
    daemon.stop_with(sig);
    assert_cleaned_up(&dir);
}

#[test]
fn sigterm_stops_a_foreground_daemon_cleanly() {
    foreground_stops_cleanly_on(Signal::SIGTERM);
}

#[test]
fn sigint_stops_a_foreground_daemon_cleanly() {
    foreground_stops_cleanly_on(Signal::SIGINT);
}

fn detached_stops_cleanly_on(sig: Signal) {
    let dir = TestDir::new();
    let (out, daemon) = dir.launch(&dir.std_args(), &dir.pidfile());
    out.assert_code(0);
    let daemon = daemon.unwrap_or_else(|| panic!("no live daemon; stderr: {}", out.stderr));
    daemon.signal(sig);
    daemon.wait_gone();
    assert_cleaned_up(&dir);
}

#[test]
fn sigterm_stops_a_detached_daemon_cleanly() {
    detached_stops_cleanly_on(Signal::SIGTERM);
}

#[test]
fn sigint_stops_a_detached_daemon_cleanly() {
    detached_stops_cleanly_on(Signal::SIGINT);
}

#[test]
fn sighup_is_handled_and_the_daemon_keeps_running() {
    let dir = TestDir::new();
    let mut daemon = Foreground::start(&dir, &["-v"]);
    for round in 1..=2 {
        let logged = daemon.stderr().len();
        daemon.signal(Signal::SIGHUP);
        wait_until(&format!("a log line for SIGHUP #{round}"), DEADLINE, || {
            if let Some(status) = daemon.try_status() {
                panic!(
                    "SIGHUP #{round} ended the daemon ({status}, signal {:?}); stderr: {}",
                    status.signal(),
                    daemon.stderr()
                );
            }
            daemon.stderr().len() > logged
        });
        assert!(
            accepts(&dir.socket()),
            "the socket stopped accepting after SIGHUP"
        );
    }
    // Had the default action run for SIGHUP, the pending SIGHUP (signal 1) would have been
    // delivered before this SIGTERM (signal 15) and the exit status would say so.
    daemon.stop_with(Signal::SIGTERM);
    assert_cleaned_up(&dir);
}

#[test]
fn sigusr2_is_not_subscribed_and_keeps_its_default_action() {
    let dir = TestDir::new();
    let mut daemon = Foreground::start(&dir, &[]);
    daemon.signal(Signal::SIGUSR2);
    let status = daemon.wait_exit();
    assert_eq!(
        status.signal(),
        Some(Signal::SIGUSR2 as i32),
        "SIGUSR2 did not kill the daemon with its default action: {status}; stderr: {}",
        daemon.stderr()
    );
}

/// The bit of `sig` in the `SigBlk` line of /proc/PID/status.
fn blocked(pid: i32, sig: Signal) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (sig as i32 - 1)) != 0)
}

/// While the daemon stops its workers, SIGCHLD is blocked (they are reaped as their channels
/// close, and every 50 ms): in a stop of thousands, one delivery per worker was a tenth of the
/// daemon's time. Not before the stop; and the stop still ends, every worker reaped.
#[test]
fn sigchld_is_blocked_while_the_workers_stop() {
    let dir = TestDir::new();
    let mut args = vec!["-f".to_owned(), "--workers".into(), "2".into()];
    args.extend(["--spindown-delay".into(), "1.5".into()]);
    args.extend(dir.std_args());
    let mut cmd = std::process::Command::new(common::example_named("worker_daemon"));
    cmd.args(&args).current_dir(dir.path());
    let mut daemon = Foreground::spawn_cmd(&dir, cmd);
    daemon.wait_ready_std(&dir);
    let pid = daemon.pid();
    assert!(
        !blocked(pid, Signal::SIGCHLD),
        "SIGCHLD blocked before the stop"
    );
    daemon.signal(Signal::SIGTERM);
    wait_until("SIGCHLD blocked while stopping", DEADLINE, || {
        blocked(pid, Signal::SIGCHLD) || daemon.try_status().is_some()
    });
    assert!(
        daemon.try_status().is_none(),
        "the daemon exited before its workers' 1.5 s spindown: {}",
        daemon.stderr()
    );
    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "stderr: {}", daemon.stderr());
    assert_eq!(
        daemon.log_lines(&["worker exited"]),
        2,
        "{}",
        daemon.stderr()
    );
}
