//! `daimonctl` against a real daemon, the `echo_daemon` example: calls, introspection,
//! status, errors and their exit codes, shutdown.
//!
//! Every test has its own temp dir and daemon, killed when the test ends. The daemons are the
//! root crate's examples: `cargo test --workspace` builds them; a run of this crate alone
//! needs `cargo build --examples` first.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::Command;

use common::{Foreground, Output, TestDir, path_str, unix_addr, wait_until};
use serde_json::Value;

/// `daimonctl` run in the test dir, without `DAIMON_SOCKET`.
fn command(dir: &TestDir) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_daimonctl"));
    cmd.current_dir(dir.path()).env_remove("DAIMON_SOCKET");
    cmd
}

/// `daimonctl -s unix://<dir>/daemon.sock ARGS...`, run to its end.
fn ctl(dir: &TestDir, args: &[&str]) -> Output {
    let mut cmd = command(dir);
    cmd.arg("-s").arg(unix_addr(&dir.socket())).args(args);
    dir.run_cmd(cmd)
}

#[test]
fn call_prints_a_string_result_raw() {
    let dir = TestDir::new();
    let _daemon = Foreground::start(&dir, &[]);
    let out = ctl(&dir, &["call", "examples.echo", "hello"]);
    out.assert_code(0);
    assert_eq!(out.stdout, "hello\n");
    // A quoted argument is a JSON string: "5" is sent as a string.
    let out = ctl(&dir, &["call", "examples.echo", "\"5\""]);
    out.assert_code(0);
    assert_eq!(out.stdout, "5\n");
}

#[test]
fn json_flag_prints_compact_json() {
    let dir = TestDir::new();
    let daemon = Foreground::start(&dir, &[]);
    let out = ctl(&dir, &["--json", "call", "examples.echo", "hello"]);
    out.assert_code(0);
    assert_eq!(out.stdout, "\"hello\"\n");
    let out = ctl(&dir, &["--json", "status"]);
    out.assert_code(0);
    assert_eq!(out.stdout.lines().count(), 1, "{:?}", out.stdout);
    let status: Value = serde_json::from_str(&out.stdout).expect("status as JSON");
    assert_eq!(status["pid"], daemon.pid());
}

#[test]
fn msgpack_flag_speaks_messagepack() {
    let dir = TestDir::new();
    let _daemon = Foreground::start(&dir, &[]);
    let out = ctl(&dir, &["--msgpack", "call", "examples.echo", "hello"]);
    out.assert_code(0);
    assert_eq!(out.stdout, "hello\n");
    let out = ctl(&dir, &["--msgpack", "call", "examples.echo", "5"]);
    out.assert_code(1).assert_stderr_has("-32602");
}

#[test]
fn methods_lists_one_per_line() {
    let dir = TestDir::new();
    let _daemon = Foreground::start(&dir, &[]);
    let out = ctl(&dir, &["methods"]);
    out.assert_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    for name in ["examples.echo", "system.listMethods", "daemon.status"] {
        assert!(lines.contains(&name), "{name} missing from {lines:?}");
    }
}

#[test]
fn status_shows_the_daemon_pid() {
    let dir = TestDir::new();
    let daemon = Foreground::start(&dir, &[]);
    let out = ctl(&dir, &["status"]);
    out.assert_code(0);
    // `pid:` then the value, aligned with the other fields.
    let want = ["pid:".to_owned(), daemon.pid().to_string()];
    assert!(
        out.stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == want),
        "no line {want:?} in {:?}",
        out.stdout
    );
}

#[test]
fn secret_authenticates_first() {
    // A unix peer needs no secret, but system.auth still answers true.
    let dir = TestDir::new();
    let _daemon = Foreground::start(&dir, &[]);
    let out = ctl(
        &dir,
        &["--secret", "anything", "call", "examples.echo", "hi"],
    );
    out.assert_code(0);
    assert_eq!(out.stdout, "hi\n");
}

