//! daimonctl's commands that follow the daemon's events, against real example daemons:
//! `events`, and `start`/`stop`/`restart` waiting for the outcome.

#[path = "../../tests/common/mod.rs"]
mod common;
mod ctl;

use common::TestDir;
use ctl::{Background, ctl, daemon, wait_looping, worker};
use nix::sys::signal::Signal;
use serde_json::Value;

/// The audit event of a `daemon.status` call: the tests make such calls until the events
/// command prints one, and then know its subscription is live.
const PROBE: &str = "daemon.call.daemon.status";

/// Calls `daemon.status` until `printed` (the events command's output) shows it.
fn wait_live(dir: &TestDir, printed: impl Fn() -> String) {
    common::wait_until("the subscription live", common::DEADLINE, || {
        ctl(dir, &["call", "daemon.status"]).assert_code(0);
        printed().contains(PROBE)
    });
}

/// `HH:MM:SS.mmm ` at the start of a line.
fn has_clock(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 13
        && [0, 1, 3, 4, 6, 7, 9, 10, 11]
            .iter()
            .all(|&i| b[i].is_ascii_digit())
        && (b[2], b[5], b[8], b[12]) == (b':', b':', b'.', b' ')
}

#[test]
fn events_prints_a_workers_restart_and_ends_0_on_ctrl_c() {
    let dir = TestDir::new();
    let _daemon = daemon(&dir, "log_daemon", &[]);
    wait_looping(&dir, &["w0"]);
    let before = worker(&dir, "w0")["pid"].as_i64().expect("a pid");
    let mut events = Background::spawn(&dir, &["events", "daemon.worker.*", PROBE]);
    wait_live(&dir, || events.stdout());
    ctl(&dir, &["restart", "--no-wait", "w0"]).assert_code(0);
    let started = events.wait_line("daemon.worker.started");
    let after = worker(&dir, "w0")["pid"].as_i64().expect("a new pid");
    assert_ne!(before, after);
    let out = events.stdout();
    let lines: Vec<&str> = out.lines().filter(|l| !l.contains(PROBE)).collect();
    assert!(out.lines().all(has_clock), "{out}");
    let exited = lines
        .iter()
        .position(|l| l.contains(" daemon.worker.exited worker=w0 "))
        .unwrap_or_else(|| panic!("no exited line in {out}"));
    let started_at = lines.iter().position(|l| *l == started).unwrap();
    assert!(exited < started_at, "exited before started: {out}");
    assert!(
        lines[exited].contains(&format!(" pid={before} ")),
        "{}",
        lines[exited]
    );
    assert!(
        lines[exited].contains(" requested=true"),
        "{}",
        lines[exited]
    );
    assert_eq!(
        &started[13..],
        format!("daemon.worker.started worker=w0 pid={after} restarts=1")
    );
    events.signal(Signal::SIGINT);
    let status = events.wait_exit();
    assert_eq!(status.code(), Some(0), "stderr: {}", events.stderr());
}

#[test]
fn events_json_then_an_error_when_the_daemon_goes_away() {
    let dir = TestDir::new();
    let mut daemon = daemon(&dir, "log_daemon", &[]);
    wait_looping(&dir, &["w0"]);
    let mut events = Background::spawn(&dir, &["--json", "events", "daemon.worker.*", PROBE]);
    wait_live(&dir, || events.stdout());
    ctl(&dir, &["restart", "w0"]).assert_code(0);
    events.wait_line("daemon.worker.started");
    daemon.stop_with(Signal::SIGTERM);
    let status = events.wait_exit();
    assert_eq!(status.code(), Some(1), "stdout: {}", events.stdout());
    let err = events.stderr();
    assert!(err.starts_with("error: the daemon went away"), "{err:?}");
    let lines: Vec<Value> = events
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let exited = lines
        .iter()
        .find(|e| e["name"] == "daemon.worker.exited")
        .unwrap_or_else(|| panic!("w0's exit missing from {lines:?}"));
    assert_eq!(exited["data"]["worker"], "w0");
    assert!(exited["subscription"].as_u64().is_some_and(|s| s > 0));
    assert!(exited["time"].as_f64().is_some_and(|t| t > 1.7e9));
}

