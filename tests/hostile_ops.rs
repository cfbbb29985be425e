//! What a demanding operator does to a daemon's logs, files and signals: a full disk under
//! the log, a closed stderr, logrotate's SIGUSR1, a pid file that is a symlink, a second
//! daemon on the same socket, a start that fails after binding, and the signal dispositions
//! a daemon (and its workers) inherits. Real daemons: the `ops_daemon` example.
//!
//! Every test has its own temp dir and kills what it started, so they run in parallel.

mod common;

use std::fs::{self, File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{
    DEADLINE, Detached, TestDir, accepts, alive, example_named, path_str, unix_addr, wait_until,
};
use daimon::Client;
use nix::libc;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

fn ops() -> std::path::PathBuf {
    example_named("ops_daemon")
}

/// A command for the ops daemon in `dir`, stdin closed, stdout to a file.
fn ops_cmd(dir: &TestDir, args: &[&str]) -> Command {
    let mut cmd = Command::new(ops());
    cmd.args(args)
        .args(dir.std_args())
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(File::create(dir.join("ops.stdout")).expect("a stdout file"));
    cmd
}

/// A foreground daemon started by a test with its own stdio; killed and reaped on drop.
struct Proc(Child);

impl Proc {
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid()), sig).expect("signalling the daemon");
    }

    /// Waits until the pid file names this process and the socket accepts.
    fn wait_ready(&mut self, dir: &TestDir) {
        let want = format!("{}\n", self.pid());
        wait_until("the daemon to be ready", DEADLINE, || {
            if let Ok(Some(status)) = self.0.try_wait() {
                panic!("the daemon exited before it was ready: {status}");
            }
            fs::read_to_string(dir.pidfile()).is_ok_and(|s| s == want) && accepts(&dir.socket())
        });
    }

    /// Waits for the exit and returns the exit code (None if killed by a signal).
    fn wait_exit(&mut self) -> Option<i32> {
        let mut status = None;
        wait_until("the daemon to exit", DEADLINE, || {
            status = self.0.try_wait().expect("waiting for the daemon");
            status.is_some()
        });
        status.expect("exited").code()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn status(dir: &TestDir) -> Value {
    Client::connect(&unix_addr(&dir.socket()))
        .expect("connecting")
        .call("daemon.status", Value::Null)
        .expect("daemon.status")
}

fn assert_cleaned_up(dir: &TestDir) {
    assert!(!dir.pidfile().exists(), "the pid file was left behind");
    assert!(!dir.socket().exists(), "the socket file was left behind");
}

/// The daemon answers, and its status counts at least one dropped log line.
fn assert_serving_with_drops(dir: &TestDir) {
    let first = status(dir);
    let echo = Client::connect(&unix_addr(&dir.socket()))
        .unwrap()
        .call("examples.echo", json!(["still here"]))
        .unwrap();
    assert_eq!(echo, "still here");
    let later = status(dir);
    let dropped = later["log_dropped"].as_u64();
    assert!(
        dropped.is_some_and(|n| n >= 1),
        "status: {later} (first {first})"
    );
}

/// The bit of `sig` in a /proc/PID/status signal mask line (`SigIgn`, `SigCgt`).
fn in_mask(pid: i32, line: &str, sig: i32) -> bool {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{line}:")))
        .unwrap_or_else(|| panic!("no {line} in /proc/{pid}/status"));
    let mask = u64::from_str_radix(hex.trim(), 16).expect("a hex mask");
    mask & (1 << (sig - 1)) != 0
}

fn caught(pid: i32, sig: i32) -> bool {
    in_mask(pid, "SigCgt", sig)
}

fn ignored(pid: i32, sig: i32) -> bool {
    in_mask(pid, "SigIgn", sig)
}

// ---------------------------------------------------------------------------------------
// 1. A failed log write is dropped and counted, never fatal

#[test]
fn a_full_disk_under_the_logfile_is_counted_not_fatal() {
    let dir = TestDir::new();
    let config = dir.write_config("c.json", &json!({"logfile": "/dev/full"}));
    let mut cmd = ops_cmd(&dir, &["-d", "-v", "--config", &path_str(&config)]);
    cmd.stderr(File::create(dir.join("launch.stderr")).unwrap());
    let status_code = cmd.status().expect("launching");
    let daemon = common::read_pid(&dir.pidfile()).map(Detached::adopt);
    assert_eq!(
        status_code.code(),
        Some(0),
        "launch: {}",
        fs::read_to_string(dir.join("launch.stderr")).unwrap_or_default()
    );
    let daemon = daemon.expect("the daemon's pid");
    assert_serving_with_drops(&dir);
    assert!(alive(daemon.pid()));
    daemon.signal(Signal::SIGTERM);
    daemon.wait_gone();
    assert_cleaned_up(&dir);
}

#[test]
fn stderr_on_a_full_device_is_counted_not_fatal() {
    let dir = TestDir::new();
    let full = OpenOptions::new().write(true).open("/dev/full").unwrap();
    let mut cmd = ops_cmd(&dir, &["-f", "-v"]);
    cmd.stderr(full);
    let mut daemon = Proc(cmd.spawn().unwrap());
    daemon.wait_ready(&dir);
    assert_serving_with_drops(&dir);
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(), Some(0));
    assert_cleaned_up(&dir);
}