#[test]
fn the_socket_defaults_to_the_environment_then_daemon_sock() {
    let dir = TestDir::new();
    let _daemon = Foreground::start(&dir, &[]);
    // unix://daemon.sock, relative to the working directory: the test dir.
    let out = dir.run_cmd({
        let mut cmd = command(&dir);
        cmd.args(["call", "examples.echo", "default"]);
        cmd
    });
    out.assert_code(0);
    assert_eq!(out.stdout, "default\n");
    let out = dir.run_cmd({
        let mut cmd = command(&dir);
        cmd.current_dir("/")
            .env("DAIMON_SOCKET", unix_addr(&dir.socket()))
            .args(["call", "examples.echo", "env"]);
        cmd
    });
    out.assert_code(0);
    assert_eq!(out.stdout, "env\n");
}

#[test]
fn an_unknown_method_fails_with_32601() {
    let dir = TestDir::new();
    let _daemon = Foreground::start(&dir, &[]);
    let out = ctl(&dir, &["call", "examples.nope"]);
    out.assert_code(1)
        .assert_error_line()
        .assert_stderr_has("-32601")
        .assert_stderr_has("examples.nope");
    assert_eq!(out.stdout, "");
}

#[test]
fn a_wrong_argument_type_fails_with_32602() {
    let dir = TestDir::new();
    let _daemon = Foreground::start(&dir, &[]);
    // A leading '-' is a parameter, not an option.
    for arg in ["5", "-5"] {
        let out = ctl(&dir, &["call", "examples.echo", arg]);
        // The data names the signatures the method accepts.
        out.assert_code(1)
            .assert_error_line()
            .assert_stderr_has("-32602")
            .assert_stderr_has("string");
    }
}

#[test]
fn an_unreachable_socket_is_a_clear_error() {
    let dir = TestDir::new();
    let out = ctl(&dir, &["status"]);
    out.assert_code(1)
        .assert_error_line()
        .assert_stderr_has("connecting to")
        .assert_stderr_has(&path_str(&dir.socket()));
    let out = dir.run_cmd({
        let mut cmd = command(&dir);
        cmd.args(["-s", "tcp://127.0.0.1:1", "status"]);
        cmd
    });
    out.assert_code(1)
        .assert_error_line()
        .assert_stderr_has("tcp://127.0.0.1:1");
}

#[test]
fn usage_errors_exit_2() {
    let dir = TestDir::new();
    for args in [
        &[][..],
        &["frobnicate"],
        &["call"],
        &["--timeout", "x", "status"],
        &["--timeout", "0", "status"],
        &["-s", "ftp://x", "status"],
    ] {
        let out = dir.run_cmd({
            let mut cmd = command(&dir);
            cmd.args(args);
            cmd
        });
        out.assert_code(2);
        assert!(!out.stderr.is_empty(), "{args:?}: nothing on stderr");
    }
}

#[test]
fn shutdown_prints_0_and_the_daemon_exits_cleanly() {
    let dir = TestDir::new();
    let mut daemon = Foreground::start(&dir, &[]);
    let out = ctl(&dir, &["shutdown"]);
    out.assert_code(0);
    assert_eq!(out.stdout, "0\n");
    let status = daemon.wait_exit();
    assert_eq!(
        status.code(),
        Some(0),
        "the daemon ended with {status}; stderr: {}",
        daemon.stderr()
    );
    assert!(!dir.pidfile().exists(), "the pid file was left behind");
    assert!(!dir.socket().exists(), "the socket file was left behind");
}

/// A foreground `log_daemon` with `args` (its workers print to stdout), ready.
fn log_daemon(dir: &TestDir, args: &[&str]) -> Foreground {
    let mut cmd = Command::new(common::example_named("log_daemon"));
    cmd.arg("-f")
        .args(args)
        .args(dir.std_args())
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null());
    let mut daemon = Foreground::spawn_cmd(dir, cmd);
    daemon.wait_ready_std(dir);
    daemon
}

/// The `worker.list` entry of `name`, through `daimonctl --json workers`.
fn worker(dir: &TestDir, name: &str) -> Value {
    let out = ctl(dir, &["--json", "workers"]);
    out.assert_code(0);
    let list: Value = serde_json::from_str(&out.stdout).expect("workers as JSON");
    list.as_array()
        .and_then(|l| l.iter().find(|w| w["name"] == name))
        .unwrap_or_else(|| panic!("no worker {name} in {list}"))
        .clone()
}

