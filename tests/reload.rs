//! Reloading a running daemon's configuration: SIGHUP and `daemon.reload` read the
//! `--config` file again, apply the run-time keys, report the others as needing a restart,
//! refuse a bad file naming its key while the old values stay, and fire `daemon.reload` on
//! the bus. Real daemons: the `ops_daemon` example, which counts the reload events it saw
//! and declares an application key `threshold`.

mod common;

use std::process::Command;

use common::{
    DEADLINE, Detached, Foreground, TestDir, example_named, path_str, unix_addr, wait_until,
};
use daimon::Client;
use nix::sys::signal::Signal;
use serde_json::{Value, json};

/// The ops daemon in the foreground in `dir`, with `config` written to `config.json` (the
/// file a reload reads again), ready.
fn start(dir: &TestDir, config: &Value, extra: &[&str]) -> Foreground {
    let file = dir.write_config("config.json", config);
    let mut cmd = Command::new(example_named("ops_daemon"));
    cmd.arg("-f")
        .args(["--config", &path_str(&file)])
        .args(extra)
        .args(dir.std_args())
        .current_dir(dir.path());
    let mut daemon = Foreground::spawn_cmd(dir, cmd);
    daemon.wait_ready_std(dir);
    daemon
}

fn client(dir: &TestDir) -> Client {
    Client::connect(&unix_addr(&dir.socket())).expect("connecting to the daemon")
}

fn call(dir: &TestDir, method: &str, params: Value) -> Value {
    client(dir)
        .call(method, params)
        .unwrap_or_else(|e| panic!("{method}: {e}"))
}

fn reloads(dir: &TestDir) -> u64 {
    call(dir, "examples.reloads", json!([])).as_u64().unwrap()
}

/// A request that is `size` bytes long, as JSON-RPC on one line.
fn echo_of(size: usize) -> Vec<u8> {
    let pad = "x".repeat(size);
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"examples.echo\",\"params\":[\"{pad}\"]}}\n"
    )
    .into_bytes()
}

/// Whether the daemon answers a request of `size` bytes (rather than refusing it as too
/// large).
fn takes(dir: &TestDir, size: usize) -> bool {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(dir.socket()).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(&echo_of(size)).unwrap();
    let mut line = String::new();
    let _ = BufReader::new(&s).read_line(&mut line);
    let reply: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
    reply.get("result").is_some()
}

#[test]
fn sighup_reloads_a_run_time_key_and_fires_the_event() {
    let dir = TestDir::new();
    let mut daemon = start(&dir, &json!({"maxrequestsize": 65536}), &[]);
    assert!(takes(&dir, 20_000), "20 kB fits the first limit");
    dir.write_config("config.json", &json!({"maxrequestsize": 4096}));
    daemon.signal(Signal::SIGHUP);
    wait_until("the reload event", DEADLINE, || reloads(&dir) == 1);
    assert!(
        !takes(&dir, 20_000),
        "20 kB is refused under the reloaded limit"
    );
    assert!(takes(&dir, 1000));
    assert!(
        daemon.try_status().is_none(),
        "SIGHUP does not stop the daemon"
    );
    assert_eq!(
        daemon.log_lines(&["configuration reloaded", "maxrequestsize"]),
        1
    );
}

