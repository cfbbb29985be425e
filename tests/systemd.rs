//! The systemd notify protocol, checked with a real datagram listener standing in for systemd:
//! the daemon runs in the foreground with `NOTIFY_SOCKET` (and `WATCHDOG_USEC`) pointing at a
//! socket the test binds, and the test reads the exact messages it sends.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use common::conn::{request, unix};
use common::{Foreground, TestDir, path_str};
use nix::sys::signal::Signal;
use serde_json::json;

/// A stand-in for systemd's notify socket.
struct Notify {
    socket: UnixDatagram,
    path: std::path::PathBuf,
    got: Vec<String>,
    /// When each message of `got` arrived.
    at: Vec<Instant>,
}

impl Notify {
    fn bind(dir: &TestDir) -> Notify {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("binding the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Notify {
            socket,
            path,
            got: Vec::new(),
            at: Vec::new(),
        }
    }

    /// Reads messages until one has a line that starts with `prefix` (at most `limit`); every
    /// message read is kept in `got`. Returns the matching message.
    fn until(&mut self, prefix: &str, limit: Duration) -> String {
        let end = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        while Instant::now() < end {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.got.push(text.clone());
                self.at.push(Instant::now());
                if text.lines().any(|l| l.starts_with(prefix)) {
                    return text;
                }
            }
        }
        panic!("no {prefix:?} within {limit:?}; got {:?}", self.got);
    }

    /// Reads everything that arrives for `period`.
    fn collect(&mut self, period: Duration) {
        let end = Instant::now() + period;
        let mut buf = [0u8; 4096];
        while Instant::now() < end {
            if let Ok(n) = self.socket.recv(&mut buf) {
                self.got
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                self.at.push(Instant::now());
            }
        }
    }

    /// The longest time between two messages that start with `prefix`, from message `from` on.
    fn longest_gap(&self, prefix: &str, from: usize) -> Duration {
        let times: Vec<Instant> = (from..self.got.len())
            .filter(|&i| self.got[i].starts_with(prefix))
            .map(|i| self.at[i])
            .collect();
        times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }

    /// Every message read so far that has a line starting with `prefix`.
    fn count(&self, prefix: &str) -> usize {
        self.got
            .iter()
            .filter(|m| m.lines().any(|l| l.starts_with(prefix)))
            .count()
    }
}

fn worker_daemon(dir: &TestDir, notify: &Notify, extra: &[&str], watchdog: Option<u64>) -> Command {
    let mut cmd = Command::new(common::example_named("worker_daemon"));
    cmd.arg("-f")
        .args(dir.std_args())
        .args(["--dir", &path_str(dir.path())])
        .args(extra)
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .env("NOTIFY_SOCKET", &notify.path)
        .env_remove("WATCHDOG_PID")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID");
    match watchdog {
        Some(usec) => cmd.env("WATCHDOG_USEC", usec.to_string()),
        None => cmd.env_remove("WATCHDOG_USEC"),
    };
    cmd
}

/// Written first, as the defect it fixes: today READY=1 is sent right after the workers are
/// forked, while their spinup still runs. A worker with a slow spinup proves the order: when
/// READY=1 arrives, it must have finished its spinup (it leaves `w0.spun` at the end).
#[test]
fn ready_comes_after_every_worker_has_spun_up() {
    let dir = TestDir::new();
    let mut notify = Notify::bind(&dir);
    let cmd = worker_daemon(
        &dir,
        &notify,
        &["--workers", "2", "--spinup-delay", "1"],
        None,
    );
    let mut daemon = Foreground::spawn_cmd(&dir, cmd);
    let ready = notify.until("READY=1", Duration::from_secs(20));
    assert!(
        dir.join("w0.spun").exists() && dir.join("w1.spun").exists(),
        "READY=1 ({ready:?}) came before the workers finished their spinup; got {:?}",
        notify.got
    );
    assert!(
        ready.lines().any(|l| l == "STATUS=2 workers looping"),
        "READY=1 carries the status: {ready:?}"
    );
    daemon.signal(Signal::SIGTERM);
    notify.until("STOPPING=1", Duration::from_secs(10));
    daemon.wait_exit();
}