#[test]
fn events_ends_0_when_its_output_is_closed() {
    let dir = TestDir::new();
    let _daemon = daemon(&dir, "log_daemon", &[]);
    // head takes the first line and exits; daimonctl notices the closed pipe, with nothing
    // more to print, and ends with 0.
    let script = format!(
        "{{ '{}' -s '{}' events; echo ctl=$? >&2; }} | head -1",
        env!("CARGO_BIN_EXE_daimonctl"),
        common::unix_addr(&dir.socket())
    );
    let (out, err) = (dir.join("head.out"), dir.join("head.err"));
    let mut sh = std::process::Command::new("sh")
        .args(["-c", &script])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let mut status = None;
    // Each call is an event (its audit) for head to read.
    common::wait_until("the pipeline to end", common::DEADLINE, || {
        ctl(&dir, &["call", "daemon.status"]).assert_code(0);
        status = sh.try_wait().unwrap();
        status.is_some()
    });
    assert_eq!(status.unwrap().code(), Some(0));
    let (out, err) = (
        std::fs::read_to_string(out).unwrap(),
        std::fs::read_to_string(err).unwrap(),
    );
    assert!(err.contains("ctl=0"), "stderr {err:?}");
    assert_eq!(out.lines().count(), 1, "{out:?}");
    assert!(has_clock(&out), "{out:?}");
}

#[test]
fn stop_start_restart_return_once_the_worker_got_there() {
    let dir = TestDir::new();
    let _daemon = daemon(&dir, "log_daemon", &["--workers", "2"]);
    wait_looping(&dir, &["w0", "w1"]);
    // Each answers only once the worker is where it was sent: the list agrees at once.
    let out = ctl(&dir, &["stop", "w0"]);
    out.assert_code(0);
    assert_eq!(out.stdout, "w0 stopped (EXITED)\n");
    assert_eq!(worker(&dir, "w0")["statename"], "EXITED");
    let out = ctl(&dir, &["start", "w0"]);
    out.assert_code(0);
    let w0 = worker(&dir, "w0");
    assert_eq!(w0["statename"], "LOOPING");
    assert_eq!(
        out.stdout,
        format!("w0 started (LOOPING, pid {})\n", w0["pid"])
    );
    let before = worker(&dir, "w1")["pid"].as_i64().unwrap();
    let out = ctl(&dir, &["--json", "restart", "w1", "--timeout", "20"]);
    out.assert_code(0);
    let entry: Value = serde_json::from_str(&out.stdout).expect("the worker as JSON");
    assert_eq!(entry["name"], "w1");
    assert_eq!(entry["statename"], "LOOPING");
    let after = entry["pid"].as_i64().expect("a pid");
    assert_ne!(after, before, "a new process");
    assert_eq!(worker(&dir, "w1")["pid"], after);
    // Errors: an unknown worker, a worker already running, a bad --timeout.
    ctl(&dir, &["restart", "nope"])
        .assert_code(1)
        .assert_error_line()
        .assert_stderr_has("nope");
    ctl(&dir, &["start", "w0"])
        .assert_code(1)
        .assert_error_line();
    ctl(&dir, &["stop", "w0", "--timeout", "x"]).assert_code(2);
}

#[test]
fn a_worker_that_never_gets_there_is_an_error_in_bounded_time() {
    let dir = TestDir::new();
    // Crashing at once, each start: never LOOPING for long, soon FAILED or backing off.
    let _daemon = daemon(&dir, "log_daemon", &["--mode", "crash"]);
    let out = ctl(&dir, &["restart", "w0", "--timeout", "1"]);
    assert!(
        out.elapsed < std::time::Duration::from_secs(5),
        "{:?}",
        out.elapsed
    );
    // It crashes in its spinup, so it is never LOOPING: refused at once (not running),
    // FAILED, or not there within the second.
    out.assert_code(1)
        .assert_error_line()
        .assert_stderr_has("w0");
}

#[test]
fn call_worker_prints_the_workers_answer() {
    let dir = TestDir::new();
    let _daemon = daemon(&dir, "worker_daemon", &[]);
    wait_looping(&dir, &["w0"]);
    let out = ctl(&dir, &["call-worker", "w0", "echo", "hi"]);
    out.assert_code(0);
    assert_eq!(out.stdout, "hi\n");
    let out = ctl(
        &dir,
        &["--json", "call-worker", "w0", "echo", "{\"n\": [1, 2]}"],
    );
    out.assert_code(0);
    assert_eq!(out.stdout, "{\"n\":[1,2]}\n");
    // The worker's own error, code and message.
    ctl(&dir, &["call-worker", "w0", "fail", "[4243, \"no luck\"]"])
        .assert_code(1)
        .assert_stderr_has("4243")
        .assert_stderr_has("no luck");
    ctl(&dir, &["call-worker", "nope", "echo"])
        .assert_code(1)
        .assert_stderr_has("nope");
}
