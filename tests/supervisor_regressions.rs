//! Regressions of the worker supervisor, measured on the first design (346cf78: the manager
//! in `src/worker/manager*`, the `Watchdog` of `daimon-listeners`), on the `worker_daemon`
//! example. Each test asserts the correct behaviour and is named after it; each one failed
//! on that code for the reason its doc comment gives (the last one, a descriptor of the
//! worker's value, was closed in the worker there).
//!
//! Every test has its own temp dir and daemon, killed when the test ends. Every wait polls
//! with a deadline; the fixed waits are short, named observation windows of negative checks
//! ("keeps its pid", "stays stopped"), and one named stable run ([`STABLE_RUN`]).
//!
//! The example's test commands are in one function of `examples/worker_daemon.rs`
//! (`test_command`), next to its `worker message` log line. A filtered run
//! does not build the example: `cargo build --examples` first, or an old binary is tested.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    DEADLINE, Foreground, TestDir, alive, example_named, path_str, unix_addr, wait_until,
};
use daimon::client::{Client, Protocol};
use daimon::{Error, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// The worker states, as `worker.status` numbers them.
const LOOPING: i64 = 1;
const PAUSED: i64 = 2;
const EXITED: i64 = 4;
const FAILED: i64 = 5;

/// The `--shutdown-timeout` of the tests that stop or restart workers: the stop escalation
/// (SIGTERM) is due after half of it.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);
const SHUTDOWN_TIMEOUT_ARG: &str = "1";

/// How long a negative check watches for something that must not happen.
const OBSERVE: Duration = Duration::from_millis(1000);

/// How long a worker runs between two crashes to count as stable (2 s and more).
const STABLE_RUN: Duration = Duration::from_millis(2500);

/// Starts `worker_daemon -f` with `extra` on the test dir's standard paths; waits until ready.
fn start(dir: &TestDir, extra: &[&str]) -> Foreground {
    let mut cmd = Command::new(example_named("worker_daemon"));
    cmd.arg("-f")
        .args(extra)
        .args(dir.std_args())
        .current_dir(dir.path());
    let mut daemon = Foreground::spawn_cmd(dir, cmd);
    daemon.wait_ready_std(dir);
    daemon
}

/// A JSON client whose calls wait at most `timeout` for their reply.
fn client_with(dir: &TestDir, timeout: Duration) -> Client {
    let address = unix_addr(&dir.socket()).parse().expect("an address");
    Client::connect_with(&address, Protocol::Json, timeout).expect("connecting")
}

fn client(dir: &TestDir) -> Client {
    client_with(dir, Duration::from_secs(5))
}

/// `w0`'s entry in `worker.list`, or why there is none (the daemon is gone, ...).
fn try_w0(client: &mut Client) -> std::result::Result<Value, String> {
    let list = client
        .call("worker.list", json!([]))
        .map_err(|e| format!("worker.list failed: {e}"))?;
    list.as_array()
        .and_then(|l| l.iter().find(|w| w["name"] == "w0"))
        .cloned()
        .ok_or_else(|| format!("no w0 in worker.list: {list}"))
}

fn w0(client: &mut Client) -> Value {
    try_w0(client).unwrap_or_else(|e| panic!("{e}"))
}

/// The worker's pid, if it runs.
fn pid_of(entry: &Value) -> Option<i32> {
    entry["pid"].as_i64().map(|p| p as i32)
}

/// Polls `w0` until its entry satisfies `cond`; returns that entry.
fn wait_w0(client: &mut Client, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let entry = w0(client);
        if cond(&entry) {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for w0: {what}; last seen {entry}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until w0 runs, LOOPING, with a pid other than `old`; returns its pid.
fn wait_looping(client: &mut Client, old: Option<i32>) -> i32 {
    let entry = wait_w0(client, "a new pid, LOOPING", |e| {
        pid_of(e).is_some() && pid_of(e) != old && e["state"] == LOOPING
    });
    pid_of(&entry).expect("checked")
}

/// Watches for `window`: `check` must hold (return `Ok`) at every poll, and the daemon must
/// keep running.
fn holds_for(
    daemon: &mut Foreground,
    what: &str,
    window: Duration,
    mut check: impl FnMut() -> std::result::Result<(), String>,
) {
    let start = Instant::now();
    while start.elapsed() < window {
        if let Some(status) = daemon.try_status() {
            panic!(
                "{what}: the daemon exited ({status}) after {:?} of the {window:?} watched; \
                 stderr:\n{}",
                start.elapsed(),
                daemon.stderr()
            );
        }
        if let Err(why) = check() {
            panic!(
                "{what}: stopped holding after {:?} of the {window:?} watched: {why}; \
                 stderr:\n{}",
                start.elapsed(),
                daemon.stderr()
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn sigkill(pid: i32) {
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("killing the worker");
}

/// Asserts `result` is an RPC error; returns its text (message and data).
fn rpc_error<T: std::fmt::Debug>(what: &str, result: Result<T>) -> String {
    match result {
        Err(Error::Rpc {
            code,
            message,
            data,
        }) => format!("{code} {message}: {data:?}"),
        other => panic!("{what}: expected an RPC error, got {other:?}"),
    }
}

/// Sends a JSON-RPC batch in one write on a connection of its own; returns the replies.
fn batch(dir: &TestDir, requests: &Value) -> Vec<Value> {
    let mut stream = UnixStream::connect(dir.socket()).expect("connecting");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a read timeout");
    stream
        .write_all(format!("{requests}\n").as_bytes())
        .expect("sending the batch");
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .expect("reading the batch's reply");
    let reply: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    match reply {
        Value::Array(replies) => replies,
        other => panic!("the batch's reply is not an array: {other}"),
    }
}

// ---------------------------------------------------------------------------------------
// Restart and stop

/// One `worker.restart` poisoned a healthy worker: the old process's stop escalation stayed
/// armed by the worker's name, and SIGTERMed the new process after shutdowntimeout/2 (a
/// crash, restarted, SIGTERMed again, ...).
#[test]
fn a_restart_leaves_the_new_process_alone() {
    let dir = TestDir::new();
    let mut daemon = start(
        &dir,
        &[
            "--shutdown-timeout",
            SHUTDOWN_TIMEOUT_ARG,
            "--looptime",
            "0.1",
        ],
    );
    let mut client = client(&dir);
    let old = wait_looping(&mut client, None);
    assert_eq!(
        client.call("worker.restart", json!(["w0"])).unwrap(),
        json!(true)
    );
    let new = wait_looping(&mut client, Some(old));
    holds_for(
        &mut daemon,
        "the restarted w0 keeping its pid, restarts 1",
        2 * SHUTDOWN_TIMEOUT,
        || {
            let e = try_w0(&mut client)?;
            if pid_of(&e) == Some(new) && e["restarts"] == 1 && e["state"] == LOOPING {
                Ok(())
            } else {
                Err(format!("w0 was pid {new}, restarts 1, LOOPING; now {e}"))
            }
        },
    );
    assert_eq!(
        daemon.log_lines(&["did not stop"]),
        0,
        "a stop was escalated against the restarted worker: {}",
        daemon.stderr()
    );
}

/// The same escalation, against a worker that is not `forever`: its SIGTERMed new process
/// counted as a crash and stopped the daemon.
#[test]
fn a_restart_of_a_worker_that_is_not_forever_keeps_the_daemon_running() {
    let dir = TestDir::new();
    let mut daemon = start(
        &dir,
        &[
            "--once",
            "--shutdown-timeout",
            SHUTDOWN_TIMEOUT_ARG,
            "--looptime",
            "0.1",
        ],
    );
    let mut client = client(&dir);
    let old = wait_looping(&mut client, None);
    assert_eq!(
        client.call("worker.restart", json!(["w0"])).unwrap(),
        json!(true)
    );
    let new = wait_looping(&mut client, Some(old));
    holds_for(
        &mut daemon,
        "the daemon running its restarted worker that is not forever",
        2 * SHUTDOWN_TIMEOUT,
        || {
            let e = try_w0(&mut client)?;
            if pid_of(&e) == Some(new) {
                Ok(())
            } else {
                Err(format!("w0 was pid {new}; now {e}"))
            }
        },
    );
    client
        .call("daemon.status", json!([]))
        .expect("daemon.status after the restart");
}

/// `worker.restart` then at once `worker.stop` (one batch: both are handled before the old
/// process is gone): the stop must win. The restart survived the stop, and the worker came
/// back LOOPING under a new pid.
#[test]
fn a_stop_right_after_a_restart_leaves_the_worker_stopped() {
    let dir = TestDir::new();
    let mut daemon = start(
        &dir,
        &[
            "--shutdown-timeout",
            SHUTDOWN_TIMEOUT_ARG,
            "--looptime",
            "0.1",
        ],
    );
    let mut client = client(&dir);
    let old = wait_looping(&mut client, None);
    let replies = batch(
        &dir,
        &json!([
            {"jsonrpc": "2.0", "method": "worker.restart", "params": ["w0"], "id": 1},
            {"jsonrpc": "2.0", "method": "worker.stop", "params": ["w0"], "id": 2},
        ]),
    );
    for id in [1, 2] {
        let reply = replies.iter().find(|r| r["id"] == id);
        assert_eq!(
            reply.map(|r| &r["result"]),
            Some(&json!(true)),
            "{replies:?}"
        );
    }
    wait_until("the old w0 process to end", DEADLINE, || !alive(old));
    // The stop came with the restart, before the old process ended: no new process may
    // start. A stopped worker is EXITED within shutdowntimeout (SIGKILL after it).
    let settled = Instant::now() + 2 * SHUTDOWN_TIMEOUT;
    loop {
        let e = w0(&mut client);
        assert!(
            pid_of(&e).is_none_or(|p| p == old),
            "w0 was restarted and stopped in one batch, and came back under a new pid: {e}; \
             stderr:\n{}",
            daemon.stderr()
        );
        if e["state"] == EXITED && e["pid"].is_null() {
            break;
        }
        assert!(
            Instant::now() < settled,
            "w0 was restarted and stopped in one batch, and is not EXITED without a pid \
             after {:?}: {e}",
            2 * SHUTDOWN_TIMEOUT
        );
        thread::sleep(Duration::from_millis(10));
    }
    holds_for(
        &mut daemon,
        "w0 staying stopped",
        SHUTDOWN_TIMEOUT * 3 / 2,
        || {
            let e = try_w0(&mut client)?;
            if e["state"] == EXITED && e["pid"].is_null() {
                Ok(())
            } else {
                Err(format!("w0 is no longer EXITED without a pid: {e}"))
            }
        },
    );
}

// ---------------------------------------------------------------------------------------
// What a worker sends up

/// A worker's message named `exited` is only a message: it was taken for the daemon's own
/// `daemon.worker.exited`, and `{"crashed": true, "forever": false}` stopped the daemon.
#[test]
fn a_worker_message_named_exited_does_not_stop_the_daemon() {
    let dir = TestDir::new();
    let mut daemon = start(&dir, &["--looptime", "0.1"]);
    let mut client = client(&dir);
    let pid = wait_looping(&mut client, None);
    assert_eq!(
        client
            .call("worker.send", json!(["w0", "fake-exited"]))
            .unwrap(),
        json!(true)
    );
    holds_for(
        &mut daemon,
        "the daemon and w0 running after w0 sent `exited`",
        OBSERVE,
        || {
            let e = try_w0(&mut client)?;
            if pid_of(&e) == Some(pid) && e["state"] == LOOPING {
                Ok(())
            } else {
                Err(format!("w0 was pid {pid}, LOOPING; now {e}"))
            }
        },
    );
    client
        .call("daemon.status", json!([]))
        .expect("daemon.status after the fake exit");
}

/// Messages named `log` and `ack` from a worker reach the daemon's bus like any other: they
/// were swallowed (taken for the worker's own log lines and acknowledgements).
#[test]
fn worker_messages_named_log_and_ack_reach_the_daemons_bus() {
    let dir = TestDir::new();
    let daemon = start(&dir, &["--looptime", "0.1"]);
    let mut client = client(&dir);
    wait_looping(&mut client, None);
    // `flood 1` sends one `tick-report` after them, on the same ring: once it is logged,
    // the two before it were handled.
    for (command, payload) in [("send-log", None), ("send-ack", None), ("flood", Some(1))] {
        let params = match payload {
            Some(p) => json!(["w0", command, p]),
            None => json!(["w0", command]),
        };
        assert_eq!(client.call("worker.send", params).unwrap(), json!(true));
    }
    wait_until("the `tick-report` message in the log", DEADLINE, || {
        daemon.log_lines(&["worker message", "worker: w0", "command: tick-report"]) == 1
    });
    let (logs, acks) = (
        daemon.log_lines(&["worker message", "worker: w0", "command: log"]),
        daemon.log_lines(&["worker message", "worker: w0", "command: ack"]),
    );
    assert_eq!(
        (logs, acks),
        (1, 1),
        "the messages named log and ack (one each) did not reach the daemon's bus; \
         stderr:\n{}",
        daemon.stderr()
    );
}

// ---------------------------------------------------------------------------------------
// Reserved commands

/// `stop`, `pause` and `resume` are the supervisor's: through `worker.send` they must be
/// refused (`worker.stop`, `worker.pause`, `worker.resume` are the way). A sent `stop` went
/// through, and the worker's exit counted as a crash.
#[test]
fn reserved_commands_through_worker_send_are_refused() {
    let dir = TestDir::new();
    let mut daemon = start(&dir, &["--looptime", "0.1"]);
    let mut client = client(&dir);
    let pid = wait_looping(&mut client, None);
    for command in ["stop", "pause", "resume"] {
        rpc_error(
            &format!("worker.send w0 {command}"),
            client.call("worker.send", json!(["w0", command])),
        );
    }
    holds_for(
        &mut daemon,
        "w0 running on, untouched by the refused commands",
        OBSERVE,
        || {
            let e = try_w0(&mut client)?;
            if pid_of(&e) == Some(pid) && e["restarts"] == 0 && e["state"] == LOOPING {
                Ok(())
            } else {
                Err(format!("w0 was pid {pid}, restarts 0, LOOPING; now {e}"))
            }
        },
    );
}

// ---------------------------------------------------------------------------------------
// A worker that ends its work

/// A worker that is not `forever` and ends its work cleanly (exit 0, by its own decision)
/// did not crash: its exit was taken for a crash, which stopped the daemon.
#[test]
fn a_worker_that_is_not_forever_finishing_its_work_keeps_the_daemon_running() {
    let dir = TestDir::new();
    let mut daemon = start(&dir, &["--once", "--looptime", "0.1"]);
    let mut client = client(&dir);
    let pid = wait_looping(&mut client, None);
    assert_eq!(
        client.call("worker.send", json!(["w0", "finish"])).unwrap(),
        json!(true)
    );
    wait_until("the finished w0 process to end", DEADLINE, || !alive(pid));
    let settled = Instant::now() + DEADLINE;
    let entry = loop {
        if let Some(status) = daemon.try_status() {
            panic!(
                "the daemon exited ({status}) after its worker that is not forever finished \
                 its work; stderr:\n{}",
                daemon.stderr()
            );
        }
        match try_w0(&mut client) {
            Ok(e) if e["pid"] != json!(pid) => break e,
            _ => {}
        }
        assert!(Instant::now() < settled, "w0 still shows pid {pid}");
        thread::sleep(Duration::from_millis(10));
    };
    assert!(
        entry["state"] == EXITED && entry["pid"].is_null() && entry["restarts"] == 0,
        "the finished w0 is not EXITED, not restarted: {entry}"
    );
    holds_for(
        &mut daemon,
        "the daemon running, w0 EXITED",
        OBSERVE,
        || {
            let e = try_w0(&mut client)?;
            if e["state"] == EXITED && e["pid"].is_null() {
                Ok(())
            } else {
                Err(format!("w0 is no longer EXITED without a pid: {e}"))
            }
        },
    );
}

// ---------------------------------------------------------------------------------------
// Acknowledgements

/// A `worker.pause` that timed out with an error must not take effect later: the pause
/// stayed in the worker's ring and paused it once its stall ended, after its caller was
/// told it failed. (The worker's loop is blocked by `stall` for longer than the ack timeout,
/// max(sockettimeout, 5 s), which no configuration can make shorter.)
#[test]
fn a_pause_that_timed_out_does_not_take_effect_later() {
    let dir = TestDir::new();
    let daemon = start(&dir, &["--looptime", "0.1"]);
    // The acknowledgement timeout is max(sockettimeout, 5 s): the stall is longer.
    let mut client = client_with(&dir, Duration::from_secs(15));
    wait_looping(&mut client, None);
    let stall_secs = 6.5;
    assert_eq!(
        client
            .call("worker.send", json!(["w0", "stall", stall_secs]))
            .unwrap(),
        json!(true)
    );
    wait_until("w0 to log that it stalls", DEADLINE, || {
        daemon.log_lines(&["stalling", "worker: w0"]) == 1
    });
    let error = rpc_error(
        "worker.pause of a stalled worker",
        client.call("worker.pause", json!(["w0"])),
    );
    wait_until("w0 to log that its stall is over", DEADLINE, || {
        daemon.log_lines(&["stall over", "worker: w0"]) == 1
    });
    // A few turns of the worker's loop: it has read what waited in its ring.
    let beat = w0(&mut client)["heartbeat"].as_u64().unwrap_or(0);
    let entry = wait_w0(&mut client, "three more turns of its loop", |e| {
        e["heartbeat"].as_u64().is_some_and(|b| b >= beat + 3)
    });
    assert_ne!(
        entry["state"],
        json!(PAUSED),
        "the pause failed ({error}), then took effect: {entry}"
    );
    assert_eq!(entry["state"], json!(LOOPING), "{entry}");
}

/// After a burst of more than 1,024 messages from a worker (the daemon reads 1,024 per
/// turn), the rest waited for the worker's next wake-up, and an ack behind them was
/// stranded: the pause timed out.
#[test]
fn an_ack_behind_a_burst_of_messages_is_not_stranded() {
    let dir = TestDir::new();
    let marks = dir.join("marks");
    std::fs::create_dir(&marks).expect("creating the marks dir");
    let daemon = start(&dir, &["--looptime", "0.1", "--dir", &path_str(&marks)]);
    let mut client = client_with(&dir, Duration::from_secs(15));
    wait_looping(&mut client, None);
    assert_eq!(
        client
            .call("worker.send", json!(["w0", "flood", 5000]))
            .unwrap(),
        json!(true)
    );
    let flooded = marks.join("w0.flooded");
    wait_until("w0 to finish its flood", DEADLINE, || flooded.exists());
    assert_eq!(
        std::fs::read_to_string(&flooded).unwrap_or_default(),
        "5000",
        "the flood did not send its 5000 messages"
    );
    let asked = Instant::now();
    let reply = client.call("worker.pause", json!(["w0"]));
    assert!(
        matches!(&reply, Ok(v) if *v == json!(PAUSED)),
        "worker.pause after a flood of 5000 messages: {reply:?} after {:?}; daemon log: {} \
         `tick-report` lines of 5000",
        asked.elapsed(),
        daemon.log_lines(&["worker message", "command: tick-report"])
    );
}

// ---------------------------------------------------------------------------------------
// The restart policy

/// `worker.start` of a FAILED worker gives it a fresh start: the watchdog kept its old
/// crashes, and the first crash after the start made it FAILED again.
#[test]
fn starting_a_failed_worker_resets_its_crash_count() {
    let dir = TestDir::new();
    let daemon = start(&dir, &["--looptime", "0.05"]);
    let mut client = client(&dir);
    let mut pid = wait_looping(&mut client, None);
    // Five crashes are restarted (after 0, 100, 200, 400, 800 ms), the sixth is FAILED.
    for _ in 0..5 {
        sigkill(pid);
        pid = wait_looping(&mut client, Some(pid));
    }
    sigkill(pid);
    wait_w0(&mut client, "FAILED after six crashes", |e| {
        e["state"] == FAILED
    });
    assert_eq!(
        client.call("worker.start", json!(["w0"])).unwrap(),
        json!(true)
    );
    let started = wait_looping(&mut client, Some(pid));
    sigkill(started);
    let entry = wait_w0(&mut client, "restarted or FAILED after the crash", |e| {
        e["state"] == FAILED || (pid_of(e).is_some_and(|p| p != started) && e["state"] == LOOPING)
    });
    assert_eq!(
        entry["state"],
        json!(LOOPING),
        "one crash after worker.start made w0 FAILED again: {entry}; stderr:\n{}",
        daemon.stderr()
    );
}

/// A crash after a stable run (2 s and more since the previous restart) is restarted at
/// once: the backoff grew with every crash in the 60 s window, however long the worker ran
/// in between.
#[test]
fn a_worker_that_ran_stably_is_restarted_at_once_after_a_crash() {
    let dir = TestDir::new();
    let daemon = start(&dir, &["--looptime", "0.1"]);
    let mut client = client(&dir);
    let first = wait_looping(&mut client, None);
    sigkill(first);
    let second = wait_looping(&mut client, Some(first));
    // The worker runs stably (a fixed wait: the condition is time itself).
    thread::sleep(STABLE_RUN);
    assert_eq!(
        pid_of(&w0(&mut client)),
        Some(second),
        "w0 did not run stably"
    );
    sigkill(second);
    wait_looping(&mut client, Some(second));
    wait_until("three starts of w0 in the log", DEADLINE, || {
        daemon.log_lines(&["worker started", "worker: w0"]) == 3
    });
    assert_eq!(
        daemon.log_lines(&["restarts after a backoff", "worker: w0"]),
        0,
        "w0 crashed after a stable run of {STABLE_RUN:?} and was restarted after a backoff; \
         stderr:\n{}",
        daemon.stderr()
    );
}

/// The first design closed every inherited descriptor in the worker, those of the worker's
/// own value included (their numbers then reused by the worker's poller).
#[test]
fn a_descriptor_the_worker_value_owns_stays_open_in_the_worker() {
    let dir = TestDir::new();
    let path = dir.join("ticks.txt");
    let daemon = start(
        &dir,
        &["-v", "--tick-file", "ticks.txt", "--looptime", "0.02"],
    );
    wait_until("ticks written by the worker", DEADLINE, || {
        std::fs::read_to_string(&path)
            .is_ok_and(|t| t.lines().filter(|l| l.starts_with("w0 ")).count() >= 3)
    });
    assert!(
        !daemon.stderr().contains("cannot write the tick file"),
        "{}",
        daemon.stderr()
    );
}