/// No STATUS or READY before the workers are up, READY first; WATCHDOG=1 keeps coming while
/// the loop turns and stops while a method blocks the loop (`example.stall`), then resumes.
#[test]
fn watchdog_pings_while_the_loop_turns_and_stop_while_it_stalls() {
    let dir = TestDir::new();
    let mut notify = Notify::bind(&dir);
    // WATCHDOG_USEC 200 ms: a ping every 100 ms.
    let cmd = worker_daemon(&dir, &notify, &["--spinup-delay", "0.3"], Some(200_000));
    let mut daemon = Foreground::spawn_cmd(&dir, cmd);
    let ready = notify.until("READY=1", Duration::from_secs(20));
    assert!(
        dir.join("w0.spun").exists(),
        "READY before the spinup ended"
    );
    assert_eq!(ready, "READY=1\nSTATUS=1 worker looping\n");
    assert!(
        notify.got[..notify.got.len() - 1]
            .iter()
            .all(|m| m == "WATCHDOG=1\n"),
        "only watchdog pings before READY: {:?}",
        notify.got
    );
    let from = notify.got.len();
    notify.collect(Duration::from_millis(800));
    let pings = notify.got[from..]
        .iter()
        .filter(|m| *m == "WATCHDOG=1\n")
        .count();
    assert!(
        pings >= 3,
        "WATCHDOG=1 every 100 ms: {:?}",
        &notify.got[from..]
    );
    assert!(
        notify.longest_gap("WATCHDOG=1", from) < Duration::from_millis(600),
        "pings keep coming while the loop turns"
    );
    // A method that blocks the loop 1.5 s: the pings stop meanwhile, then come back.
    // The call waits in a thread: the test reads the pings as they come (their arrival times
    // are what it checks).
    let mut conn = unix(&dir);
    // From the last ping before the call.
    let from = notify.got.len() - 1;
    assert_eq!(notify.got[from], "WATCHDOG=1\n");
    let call = std::thread::spawn(move || {
        conn.send(&request("example.stall", json!({"seconds": 1.5}), 1));
        conn.json()
    });
    let end = Instant::now() + Duration::from_secs(15);
    while !call.is_finished() && Instant::now() < end {
        notify.collect(Duration::from_millis(100));
    }
    let reply = call.join().expect("the call's thread");
    assert!(
        reply.get("result").is_some_and(serde_json::Value::is_null),
        "{reply}"
    );
    let stalled = notify.got.len();
    notify.collect(Duration::from_millis(500));
    assert!(
        notify.got[stalled..].iter().any(|m| m == "WATCHDOG=1\n"),
        "the pings resume after the stall"
    );
    assert!(
        notify.longest_gap("WATCHDOG=1", from) >= Duration::from_millis(1200),
        "the pings went on while the loop was stalled (longest gap {:?}): {:?}",
        notify.longest_gap("WATCHDOG=1", from),
        notify.at[from..]
            .iter()
            .map(|t| (*t - notify.at[from]).as_millis())
            .collect::<Vec<_>>()
    );
    daemon.signal(Signal::SIGTERM);
    notify.until("STOPPING=1", Duration::from_secs(10));
    daemon.wait_exit();
}