/// A `daimonctl` started in the background, killed when the test ends, even on failure.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The number in a `log_daemon` count line (`w0 00000012 the quick...`).
fn count_of(line: &str) -> u64 {
    line.split_whitespace()
        .skip_while(|w| *w != "w0")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line:?}"))
}

#[test]
fn status_reads_as_a_page_with_a_workers_table() {
    let dir = TestDir::new();
    let daemon = log_daemon(&dir, &["--workers", "2"]);
    wait_until("both workers looping", common::DEADLINE, || {
        ["w0", "w1"]
            .iter()
            .all(|w| worker(&dir, w)["statename"] == "LOOPING")
    });
    let out = ctl(&dir, &["status"]);
    out.assert_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    // The title: the application's name and version beside daimon's once daemon.status
    // reports "app" (RELOAD's branch), daimon's version alone before.
    let title = lines[0];
    assert!(
        title.starts_with("daimon ") || title.contains(" (daimon "),
        "title {title:?} in {:?}",
        out.stdout
    );
    let field = |name: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name}: line in {:?}", out.stdout))
    };
    assert_eq!(field("pid"), daemon.pid().to_string());
    assert_eq!(field("socket"), unix_addr(&dir.socket()));
    let uptime = field("uptime");
    assert!(
        uptime.ends_with('s') && uptime[..uptime.len() - 1].parse::<u64>().is_ok(),
        "a young daemon's uptime in seconds, got {uptime:?}"
    );
    let header = lines
        .iter()
        .position(|l| l.starts_with("NAME"))
        .unwrap_or_else(|| panic!("no table in {:?}", out.stdout));
    assert_eq!(
        lines[header].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "STATE", "PID", "RESTARTS", "UPTIME"]
    );
    let pid_at = lines[header].find("PID").unwrap();
    for (row, name) in lines[header + 1..].iter().zip(["w0", "w1"]) {
        let cells: Vec<&str> = row.split_whitespace().collect();
        let pid = worker(&dir, name)["pid"].to_string();
        assert_eq!(cells[..4], [name, "LOOPING", pid.as_str(), "0"], "{row:?}");
        assert_eq!(
            row.find(&pid),
            Some(pid_at),
            "columns aligned in {:?}",
            out.stdout
        );
    }
}

#[test]
fn log_prints_time_stream_text_and_the_daemons_own_log() {
    let dir = TestDir::new();
    let _daemon = log_daemon(&dir, &[]);
    wait_until("w0's hello lines", common::DEADLINE, || {
        ctl(&dir, &["log", "w0"]).stdout.lines().count() >= 3
    });
    let out = ctl(&dir, &["log", "w0"]);
    out.assert_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    for (stream, text) in [
        ("stdout", "w0 hello stdout"),
        ("stderr", "w0 hello stderr"),
        ("log", "INFO w0 hello log"),
    ] {
        let line = lines
            .iter()
            .find(|l| l.split_whitespace().nth(1) == Some(stream))
            .unwrap_or_else(|| panic!("no {stream} line in {lines:?}"));
        let (time, rest) = line.split_once(' ').unwrap();
        assert!(time.ends_with('Z') && time.contains('T'), "{line:?}");
        assert_eq!(rest, format!("{stream} {text}"));
    }
    // -n 1: the last line only.
    let out = ctl(&dir, &["log", "w0", "-n", "1"]);
    out.assert_code(0);
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        lines[lines.len() - 1..]
    );
    // Without a name: the daemon's own log.
    let out = ctl(&dir, &["log"]);
    out.assert_code(0);
    assert!(
        out.stdout.lines().any(|l| l.contains(" log INFO ready")),
        "{:?}",
        out.stdout
    );
    // An unknown worker: an error naming it.
    ctl(&dir, &["log", "nope"])
        .assert_code(1)
        .assert_error_line()
        .assert_stderr_has("nope");
    // A bad -n: usage.
    ctl(&dir, &["log", "w0", "-n", "x"]).assert_code(2);
}