#[test]
fn stderr_closed_by_its_reader_is_counted_not_fatal() {
    let dir = TestDir::new();
    let mut cmd = ops_cmd(&dir, &["-f", "-v"]);
    cmd.stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // The reader goes away at once: every write to stderr fails with EPIPE.
    drop(child.stderr.take());
    let mut daemon = Proc(child);
    daemon.wait_ready(&dir);
    assert_serving_with_drops(&dir);
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(), Some(0));
    assert_cleaned_up(&dir);
}

// ---------------------------------------------------------------------------------------
// 2. SIGUSR1 reopens the log file

#[test]
fn sigusr1_reopens_the_log_file_after_a_rename() {
    let dir = TestDir::new();
    let log = dir.join("d.log");
    let config = dir.write_config("c.json", &json!({"logfile": path_str(&log)}));
    let mut cmd = ops_cmd(&dir, &["-d", "--config", &path_str(&config)]);
    cmd.stderr(File::create(dir.join("launch.stderr")).unwrap());
    let launched = cmd.status().expect("launching");
    let daemon = common::read_pid(&dir.pidfile()).map(Detached::adopt);
    assert_eq!(launched.code(), Some(0));
    let daemon = daemon.expect("the daemon's pid");
    wait_until("the log to say ready", DEADLINE, || {
        fs::read_to_string(&log).is_ok_and(|t| t.contains("ready"))
    });
    fs::rename(&log, dir.join("d.log.1")).unwrap();
    daemon.signal(Signal::SIGUSR1);
    wait_until("a new log file at the path", DEADLINE, || {
        assert!(alive(daemon.pid()), "SIGUSR1 killed the daemon");
        fs::read_to_string(&log).is_ok_and(|t| t.contains("reopened"))
    });
    assert_eq!(status(&dir)["pid"], daemon.pid());
    let old = fs::read_to_string(dir.join("d.log.1")).unwrap();
    assert!(
        !old.contains("reopened"),
        "the old file got the new lines: {old}"
    );
    daemon.signal(Signal::SIGTERM);
    daemon.wait_gone();
    assert!(fs::read_to_string(&log).unwrap().contains("stopped"));
    assert_cleaned_up(&dir);
}

// ---------------------------------------------------------------------------------------
// 3. A pid file path that is a symlink is refused