/// SIGTERM: STOPPING=1 with an EXTEND_TIMEOUT_USEC that covers shutdowntimeout; while a slow
/// spindown is waited for, the extension is sent again, with a status saying who is left.
#[test]
fn a_slow_shutdown_extends_the_stop_timeout() {
    let dir = TestDir::new();
    let mut notify = Notify::bind(&dir);
    let cmd = worker_daemon(
        &dir,
        &notify,
        &["--spindown-delay", "2.5", "--shutdown-timeout", "6"],
        None,
    );
    let mut daemon = Foreground::spawn_cmd(&dir, cmd);
    notify.until("READY=1", Duration::from_secs(20));
    let from = notify.got.len();
    daemon.signal(Signal::SIGTERM);
    let stopping = notify.until("STOPPING=1", Duration::from_secs(10));
    let extend: u64 = stopping
        .lines()
        .find_map(|l| l.strip_prefix("EXTEND_TIMEOUT_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("STOPPING=1 comes with EXTEND_TIMEOUT_USEC: {stopping:?}"));
    assert!(
        extend >= 6_000_000,
        "the extension covers shutdowntimeout: {extend}"
    );
    notify.until("EXTEND_TIMEOUT_USEC=", Duration::from_secs(5));
    assert!(
        notify.got[from..]
            .iter()
            .any(|m| m.contains("STATUS=stopping: 1 worker left")),
        "a status while stopping: {:?}",
        &notify.got[from..]
    );
    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(0));
    assert_eq!(notify.count("READY=1"), 1);
}

/// The `-d` launcher exits (the daemon is "ready") at the same moment as READY=1: after every
/// worker's spinup.
#[test]
fn the_detaching_launcher_waits_for_the_workers_too() {
    let dir = TestDir::new();
    let out = Command::new(common::example_named("worker_daemon"))
        .arg("-d")
        .args(dir.std_args())
        .args(["--dir", &path_str(dir.path()), "--spinup-delay", "1"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("running the launcher");
    let pid = common::read_pid(&dir.pidfile());
    let _daemon = pid.map(common::Detached::adopt);
    assert!(out.status.success(), "launcher: {out:?}");
    assert!(
        dir.join("w0.spun").exists(),
        "the launcher returned before the worker's spinup ended"
    );
    assert!(pid.is_some(), "a pid file");
}

/// The systemd tools, installed by the project's script (once per test binary; it fails
/// loudly when it cannot install them).
fn systemd_tools() {
    common::install_test_deps();
}

/// Connects once systemd-socket-activate listens on `path`.
fn connect_when_listening(path: &std::path::Path) -> std::os::unix::net::UnixStream {
    let mut stream = None;
    common::wait_until(
        "systemd-socket-activate to listen",
        Duration::from_secs(10),
        || {
            stream = std::os::unix::net::UnixStream::connect(path).ok();
            stream.is_some()
        },
    );
    stream.expect("connected")
}

/// Runs the worker daemon under `systemd-socket-activate` with `listen` sockets (and
/// `--fdname`), makes a real call on `serve`, and checks the daemon did not bind its
/// configured socket and left the passed socket's file at stop.
fn socket_activated(listen: &[&str], fdname: Option<&str>, serve: &str) {
    systemd_tools();
    let dir = TestDir::new();
    let mut cmd = Command::new("systemd-socket-activate");
    for name in listen {
        cmd.arg("-l").arg(dir.join(name));
    }
    if let Some(names) = fdname {
        cmd.arg(format!("--fdname={names}"));
    }
    cmd.arg(common::example_named("worker_daemon"))
        .arg("-f")
        .args(dir.std_args())
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .env_remove("NOTIFY_SOCKET");
    let mut daemon = Foreground::spawn_cmd(&dir, cmd);
    // The first connection starts the daemon (systemd-socket-activate execs it in place).
    let stream = connect_when_listening(&dir.join(serve));
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut conn = common::conn::Conn::new(stream);
    conn.send(&request("daemon.status", json!({}), 7));
    let reply = conn.json();
    assert_eq!(reply["id"], 7, "a real call on the passed socket: {reply}");
    assert!(
        reply.get("result").is_some(),
        "{reply}; stderr: {}",
        daemon.stderr()
    );
    assert!(
        !dir.socket().exists(),
        "the configured socket was bound anew beside the passed one"
    );
    drop(conn);
    daemon.stop_with(Signal::SIGTERM);
    for name in listen {
        assert!(
            dir.join(name).exists(),
            "the passed socket {name} was unlinked at stop"
        );
    }
}

#[test]
fn socket_activation_serves_on_the_passed_socket() {
    socket_activated(&["act.sock"], None, "act.sock");
}

#[test]
fn socket_activation_picks_the_fd_named_control() {
    socket_activated(
        &["other.sock", "ctl.sock"],
        Some("other:control"),
        "ctl.sock",
    );
}

#[test]
fn socket_activation_without_a_control_name_among_several_is_refused() {
    systemd_tools();
    let dir = TestDir::new();
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.arg("-l")
        .arg(dir.join("a.sock"))
        .arg("-l")
        .arg(dir.join("b.sock"))
        .arg("--fdname=a:b")
        .arg(common::example_named("worker_daemon"))
        .arg("-f")
        .args(dir.std_args())
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null());
    let mut daemon = Foreground::spawn_cmd(&dir, cmd);
    let _trigger = connect_when_listening(&dir.join("a.sock"));
    let status = daemon.wait_exit();
    assert_ne!(status.code(), Some(0));
    let stderr = daemon.stderr();
    assert!(
        stderr.contains("socket activation: 2 descriptors passed (a, b), none named \"control\""),
        "{stderr}"
    );
}

/// `systemd-analyze verify` on copies of contrib/systemd's units with `ExecStart` pointing at
/// the built example: the exit code and whatever it prints (it only warns about many
/// mistakes, exit 0) are the verdict.
fn verify_units(edit: impl Fn(&str) -> String) -> (bool, String) {
    systemd_tools();
    let dir = TestDir::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd");
    let example = path_str(&common::example_named("worker_daemon"));
    let service = std::fs::read_to_string(root.join("daimon-example.service")).unwrap();
    let service = edit(&service.replace("/usr/local/bin/worker_daemon", &example));
    std::fs::write(dir.join("daimon-example.service"), service).unwrap();
    std::fs::copy(
        root.join("daimon-example.socket"),
        dir.join("daimon-example.socket"),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("daimon-example.service"))
        .arg(dir.join("daimon-example.socket"))
        .output()
        .expect("running systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && said.trim().is_empty(), said)
}

#[test]
fn the_shipped_units_verify_clean() {
    let (clean, said) = verify_units(str::to_owned);
    assert!(clean, "systemd-analyze verify: {said}");
}

/// The check above can fail: a misspelt value (only a warning for systemd, exit 0) and a
/// missing binary (exit 1) are both caught.
#[test]
fn the_unit_check_catches_broken_units() {
    let (clean, said) = verify_units(|s| s.replace("Type=notify", "Type=notifyy"));
    assert!(!clean && said.contains("notifyy"), "{said}");
    let (clean, said) = verify_units(|s| {
        let exe = path_str(&common::example_named("worker_daemon"));
        s.replace(&exe, "/nonexistent/worker_daemon")
    });
    assert!(
        !clean && said.contains("/nonexistent/worker_daemon"),
        "{said}"
    );
}

/// A worker that says it is ready from its spinup (`ctx.ready()`) does not hold READY=1 for
/// the rest of its spinup.
#[test]
fn a_worker_ready_early_does_not_hold_the_readiness() {
    let dir = TestDir::new();
    let mut notify = Notify::bind(&dir);
    let cmd = worker_daemon(
        &dir,
        &notify,
        &["--spinup-delay", "5", "--ready-early"],
        None,
    );
    let mut daemon = Foreground::spawn_cmd(&dir, cmd);
    let ready = notify.until("READY=1", Duration::from_secs(20));
    assert!(
        !dir.join("w0.spun").exists(),
        "READY=1 ({ready:?}) waited for the whole spinup"
    );
    assert!(ready.contains("STATUS=1 worker looping"), "{ready}");
    daemon.signal(Signal::SIGTERM);
    daemon.wait_exit();
}

/// Around a reload (SIGHUP, as the unit's `ExecReload` sends, and `daemon.reload`):
/// `RELOADING=1` with `MONOTONIC_USEC=`, then `READY=1`, in that order, once per reload.
#[test]
fn a_reload_says_reloading_then_ready() {
    let dir = TestDir::new();
    let mut notify = Notify::bind(&dir);
    let file = dir.write_config("config.json", &json!({"socketmaxconnections": 10}));
    let cmd = worker_daemon(
        &dir,
        &notify,
        &["--workers", "1", "--config", &path_str(&file)],
        None,
    );
    let mut daemon = Foreground::spawn_cmd(&dir, cmd);
    notify.until("READY=1", Duration::from_secs(20));
    let before = notify.got.len();
    dir.write_config("config.json", &json!({"socketmaxconnections": 5}));
    daemon.signal(Signal::SIGHUP);
    let reloading = notify.until("RELOADING=1", Duration::from_secs(10));
    let usec = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {reloading:?}"));
    assert!(usec.parse::<u64>().is_ok_and(|n| n > 0), "{reloading:?}");
    notify.until("READY=1", Duration::from_secs(10));
    // The same through the socket.
    let mut conn = unix(&dir);
    conn.send(&request("daemon.reload", json!([]), 1));
    let reply = conn.json();
    assert_eq!(reply["result"]["applied"], json!([]), "{reply}");
    notify.until("RELOADING=1", Duration::from_secs(10));
    notify.until("READY=1", Duration::from_secs(10));
    let order: Vec<&str> = notify.got[before..]
        .iter()
        .filter_map(|m| m.lines().find(|l| *l == "RELOADING=1" || *l == "READY=1"))
        .collect();
    assert_eq!(
        order,
        ["RELOADING=1", "READY=1", "RELOADING=1", "READY=1"],
        "{:?}",
        notify.got
    );
    daemon.signal(Signal::SIGTERM);
    notify.until("STOPPING=1", Duration::from_secs(10));
    daemon.wait_exit();
}