#[test]
fn daemon_reload_reports_what_applies_and_what_needs_a_restart() {
    let dir = TestDir::new();
    let _daemon = start(&dir, &json!({"socketmaxconnections": 10}), &[]);
    dir.write_config(
        "config.json",
        &json!({"socketmaxconnections": 4, "umask": "077", "description": "Renamed"}),
    );
    let done = call(&dir, "daemon.reload", json!([]));
    assert_eq!(
        done["applied"],
        json!(["socketmaxconnections", "description"]),
        "{done}"
    );
    assert_eq!(done["restart_needed"], json!(["umask"]), "{done}");
    assert!(
        done["config"].as_str().unwrap().ends_with("config.json"),
        "{done}"
    );
    assert_eq!(reloads(&dir), 1);
    // The command line's --socket still wins over the file: a file naming another socket
    // is a restart, and the daemon goes on serving where it is.
    let other = dir.join("other.sock");
    dir.write_config(
        "config.json",
        &json!({"sockethandler": unix_addr(&other), "socketmaxconnections": 4}),
    );
    let done = call(&dir, "daemon.reload", json!([]));
    assert_eq!(done["applied"], json!([]), "{done}");
    assert_eq!(done["restart_needed"], json!([]), "{done}");
    assert!(!other.exists());
    // The application's name and version beside daimon's.
    let status = call(&dir, "daemon.status", json!([]));
    assert_eq!(status["app"]["name"], "ops_daemon", "{status}");
    assert_eq!(status["app"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["daimon"]["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn a_reloaded_connection_cap_refuses_the_next_client() {
    let dir = TestDir::new();
    let _daemon = start(&dir, &json!({"socketmaxconnections": 5}), &[]);
    let mut held: Vec<Client> = (0..2).map(|_| client(&dir)).collect();
    for c in &mut held {
        c.call("examples.echo", json!(["held"])).unwrap();
    }
    dir.write_config("config.json", &json!({"socketmaxconnections": 2}));
    let done = call(&dir, "daemon.reload", json!([]));
    assert_eq!(done["applied"], json!(["socketmaxconnections"]));
    let refused = client(&dir)
        .call("examples.echo", json!(["third"]))
        .unwrap_err();
    assert!(
        refused.to_string().contains("too many connections"),
        "{refused}"
    );
    drop(held);
    wait_until("a slot to free up", DEADLINE, || {
        client(&dir).call("examples.echo", json!(["again"])).is_ok()
    });
}

#[test]
fn a_bad_file_is_refused_naming_the_key_and_the_old_values_stay() {
    let dir = TestDir::new();
    let daemon = start(&dir, &json!({"maxrequestsize": 65536}), &[]);
    for (bad, needle) in [
        (
            "{\"maxrequestsize\": 4096, \"sockettimeout\": 0}",
            "sockettimeout",
        ),
        (
            "{\"maxrequestsize\": 4096, \"socketmaxconections\": 2}",
            "socketmaxconections",
        ),
        ("{\"maxrequestsize\": 4096, ", "config.json"),
        ("{\"app\": {\"threshold\": \"high\"}}", "app.threshold"),
        ("{\"app\": {\"treshold\": 3}}", "app.treshold"),
    ] {
        std::fs::write(dir.join("config.json"), bad).unwrap();
        let e = client(&dir).call("daemon.reload", json!([])).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("reload refused") && msg.contains(needle),
            "{bad}: {msg}"
        );
        assert!(takes(&dir, 20_000), "{bad}: the old maxrequestsize holds");
    }
    // SIGHUP with a bad file: logged, and the daemon goes on with the old values.
    daemon.signal(Signal::SIGHUP);
    wait_until("the refusal in the log", DEADLINE, || {
        daemon.log_lines(&["reload refused", "app.treshold"]) == 1
    });
    assert!(takes(&dir, 20_000));
    assert_eq!(reloads(&dir), 0, "a refused reload fires no event");
}

#[test]
fn application_keys_are_typed_and_reloaded() {
    let dir = TestDir::new();
    let _daemon = start(&dir, &json!({"app": {"threshold": 7}}), &[]);
    assert_eq!(call(&dir, "examples.threshold", json!([])), 7);
    dir.write_config("config.json", &json!({"app": {"threshold": 9}}));
    let done = call(&dir, "daemon.reload", json!([]));
    assert_eq!(done["applied"], json!(["app"]));
    assert_eq!(call(&dir, "examples.threshold", json!([])), 9);
    // At start, a bad application key stops the launch with the key named.
    let other = TestDir::new();
    let file = other.write_config("config.json", &json!({"app": {"threshold": -1}}));
    let mut cmd = Command::new(example_named("ops_daemon"));
    cmd.arg("-f")
        .args(["--config", &path_str(&file)])
        .args(other.std_args());
    let out = other.run_cmd(cmd);
    out.assert_code(1).assert_stderr_has("app.threshold");
}

#[test]
fn the_workers_restart_policy_is_reloaded() {
    let dir = TestDir::new();
    let _daemon = start(
        &dir,
        &json!({"workers": {"w0": {"restart": "permanent"}}}),
        &["--workers", "1"],
    );
    dir.write_config(
        "config.json",
        &json!({"workers": {"w0": {"restart": "temporary"}}}),
    );
    let done = call(&dir, "daemon.reload", json!([]));
    assert_eq!(done["applied"], json!(["workers"]), "{done}");
    let list = call(&dir, "worker.list", json!([]));
    assert_eq!(list[0]["restart"], "temporary", "{list}");
    // A worker name nobody installed is refused, and the policy stays.
    dir.write_config(
        "config.json",
        &json!({"workers": {"w9": {"restart": "transient"}}}),
    );
    let e = client(&dir).call("daemon.reload", json!([])).unwrap_err();
    assert!(e.to_string().contains("workers.w9"), "{e}");
    let list = call(&dir, "worker.list", json!([]));
    assert_eq!(list[0]["restart"], "temporary", "{list}");
}

#[test]
fn reload_without_a_config_file_changes_nothing() {
    let dir = TestDir::new();
    let mut cmd = Command::new(example_named("ops_daemon"));
    cmd.arg("-f").args(dir.std_args()).current_dir(dir.path());
    let mut daemon = Foreground::spawn_cmd(&dir, cmd);
    daemon.wait_ready_std(&dir);
    let done = call(&dir, "daemon.reload", json!([]));
    assert_eq!(done["applied"], json!([]));
    assert_eq!(done["note"], "no configuration file");
    assert_eq!(done["config"], Value::Null);
}

#[test]
fn a_detached_daemon_reloads_the_file_it_was_launched_with_by_a_relative_path() {
    let dir = TestDir::new();
    dir.write_config("config.json", &json!({"maxrequestsize": 65536}));
    let mut cmd = Command::new(example_named("ops_daemon"));
    cmd.arg("-d")
        .args(["--config", "config.json"])
        .args(dir.std_args())
        .current_dir(dir.path());
    let out = dir.run_cmd(cmd);
    let pid = std::fs::read_to_string(dir.pidfile())
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let daemon = pid.map(Detached::adopt).expect("the detached daemon's pid");
    assert!(out.status.success(), "{}", out.stderr);
    assert!(takes(&dir, 20_000));
    dir.write_config("config.json", &json!({"maxrequestsize": 4096}));
    daemon.signal(Signal::SIGHUP);
    wait_until("the reload event", DEADLINE, || reloads(&dir) == 1);
    assert!(!takes(&dir, 20_000));
}

#[test]
fn the_log_level_is_reloaded() {
    let dir = TestDir::new();
    let daemon = start(&dir, &json!({"loglevel": "warning"}), &[]);
    // At warning, a refused reload (an error line) is logged, a reload (info) is not.
    dir.write_config(
        "config.json",
        &json!({"loglevel": "warning", "socketbuffer": 2048}),
    );
    daemon.signal(Signal::SIGHUP);
    wait_until("the reload event", DEADLINE, || reloads(&dir) == 1);
    std::fs::write(dir.join("config.json"), "{").unwrap();
    daemon.signal(Signal::SIGHUP);
    wait_until("the refusal in the log", DEADLINE, || {
        daemon.log_lines(&["reload refused"]) == 1
    });
    assert_eq!(
        daemon.log_lines(&["configuration reloaded"]),
        0,
        "{}",
        daemon.stderr()
    );
    dir.write_config("config.json", &json!({"loglevel": "info"}));
    let done = call(&dir, "daemon.reload", json!([]));
    assert_eq!(done["applied"], json!(["loglevel"]), "{done}");
    dir.write_config(
        "config.json",
        &json!({"loglevel": "info", "socketbuffer": 4096}),
    );
    daemon.signal(Signal::SIGHUP);
    wait_until("an info line after the reload", DEADLINE, || {
        daemon.log_lines(&["configuration reloaded", "socketbuffer"]) == 1
    });
    let e = client(&dir)
        .call("daemon.reload", json!([]))
        .map(|_| ())
        .and_then(|()| {
            std::fs::write(dir.join("config.json"), "{\"loglevel\": \"loud\"}").unwrap();
            client(&dir).call("daemon.reload", json!([])).map(|_| ())
        })
        .unwrap_err();
    assert!(e.to_string().contains("loglevel"), "{e}");
}
