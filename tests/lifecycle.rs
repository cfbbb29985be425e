//! The life of a real daemon, the `echo_daemon` example: start in the foreground or detached,
//! the pid file and its lock, stale files, configuration errors, readiness notification.
//!
//! Every test has its own temp dir and kills what it started, so they run in parallel.

mod common;

use std::fs;
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    DEADLINE, Detached, Foreground, TestDir, accepts, alive, free_tcp_port, inode, names_pid,
    path_str, proc_stat_field, reaches_eof, read_pid, unix_addr, wait_until,
};
use nix::sys::signal::Signal;
use serde_json::json;

/// `args` followed by the test dir's standard `--pidfile` and `--socket`.
fn with_std(dir: &TestDir, args: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend(dir.std_args());
    all
}

/// Asserts the standard pid file and socket are gone.
fn assert_cleaned_up(dir: &TestDir) {
    assert!(!dir.pidfile().exists(), "the pid file was left behind");
    assert!(!dir.socket().exists(), "the socket file was left behind");
}

// ---------------------------------------------------------------------------------------
// Help

#[test]
fn no_arguments_prints_help_and_exits_0() {
    let dir = TestDir::new();
    let out = dir.run::<&str>(&[]);
    out.assert_code(0);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("Echo Daemon"),
        "no banner in the help: {text:?}"
    );
    assert!(!dir.pidfile().exists(), "help started a daemon");
}

#[test]
fn dash_h_prints_help_and_exits_0() {
    let dir = TestDir::new();
    let out = dir.run(&["-h"]);
    out.assert_code(0);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("Echo Daemon"),
        "no banner in the help: {text:?}"
    );
    assert!(text.contains("-f"), "the help does not list -f: {text:?}");
}

// ---------------------------------------------------------------------------------------
// Foreground

#[test]
fn foreground_writes_pid_file_serves_socket_and_cleans_up() {
    let dir = TestDir::new();
    let mut daemon = Foreground::start(&dir, &[]);
    assert_eq!(
        fs::read_to_string(dir.pidfile()).unwrap(),
        format!("{}\n", daemon.pid())
    );
    assert!(accepts(&dir.socket()), "the socket stopped accepting");
    daemon.stop_with(Signal::SIGTERM);
    assert_cleaned_up(&dir);
}

