//! Workers of a real daemon, the `copy_daemon` example (one `forever` worker, `handyman`,
//! copying `DIR/test.txt` to `DIR/copy_test.txt` every looptime): their states through the
//! `worker.*` methods, acknowledged pause and resume, custom commands, the restart policy of
//! the standard listeners (immediate first restart, doubling backoff, `FAILED` after 5
//! crashes in 60 s), administrator stops, the daemon's death and shutdown, and no leak over
//! many restarts.
//!
//! Every test has its own temp dir and daemon, killed when the test ends, so they run in
//! parallel. Every wait polls with a deadline; the only fixed waits are the short
//! observation windows of negative checks ("is NOT recreated", "is NOT restarted").
//!
//! A crashed worker that is not `forever` is in `supervision.rs` (`copy_daemon`'s only
//! worker is `forever`).

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    DEADLINE, Foreground, TestDir, alive, example_named, fd_count, proc_stat, unix_addr, wait_until,
};
use daimon::client::{Client, Protocol};
use daimon::{Error, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// The worker's name in `copy_daemon`.
const HANDYMAN: &str = "handyman";

/// The directory the worker watches, inside the test dir.
const WATCHED: &str = "watched";

/// The worker states, as `worker.status` numbers them.
const LOOPING: i64 = 1;
const PAUSED: i64 = 2;
const EXITED: i64 = 4;
const FAILED: i64 = 5;

/// How long a negative check watches for something that must not happen.
const OBSERVE: Duration = Duration::from_millis(500);

/// Starts `copy_daemon -f -v --dir watched --looptime <looptime>` with the test dir's
/// standard pid file and socket, `watched/test.txt` created first, and waits until it is
/// ready.
fn start_copy(dir: &TestDir, looptime: &str) -> Foreground {
    let watched = dir.join(WATCHED);
    fs::create_dir_all(&watched).expect("creating the watched dir");
    fs::write(watched.join("test.txt"), "hello\n").expect("writing test.txt");
    let mut cmd = Command::new(example_named("copy_daemon"));
    cmd.args(["-f", "-v", "--dir", WATCHED, "--looptime", looptime])
        .args(dir.std_args())
        .current_dir(dir.path())
        .stdin(Stdio::null());
    let mut daemon = Foreground::spawn_cmd(dir, cmd);
    daemon.wait_ready_std(dir);
    daemon
}

/// A file in the watched dir.
fn watched(dir: &TestDir, name: &str) -> PathBuf {
    dir.join(WATCHED).join(name)
}

fn connect(dir: &TestDir) -> Client {
    let address = unix_addr(&dir.socket()).parse().expect("a valid address");
    Client::connect_with(&address, Protocol::Json, Duration::from_secs(5)).expect("connecting")
}

/// The code and the whole text (message and data) of an RPC error.
fn rpc_error<T: std::fmt::Debug>(result: Result<T>) -> (i64, String) {
    match result {
        Err(Error::Rpc {
            code,
            message,
            data,
        }) => (code, format!("{message}: {data:?}")),
        other => panic!("expected an RPC error, got {other:?}"),
    }
}

/// `handyman`'s entry in `worker.list`.
fn handyman(client: &mut Client) -> Value {
    let list = client.call("worker.list", json!([])).expect("worker.list");
    let entries = list.as_array().expect("worker.list returns an array");
    assert_eq!(entries.len(), 1, "one worker installed: {list}");
    assert_eq!(entries[0]["name"], HANDYMAN, "{list}");
    entries[0].clone()
}

/// Polls `worker.list` until `handyman`'s entry satisfies `cond`; returns that entry.
fn wait_handyman(client: &mut Client, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let entry = handyman(client);
        if cond(&entry) {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for handyman: {what}; last seen {entry}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// The worker's pid, if it runs.
fn pid_of(entry: &Value) -> Option<i32> {
    entry["pid"].as_i64().map(|p| p as i32)
}

/// Waits until handyman runs, LOOPING, with a pid other than `old`; returns its pid.
fn wait_new_pid(client: &mut Client, old: Option<i32>) -> i32 {
    let entry = wait_handyman(client, "a new pid, LOOPING", |e| {
        pid_of(e).is_some() && pid_of(e) != old && e["state"] == LOOPING
    });
    pid_of(&entry).expect("checked")
}

/// SIGKILLs a process on drop if it still runs: a worker that outlives its daemon (the bug a
/// test looks for) must not outlive the test.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if alive(self.0) {
            let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
        }
    }
}

