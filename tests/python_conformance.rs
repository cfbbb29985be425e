//! The control socket against an independent client: `tests/python/conformance.py`, which
//! shares no code with the server, replays the JSON-RPC 2.0 specification's examples and
//! checks the framing, MessagePack-RPC and introspection of PROTOCOL.md against the
//! `conformance_daemon` example, over a unix socket and over tcp.
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

/// The `conformance_daemon` example, built by `cargo test` next to the test binaries.
fn conformance_example() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in <target>/<profile>/deps")
        .join("examples")
        .join("conformance_daemon");
    assert!(
        path.is_file(),
        "the example binary {} is missing: a plain `cargo test` builds it, but a filtered run \
         (`cargo test --test python_conformance`) does not; run \
         `cargo build --example conformance_daemon` first",
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

/// The conformance script.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/conformance.py")
}

/// Starts the daemon in the foreground with its socket at `socket` and its pid file in
/// `dir`, and waits until the pid file is written and `ready` holds.
fn start(dir: &TestDir, socket: &str, mut ready: impl FnMut() -> bool) -> Foreground {
    let pidfile = dir.join("c.pid");
    // The script speaks to a tcp socket without a secret: accept that explicitly.
    let config = dir.write_config(
        "conformance.json",
        &serde_json::json!({"socketallowunauthenticated": true}),
    );
    let mut cmd = Command::new(conformance_example());
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
fn run_script(dir: &TestDir, addr: &str) {
    let python = python();
    let out_path = dir.join("conformance.out");
    let out = File::create(&out_path).expect("creating the script's output file");
    let err = out.try_clone().expect("cloning the output file");
    let mut child = Command::new(&python)
        .arg(script())
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
        Some(status) => panic!("conformance.py {addr} failed ({status}):\n{output}"),
        None => panic!("conformance.py {addr} ran past {SCRIPT_DEADLINE:?}; killed:\n{output}"),
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

#[test]
fn conformance_over_a_unix_socket() {
    python();
    let dir = TestDir::new();
    let socket = dir.join("c.sock");
    let daemon = start(&dir, &unix_addr(&socket), || common::accepts(&socket));
    run_script(&dir, &unix_addr(&socket));
    stop(daemon);
}

#[test]
fn conformance_over_tcp() {
    python();
    let dir = TestDir::new();
    let port = free_tcp_port();
    let addr = format!("tcp://127.0.0.1:{port}");
    let daemon = start(&dir, &addr, || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    run_script(&dir, &addr);
    stop(daemon);
}