#[test]
fn tcp_socket_accepts_connections() {
    let dir = TestDir::new();
    let port = free_tcp_port();
    let pidfile = dir.pidfile();
    // No secret: the configuration must accept unauthenticated local users explicitly.
    let config = dir.write_config("tcp.json", &json!({"socketallowunauthenticated": true}));
    let args = [
        "-f".to_string(),
        "--config".into(),
        path_str(&config),
        "--pidfile".into(),
        path_str(&pidfile),
        "--socket".into(),
        format!("tcp://127.0.0.1:{port}"),
    ];
    let mut daemon = Foreground::spawn(&dir, &args);
    let want = format!("{}\n", daemon.pid());
    wait_until("the daemon to be ready on TCP", DEADLINE, || {
        if let Some(status) = daemon.try_status() {
            panic!("the daemon exited ({status}); stderr: {}", daemon.stderr());
        }
        fs::read_to_string(&pidfile).is_ok_and(|s| s == want)
            && TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    daemon.stop_with(Signal::SIGTERM);
    assert!(!pidfile.exists(), "the pid file was left behind");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the port still accepts after the daemon exited"
    );
}

// ---------------------------------------------------------------------------------------
// Detached

#[test]
fn detached_daemon_is_ready_when_the_launcher_exits() {
    let dir = TestDir::new();
    let (out, daemon) = dir.launch(&dir.std_args(), &dir.pidfile());
    out.assert_code(0);
    let daemon = daemon.unwrap_or_else(|| {
        panic!(
            "no live pid in the pid file right after the launcher exited: {:?}; stderr: {}",
            fs::read_to_string(dir.pidfile()).ok(),
            out.stderr
        )
    });
    let pid = daemon.pid();
    // No polling: all of this holds the moment the launcher has exited 0.
    assert_eq!(
        fs::read_to_string(dir.pidfile()).unwrap(),
        format!("{pid}\n")
    );
    assert_ne!(pid, out.pid as i32, "the pid file holds the launcher's pid");
    assert!(accepts(&dir.socket()), "the socket does not accept yet");
    // A real daemon: working directory /, a session of its own.
    let cwd = fs::read_link(format!("/proc/{pid}/cwd")).expect("reading the daemon's cwd");
    assert_eq!(
        cwd,
        std::path::Path::new("/"),
        "the daemon did not chdir to /"
    );
    let our_session = nix::unistd::getsid(None).expect("getsid").as_raw() as i64;
    assert_ne!(
        proc_stat_field(pid, 6),
        our_session,
        "the daemon stayed in the launcher's session"
    );

    daemon.signal(Signal::SIGTERM);
    daemon.wait_gone();
    assert_cleaned_up(&dir);
}

/// Beyond the brief's contract, but what makes `x=$(echo_daemon -d)` return: the daemon must
/// not keep the launcher's stdout and stderr open.
#[test]
fn detached_daemon_releases_the_launchers_stdout_and_stderr() {
    let dir = TestDir::new();
    let mut cmd = dir.command(&with_std(&dir, &["-d"]));
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut launcher = cmd.spawn().expect("spawning the launcher");
    let stdout = launcher.stdout.take().unwrap();
    let stderr = launcher.stderr.take().unwrap();
    let mut status = None;
    wait_until("the launcher to exit", DEADLINE, || {
        status = launcher.try_wait().unwrap();
        status.is_some()
    });
    let _daemon = read_pid(&dir.pidfile())
        .filter(|&p| alive(p))
        .map(Detached::adopt);
    assert_eq!(status.unwrap().code(), Some(0), "the launcher failed");
    assert!(
        _daemon.is_some(),
        "no live daemon after the launcher exited 0"
    );
    assert!(
        reaches_eof(stdout, Duration::from_secs(5)),
        "the detached daemon keeps the launcher's stdout open"
    );
    assert!(
        reaches_eof(stderr, Duration::from_secs(5)),
        "the detached daemon keeps the launcher's stderr open"
    );
}

#[test]
fn detached_failure_before_ready_is_reported_by_the_launcher() {
    let dir = TestDir::new();
    let socket = dir.join("no-such-dir/daemon.sock");
    let args = [
        "--pidfile".to_string(),
        path_str(&dir.pidfile()),
        "--socket".into(),
        unix_addr(&socket),
    ];
    let (out, daemon) = dir.launch(&args, &dir.pidfile());
    out.assert_code(1).assert_error_line();
    // The error should say which file it could not make.
    out.assert_stderr_has("no-such-dir");
    assert!(
        daemon.is_none(),
        "a daemon is left running after a failed start"
    );
    assert!(
        out.elapsed < Duration::from_secs(5),
        "the launcher took {:?} to report the failure",
        out.elapsed
    );
}

#[test]
fn detached_relative_paths_are_made_absolute() {
    let dir = TestDir::new();
    // The launcher runs in the test dir; the daemon then moves to /.
    let args = ["--pidfile", "rel.pid", "--socket", "unix://rel.sock"];
    let (out, daemon) = dir.launch(&args, &dir.join("rel.pid"));
    out.assert_code(0);
    let daemon = daemon.unwrap_or_else(|| {
        panic!(
            "no live daemon named in <dir>/rel.pid; stderr: {}",
            out.stderr
        )
    });
    assert!(
        accepts(&dir.join("rel.sock")),
        "<dir>/rel.sock does not accept"
    );
    assert!(
        !std::path::Path::new("/rel.pid").exists(),
        "a pid file was made in /"
    );
    daemon.signal(Signal::SIGTERM);
    daemon.wait_gone();
    assert!(
        !dir.join("rel.pid").exists(),
        "<dir>/rel.pid was left behind"
    );
    assert!(
        !dir.join("rel.sock").exists(),
        "<dir>/rel.sock was left behind"
    );
}

// ---------------------------------------------------------------------------------------
// The pid file lock

/// The pid file's content and the socket file's inode of a running daemon.
#[derive(Debug, PartialEq)]
struct Snapshot {
    pid_content: Option<String>,
    socket_inode: Option<u64>,
}

impl Snapshot {
    fn take(dir: &TestDir) -> Snapshot {
        Snapshot {
            pid_content: fs::read_to_string(dir.pidfile()).ok(),
            socket_inode: inode(&dir.socket()),
        }
    }

    /// Asserts the pid file has the same content and the socket file is the same file.
    fn assert_untouched(&self, dir: &TestDir) {
        let now = Snapshot::take(dir);
        assert_eq!(
            now.pid_content, self.pid_content,
            "the running daemon's pid file was changed"
        );
        assert_eq!(
            now.socket_inode, self.socket_inode,
            "the running daemon's socket file was removed or replaced (inode)"
        );
    }
}

#[test]
fn second_foreground_instance_is_refused_and_the_first_is_untouched() {
    let dir = TestDir::new();
    let mut first = Foreground::start(&dir, &[]);
    let before = Snapshot::take(&dir);

    let out = dir.run(&with_std(&dir, &["-f"]));
    out.assert_code(1).assert_error_line();
    assert!(
        names_pid(&out.stderr, first.pid()),
        "stderr does not name the running pid {}: {:?}",
        first.pid(),
        out.stderr
    );
    assert!(
        out.elapsed < Duration::from_secs(3),
        "refusing took {:?}",
        out.elapsed
    );

    before.assert_untouched(&dir);
    assert!(first.try_status().is_none(), "the first instance died");
    assert!(
        accepts(&dir.socket()),
        "the first instance no longer accepts"
    );
    first.stop_with(Signal::SIGTERM);
}

#[test]
fn second_detached_instance_is_refused_and_the_first_is_untouched() {
    let dir = TestDir::new();
    let (out, first) = dir.launch(&dir.std_args(), &dir.pidfile());
    out.assert_code(0);
    let first = first.expect("the first daemon runs");
    let before = Snapshot::take(&dir);

    let (out, _again) = dir.launch(&dir.std_args(), &dir.pidfile());
    out.assert_code(1).assert_error_line();
    assert!(
        names_pid(&out.stderr, first.pid()),
        "stderr does not name the running pid {}: {:?}",
        first.pid(),
        out.stderr
    );
    before.assert_untouched(&dir);
    assert!(alive(first.pid()), "the first instance died");
    assert!(
        accepts(&dir.socket()),
        "the first instance no longer accepts"
    );
}

#[test]
fn dash_s_is_refused_while_a_daemon_runs() {
    let dir = TestDir::new();
    let mut first = Foreground::start(&dir, &[]);
    let before = Snapshot::take(&dir);

    let out = dir.run(&with_std(&dir, &["-f", "-s"]));
    out.assert_code(1).assert_error_line();
    assert!(
        out.stderr.to_lowercase().contains("already running"),
        "stderr does not say 'already running': {:?}",
        out.stderr
    );
    assert!(
        names_pid(&out.stderr, first.pid()),
        "stderr does not name the running pid {}: {:?}",
        first.pid(),
        out.stderr
    );
    before.assert_untouched(&dir);
    assert!(
        accepts(&dir.socket()),
        "the first instance no longer accepts"
    );
    first.stop_with(Signal::SIGTERM);
}

/// Starts a daemon, SIGKILLs it, and checks it left its pid file and socket behind.
fn leave_stale_files(dir: &TestDir) -> i32 {
    let mut daemon = Foreground::start(dir, &[]);
    daemon.signal(Signal::SIGKILL);
    let status = daemon.wait_exit();
    assert!(!status.success());
    assert!(
        dir.pidfile().exists(),
        "SIGKILL left no pid file: nothing to test"
    );
    assert!(
        dir.socket().exists(),
        "SIGKILL left no socket: nothing to test"
    );
    daemon.pid()
}

#[test]
fn stale_files_are_taken_over_without_dash_s() {
    let dir = TestDir::new();
    let old = leave_stale_files(&dir);
    let mut daemon = Foreground::start(&dir, &[]);
    assert_ne!(daemon.pid(), old);
    daemon.stop_with(Signal::SIGTERM);
    assert_cleaned_up(&dir);
}

#[test]
fn stale_files_are_removed_with_dash_s() {
    let dir = TestDir::new();
    let old = leave_stale_files(&dir);
    let mut daemon = Foreground::spawn(&dir, &with_std(&dir, &["-f", "-s"]));
    daemon.wait_ready_std(&dir);
    assert_ne!(daemon.pid(), old);
    daemon.stop_with(Signal::SIGTERM);
    assert_cleaned_up(&dir);
}

// ---------------------------------------------------------------------------------------
// Configuration

/// Runs `-f` with `config` as the config file; it must be refused naming `needle`.
fn assert_config_refused(config: serde_json::Value, needle: &str) {
    let dir = TestDir::new();
    let file = dir.write_config("config.json", &config);
    let out = dir.run(&with_std(&dir, &["-f", "--config", &path_str(&file)]));
    out.assert_code(1)
        .assert_error_line()
        .assert_stderr_has(needle);
    assert!(
        !dir.pidfile().exists(),
        "a refused config still made a pid file"
    );
    assert!(
        !dir.socket().exists(),
        "a refused config still made a socket"
    );
}

#[test]
fn config_value_out_of_range_names_the_key() {
    assert_config_refused(json!({"socketmaxconnections": 0}), "socketmaxconnections");
}

#[test]
fn config_unknown_key_names_the_key() {
    assert_config_refused(json!({"nosuchkey": 1}), "nosuchkey");
}

#[test]
fn config_file_that_is_not_json_names_the_file() {
    let dir = TestDir::new();
    let file = dir.join("broken.json");
    fs::write(&file, "{ this is not json").unwrap();
    let out = dir.run(&with_std(&dir, &["-f", "--config", &path_str(&file)]));
    assert!(!out.status.success(), "a broken config file was accepted");
    out.assert_error_line().assert_stderr_has(&path_str(&file));
    assert!(
        !dir.pidfile().exists(),
        "a broken config still made a pid file"
    );
}

#[test]
fn config_file_sets_socket_and_pidfile() {
    let dir = TestDir::new();
    let file = dir.write_config(
        "config.json",
        &json!({
            "sockethandler": unix_addr(&dir.socket()),
            "pidfile": path_str(&dir.pidfile()),
        }),
    );
    let mut daemon = Foreground::spawn(&dir, &["-f", "--config", &path_str(&file)]);
    daemon.wait_ready_std(&dir);
    daemon.stop_with(Signal::SIGTERM);
    assert_cleaned_up(&dir);
}

#[test]
fn config_niceness_is_applied() {
    let dir = TestDir::new();
    let file = dir.write_config("config.json", &json!({"niceness": 10}));
    let mut daemon =
        Foreground::spawn(&dir, &with_std(&dir, &["-f", "--config", &path_str(&file)]));
    daemon.wait_ready_std(&dir);
    assert_eq!(
        proc_stat_field(daemon.pid(), 19),
        10,
        "the daemon's nice value"
    );
    daemon.stop_with(Signal::SIGTERM);
}

// ---------------------------------------------------------------------------------------
// Idle and readiness notification

/// The voluntary context switches of every thread of `pid`, by thread id.
fn voluntary_switches(pid: i32) -> Vec<(String, u64)> {
    let mut all = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).expect("listing the daemon's threads") {
        let task = task.unwrap().file_name().to_string_lossy().into_owned();
        let Ok(status) = fs::read_to_string(format!("/proc/{pid}/task/{task}/status")) else {
            continue; // the thread ended
        };
        let count = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .expect("voluntary_ctxt_switches in /proc status")
            .trim()
            .parse()
            .unwrap();
        all.push((task, count));
    }
    all.sort();
    all
}