fn sigkill(pid: i32) {
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("killing the worker");
}

/// Watches for [`OBSERVE`]: `cond` must hold at every poll.
fn holds_throughout(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + OBSERVE;
    while Instant::now() < end {
        assert!(cond(), "{what} stopped holding within {OBSERVE:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// The children of `parent` that are zombies.
fn zombie_children(parent: i32) -> Vec<i32> {
    let mut zombies = Vec::new();
    for entry in fs::read_dir("/proc").expect("reading /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // Index 0 is the state (field 3), index 1 the ppid (field 4).
        if let Some(fields) = proc_stat(pid) {
            if fields.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(parent) && fields[0] == "Z"
            {
                zombies.push(pid);
            }
        }
    }
    zombies
}

fn map_count(pid: i32) -> usize {
    fs::read_to_string(format!("/proc/{pid}/maps"))
        .expect("reading the daemon's maps")
        .lines()
        .count()
}

// ---------------------------------------------------------------------------------------
// States

#[test]
fn list_and_status_show_the_running_worker_and_it_copies() {
    let dir = TestDir::new();
    let _daemon = start_copy(&dir, "0.05");
    let mut client = connect(&dir);
    let entry = wait_handyman(&mut client, "LOOPING", |e| e["state"] == LOOPING);
    let pid = pid_of(&entry).unwrap_or_else(|| panic!("no pid while LOOPING: {entry}"));
    assert!(
        alive(pid),
        "worker.list names pid {pid}, which does not run"
    );
    assert_eq!(entry["statename"], "LOOPING", "{entry}");
    assert_eq!(entry["forever"], true, "{entry}");
    assert_eq!(entry["restarts"], 0, "{entry}");
    assert_eq!(entry["looptime"], 0.05, "{entry}");

    assert_eq!(
        client.call("worker.status", json!([])).unwrap(),
        json!({HANDYMAN: LOOPING})
    );
    assert_eq!(
        client.call("worker.status", json!([HANDYMAN])).unwrap(),
        json!(LOOPING)
    );
    let (code, text) = rpc_error(client.call("worker.status", json!(["nobody"])));
    assert_eq!(code, -32000, "{text}");
    assert!(text.contains("nobody"), "{text}");

    let copy = watched(&dir, "copy_test.txt");
    wait_until("the worker to copy test.txt", DEADLINE, || {
        fs::read_to_string(&copy).is_ok_and(|s| s == "hello\n")
    });
}

// ---------------------------------------------------------------------------------------
// Pause and resume

#[test]
fn pause_is_acknowledged_stops_ticks_and_resume_restarts_them() {
    let dir = TestDir::new();
    let _daemon = start_copy(&dir, "0.05");
    let mut client = connect(&dir);
    let copy = watched(&dir, "copy_test.txt");
    wait_until("the first copy", DEADLINE, || copy.exists());

    assert_eq!(
        client.call("worker.pause", json!([HANDYMAN])).unwrap(),
        json!(PAUSED)
    );
    // The reply came after the worker's acknowledgement: no polling needed.
    assert_eq!(
        client.call("worker.status", json!([HANDYMAN])).unwrap(),
        json!(PAUSED)
    );
    fs::remove_file(&copy).expect("removing the copy");
    holds_throughout("a paused worker not copying", || !copy.exists());
    assert_eq!(handyman(&mut client)["statename"], "PAUSED");

    assert_eq!(
        client.call("worker.resume", json!([HANDYMAN])).unwrap(),
        json!(LOOPING)
    );
    wait_until("the copy to reappear after resume", DEADLINE, || {
        copy.exists()
    });

    // Every worker at once: a struct of states by name.
    assert_eq!(
        client.call("worker.pause", json!([])).unwrap(),
        json!({HANDYMAN: PAUSED})
    );
    assert_eq!(
        client.call("worker.resume", json!([])).unwrap(),
        json!({HANDYMAN: LOOPING})
    );
}

#[test]
fn pause_in_a_batch_or_a_multicall_is_refused() {
    let dir = TestDir::new();
    let _daemon = start_copy(&dir, "0.05");
    // LOOPING first, so that the status below can only be changed by the pause.
    wait_new_pid(&mut connect(&dir), None);
    let mut stream = UnixStream::connect(dir.socket()).expect("connecting");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let batch = json!([
        {"jsonrpc": "2.0", "method": "worker.pause", "params": [HANDYMAN], "id": 1},
        {"jsonrpc": "2.0", "method": "worker.status", "params": [HANDYMAN], "id": 2},
    ]);
    stream
        .write_all(format!("{batch}\n").as_bytes())
        .expect("sending the batch");
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .expect("reading the batch's reply");
    let reply: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let replies = reply
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {reply}"));
    let pause = replies
        .iter()
        .find(|r| r["id"] == 1)
        .unwrap_or_else(|| panic!("no reply to the pause: {reply}"));
    assert_eq!(pause["error"]["code"], -32000, "{reply}");
    assert!(
        pause["error"].to_string().contains("on its own"),
        "the error does not say to call it on its own: {reply}"
    );
    let status = replies
        .iter()
        .find(|r| r["id"] == 2)
        .unwrap_or_else(|| panic!("no reply to the status: {reply}"));
    assert_eq!(
        status["result"], LOOPING,
        "the refused pause paused: {reply}"
    );

    let mut client = connect(&dir);
    let results = client
        .call(
            "system.multicall",
            json!([[{"methodName": "worker.pause", "params": [HANDYMAN]}]]),
        )
        .unwrap();
    assert_eq!(results[0]["faultCode"], -32000, "{results}");
    assert!(
        results[0]["faultString"]
            .as_str()
            .is_some_and(|s| s.contains("on its own")),
        "{results}"
    );
    assert_eq!(
        client.call("worker.status", json!([HANDYMAN])).unwrap(),
        json!(LOOPING)
    );
}

// ---------------------------------------------------------------------------------------
// Custom commands

#[test]
fn custom_commands_reach_the_workers_listener_and_its_logs_reach_the_daemon() {
    let dir = TestDir::new();
    let daemon = start_copy(&dir, "0.05");
    let mut client = connect(&dir);
    let (copy, copy2) = (
        watched(&dir, "copy_test.txt"),
        watched(&dir, "copy_test_2.txt"),
    );
    let first = wait_new_pid(&mut client, None);
    wait_until("the first copy", DEADLINE, || copy.exists());
    assert!(!copy2.exists());

    // Through the example's own method.
    assert_eq!(
        client.call("handyman.changename", json!([])).unwrap(),
        json!(true)
    );
    wait_until(
        "copy_test_2.txt after handyman.changename",
        DEADLINE,
        || copy2.exists(),
    );
    let changing = ["Changing filename...", "worker: handyman"];
    wait_until(
        "the worker's 'Changing filename...' line in the daemon's log",
        DEADLINE,
        || daemon.log_lines(&changing) == 1,
    );

    // A fresh process writes copy_test.txt again (spindown removed copy_test_2.txt).
    assert_eq!(
        client.call("worker.restart", json!([HANDYMAN])).unwrap(),
        json!(true)
    );
    wait_new_pid(&mut client, Some(first));
    fs::remove_file(&copy).expect("removing the old copy");
    wait_until("the restarted worker's copy", DEADLINE, || copy.exists());
    assert!(
        !copy2.exists(),
        "spindown did not remove copy_test_2.txt, or the new worker writes it"
    );

    // Through worker.send.
    assert_eq!(
        client
            .call("worker.send", json!([HANDYMAN, "changename"]))
            .unwrap(),
        json!(true)
    );
    wait_until("copy_test_2.txt after worker.send", DEADLINE, || {
        copy2.exists()
    });
    wait_until("a second 'Changing filename...' line", DEADLINE, || {
        daemon.log_lines(&changing) == 2
    });
    let (code, text) = rpc_error(client.call("worker.send", json!(["nobody", "changename"])));
    assert_eq!(code, -32000, "{text}");
}

// ---------------------------------------------------------------------------------------
// The restart policy

#[test]
fn crashes_restart_with_backoff_then_fail_and_start_revives() {
    let dir = TestDir::new();
    let daemon = start_copy(&dir, "0.05");
    let mut client = connect(&dir);
    let mut pid = wait_new_pid(&mut client, None);

    // Crash 1: restarted at once.
    let sent = Instant::now();
    sigkill(pid);
    let entry = wait_handyman(&mut client, "restarted after crash 1", |e| {
        pid_of(e).is_some_and(|p| p != pid)
    });
    let first = sent.elapsed();
    assert!(!alive(pid), "the killed worker {pid} is still there");
    pid = pid_of(&entry).expect("checked");
    let entry = wait_handyman(&mut client, "LOOPING after crash 1", |e| {
        e["state"] == LOOPING
    });
    assert_eq!(pid_of(&entry), Some(pid), "{entry}");
    assert_eq!(entry["restarts"], 1, "{entry}");
    assert!(
        first < Duration::from_secs(1),
        "the first restart took {first:?}: it should be immediate"
    );
    wait_until("the crash and the restart in the log", DEADLINE, || {
        daemon.log_lines(&["worker crashed", "worker: handyman"]) == 1
            && daemon.log_lines(&["worker restarted", "worker: handyman"]) == 1
    });
    assert_eq!(
        daemon.log_lines(&["restarts after a backoff"]),
        0,
        "the first restart had a backoff: {}",
        daemon.stderr()
    );

    // Crashes 2 to 5: restarted after 100, 200, 400, 800 ms.
    let mut delays = vec![first];
    for (crash, backoff_ms) in [(2, 100u64), (3, 200), (4, 400), (5, 800)] {
        let sent = Instant::now();
        sigkill(pid);
        let new = wait_new_pid(&mut client, Some(pid));
        let took = sent.elapsed();
        // Loose lower bounds only (95 %: timers may round); no upper bound but DEADLINE.
        let floor = Duration::from_millis(backoff_ms * 95 / 100);
        assert!(
            took >= floor,
            "crash {crash}: restarted after {took:?}, before its {backoff_ms} ms backoff"
        );
        assert_eq!(handyman(&mut client)["restarts"], crash, "crash {crash}");
        delays.push(took);
        pid = new;
    }
    assert!(
        delays[4] > delays[0],
        "the backoff does not grow: {delays:?}"
    );

    // Crash 6 within the window: FAILED, no process.
    sigkill(pid);
    let entry = wait_handyman(&mut client, "FAILED after crash 6", |e| {
        e["state"] == FAILED
    });
    assert_eq!(entry["pid"], Value::Null, "{entry}");
    assert_eq!(entry["statename"], "FAILED", "{entry}");
    assert!(!alive(pid));
    assert_eq!(
        client.call("worker.status", json!([HANDYMAN])).unwrap(),
        json!(FAILED)
    );
    wait_until("'worker failed' in the log", DEADLINE, || {
        daemon.log_lines(&["too many restarts", "worker: handyman"]) == 1
    });
    holds_throughout("a FAILED worker staying down", || {
        handyman(&mut client)["pid"].is_null()
    });

    // An administrator revives it.
    assert_eq!(
        client.call("worker.start", json!([HANDYMAN])).unwrap(),
        json!(true)
    );
    let revived = wait_new_pid(&mut client, None);
    assert_ne!(revived, pid);
    assert_eq!(handyman(&mut client)["restarts"], 6);
}

// ---------------------------------------------------------------------------------------
// Administrator stop, start, restart

#[test]
fn stop_beats_the_policy_start_and_restart_bring_it_back() {
    let dir = TestDir::new();
    let daemon = start_copy(&dir, "0.05");
    let mut client = connect(&dir);
    let copy = watched(&dir, "copy_test.txt");
    let pid = wait_new_pid(&mut client, None);
    wait_until("the first copy", DEADLINE, || copy.exists());

    assert_eq!(
        client.call("worker.stop", json!([HANDYMAN])).unwrap(),
        json!(true)
    );
    let entry = wait_handyman(&mut client, "EXITED after worker.stop", |e| {
        e["state"] == EXITED
    });
    assert_eq!(entry["pid"], Value::Null, "{entry}");
    wait_until("the stopped worker's process to end", DEADLINE, || {
        !alive(pid)
    });
    assert!(!copy.exists(), "spindown did not remove the copy");
    holds_throughout("a stopped worker staying down", || {
        let e = handyman(&mut client);
        e["pid"].is_null() && e["state"] == EXITED
    });
    assert!(!copy.exists(), "a stopped worker copied");
    assert_eq!(
        daemon.log_lines(&["worker crashed"]),
        0,
        "an administrator's stop was taken for a crash: {}",
        daemon.stderr()
    );
    let (code, text) = rpc_error(client.call("worker.stop", json!([HANDYMAN])));
    assert_eq!(code, -32000, "stopping a stopped worker: {text}");

    assert_eq!(
        client.call("worker.start", json!([HANDYMAN])).unwrap(),
        json!(true)
    );
    let started = wait_new_pid(&mut client, Some(pid));
    wait_until("a copy after worker.start", DEADLINE, || copy.exists());
    let (code, text) = rpc_error(client.call("worker.start", json!([HANDYMAN])));
    assert_eq!(code, -32000, "starting a running worker: {text}");

    assert_eq!(
        client.call("worker.restart", json!([HANDYMAN])).unwrap(),
        json!(true)
    );
    let restarted = wait_new_pid(&mut client, Some(started));
    assert_ne!(restarted, pid);
    wait_until(
        "the restarted worker's old process to end",
        DEADLINE,
        || !alive(started),
    );
    assert_eq!(handyman(&mut client)["restarts"], 2);
    assert_eq!(daemon.log_lines(&["worker crashed"]), 0);
}

// ---------------------------------------------------------------------------------------
// The daemon's end

#[test]
fn a_killed_daemon_takes_its_worker_with_it() {
    let dir = TestDir::new();
    let mut daemon = start_copy(&dir, "0.05");
    let mut client = connect(&dir);
    let worker = wait_new_pid(&mut client, None);
    let _worker_guard = KillOnDrop(worker);
    drop(client);

    daemon.signal(Signal::SIGKILL);
    let status = daemon.wait_exit();
    assert!(!status.success());
    let limit = Duration::from_millis(1500);
    wait_until("the orphaned worker to die", limit, || !alive(worker));
    assert!(dir.pidfile().exists(), "SIGKILL left no pid file");
    assert!(dir.socket().exists(), "SIGKILL left no socket");

    let _again = start_copy(&dir, "0.05");
    let mut client = connect(&dir);
    let new = wait_new_pid(&mut client, None);
    assert_ne!(new, worker);
    let copy = watched(&dir, "copy_test.txt");
    fs::remove_file(&copy).ok();
    wait_until("the new daemon's worker to copy", DEADLINE, || {
        copy.exists()
    });
}

#[test]
fn sigterm_spins_the_worker_down_and_cleans_up() {
    let dir = TestDir::new();
    let mut daemon = start_copy(&dir, "0.05");
    let mut client = connect(&dir);
    let worker = wait_new_pid(&mut client, None);
    let copy = watched(&dir, "copy_test.txt");
    wait_until("the first copy", DEADLINE, || copy.exists());
    drop(client);

    daemon.stop_with(Signal::SIGTERM);
    assert!(!copy.exists(), "spindown did not remove the copy");
    assert!(
        watched(&dir, "test.txt").exists(),
        "the source file went away"
    );
    assert!(!dir.pidfile().exists(), "the pid file was left behind");
    assert!(!dir.socket().exists(), "the socket file was left behind");
    assert!(!alive(worker), "the worker {worker} outlived the daemon");
    assert_eq!(
        daemon.log_lines(&["worker crashed"]),
        0,
        "a shutdown was taken for a crash: {}",
        daemon.stderr()
    );
}

/// What a worker logs just before it exits (spindown) reaches the daemon's log: the daemon
/// reads what is left in the channel before it lets go of a reaped worker.
#[test]
fn a_workers_last_log_lines_reach_the_daemon_log() {
    let dir = TestDir::new();
    let mut daemon = start_copy(&dir, "0.05");
    let mut client = connect(&dir);
    let spindown = ["CopyWorker handyman spinning down.", "worker: handyman"];
    let pid = wait_new_pid(&mut client, None);

    assert_eq!(
        client.call("worker.stop", json!([HANDYMAN])).unwrap(),
        json!(true)
    );
    wait_handyman(&mut client, "EXITED after worker.stop", |e| {
        e["state"] == EXITED
    });
    assert!(!alive(pid));
    // The daemon logged the exit: whatever the worker sent before it should be logged too.
    wait_until("the daemon to log the worker's exit", DEADLINE, || {
        daemon.log_lines(&["worker exited", "worker: handyman"]) == 1
    });
    let after_stop = daemon.log_lines(&spindown);

    assert_eq!(
        client.call("worker.start", json!([HANDYMAN])).unwrap(),
        json!(true)
    );
    wait_new_pid(&mut client, Some(pid));
    drop(client);
    daemon.stop_with(Signal::SIGTERM);
    let after_shutdown = daemon.log_lines(&spindown);
    assert_eq!(
        (after_stop, after_shutdown),
        (1, 2),
        "the spindown line of a stopped worker (after worker.stop, after SIGTERM) is missing \
         from the daemon's log: the lines a worker sends just before it exits are lost when \
         the daemon reaps it before draining its channel; stderr:\n{}",
        daemon.stderr()
    );
}

// ---------------------------------------------------------------------------------------
// Leaks

#[test]
fn many_restarts_leak_no_fd_mapping_or_zombie() {
    let dir = TestDir::new();
    let daemon = start_copy(&dir, "0.05");
    let daemon_pid = daemon.pid();
    let mut client = connect(&dir);
    let mut pid = wait_new_pid(&mut client, None);
    let restart = |client: &mut Client, pid: i32| -> i32 {
        assert_eq!(
            client.call("worker.restart", json!([HANDYMAN])).unwrap(),
            json!(true)
        );
        wait_new_pid(client, Some(pid))
    };
    // One round first, so whatever the daemon sets up lazily is in the baseline.
    pid = restart(&mut client, pid);
    let (fds, maps) = (fd_count(daemon_pid), map_count(daemon_pid));

    let started = Instant::now();
    let mut pids = vec![pid];
    for _ in 0..100 {
        pid = restart(&mut client, pid);
        pids.push(pid);
    }
    let took = started.elapsed();

    let (fds_after, maps_after) = (fd_count(daemon_pid), map_count(daemon_pid));
    assert!(
        fds_after <= fds + 2,
        "the daemon's fds grew from {fds} to {fds_after} over 100 restarts"
    );
    assert!(
        maps_after <= maps + 2,
        "the daemon's mappings grew from {maps} to {maps_after} over 100 restarts"
    );
    let entry = handyman(&mut client);
    assert_eq!(entry["restarts"], 101, "{entry}");
    let old: Vec<i32> = pids[..pids.len() - 1].to_vec();
    wait_until("every replaced worker to be gone", DEADLINE, || {
        old.iter().all(|&p| !alive(p))
    });
    assert_eq!(
        zombie_children(daemon_pid),
        Vec::<i32>::new(),
        "zombie children of the daemon"
    );
    assert_eq!(daemon.log_lines(&["worker crashed"]), 0);
    assert!(took < Duration::from_secs(30), "100 restarts took {took:?}");
}
