//! The control socket against independent clients: `tests/python/conformance.py`, which
//! shares no code with the server, replays the JSON-RPC 2.0 specification's examples and
//! checks the framing, MessagePack-RPC and introspection of PROTOCOL.md against the
//! `conformance_daemon` example, and `tests/python/subscriptions.py` checks event
//! subscriptions against the `events_daemon` example, each over a unix socket and over tcp.
//!
//! It needs Python's `msgpack`: the project's `scripts/install-test-deps` puts it in a venv
//! under `target/`, and this test runs that script (once) when the venv is missing, so a
//! plain `cargo test` works on a fresh machine. If it cannot install, the test fails (it
//! never skips).

mod common;

use std::fs::{self, File};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{DEADLINE, Foreground, TestDir, free_tcp_port, path_str, unix_addr};
use nix::sys::signal::Signal;

/// How long the whole script may run (each of its reads has its own 5 s timeout).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(180);

/// An example, built by `cargo test` next to the test binaries.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in <target>/<profile>/deps")
        .join("examples")
        .join(name);
    assert!(
        path.is_file(),
        "the example binary {} is missing: a plain `cargo test` builds it, but a filtered run \
         (`cargo test --test python_conformance`) does not; run \
         `cargo build --examples` first",
        path.display()
    );
    path
}

/// The venv's python, made by `scripts/install-test-deps` (run here, once per test binary;
/// the script is quiet and quick when the venv is already there).
fn python() -> PathBuf {
    common::install_test_deps();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("target/pyenv/bin/python");
    assert!(
        path.is_file(),
        "{} is missing after the install",
        path.display()
    );
    path
}

/// A script of tests/python.
fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// Starts the daemon in the foreground with its socket at `socket` and its pid file in
/// `dir`, and waits until the pid file is written and `ready` holds.
fn start(dir: &TestDir, daemon: &str, socket: &str, mut ready: impl FnMut() -> bool) -> Foreground {
    let pidfile = dir.join("c.pid");
    // The script speaks to a tcp socket without a secret: accept that explicitly.
    let config = dir.write_config(
        "conformance.json",
        &serde_json::json!({"socketallowunauthenticated": true}),
    );
    let mut cmd = Command::new(example(daemon));
    cmd.args(["-f", "--socket", socket, "--pidfile", &path_str(&pidfile)])
        .args(["--config", &path_str(&config)])
        .current_dir(dir.path())
        .stdin(Stdio::null());
    let mut daemon = Foreground::spawn_cmd(dir, cmd);
    let want = format!("{}\n", daemon.pid());
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = daemon.try_status() {
            panic!(
                "the daemon exited before it was ready ({status}); stderr: {}",
                daemon.stderr()
            );
        }
        if fs::read_to_string(&pidfile).is_ok_and(|s| s == want) && ready() {
            return daemon;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for the daemon on {socket}; stderr: {}",
            daemon.stderr()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs the script against `addr`, its output in files of `dir`; panics with that output
/// unless it exits 0.
fn run_script(dir: &TestDir, name: &str, addr: &str) {
    let python = python();
    let out_path = dir.join(&format!("{name}.out"));
    let out = File::create(&out_path).expect("creating the script's output file");
    let err = out.try_clone().expect("cloning the output file");
    let mut child = Command::new(&python)
        .arg(script(name))
        .arg(addr)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", python.display()));
    let deadline = Instant::now() + SCRIPT_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the script") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let output = fs::read_to_string(&out_path).unwrap_or_default();
    match status {
        Some(status) if status.success() => {}
        Some(status) => panic!("{name} {addr} failed ({status}):\n{output}"),
        None => panic!("{name} {addr} ran past {SCRIPT_DEADLINE:?}; killed:\n{output}"),
    }
}

/// The daemon survived everything the script did (a panicking handler included), and
/// stops cleanly.
fn stop(mut daemon: Foreground) {
    assert!(
        daemon.try_status().is_none(),
        "the daemon died during the checks; stderr: {}",
        daemon.stderr()
    );
    daemon.stop_with(Signal::SIGTERM);
}

/// Runs `name` against `daemon` on a unix socket.
fn over_unix(daemon: &str, name: &str) {
    python();
    let dir = TestDir::new();
    let socket = dir.join("c.sock");
    let running = start(&dir, daemon, &unix_addr(&socket), || {
        common::accepts(&socket)
    });
    run_script(&dir, name, &unix_addr(&socket));
    stop(running);
}

/// Runs `name` against `daemon` on tcp.
fn over_tcp(daemon: &str, name: &str) {
    python();
    let dir = TestDir::new();
    let port = free_tcp_port();
    let addr = format!("tcp://127.0.0.1:{port}");
    let running = start(&dir, daemon, &addr, || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    run_script(&dir, name, &addr);
    stop(running);
}

#[test]
fn conformance_over_a_unix_socket() {
    over_unix("conformance_daemon", "conformance.py");
}

#[test]
fn conformance_over_tcp() {
    over_tcp("conformance_daemon", "conformance.py");
}

#[test]
fn subscriptions_over_a_unix_socket() {
    over_unix("events_daemon", "subscriptions.py");
}

#[test]
fn subscriptions_over_tcp() {
    over_tcp("events_daemon", "subscriptions.py");
}
