//! Regression tests for the supervision bugs measured on the first round's code (each one
//! failed there): a restart that poisoned the new process, a stop lost after a restart,
//! worker messages posing as the supervisor's events or swallowed, reserved commands going
//! around the supervisor, a clean end taken for a crash, a crash count kept across a
//! `worker.start`, an ack stranded behind a burst, and a backoff after a stable run.
//!
//! They run the `worker_daemon` example with short timeouts; each daemon has its own temp
//! dir and is killed when its test ends. The fixed waits are the named observation windows
//! of negative checks ("does not happen within ..."), and one stable run of a worker.

mod common;

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{DEADLINE, Foreground, TestDir, example_named, unix_addr, wait_until};
use daimon::client::{Client, Protocol};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

const LOOPING: u64 = 1;
const PAUSED: u64 = 2;
const EXITED: u64 = 4;
const FAILED: u64 = 5;

fn start(dir: &TestDir, extra: &[&str]) -> Foreground {
    let mut cmd = Command::new(example_named("worker_daemon"));
    cmd.args(["-f", "-v"])
        .args(extra)
        .args(dir.std_args())
        .current_dir(dir.path());
    let mut daemon = Foreground::spawn_cmd(dir, cmd);
    daemon.wait_ready_std(dir);
    daemon
}

fn client(dir: &TestDir) -> Client {
    let address = unix_addr(&dir.socket()).parse().expect("an address");
    Client::connect_with(&address, Protocol::Json, Duration::from_secs(10)).expect("connecting")
}

/// w0's entry in `worker.list`.
fn w0(dir: &TestDir) -> Value {
    let list = client(dir)
        .call("worker.list", Value::Null)
        .expect("worker.list");
    list[0].clone()
}

fn pid(entry: &Value) -> Option<i32> {
    entry["pid"].as_i64().map(|p| p as i32)
}

/// Waits until w0 is LOOPING with a pid other than `old`; returns it.
fn wait_looping(dir: &TestDir, old: Option<i32>) -> i32 {
    let mut found = None;
    wait_until("w0 LOOPING with a new pid", DEADLINE, || {
        let e = w0(dir);
        found = pid(&e).filter(|p| Some(*p) != old && e["state"] == LOOPING);
        found.is_some()
    });
    found.expect("checked")
}