#[test]
fn log_follow_through_head_ends_with_consecutive_lines() {
    let dir = TestDir::new();
    let _daemon = log_daemon(&dir, &["--mode", "count", "--looptime", "0.05"]);
    wait_until("w0 printing", common::DEADLINE, || {
        !ctl(&dir, &["log", "w0", "-n", "1"]).stdout.is_empty()
    });
    // head exits after 3 lines; daimonctl must notice and end (EPIPE or POLLERR), with 0.
    let script = format!(
        "{{ '{}' -s '{}' log w0 -n 1 -f; echo ctl=$? >&2; }} | head -3",
        env!("CARGO_BIN_EXE_daimonctl"),
        unix_addr(&dir.socket())
    );
    let out = dir.run_cmd({
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script]);
        cmd
    });
    out.assert_code(0);
    assert!(out.stderr.contains("ctl=0"), "stderr {:?}", out.stderr);
    let counts: Vec<u64> = out.stdout.lines().map(count_of).collect();
    assert_eq!(counts.len(), 3, "{:?}", out.stdout);
    // Followed: each line once, none skipped.
    assert_eq!(counts, [counts[0], counts[0] + 1, counts[0] + 2]);
}

#[test]
fn log_follow_ends_on_ctrl_c() {
    let dir = TestDir::new();
    let _daemon = log_daemon(&dir, &["--mode", "count", "--looptime", "0.05"]);
    let out_path = dir.join("follow.out");
    let mut cmd = command(&dir);
    cmd.arg("-s")
        .arg(unix_addr(&dir.socket()))
        .args(["log", "w0", "-f"])
        .stdout(std::fs::File::create(&out_path).unwrap());
    let mut child = Killed(cmd.spawn().expect("daimonctl"));
    let read = || std::fs::read_to_string(&out_path).unwrap_or_default();
    wait_until("lines followed", common::DEADLINE, || {
        read().lines().count() >= 3
    });
    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let mut status = None;
    wait_until("daimonctl to end on SIGINT", common::DEADLINE, || {
        status = child.0.try_wait().unwrap();
        status.is_some()
    });
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.unwrap().signal(), Some(libc_sigint()));
    let counts: Vec<u64> = read().lines().map(count_of).collect();
    assert!(counts.windows(2).all(|w| w[1] == w[0] + 1), "{counts:?}");
}

fn libc_sigint() -> i32 {
    nix::sys::signal::Signal::SIGINT as i32
}

#[test]
fn signal_stops_and_continues_and_terminates_a_worker() {
    let dir = TestDir::new();
    let _daemon = log_daemon(&dir, &[]);
    wait_until("w0 looping", common::DEADLINE, || {
        worker(&dir, "w0")["statename"] == "LOOPING"
    });
    let pid = worker(&dir, "w0")["pid"].as_i64().expect("a pid");
    let state = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // pid (comm) STATE ...: comm may hold spaces, the state follows the last ')'.
        stat.rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let out = ctl(&dir, &["signal", "w0", "SIGSTOP"]);
    out.assert_code(0);
    assert_eq!(out.stdout, format!("SIGSTOP sent to w0 (pid {pid})\n"));
    wait_until("w0 stopped (T)", common::DEADLINE, || state() == "T");
    ctl(&dir, &["signal", "w0", "cont"]).assert_code(0);
    wait_until("w0 running again", common::DEADLINE, || state() != "T");
    // SIGTERM by number: the worker ends and the supervisor restarts it.
    ctl(&dir, &["signal", "w0", "15"]).assert_code(0);
    wait_until("w0 restarted", common::DEADLINE, || {
        let w = worker(&dir, "w0");
        w["restarts"] == 1 && w["pid"].as_i64().is_some_and(|p| p != pid)
    });
    // Bad input: clear errors, the daemon still serves.
    ctl(&dir, &["signal", "w0", "SIGNOPE"])
        .assert_code(1)
        .assert_error_line()
        .assert_stderr_has("-32602")
        .assert_stderr_has("SIGNOPE");
    ctl(&dir, &["signal", "nope", "HUP"])
        .assert_code(1)
        .assert_stderr_has("nope");
    ctl(&dir, &["signal", "w0"]).assert_code(2);
    ctl(&dir, &["status"]).assert_code(0);
}