#[test]
fn idle_daemon_makes_no_wakeups() {
    let dir = TestDir::new();
    let mut daemon = Foreground::start(&dir, &[]);
    // Start-up settles (the readiness check's connection is closed by now).
    thread::sleep(Duration::from_millis(300));
    let before = voluntary_switches(daemon.pid());
    // One measurement window, not a wait: nothing may happen in it. A daemon that woke once
    // a second would show two or three switches here.
    thread::sleep(Duration::from_millis(2500));
    let after = voluntary_switches(daemon.pid());
    assert_eq!(
        before, after,
        "the idle daemon woke up within 2.5 s (thread, switches) before/after"
    );
    daemon.stop_with(Signal::SIGTERM);
}

/// Receives datagrams until one contains `what`, or panics at the deadline.
fn expect_datagram(socket: &UnixDatagram, what: &str) -> String {
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match socket.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if text.contains(what) {
                    return text;
                }
                seen.push(text);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("receiving on the notify socket: {e}"),
        }
    }
    panic!("no datagram with {what:?} within {DEADLINE:?}; received: {seen:?}");
}

#[test]
fn notify_socket_gets_ready_and_stopping() {
    let dir = TestDir::new();
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("binding the notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();

    let mut cmd = dir.command(&with_std(&dir, &["-f"]));
    cmd.env("NOTIFY_SOCKET", &notify_path);
    let mut daemon = Foreground::spawn_cmd(&dir, cmd);

    expect_datagram(&notify, "READY=1");
    // READY=1 comes only once the daemon is ready.
    assert_eq!(
        fs::read_to_string(dir.pidfile()).ok(),
        Some(format!("{}\n", daemon.pid())),
        "READY=1 arrived before the pid file was written"
    );
    assert!(
        accepts(&dir.socket()),
        "READY=1 arrived before the socket accepted"
    );

    daemon.signal(Signal::SIGTERM);
    expect_datagram(&notify, "STOPPING=1");
    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "stderr: {}", daemon.stderr());
}