/// Checks `cond` for the whole window `d`.
fn holds_for(d: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        assert!(cond(), "no longer true: {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn send(dir: &TestDir, command: &str, payload: Value) {
    client(dir)
        .call("worker.send", json!(["w0", command, payload]))
        .expect("worker.send");
}

#[test]
fn a_restart_leaves_the_new_process_alone() {
    for extra in [&[][..], &["--once"][..]] {
        let dir = TestDir::new();
        let mut args = vec!["--shutdown-timeout", "1"];
        args.extend_from_slice(extra);
        let mut daemon = start(&dir, &args);
        let old = wait_looping(&dir, None);
        client(&dir).call("worker.restart", json!(["w0"])).unwrap();
        let new = wait_looping(&dir, Some(old));
        // Three times the old process's escalation deadline (shutdowntimeout / 2).
        holds_for(Duration::from_millis(1500), "w0 keeps its new pid", || {
            let e = w0(&dir);
            pid(&e) == Some(new) && e["restarts"] == 1
        });
        assert!(
            daemon.try_status().is_none(),
            "the daemon stopped: {}",
            daemon.stderr()
        );
        assert!(
            !daemon.stderr().contains("did not stop"),
            "{extra:?}: {}",
            daemon.stderr()
        );
    }
}

#[test]
fn a_stop_right_after_a_restart_wins() {
    let dir = TestDir::new();
    let _daemon = start(&dir, &["--shutdown-timeout", "1"]);
    wait_looping(&dir, None);
    let mut c = client(&dir);
    c.call("worker.restart", json!(["w0"])).unwrap();
    c.call("worker.stop", json!(["w0"])).unwrap();
    wait_until("w0 EXITED", DEADLINE, || {
        let e = w0(&dir);
        pid(&e).is_none() && e["state"] == EXITED
    });
    holds_for(Duration::from_millis(1500), "w0 stays stopped", || {
        pid(&w0(&dir)).is_none()
    });
}

#[test]
fn a_worker_cannot_pose_as_the_supervisor_and_no_message_is_swallowed() {
    let dir = TestDir::new();
    let mut daemon = start(&dir, &["--once"]);
    let p = wait_looping(&dir, None);
    send(
        &dir,
        "say",
        json!(["exited", {"crashed": true, "forever": false}]),
    );
    send(&dir, "say", json!(["failed", {}]));
    send(&dir, "say", json!(["log", {"hello": 1}]));
    send(&dir, "say", json!(["ack", {"seq": 1}]));
    wait_until("the four messages logged", DEADLINE, || {
        ["exited", "failed", "log", "ack"].iter().all(|c| {
            daemon
                .stderr()
                .lines()
                .any(|l| l.contains("worker message") && l.contains(&format!("command: {c}")))
        })
    });
    holds_for(
        Duration::from_millis(300),
        "the daemon and w0 go on",
        || pid(&w0(&dir)) == Some(p),
    );
    assert!(daemon.try_status().is_none(), "{}", daemon.stderr());
}

#[test]
fn the_supervisors_commands_cannot_be_sent_around_it() {
    let dir = TestDir::new();
    let _daemon = start(&dir, &[]);
    let p = wait_looping(&dir, None);
    for reserved in ["stop", "pause", "resume"] {
        let err = client(&dir)
            .call("worker.send", json!(["w0", reserved]))
            .unwrap_err();
        assert!(
            err.to_string().contains(&format!("worker.{reserved}")),
            "{reserved}: {err}"
        );
    }
    holds_for(Duration::from_millis(300), "w0 untouched", || {
        let e = w0(&dir);
        pid(&e) == Some(p) && e["restarts"] == 0 && e["state"] == LOOPING
    });
}

#[test]
fn a_worker_that_ends_its_work_cleanly_does_not_stop_the_daemon() {
    let dir = TestDir::new();
    let mut daemon = start(&dir, &["--once"]);
    wait_looping(&dir, None);
    send(&dir, "finish", Value::Null);
    wait_until("w0 EXITED", DEADLINE, || w0(&dir)["state"] == EXITED);
    holds_for(
        Duration::from_millis(500),
        "w0 ended, the daemon runs",
        || {
            let e = w0(&dir);
            pid(&e).is_none() && e["state"] == EXITED
        },
    );
    assert!(daemon.try_status().is_none(), "{}", daemon.stderr());
}

#[test]
fn start_after_failed_counts_crashes_from_zero() {
    let dir = TestDir::new();
    // Every crash restarts at once (stable after 0 s): the limit is 5 restarts, then FAILED.
    let _daemon = start(&dir, &["--stable-after", "0"]);
    let mut p = wait_looping(&dir, None);
    for _ in 0..5 {
        kill(Pid::from_raw(p), Signal::SIGKILL).unwrap();
        p = wait_looping(&dir, Some(p));
    }
    kill(Pid::from_raw(p), Signal::SIGKILL).unwrap();
    wait_until("w0 FAILED", DEADLINE, || w0(&dir)["state"] == FAILED);
    client(&dir).call("worker.start", json!(["w0"])).unwrap();
    let p = wait_looping(&dir, None);
    kill(Pid::from_raw(p), Signal::SIGKILL).unwrap();
    wait_looping(&dir, Some(p));
}

#[test]
fn an_ack_behind_a_burst_of_messages_arrives() {
    let dir = TestDir::new();
    let daemon = start(&dir, &[]);
    wait_looping(&dir, None);
    send(&dir, "flood", json!(5000));
    // The pause is queued behind the burst the worker sends while it handles `flood`.
    let state = client(&dir).call("worker.pause", json!(["w0"])).unwrap();
    assert_eq!(state, json!(PAUSED), "{}", daemon.stderr());
    wait_until("the whole burst read", DEADLINE, || {
        daemon.stderr().contains("command: flood")
    });
}

#[test]
fn a_crash_after_a_stable_run_restarts_at_once() {
    let dir = TestDir::new();
    let daemon = start(&dir, &[]);
    let p = wait_looping(&dir, None);
    kill(Pid::from_raw(p), Signal::SIGKILL).unwrap();
    let p = wait_looping(&dir, Some(p));
    // A stable run: longer than the stable time (1 s by default).
    thread::sleep(Duration::from_millis(2000));
    kill(Pid::from_raw(p), Signal::SIGKILL).unwrap();
    wait_looping(&dir, Some(p));
    assert!(
        !daemon.stderr().contains("after a backoff"),
        "{}",
        daemon.stderr()
    );
}