#[test]
fn a_pid_file_that_is_a_symlink_is_refused_and_its_target_untouched() {
    let dir = TestDir::new();
    let victim = dir.join("victim");
    fs::write(&victim, "precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, dir.pidfile()).unwrap();
    let out = dir.run_cmd(ops_cmd(&dir, &["-f"]));
    out.assert_code(1)
        .assert_error_line()
        .assert_stderr_has("symlink");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(!dir.socket().exists());
    // A dangling one: its target is not created.
    let absent = dir.join("absent");
    fs::remove_file(dir.pidfile()).unwrap();
    std::os::unix::fs::symlink(&absent, dir.pidfile()).unwrap();
    let out = dir.run_cmd(ops_cmd(&dir, &["-f"]));
    out.assert_code(1).assert_stderr_has("symlink");
    assert!(!absent.exists(), "the symlink's target was created");
}

// ---------------------------------------------------------------------------------------
// 4. A second daemon never takes a live daemon's socket, even with -s

#[test]
fn hardstart_does_not_steal_a_live_daemons_socket() {
    let dir = TestDir::new();
    let mut first = Proc(
        ops_cmd(&dir, &["-f"])
            .stderr(File::create(dir.join("first.stderr")).unwrap())
            .spawn()
            .unwrap(),
    );
    first.wait_ready(&dir);
    let mut second = Command::new(ops());
    second
        .args(["-f", "-s", "--pidfile"])
        .arg(dir.join("second.pid"))
        .args(["--socket", &unix_addr(&dir.socket())])
        .current_dir(dir.path())
        .stdin(Stdio::null());
    let out = dir.run_cmd(second);
    out.assert_code(1)
        .assert_error_line()
        .assert_stderr_has(&path_str(&dir.socket()));
    assert_eq!(
        status(&dir)["pid"],
        first.pid(),
        "the first daemon lost its socket"
    );
    assert!(!dir.join("second.pid").exists());
    first.signal(Signal::SIGTERM);
    assert_eq!(first.wait_exit(), Some(0));
    assert_cleaned_up(&dir);
}

// ---------------------------------------------------------------------------------------
// 5. A start that fails after binding removes the socket file

#[test]
fn a_start_that_fails_after_binding_removes_the_socket_file() {
    let dir = TestDir::new();
    let mut cmd = ops_cmd(&dir, &["-f", "--workers", "200"]);
    // SAFETY: setrlimit(2) is async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 48,
                rlim_max: 48,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = dir.run_cmd(cmd);
    out.assert_code(1).assert_error_line();
    assert_cleaned_up(&dir);
}

// ---------------------------------------------------------------------------------------
// 6. Signal dispositions as if daimon were absent

/// Starts the ops daemon in the foreground with `ignore` set to SIG_IGN before exec, as
/// `nohup` (SIGHUP) or a shell's `&` (SIGINT) does.
fn start_ignoring(dir: &TestDir, args: &[&str], ignore: &'static [i32]) -> Proc {
    let mut cmd = ops_cmd(dir, args);
    cmd.stderr(File::create(dir.join("ops.stderr")).unwrap());
    // SAFETY: signal(2) is async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(move || {
            for &sig in ignore {
                libc::signal(sig, libc::SIG_IGN);
            }
            Ok(())
        });
    }
    let mut daemon = Proc(cmd.spawn().unwrap());
    daemon.wait_ready(dir);
    daemon
}

#[test]
fn a_wildcard_listener_skips_inherited_ignored_and_noisy_signals_and_its_removal_restores() {
    let dir = TestDir::new();
    let mut daemon = start_ignoring(&dir, &["-f", "--wildcard"], &[libc::SIGHUP]);
    let pid = daemon.pid();
    assert!(
        ignored(pid, libc::SIGHUP) && !caught(pid, libc::SIGHUP),
        "SIGHUP stays ignored"
    );
    assert!(
        ignored(pid, libc::SIGPIPE),
        "SIGPIPE stays ignored, as in any Rust program"
    );
    for sig in [
        libc::SIGCONT,
        libc::SIGPIPE,
        libc::SIGPROF,
        libc::SIGVTALRM,
        libc::SIGSYS,
        libc::SIGTRAP,
    ] {
        assert!(
            !caught(pid, sig),
            "a prefix subscription caught signal {sig}"
        );
    }
    assert!(caught(pid, libc::SIGUSR2) && caught(pid, libc::SIGWINCH));
    daemon.signal(Signal::SIGHUP);
    assert_eq!(
        status(&dir)["pid"],
        pid,
        "SIGHUP ignored, the daemon serves"
    );
    // The wildcard listener removes itself on SIGUSR2: the signals it alone wanted get the
    // disposition they had before, default or ignored.
    daemon.signal(Signal::SIGUSR2);
    wait_until("SIGWINCH to be released", DEADLINE, || {
        !caught(pid, libc::SIGWINCH)
    });
    assert!(!ignored(pid, libc::SIGWINCH) && !caught(pid, libc::SIGUSR2));
    assert!(ignored(pid, libc::SIGHUP) && ignored(pid, libc::SIGPIPE));
    assert!(
        caught(pid, libc::SIGTERM),
        "the standard listener still wants SIGTERM"
    );
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(), Some(0));
    assert_cleaned_up(&dir);
}

#[test]
fn the_standard_listeners_leave_an_inherited_ignored_sigint_ignored() {
    let dir = TestDir::new();
    let mut daemon = start_ignoring(&dir, &["-f"], &[libc::SIGINT, libc::SIGUSR1]);
    let pid = daemon.pid();
    assert!(ignored(pid, libc::SIGINT) && !caught(pid, libc::SIGINT));
    assert!(ignored(pid, libc::SIGUSR1) && !caught(pid, libc::SIGUSR1));
    daemon.signal(Signal::SIGINT);
    daemon.signal(Signal::SIGUSR1);
    assert_eq!(
        status(&dir)["pid"],
        pid,
        "SIGINT and SIGUSR1 ignored, the daemon serves"
    );
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(), Some(0));
    assert_cleaned_up(&dir);
}