#[test]
fn json_output_of_each_subcommand_parses() {
    let dir = TestDir::new();
    let _daemon = log_daemon(&dir, &[]);
    wait_until("w0 looping", common::DEADLINE, || {
        worker(&dir, "w0")["statename"] == "LOOPING"
    });
    let parse = |args: &[&str]| -> Vec<Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = ctl(&dir, &all);
        out.assert_code(0);
        assert!(!out.stdout.is_empty(), "{args:?}: no output");
        out.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{args:?}: {e} in {l:?}")))
            .collect()
    };
    assert!(parse(&["status"])[0]["uptime"].is_number());
    assert!(parse(&["workers"])[0].is_array());
    assert!(parse(&["methods"])[0].is_array());
    assert!(parse(&["help", "worker.signal"])[0]["description"].is_string());
    assert_eq!(parse(&["call", "worker.status", "w0"])[0], 1);
    let lines = parse(&["log", "w0"]);
    assert!(
        lines.len() >= 3
            && lines
                .iter()
                .all(|l| l["seq"].is_u64() && l["stream"].is_string())
    );
    assert!(parse(&["log"]).iter().all(|l| l["stream"] == "log"));
    let sent = &parse(&["signal", "w0", "CONT"])[0];
    assert_eq!(sent["signal"], "SIGCONT");
    assert_eq!(sent["worker"], "w0");
    assert!(sent["pid"].is_i64());
    assert_eq!(parse(&["pause", "w0"])[0], 2);
    assert_eq!(parse(&["resume", "w0"])[0], 1);
    // restart waits, then prints the worker as it is now; --no-wait the daemon's answer.
    assert_eq!(parse(&["restart", "w0"])[0]["statename"], "LOOPING");
    assert_eq!(parse(&["restart", "--no-wait", "w0"])[0], true);
    assert_eq!(parse(&["shutdown"])[0], 0);
}

/// Needs `daemon.reload` from the RELOAD track: on a branch without it this fails with
/// `-32601 no method named 'daemon.reload'` (expected until the merge).
#[test]
fn reload_prints_what_was_applied() {
    let dir = TestDir::new();
    let config = dir.write_config("config.json", &serde_json::json!({"shutdowntimeout": 5}));
    let _daemon = log_daemon(&dir, &["--config", &path_str(&config)]);
    dir.write_config("config.json", &serde_json::json!({"shutdowntimeout": 7}));
    let out = ctl(&dir, &["reload"]);
    out.assert_code(0);
    let applied = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("applied:"))
        .unwrap_or_else(|| panic!("no applied: line in {:?}", out.stdout));
    assert!(applied.contains("shutdowntimeout"), "{:?}", out.stdout);
    assert!(out.stdout.lines().any(|l| l.starts_with("restart needed:")));
    let out = ctl(&dir, &["--json", "reload"]);
    out.assert_code(0);
    let result: Value = serde_json::from_str(&out.stdout).expect("reload as JSON");
    assert!(
        result["applied"].is_array() && result["restart_needed"].is_array(),
        "{result}"
    );
    // An invalid file: refused with the key named, exit 1, the daemon still serves.
    dir.write_config(
        "config.json",
        &serde_json::json!({"shutdowntimeout": "soon"}),
    );
    ctl(&dir, &["reload"])
        .assert_code(1)
        .assert_error_line()
        .assert_stderr_has("shutdowntimeout");
    ctl(&dir, &["status"]).assert_code(0);
}

#[test]
fn log_follow_ends_with_an_error_when_the_daemon_stops() {
    let dir = TestDir::new();
    let mut daemon = log_daemon(&dir, &["--mode", "count", "--looptime", "0.05"]);
    let (out_path, err_path) = (dir.join("follow.out"), dir.join("follow.err"));
    let mut cmd = command(&dir);
    cmd.arg("-s")
        .arg(unix_addr(&dir.socket()))
        .args(["log", "w0", "-f"])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    let mut child = Killed(cmd.spawn().expect("daimonctl"));
    wait_until("lines followed", common::DEADLINE, || {
        std::fs::read_to_string(&out_path).is_ok_and(|s| s.lines().count() >= 2)
    });
    daemon.stop_with(nix::sys::signal::Signal::SIGTERM);
    let mut status = None;
    wait_until(
        "daimonctl to end once the daemon is gone",
        common::DEADLINE,
        || {
            status = child.0.try_wait().unwrap();
            status.is_some()
        },
    );
    assert_eq!(status.unwrap().code(), Some(1));
    let err = std::fs::read_to_string(&err_path).unwrap();
    assert!(
        err.starts_with("error: ") && err.contains("worker.log"),
        "{err:?}"
    );
}
