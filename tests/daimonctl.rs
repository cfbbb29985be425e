//! `daimonctl` against a real daemon, the `echo_daemon` example: calls, introspection,
//! status, errors and their exit codes, shutdown.
//!
//! Every test has its own temp dir and daemon, killed when the test ends.

mod common;

use std::process::Command;

use common::{Foreground, Output, TestDir, path_str, unix_addr};
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
fn help_shows_description_and_signatures() {
    let dir = TestDir::new();
    let _daemon = Foreground::start(&dir, &[]);
    let out = ctl(&dir, &["help", "examples.echo"]);
    out.assert_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"I'm here to reply your data"),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"string examples.echo(string)"),
        "no signature line in {lines:?}"
    );
}

#[test]
fn status_shows_the_daemon_pid() {
    let dir = TestDir::new();
    let daemon = Foreground::start(&dir, &[]);
    let out = ctl(&dir, &["status"]);
    out.assert_code(0);
    let want = format!("pid: {}", daemon.pid());
    assert!(
        out.stdout.lines().any(|l| l.trim() == want),
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