#[test]
fn workers_get_back_the_dispositions_the_daemon_inherited() {
    let dir = TestDir::new();
    let mut daemon = start_ignoring(
        &dir,
        &[
            "-f",
            "--wildcard",
            "--workers",
            "1",
            "--dir",
            &path_str(dir.path()),
        ],
        &[libc::SIGHUP],
    );
    let pid_file = dir.join("w0.pid");
    wait_until("the worker's pid", DEADLINE, || {
        fs::read_to_string(&pid_file).is_ok_and(|s| !s.is_empty())
    });
    let worker: i32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(worker, daemon.pid());
    assert!(
        caught(daemon.pid(), libc::SIGUSR2),
        "the daemon catches SIGUSR2"
    );
    // SIGPIPE ignored as in any Rust program, SIGHUP ignored as inherited; what the daemon
    // catches (SIGINT, SIGCHLD, SIGUSR1, SIGUSR2 ...) is not caught in the worker.
    assert!(ignored(worker, libc::SIGPIPE), "SIGPIPE in the worker");
    assert!(ignored(worker, libc::SIGHUP), "SIGHUP in the worker");
    for sig in [
        libc::SIGINT,
        libc::SIGCHLD,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGWINCH,
    ] {
        assert!(!caught(worker, sig), "the worker catches signal {sig}");
        assert!(!ignored(worker, sig), "the worker ignores signal {sig}");
    }
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(), Some(0));
    assert_cleaned_up(&dir);
}

// ---------------------------------------------------------------------------------------
// Other failures at start

#[test]
fn a_log_file_that_cannot_be_opened_fails_the_start_and_leaves_no_pid_file() {
    let dir = TestDir::new();
    assert_log_refused_at_start(&dir, &dir.join("missing-dir").join("d.log"), "missing-dir");
}

/// Starts the daemon (`-d`) with `log` as its log file: it fails with exit 1 and a clear
/// error naming `needle`, and leaves no pid file or socket.
fn assert_log_refused_at_start(dir: &TestDir, log: &std::path::Path, needle: &str) {
    let config = dir.write_config("c.json", &json!({"logfile": path_str(log)}));
    let cmd = ops_cmd(dir, &["-d", "--config", &path_str(&config)]);
    let out = dir.run_cmd(cmd);
    out.assert_code(1)
        .assert_error_line()
        .assert_stderr_has(needle);
    assert_cleaned_up(dir);
}

#[test]
fn a_log_file_that_is_a_fifo_is_refused_not_waited_on() {
    let dir = TestDir::new();
    let log = dir.join("log.fifo");
    nix::unistd::mkfifo(&log, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // (Before, open(2) waited for a reader forever, the pid file locked.)
    assert_log_refused_at_start(&dir, &log, "log.fifo");
}

#[test]
fn a_pid_file_path_that_is_not_a_regular_file_is_refused_and_kept() {
    let dir = TestDir::new();
    let fifo = dir.join("fifo.pid");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut cmd = Command::new(ops());
    cmd.args([
        "-f",
        "--pidfile",
        &path_str(&fifo),
        "--socket",
        &unix_addr(&dir.socket()),
    ])
    .current_dir(dir.path())
    .stdin(Stdio::null());
    let out = dir.run_cmd(cmd);
    out.assert_code(1)
        .assert_error_line()
        .assert_stderr_has("not a regular file");
    assert!(fifo.exists(), "the fifo was removed");
    assert!(!dir.socket().exists());
}

#[test]
fn a_daemon_started_with_stdio_closed_gets_dev_null_not_its_own_files() {
    let dir = TestDir::new();
    let mut cmd = ops_cmd(&dir, &["-f", "-v"]);
    // SAFETY: close(2) is async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(|| {
            libc::close(1);
            libc::close(2);
            Ok(())
        });
    }
    let mut daemon = Proc(cmd.spawn().unwrap());
    daemon.wait_ready(&dir);
    assert_eq!(status(&dir)["pid"], daemon.pid());
    for fd in [1, 2] {
        let target = fs::read_link(format!("/proc/{}/fd/{fd}", daemon.pid()));
        assert_eq!(
            target.ok().as_deref(),
            Some(Path::new("/dev/null")),
            "fd {fd} of the daemon"
        );
    }
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(), Some(0));
    assert_cleaned_up(&dir);
}