// ---------------------------------------------------------------------------------------
// Logging

#[test]
fn detached_daemon_logs_to_logfile_under_the_configured_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TestDir::new();
    let log = dir.join("daemon.log");
    let config = dir.write_config(
        "log.json",
        &json!({"logfile": path_str(&log), "umask": "077"}),
    );
    let config = path_str(&config);
    let (out, daemon) = dir.launch(
        &with_std(&dir, &["-d", "-v", "--config", &config]),
        &dir.pidfile(),
    );
    out.assert_code(0);
    let daemon = daemon.expect("a live daemon");
    // Readiness is logged before the launcher is told: the line is there already.
    let text = fs::read_to_string(&log).expect("the log file exists");
    assert!(text.contains("ready"), "{text}");
    let mode = fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "0640 under umask 077");
    // -v: debug lines (a client connecting) reach the file too.
    assert!(accepts(&dir.socket()));
    wait_until("the debug line for the connection", DEADLINE, || {
        fs::read_to_string(&log).is_ok_and(|t| t.contains("client connected"))
    });
    daemon.signal(Signal::SIGTERM);
    daemon.wait_gone();
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("stopped"), "{text}");
    assert_cleaned_up(&dir);
}

#[test]
fn foreground_logs_debug_lines_only_with_dash_v() {
    for (verbose, expected) in [(true, true), (false, false)] {
        let dir = TestDir::new();
        let args = if verbose {
            vec!["-f", "-v"]
        } else {
            vec!["-f"]
        };
        let mut daemon = Foreground::spawn(&dir, &with_std(&dir, &args));
        daemon.wait_ready_std(&dir);
        let _client = std::os::unix::net::UnixStream::connect(dir.socket()).unwrap();
        if expected {
            wait_until("the debug line for the connection", DEADLINE, || {
                daemon.stderr().contains("client connected")
            });
        }
        daemon.stop_with(Signal::SIGTERM);
        let stderr = daemon.stderr();
        assert!(stderr.contains("ready"), "{stderr}");
        assert_eq!(stderr.contains("DEBG"), expected, "-v {verbose}: {stderr}");
    }
}
